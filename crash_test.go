package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
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
		bodies[i], totalSteps = crashRequest(t, requests[i], i), totalSteps+crashSteps(i)
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

	fig := crashAudit(t, db, requests)
	t.Logf("crash run: %d tasks complete in %s with 3 kills; %d steps, %d attempts, %d redeliveries (in_progress→in_progress), %d retries",
		fig.tasks, wall.Round(time.Millisecond), fig.steps, fig.attempts, fig.redeliveries, fig.retries)

	// The last node stops cleanly on SIGTERM.
	node.Signal(syscall.SIGTERM)
	code, err := node.Wait(30 * time.Second)
	require.NoError(t, err)
	require.Equal(t, 0, code, "clean exit on SIGTERM: %s", node.State())
}

// crashRequest is request i of the reference mix: the five workflows in
// turn.
func crashRequest(t *testing.T, id uuid.UUID, i int) []byte {
	t.Helper()
	type workflow struct{ ns, name string }
	mix := []workflow{
		{testsupport.LinearNamespace, testsupport.LinearName},
		{testsupport.DiamondNamespace, testsupport.DiamondName},
		{testsupport.TreeNamespace, testsupport.TreeName},
		{testsupport.MixedDAGNamespace, testsupport.MixedDAGName},
		{testsupport.FulfillmentNamespace, testsupport.FulfillmentName},
	}
	wf := mix[i%len(mix)]
	input := fmt.Sprintf(`{"even_number": %d}`, 2+2*(i%10))
	if wf.ns == testsupport.FulfillmentNamespace {
		input = fmt.Sprintf(`{"order_id": "ord-%d", "customer": {"id": "c-%d", "email": "c%d@example.com"},
			"items": [{"sku": "A", "quantity": 2, "unit_price": 5}, {"sku": "B", "quantity": 1, "unit_price": 2.5}],
			"payment": {"method": "card", "token": "tok", "amount": 12.5, "currency": "EUR"},
			"shipping": {"method": "standard", "address": {"city": "Lyon"}}}`, i, i, i)
	}
	body, err := queue.TaskRequest{RequestID: id, Namespace: wf.ns, Name: wf.name, Context: input, RequestedBy: "crash-test"}.Encode()
	require.NoError(t, err)
	return body
}

// crashSteps is the number of steps of request i's workflow.
func crashSteps(i int) int { return []int{4, 4, 8, 7, 4}[i%5] }

type crashFigures struct {
	tasks, steps, attempts, redeliveries, retries int
}

// crashAudit checks that every request made exactly one complete task, no
// state change was applied twice, and every attempt of every step has its
// own recorded start: the first from enqueued, every later one from a
// redelivery (in_progress) or a retry (waiting_for_retry).
func crashAudit(t *testing.T, db *pgxpool.Pool, requests []uuid.UUID) crashFigures {
	t.Helper()
	ctx := t.Context()
	rows, err := db.Query(ctx, `SELECT request_id, state FROM tasker.tasks`)
	require.NoError(t, err)
	states := map[uuid.UUID]string{}
	var (
		id    uuid.UUID
		state string
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &state}, func() error {
		states[id] = state
		return nil
	})
	require.NoError(t, err)
	require.Len(t, states, len(requests), "one task per request, none lost, none extra")
	for _, r := range requests {
		require.Equal(t, "complete", states[r], "task of request %s", r)
	}

	texts := func(sql string) []string {
		rows, err := db.Query(ctx, sql)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	require.Empty(t, texts(`SELECT format('step %s is %s', step_uuid, state) FROM tasker.steps WHERE state <> 'complete'`))
	require.Empty(t, texts(`
		SELECT format('step %s %s→%s attempt %s ×%s', step_uuid, from_state, to_state, attempt, count(*))
		FROM tasker.step_transitions GROUP BY step_uuid, from_state, to_state, attempt HAVING count(*) > 1
		UNION ALL
		SELECT format('task %s %s→%s ×%s', task_uuid, from_state, to_state, count(*))
		FROM tasker.task_transitions GROUP BY task_uuid, from_state, to_state HAVING count(*) > 1`),
		"no transition applied twice")
	require.Empty(t, texts(`
		WITH starts AS (
			SELECT step_uuid, from_state, attempt, id FROM tasker.step_transitions WHERE to_state = 'in_progress')
		SELECT format('step %s: %s attempts, starts: %s', s.step_uuid, s.attempts,
			(SELECT string_agg(format('%s→in_progress #%s', x.from_state, x.attempt), ', ' ORDER BY x.id)
				FROM starts x WHERE x.step_uuid = s.step_uuid))
		FROM tasker.steps s
		WHERE s.attempts <> (SELECT count(*) FROM starts x WHERE x.step_uuid = s.step_uuid)
			OR EXISTS (SELECT 1 FROM generate_series(1, s.attempts) k WHERE NOT EXISTS (
				SELECT 1 FROM starts x WHERE x.step_uuid = s.step_uuid AND x.attempt = k
					AND CASE WHEN k = 1 THEN x.from_state = 'enqueued'
						ELSE x.from_state IN ('in_progress', 'waiting_for_retry') END))`),
		"every attempt has its own recorded start")

	var fig crashFigures
	require.NoError(t, db.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM tasker.tasks), (SELECT count(*) FROM tasker.steps),
			(SELECT COALESCE(sum(attempts), 0) FROM tasker.steps),
			(SELECT count(*) FROM tasker.step_transitions WHERE from_state = 'in_progress' AND to_state = 'in_progress'),
			(SELECT count(*) FROM tasker.step_transitions WHERE from_state = 'waiting_for_retry' AND to_state = 'in_progress')`).
		Scan(&fig.tasks, &fig.steps, &fig.attempts, &fig.redeliveries, &fig.retries))
	return fig
}
