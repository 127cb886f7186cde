package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
)

// TestNodeCrash runs 200 tasks on a node process and kills it with SIGKILL
// three times at random points of the run, restarting it each time. Every
// task must complete exactly once: one task per request (requests sent
// again after a crash included), no state change applied twice, and every
// extra attempt explained by a recorded redelivery.
func TestNodeCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and kills it three times")
	}
	// Not parallel: the kill points are chosen by progress, and timing
	// matters for where they land.
	bin := testsupport.BuildBinary(t)
	dbURL := testsupport.NewDatabaseURL(t)
	dir := t.TempDir()
	env := []string{
		"TASKER_DATABASE_URL=" + dbURL,
		"TASKER_ENV=test",
		"TASKER_HTTP_LISTEN=127.0.0.1:0",
		"TASKER_LOG_FORMAT=json",
		"TASKER_LOG_LEVEL=info",
		"TASKER_CONFIG=",
		"TASKER_NODE_ID=",
		"TASKER_NODE_MODE=",
		"TASKER_API_TOKEN=",
	}
	start := func() (*testsupport.Process, time.Duration) {
		began := time.Now()
		p := testsupport.StartProcess(t, bin, []string{"node"}, env, dir)
		p.WaitForOutput(t, time.Minute, "node ready", func(line string) bool {
			var l struct{ Msg string }
			return json.Unmarshal([]byte(line), &l) == nil && l.Msg == "node ready"
		})
		return p, time.Since(began)
	}

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("kill points seed %d", seed)

	node, took := start()
	t.Logf("node pid %d ready in %s", node.Pid(), took.Round(time.Millisecond))
	db, err := pgxpool.New(t.Context(), dbURL)
	require.NoError(t, err)
	t.Cleanup(db.Close)

	const tasks = 200
	began := time.Now()
	requests := make([]uuid.UUID, tasks)
	bodies := make([][]byte, tasks)
	totalSteps := 0
	for i := range tasks {
		requests[i] = uuid.Must(uuid.NewV7())
		body, err := testsupport.ReferenceRequest(requests[i], i, "crash-test")
		require.NoError(t, err)
		bodies[i], totalSteps = body, totalSteps+testsupport.ReferenceSteps(i)
	}
	_, err = queue.NewClient(db).SendBatch(t.Context(), queue.TaskRequestsQueue, bodies, 0)
	require.NoError(t, err)

	// Kill points: the fraction of all steps complete, one random point in
	// each third of the run.
	completeSteps := func() (int, error) {
		var n int
		err := db.QueryRow(t.Context(), `SELECT count(*) FROM tasker.steps WHERE state = 'complete'`).Scan(&n)
		return n, err
	}
	for k, window := range [][2]float64{{0.05, 0.30}, {0.35, 0.60}, {0.65, 0.90}} {
		at := int(float64(totalSteps) * (window[0] + rng.Float64()*(window[1]-window[0])))
		testsupport.WaitFor(t, time.Minute, fmt.Sprintf("%d of %d steps complete", at, totalSteps), func() (bool, error) {
			n, err := completeSteps()
			return n >= at, err
		})
		node.Kill()
		code, err := node.Wait(10 * time.Second)
		require.NoError(t, err)
		require.Equal(t, -1, code, "killed by a signal: %s", node.State())
		done, err := completeSteps()
		require.NoError(t, err)
		var created int
		require.NoError(t, db.QueryRow(t.Context(), `SELECT count(*) FROM tasker.tasks`).Scan(&created))

		node, took = start()
		t.Logf("kill %d at %s: %d tasks created, %d/%d steps complete; restarted (pid %d) in %s",
			k+1, time.Since(began).Round(time.Millisecond), created, done, totalSteps, node.Pid(), took.Round(time.Millisecond))
		if k == 0 {
			// A client that did not hear back resends its requests: the
			// first 20 arrive again, and must create nothing.
			_, err = queue.NewClient(db).SendBatch(t.Context(), queue.TaskRequestsQueue, bodies[:20], 0)
			require.NoError(t, err)
		}
	}

	testsupport.WaitFor(t, time.Minute, "every task to complete", func() (bool, error) {
		var n int
		err := db.QueryRow(t.Context(), `SELECT count(*) FROM tasker.tasks WHERE state = 'complete'`).Scan(&n)
		return n == tasks, err
	})
	wall := time.Since(began)
	// Everything was applied, including the resent requests.
	testsupport.WaitFor(t, 30*time.Second, "the request queue to drain", func() (bool, error) {
		var n int
		err := db.QueryRow(t.Context(), `SELECT count(*) FROM pgmq.q_orchestration_task_requests`).Scan(&n)
		return n == 0, err
	})

	fig := testsupport.AuditComplete(t, db, requests)
	t.Logf("crash run: %d tasks complete in %s with 3 kills; %d steps, %d attempts, %d redeliveries (in_progress→in_progress), %d retries",
		fig.Tasks, wall.Round(time.Millisecond), fig.Steps, fig.Attempts, fig.Redeliveries, fig.Retries)

	// The last node stops cleanly on SIGTERM.
	node.Signal(syscall.SIGTERM)
	code, err := node.Wait(30 * time.Second)
	require.NoError(t, err)
	require.Equal(t, 0, code, "clean exit on SIGTERM: %s", node.State())
}
