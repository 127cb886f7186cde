package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
)

// historySizes are the numbers of finished tasks already in the tables
// when a benchmark runs: the cost per step must not depend on them.
var historySizes = []int{1_000, 100_000}

// seedHistory inserts tasks finished linear tasks (four complete steps
// each, with their parents, children and full transition history) straight into the
// tables, set-based, and analyzes them. The identities are small ordered
// UUIDs, older than any UUIDv7 the store makes, as a real history's are.
// Foreign key triggers are skipped while seeding (the rows are consistent
// by construction) when the user may do so.
func seedHistory(tb testing.TB, pool *pgxpool.Pool, tasks int) {
	tb.Helper()
	ctx := context.Background()
	began := time.Now()
	var templateID int64
	require.NoError(tb, pool.QueryRow(ctx, `SELECT template_id FROM tasker.templates
		WHERE namespace = $1 AND name = $2`, testsupport.LinearNamespace, testsupport.LinearName).Scan(&templateID))
	statements := []string{
		`INSERT INTO tasker.tasks (task_uuid, request_id, correlation_id, template_id, namespace, name, version,
			state, context, created_at, updated_at, finished_at)
		SELECT lpad(to_hex(g), 32, '0')::uuid, r, r, $1, 'linear_workflow', 'mathematical_sequence', '1.0.0',
			'complete', '{"even_number": 6}', ts, ts + interval '1 second', ts + interval '1 second'
		FROM (SELECT g, ('00000001' || lpad(to_hex(g), 24, '0'))::uuid AS r,
				now() - interval '1 day' - ($2::int - g) * interval '1 second' AS ts
			FROM generate_series(1, $2::int) g) x`,
		`INSERT INTO tasker.steps (step_uuid, task_uuid, name, position, namespace, handler, config, state,
			attempts, max_attempts, retryable, timeout_ms, waiting_parents, result,
			enqueued_at, last_attempted_at, finished_at, duration_ms, parents, children)
		SELECT ('00000002' || lpad(to_hex(4 * g + i), 24, '0'))::uuid, lpad(to_hex(g), 32, '0')::uuid,
			'linear_step_' || (i + 1), i, 'linear_workflow', 'demo.math',
			'{"op": "square"}', 'complete', 1, 3, true, 30000, 0, '{"result": 36}', ts, ts, ts, 1,
			CASE WHEN i > 0 THEN ARRAY[('00000002' || lpad(to_hex(4 * g + i - 1), 24, '0'))::uuid] ELSE '{}' END,
			CASE WHEN i < 3 THEN ARRAY[('00000002' || lpad(to_hex(4 * g + i + 1), 24, '0'))::uuid] ELSE '{}' END
		FROM (SELECT g, now() - interval '1 day' - ($1::int - g) * interval '1 second' AS ts
			FROM generate_series(1, $1::int) g) x CROSS JOIN generate_series(0, 3) i
		ORDER BY 1`,
		`INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id, created_at)
		SELECT t.task_uuid, m.f, m.t, m.r, 'seed', t.created_at
		FROM tasker.tasks t CROSS JOIN (VALUES (1, NULL, 'pending', 'task created'),
			(2, 'pending', 'in_progress', 'first steps enqueued'),
			(3, 'in_progress', 'complete', 'every step complete')) m(o, f, t, r)
`,
		`INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id, created_at)
		SELECT s.step_uuid, s.task_uuid, m.f, m.t, m.r, m.a, 'seed', s.finished_at
		FROM tasker.steps s CROSS JOIN (VALUES (1, NULL, 'pending', 'task created', 0),
			(2, 'pending', 'enqueued', 'ready', 0), (3, 'enqueued', 'in_progress', 'worker took the message', 1),
			(4, 'in_progress', 'complete', 'handler succeeded', 1)) m(o, f, t, r, a)
`,
	}
	tx, err := pool.Begin(ctx)
	require.NoError(tb, err)
	defer func() { _ = tx.Rollback(ctx) }() // a no-op after commit
	var superuser bool
	require.NoError(tb, tx.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&superuser))
	if superuser {
		_, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica; SET LOCAL work_mem = '64MB'`)
		require.NoError(tb, err)
	}
	for i, sql := range statements {
		var err error
		if i == 0 {
			_, err = tx.Exec(ctx, sql, templateID, tasks)
		} else if i < 2 {
			_, err = tx.Exec(ctx, sql, tasks)
		} else {
			_, err = tx.Exec(ctx, sql)
		}
		require.NoError(tb, err, "seeding history: statement %d", i)
	}
	require.NoError(tb, tx.Commit(ctx))
	// VACUUM as well as ANALYZE: freshly inserted rows would otherwise
	// draw autovacuum (and hint-bit writes) into the timed part. The
	// checkpoint flushes the seeding's WAL before the timer starts.
	_, err = pool.Exec(ctx, `VACUUM (ANALYZE) tasker.tasks, tasker.steps, tasker.task_transitions, tasker.step_transitions`)
	require.NoError(tb, err)
	if superuser {
		_, err = pool.Exec(ctx, `CHECKPOINT`)
		require.NoError(tb, err)
	}
	var n int
	require.NoError(tb, pool.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks`).Scan(&n))
	require.Equal(tb, tasks, n)
	tb.Logf("seeded %d finished tasks in %s", tasks, time.Since(began).Round(time.Millisecond))
}

