package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
)

// multiNode is a set of node processes on one database.
type multiNode struct {
	t     *testing.T
	bin   string
	dbURL string
	dir   string
	db    *pgxpool.Pool
}

func newMultiNode(t *testing.T) *multiNode {
	m := &multiNode{t: t, bin: testsupport.BuildBinary(t), dbURL: testsupport.NewDatabaseURL(t), dir: t.TempDir()}
	db, err := pgxpool.New(t.Context(), m.dbURL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	m.db = db
	return m
}

// start runs `tasker node` as node id with the given extra TOML and waits
// until it is ready.
func (m *multiNode) start(id, toml string) *testsupport.Process {
	cfgPath := filepath.Join(m.dir, id+".toml")
	// The test environment's 2 s visibility timeout is too tight for three
	// node processes sharing two busy cores with the rest of the suite: an
	// outcome slow to apply comes back, and its deliveries count towards its
	// quarantine as poison. 10 s keeps a killed node's recovery quick.
	toml = "[queue]\nvisibility_timeout = \"10s\"\n" + toml
	require.NoError(m.t, os.WriteFile(cfgPath, []byte(toml), 0o644))
	env := []string{
		"TASKER_DATABASE_URL=" + m.dbURL,
		"TASKER_ENV=test",
		"TASKER_HTTP_LISTEN=127.0.0.1:0",
		"TASKER_LOG_FORMAT=json",
		"TASKER_LOG_LEVEL=info",
		"TASKER_CONFIG=" + cfgPath,
		"TASKER_NODE_ID=" + id,
		"TASKER_NODE_MODE=",
		"TASKER_API_TOKEN=",
	}
	p := testsupport.StartProcess(m.t, m.bin, []string{"node"}, env, m.dir)
	p.WaitForOutput(m.t, time.Minute, id+" ready", func(line string) bool {
		var l struct{ Msg string }
		return json.Unmarshal([]byte(line), &l) == nil && l.Msg == "node ready"
	})
	return p
}

// submit sends n requests of the reference mix and returns their ids and
// the number of steps they make.
func (m *multiNode) submit(n, offset int) ([]uuid.UUID, int) {
	ids := make([]uuid.UUID, n)
	bodies := make([][]byte, n)
	steps := 0
	for i := range n {
		ids[i] = uuid.Must(uuid.NewV7())
		body, err := testsupport.ReferenceRequest(ids[i], offset+i, "multinode-test")
		require.NoError(m.t, err)
		bodies[i] = body
		steps += testsupport.ReferenceSteps(offset + i)
	}
	_, err := queue.NewClient(m.db).SendBatch(m.t.Context(), queue.TaskRequestsQueue, bodies, 0)
	require.NoError(m.t, err)
	return ids, steps
}

func (m *multiNode) count(sql string, args ...any) int {
	var n int
	require.NoError(m.t, m.db.QueryRow(m.t.Context(), sql, args...).Scan(&n))
	return n
}

func (m *multiNode) waitComplete(tasks int, timeout time.Duration) {
	testsupport.WaitFor(m.t, timeout, fmt.Sprintf("%d tasks to complete", tasks), func() (bool, error) {
		var n int
		err := m.db.QueryRow(m.t.Context(), `SELECT count(*) FROM tasker.tasks WHERE state = 'complete'`).Scan(&n)
		return n == tasks, err
	})
}

// workerOnlyTOML makes a node that runs only the tree workflow's workers.
const workerOnlyTOML = "[node]\nmode = \"workers\"\nworker_namespaces = [\"tree_workflow\"]\n"

// TestThreeNodesOneDatabase runs 1,000 tasks of the reference mix on three
// node processes sharing one database — two all-in-one, one running only
// the tree workflow's workers — then 500 more while one all-in-one node is
// killed with SIGKILL halfway. Every task completes once, the transitions
// show the work spread over the nodes, and none is applied twice.
func TestThreeNodesOneDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three node processes over 1,500 tasks")
	}
	m := newMultiNode(t)
	a := m.start("node-a", "")
	b := m.start("node-b", "")
	m.start("node-c", workerOnlyTOML)

	began := time.Now()
	first, _ := m.submit(1000, 0)
	m.waitComplete(1000, 3*time.Minute)
	wall := time.Since(began)
	t.Logf("three nodes: 1,000 tasks complete in %s (%.0f tasks/s)", wall.Round(time.Millisecond), 1000/wall.Seconds())

	// Work spread: every node started steps (in_progress), only the
	// orchestrating nodes applied results, and the worker-only node ran
	// only its namespace.
	for _, id := range []string{"node-a", "node-b", "node-c"} {
		started := m.count(`SELECT count(*) FROM tasker.step_transitions WHERE node_id = $1 AND to_state = 'in_progress'`, id)
		applied := m.count(`SELECT count(*) FROM tasker.step_transitions WHERE node_id = $1 AND to_state = 'complete'`, id)
		created := m.count(`SELECT count(*) FROM tasker.task_transitions WHERE node_id = $1 AND to_state = 'pending'`, id)
		t.Logf("%s: %d step starts, %d results applied, %d tasks created", id, started, applied, created)
		require.Positive(t, started, "%s ran steps", id)
		if id == "node-c" {
			require.Zero(t, applied, "a workers-only node applies no results")
			require.Zero(t, created, "a workers-only node creates no tasks")
		} else {
			require.Positive(t, applied, "%s applied results", id)
			require.Positive(t, created, "%s created tasks", id)
		}
	}
	require.Zero(t, m.count(`
		SELECT count(*) FROM tasker.step_transitions x JOIN tasker.tasks k USING (task_uuid)
		WHERE x.node_id = 'node-c' AND k.namespace <> 'tree_workflow'`), "node-c ran only tree_workflow steps")
	testsupport.AuditComplete(t, m.db, first)

	// Kill node-b halfway through 500 more tasks; the others finish them.
	more, steps := m.submit(500, 1000)
	doneBefore := m.count(`SELECT count(*) FROM tasker.steps WHERE state = 'complete'`)
	testsupport.WaitFor(t, 2*time.Minute, "half of the new steps to complete", func() (bool, error) {
		var n int
		err := m.db.QueryRow(t.Context(), `SELECT count(*) FROM tasker.steps WHERE state = 'complete'`).Scan(&n)
		return n-doneBefore >= steps/2, err
	})
	b.Kill()
	_, err := b.Wait(10 * time.Second)
	require.NoError(t, err)
	m.waitComplete(1500, 3*time.Minute)
	testsupport.AuditComplete(t, m.db, append(first, more...))
	t.Logf("after killing node-b: 1,500 tasks complete, %d redeliveries",
		m.count(`SELECT count(*) FROM tasker.step_transitions WHERE from_state = 'in_progress' AND to_state = 'in_progress'`))
	require.False(t, a.Exited(), "node-a kept running")
}

// TestOneNodeBaseline runs the same 1,000 tasks on one node, for comparing
// wall time with TestThreeNodesOneDatabase. It is a measurement, not a
// check of anything the three-node test does not check, so it runs only
// when TASKER_COMPARE_NODES is set.
func TestOneNodeBaseline(t *testing.T) {
	if os.Getenv("TASKER_COMPARE_NODES") == "" {
		t.Skip("set TASKER_COMPARE_NODES=1 to measure the one-node baseline")
	}
	m := newMultiNode(t)
	m.start("node-a", "")
	began := time.Now()
	ids, _ := m.submit(1000, 0)
	m.waitComplete(1000, 5*time.Minute)
	wall := time.Since(began)
	t.Logf("one node: 1,000 tasks complete in %s (%.0f tasks/s)", wall.Round(time.Millisecond), 1000/wall.Seconds())
	testsupport.AuditComplete(t, m.db, ids)
}
