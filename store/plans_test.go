package store_test

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// planLog collects the plans auto_explain sends as notices while recording.
type planLog struct {
	mu        sync.Mutex
	recording bool
	plans     []string
}

func (l *planLog) notice(_ *pgconn.PgConn, n *pgconn.Notice) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.recording && strings.Contains(n.Message, "Query Text:") {
		l.plans = append(l.plans, n.Message)
	}
}

func (l *planLog) record(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recording = on
}

// seqScanOnHotTable finds a sequential scan of a table the hot statements
// reach by key, or the state index of tasks.
var seqScanOnHotTable = regexp.MustCompile(`Seq Scan on (tasks|steps|step_transitions|task_transitions|q_\w+)\b|tasks_state_created`)

// indexScanOnHotTable is a scan of a hot table's index; unless the lines
// of its node hold an Index Cond, it reads the whole index (a sequential
// scan in all but name).
var indexScanOnHotTable = regexp.MustCompile(`^(\s*)(?:->\s+)?(Index|Index Only|Bitmap Index) Scan (?:Backward )?using \w+ on (tasks|steps|step_transitions|task_transitions|q_\w+)\b`)

// queueHead is the scan of a queue read: its primary key in msg_id order
// from the head, up to the read's LIMIT, skipping the invisible messages.
var queueHead = regexp.MustCompile(`Index Scan using (q_\w+)_pkey on (q_\w+)\b`)

// fullIndexScans returns the lines of plan that scan a hot table's index
// without an index condition (but a queue read's walk from the head).
func fullIndexScans(plan string) []string {
	lines := strings.Split(plan, "\n")
	var bad []string
	for i, line := range lines {
		m := indexScanOnHotTable.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if q := queueHead.FindStringSubmatch(line); q != nil && q[1] == q[2] && strings.Contains(plan, "ORDER BY msg_id LIMIT") {
			continue
		}
		// The node's own lines are indented deeper than its first, up to
		// its first child ("->").
		depth := len(m[1])
		cond := false
		for _, l := range lines[i+1:] {
			trimmed := strings.TrimLeft(l, " ")
			if len(l)-len(trimmed) <= depth || strings.HasPrefix(trimmed, "->") {
				break
			}
			if strings.HasPrefix(trimmed, "Index Cond:") {
				cond = true
			}
		}
		if !cond {
			bad = append(bad, strings.TrimSpace(line))
		}
	}
	return bad
}

// TestHotStatementsReachRowsByKey: the plans the store's statements get on
// empty tables with no useful statistics (analyzed while empty, autovacuum
// off, as on a fresh database) and keep (a generic plan per connection) use
// the keys once the tables are full, instead of scanning them.
func TestHotStatementsReachRowsByKey(t *testing.T) {
	t.Parallel()
	_, setup := testsupport.NewStore(t, store.Options{NodeID: "plans"})
	var super bool
	require.NoError(t, setup.QueryRow(t.Context(), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super))
	if !super {
		t.Skip("auto_explain is loaded with LOAD, which needs a superuser")
	}
	_, err := setup.Exec(t.Context(), "ANALYZE")
	require.NoError(t, err, "statistics of empty tables")

	// One connection, generic plans from the first call, each plan sent to
	// the client by auto_explain.
	log := &planLog{}
	pc, err := pgxpool.ParseConfig(setup.Config().ConnString())
	require.NoError(t, err)
	for k, v := range store.SessionSettings() {
		pc.ConnConfig.RuntimeParams[k] = v
	}
	pc.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	pc.MaxConns = 1
	pc.ConnConfig.OnNotice = log.notice
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, `LOAD 'auto_explain';
			SET auto_explain.log_min_duration = 0;
			SET auto_explain.log_level = notice;
			SET auto_explain.log_nested_statements = on;
			SET client_min_messages = notice`)
		return err
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), pc)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	st := store.New(pool, store.Options{NodeID: "plans"})
	h := &harness{t: t, ctx: t.Context(), st: st, pool: pool, q: queue.NewClient(pool),
		reg: testsupport.Registry(t), injected: &injections{by: map[string]workflow.Handler{}}}

	run := func() {
		for _, w := range []struct{ ns, name string }{
			{testsupport.LinearNamespace, testsupport.LinearName},
			{testsupport.DiamondNamespace, testsupport.DiamondName},
		} {
			requireCleanRun(t, h.runToEnd(h.submit(w.ns, w.name, `{"even_number": 6}`)))
		}
	}
	run() // plans made on empty tables

	// 20,000 finished tasks of four steps in a chain.
	_, err = setup.Exec(t.Context(), `
		INSERT INTO tasker.tasks (task_uuid, request_id, correlation_id, template_id, namespace, name, version, state, context)
		SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), t.template_id, t.namespace, t.name, t.version,
			CASE WHEN i % 2 = 0 THEN 'complete' ELSE 'in_progress' END, '{}'
		FROM generate_series(1, 20000) i,
			(SELECT template_id, namespace, name, version FROM tasker.templates ORDER BY template_id LIMIT 1) t;
		INSERT INTO tasker.steps (step_uuid, task_uuid, name, position, namespace, handler, state, max_attempts,
			retryable, timeout_ms, waiting_parents)
		SELECT gen_random_uuid(), task_uuid, 's' || p, p, namespace, 'h', 'complete', 3, true, 1000, 0
		FROM tasker.tasks, generate_series(1, 4) p WHERE task_uuid NOT IN (SELECT task_uuid FROM tasker.steps);
		UPDATE tasker.steps a SET
			parents = ARRAY(SELECT p.step_uuid FROM tasker.steps p WHERE p.task_uuid = a.task_uuid AND p.position = a.position - 1),
			children = ARRAY(SELECT c.step_uuid FROM tasker.steps c WHERE c.task_uuid = a.task_uuid AND c.position = a.position + 1)
		WHERE a.name LIKE 's_';
		INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
		SELECT step_uuid, task_uuid, 'in_progress', 'complete', 'filler', 1, 'filler' FROM tasker.steps WHERE name LIKE 's_';
		INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id)
		SELECT task_uuid, 'in_progress', 'complete', 'filler', 'filler' FROM tasker.tasks;`)
	require.NoError(t, err)

	log.record(true)
	run() // the same connection, its plans kept
	log.record(false)

	log.mu.Lock()
	defer log.mu.Unlock()
	require.NotEmpty(t, log.plans, "auto_explain sent the plans")
	var bad []string
	keyed := 0
	for _, p := range log.plans {
		if seqScanOnHotTable.MatchString(p) || len(fullIndexScans(p)) > 0 {
			bad = append(bad, p)
		}
		if strings.Contains(p, "tasks_pkey") {
			keyed++
		}
	}
	var lines []string
	for _, p := range bad {
		lines = append(lines, fullIndexScans(p)...)
	}
	require.Empty(t, bad, "%d of %d plans scan a hot table (%s):\n%s", len(bad), len(log.plans), strings.Join(lines, "; "),
		strings.Join(bad, "\n----\n"))
	require.Positive(t, keyed, "plans reach tasks by their key")
	t.Logf("%d plans, %d through tasks_pkey", len(log.plans), keyed)
}