// benchHarness is a store on a fresh database holding history finished
// tasks.
func benchHarness(b *testing.B, history int) *harness {
	b.Helper()
	h := newHarness(b, store.Options{})
	seedHistory(b, h.pool, history)
	return h
}

// reportSteps reports the throughput in steps per second.
func reportSteps(b *testing.B, stepsPerOp int) {
	b.ReportMetric(float64(b.N*stepsPerOp)/b.Elapsed().Seconds(), "steps/s")
}

// benchmarkCreate times accepting one task request (creating the task, its
// steps, edges and transitions, enqueueing its roots, deleting the
// message). The requests are sent and read before the timer starts.
func benchmarkCreate(b *testing.B, namespace, name string, steps int) {
	for _, history := range historySizes {
		h := benchHarness(b, history)
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			h := h.with(b)
			bodies := make([][]byte, b.N)
			for i := range bodies {
				body, err := request(namespace, name, `{"even_number": 6}`).Encode()
				require.NoError(b, err)
				bodies[i] = body
			}
			for i := 0; i < len(bodies); i += 1000 {
				_, err := h.q.SendBatch(h.ctx, queue.TaskRequestsQueue, bodies[i:min(i+1000, len(bodies))], 0)
				require.NoError(b, err)
			}
			msgs := h.readAll(queue.TaskRequestsQueue)
			require.Len(b, msgs, b.N)

			b.ResetTimer()
			for i := range b.N {
				out, err := h.st.RequestAccept(h.ctx, msgs[i])
				if err != nil || !out.Created {
					b.Fatalf("accepting request: %+v %v", out, err)
				}
			}
			b.StopTimer()
			reportSteps(b, steps)
		})
	}
}

// BenchmarkCreateLinear4 creates linear tasks (four steps).
func BenchmarkCreateLinear4(b *testing.B) {
	benchmarkCreate(b, testsupport.LinearNamespace, testsupport.LinearName, 4)
}

// BenchmarkCreateMixedDAG creates mixed DAG tasks (seven steps, eight
// edges).
func BenchmarkCreateMixedDAG(b *testing.B) {
	benchmarkCreate(b, testsupport.MixedDAGNamespace, testsupport.MixedDAGName, 7)
}

// benchmarkCallers runs bench for each history size, from 1 caller and
// from 64 at once (as a node's workers or its step-result actor call the
// store, which groups concurrent calls into batches).
func benchmarkCallers(b *testing.B, bench func(b *testing.B, h *harness, callers int)) {
	for _, history := range historySizes {
		h := benchHarness(b, history)
		for _, callers := range []int{1, 64} {
			b.Run(fmt.Sprintf("history=%d/callers=%d", history, callers), func(b *testing.B) {
				bench(b, h.with(b), callers)
			})
		}
	}
}

// firstSteps creates b.N linear tasks and returns their first steps'
// messages, read.
func firstSteps(b *testing.B, h *harness) []queue.Message {
	createFirstSteps(b, h)
	steps := h.readAll(queue.NamespaceQueue(testsupport.LinearNamespace))
	require.Len(b, steps, b.N)
	return steps
}

// createFirstSteps creates b.N linear tasks, their first steps' messages
// left in the queue (the messages of earlier rounds purged first).
func createFirstSteps(b *testing.B, h *harness) {
	_, err := h.q.Purge(h.ctx, queue.NamespaceQueue(testsupport.LinearNamespace))
	require.NoError(b, err)
	reqs := make([]struct{}, b.N)
	require.NoError(b, concurrently(reqs, func(struct{}) error {
		_, err := h.st.TaskCreate(h.ctx, request(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`))
		return err
	}))
}

// analyze gives the planner the tables' statistics before the timer starts.
func analyze(b *testing.B, h *harness) {
	_, err := h.pool.Exec(h.ctx, `ANALYZE tasker.tasks, tasker.steps`)
	require.NoError(b, err)
}

// BenchmarkResultApply times applying one step result: the first step of a
// linear task completes and the second is enqueued. The b.N steps are
// created, started and their outcomes recorded before the timer starts.
func BenchmarkResultApply(b *testing.B) {
	benchmarkCallers(b, func(b *testing.B, h *harness, callers int) {
		require.NoError(b, concurrently(firstSteps(b, h), h.tryRunStep))
		results := h.readAll(queue.StepResultsQueue)
		require.Len(b, results, b.N)
		analyze(b, h)
		apply := func(m queue.Message) error {
			out, err := h.st.ResultApply(h.ctx, m)
			if err == nil && (out.Ignored || out.Enqueued != 1) {
				err = fmt.Errorf("applying result: %+v", out)
			}
			return err
		}
		b.ResetTimer()
		if err := concurrentlyN(callers, results, apply); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		reportSteps(b, 1)
	})
}

// BenchmarkStepStart times starting one attempt as a worker does when it
// takes a step message: the step moves to in_progress with its transition,
// and the work comes back with its task's context and its parents' results.
// The b.N first steps of linear tasks are created and their messages read
// before the timer starts.
func BenchmarkStepStart(b *testing.B) {
	benchmarkCallers(b, func(b *testing.B, h *harness, callers int) {
		msgs := firstSteps(b, h)
		steps := make([]uuid.UUID, len(msgs))
		for i, m := range msgs {
			sm, err := queue.DecodeStepMessage(m.Body)
			require.NoError(b, err)
			steps[i] = sm.StepUUID
		}
		analyze(b, h)
		start := func(step uuid.UUID) error {
			w, err := h.st.StepStart(h.ctx, step)
			if err == nil && (w.Attempt != 1 || w.OutcomeWaiting) {
				err = fmt.Errorf("starting step %s: %+v", step, w)
			}
			return err
		}
		b.ResetTimer()
		if err := concurrentlyN(callers, steps, start); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		reportSteps(b, 1)
	})
}

// BenchmarkStepsTake times a poller's read of a step queue that starts the
// steps it takes, fifty messages a read (a namespace's default batch), per
// step: the messages are read, the steps move to in_progress with their
// transitions, and the work comes back. The b.N first steps of linear tasks
// are created before the timer starts.
func BenchmarkStepsTake(b *testing.B) {
	for _, history := range historySizes {
		h := benchHarness(b, history)
		b.Run(fmt.Sprintf("history=%d/batch=50", history), func(b *testing.B) {
			h := h.with(b)
			createFirstSteps(b, h)
			analyze(b, h)
			b.ResetTimer()
			for n := 0; n < b.N; {
				taken, err := h.st.StepsTake(h.ctx, testsupport.LinearNamespace, readVT, 50)
				if err != nil {
					b.Fatal(err)
				}
				if len(taken) == 0 {
					b.Fatalf("the queue ran dry after %d of %d steps", n, b.N)
				}
				for _, tk := range taken {
					if tk.Started.Attempt != 1 {
						b.Fatalf("message %d started no first attempt: %+v", tk.Message.ID, tk.Started)
					}
					if _, err := tk.Started.Work(); err != nil {
						b.Fatal(err)
					}
				}
				n += len(taken)
			}
			b.StopTimer()
			reportSteps(b, 1)
		})
	}
}

// BenchmarkOutcomeHandOver times, per step, what follows a handler's run on
// a node that applies its own workers' outcomes, from 64 callers at once:
// the outcome recorded on the step and then applied from the row
// (recorded: two calls, two commits), or carried to the apply and recorded
// with the move (carried: one call, one commit). Either way the first step
// of a linear task completes and the second is enqueued. The b.N first
// steps are created and started, and their handlers run, before the timer
// starts.
func BenchmarkOutcomeHandOver(b *testing.B) {
	type ran struct {
		msg queue.Message
		w   store.StepWork
		o   store.Outcome
	}
	for _, history := range historySizes {
		h := benchHarness(b, history)
		for _, way := range []string{"recorded", "carried"} {
			b.Run(fmt.Sprintf("history=%d/callers=64/%s", history, way), func(b *testing.B) {
				h := h.with(b)
				msgs := firstSteps(b, h)
				runs := make([]ran, len(msgs))
				for i, m := range msgs {
					w := h.start(m)
					runs[i] = ran{msg: m, w: w, o: h.outcome(m, w)}
				}
				analyze(b, h)
				handOver := func(r ran) error {
					due := store.OutcomeDue{MsgID: r.msg.ID, Namespace: r.w.Namespace, TaskUUID: r.w.TaskUUID,
						StepUUID: r.w.StepUUID, Attempt: r.w.Attempt}
					if way == "carried" {
						c, err := r.o.Carry()
						if err != nil {
							return err
						}
						due.Carried, due.Outcome = true, c
					} else {
						r.o.Direct = true
						if err := h.st.StepOutcomeRecord(h.ctx, r.o); err != nil {
							return err
						}
					}
					out, err := h.st.OutcomeApply(h.ctx, due)
					if err == nil && (out.Ignored || out.Enqueued != 1) {
						err = fmt.Errorf("applying outcome: %+v", out)
					}
					return err
				}
				b.ResetTimer()
				if err := concurrentlyN(64, runs, handOver); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				reportSteps(b, 1)
			})
		}
	}
}
