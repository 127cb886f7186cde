package store_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// TestDiamondJoinRace applies the two branch results of a diamond at the
// same moment from two goroutines, 500 times: the join is enqueued exactly
// once every time. Tasks are prepared a batch at a time to keep it quick.
func TestDiamondJoinRace(t *testing.T) {
	t.Parallel()
	const batches, perBatch = 10, 50
	h := newHarness(t, store.Options{})
	ns := testsupport.DiamondNamespace

	for range batches {
		// Prepare the batch concurrently: create the tasks, run their roots,
		// apply those results, run both branches of each.
		require.NoError(t, concurrently(make([]struct{}, perBatch), func(struct{}) error {
			_, err := h.st.TaskCreate(h.ctx, request(ns, testsupport.DiamondName, `{"even_number": 4}`))
			return err
		}))
		roots := h.readAll(queue.NamespaceQueue(ns))
		require.Len(t, roots, perBatch)
		require.NoError(t, concurrently(roots, h.tryRunStep))
		results := h.readAll(queue.StepResultsQueue)
		require.Len(t, results, perBatch)
		require.NoError(t, concurrently(results, func(m queue.Message) error {
			out, err := h.st.ResultApply(h.ctx, m)
			if err == nil && out.Enqueued != 2 {
				err = fmt.Errorf("root result enqueued %d branches: %+v", out.Enqueued, out)
			}
			return err
		}))
		branches := h.readAll(queue.NamespaceQueue(ns))
		require.Len(t, branches, 2*perBatch)
		require.NoError(t, concurrently(branches, h.tryRunStep))

		pairs := map[uuid.UUID][]queue.Message{}
		for _, m := range h.readAll(queue.StepResultsQueue) {
			res, err := queue.DecodeStepResult(m.Body)
			require.NoError(t, err)
			pairs[res.TaskUUID] = append(pairs[res.TaskUUID], m)
		}
		require.Len(t, pairs, perBatch)
		// Two tasks race at a time, each with its own pair of goroutines
		// released together.
		tasks := make([]uuid.UUID, 0, len(pairs))
		for task := range pairs {
			tasks = append(tasks, task)
		}
		require.NoError(t, concurrentlyN(2, tasks, func(task uuid.UUID) error {
			pair := pairs[task]
			if len(pair) != 2 {
				return fmt.Errorf("task %s has %d branch results", task, len(pair))
			}
			outs, errs := race(pair, h.applyResult)
			switch {
			case errs[0] != nil || errs[1] != nil:
				return fmt.Errorf("task %s: %w", task, errors.Join(errs[0], errs[1]))
			case outs[0].Ignored || outs[1].Ignored:
				return fmt.Errorf("task %s: a branch result was ignored: %+v", task, outs)
			case outs[0].StepState != workflow.StepStateComplete || outs[1].StepState != workflow.StepStateComplete:
				return fmt.Errorf("task %s: branches not complete: %+v", task, outs)
			case outs[0].Enqueued+outs[1].Enqueued != 1:
				return fmt.Errorf("task %s: join enqueued %d times", task, outs[0].Enqueued+outs[1].Enqueued)
			}
			return nil
		}))
		// Take the joins' messages out of sight (they stay in the table for
		// the count below) so the next batch reads only its own.
		joins := h.readAll(queue.NamespaceQueue(ns))
		require.Len(t, joins, perBatch)
	}

	// Every join has exactly one message and one pending→enqueued row.
	rows, err := h.pool.Query(h.ctx, `
		SELECT s.step_uuid,
			(SELECT count(*) FROM pgmq.q_diamond_workflow_queue q WHERE q.message->>'step_uuid' = s.step_uuid::text),
			(SELECT count(*) FROM tasker.step_transitions x WHERE x.step_uuid = s.step_uuid
				AND x.from_state = 'pending' AND x.to_state = 'enqueued'),
			s.state
		FROM tasker.steps s WHERE s.name = 'diamond_end'`)
	require.NoError(t, err)
	joins := 0
	for rows.Next() {
		var (
			id                uuid.UUID
			messages, enqueue int
			state             string
		)
		require.NoError(t, rows.Scan(&id, &messages, &enqueue, &state))
		require.Equal(t, 1, messages, "messages for join %s", id)
		require.Equal(t, 1, enqueue, "enqueue transitions of join %s", id)
		require.Equal(t, string(workflow.StepStateEnqueued), state, "join %s", id)
		joins++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, batches*perBatch, joins)
	require.EqualValues(t, batches*perBatch, h.queueLen(queue.NamespaceQueue(ns)))
}

// TestDuplicateResult applies the same result twice (the body sent twice):
// the state changes once and the second is ignored.
func TestDuplicateResult(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	require.Equal(t, 1, h.work(testsupport.LinearNamespace))
	results := h.readAll(queue.StepResultsQueue)
	require.Len(t, results, 1)
	_, err := h.q.Send(h.ctx, queue.StepResultsQueue, results[0].Body, 0)
	require.NoError(t, err)
	again := h.readAll(queue.StepResultsQueue)
	require.Len(t, again, 1)
	require.NotEqual(t, results[0].ID, again[0].ID)

	first := h.apply(results[0])
	require.False(t, first.Ignored)
	require.Equal(t, workflow.StepStateComplete, first.StepState)
	require.Equal(t, 1, first.Enqueued)

	second := h.apply(again[0])
	require.True(t, second.Ignored)
	require.Contains(t, second.Reason, "attempt 1 is not current")
	require.Equal(t, workflow.StepStateComplete, second.StepState)
	require.Zero(t, second.Enqueued)
	require.Zero(t, h.queueLen(queue.StepResultsQueue), "an ignored result is acknowledged")
	require.EqualValues(t, 1, h.queueLen(queue.NamespaceQueue(testsupport.LinearNamespace)), "step 2 enqueued once")

	d := h.runToEnd(task)
	requireCleanRun(t, d)
	require.Equal(t, 69.0, number(t, step(t, d, "linear_step_4").Result))
}

// TestDuplicateResultRace applies two copies of one result at the same
// moment: exactly one takes effect.
func TestDuplicateResultRace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	const tasks = 50
	for range tasks {
		_, err := h.st.TaskCreate(h.ctx, request(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`))
		require.NoError(t, err)
	}
	require.Equal(t, tasks, h.work(testsupport.LinearNamespace))
	for _, m := range h.readAll(queue.StepResultsQueue) {
		_, err := h.q.Send(h.ctx, queue.StepResultsQueue, m.Body, 0)
		require.NoError(t, err)
		copies := h.readAll(queue.StepResultsQueue)
		require.Len(t, copies, 1)
		pair := []queue.Message{m, copies[0]}
		outs, errs := race(pair, h.applyResult)
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		require.True(t, outs[0].Ignored != outs[1].Ignored, "exactly one applies: %+v", outs)
		require.Equal(t, 1, outs[0].Enqueued+outs[1].Enqueued)
	}
	var moves int
	require.NoError(t, h.pool.QueryRow(h.ctx, `SELECT count(*) FROM tasker.step_transitions
		WHERE from_state = 'in_progress' AND to_state = 'complete'`).Scan(&moves))
	require.Equal(t, tasks, moves)
	require.EqualValues(t, tasks, h.queueLen(queue.NamespaceQueue(testsupport.LinearNamespace)))
}

// TestBatchedHotPaths drives 40 linear tasks with every call of a stage made
// at once from 40 goroutines, so the store groups them into batches, with
// one step started twice (its second start is a redelivery): each start,
// outcome and result is answered for itself — the superseded attempt's
// outcome alone is stale — and every task ends complete with exactly the
// transitions of a clean run, but for the redelivered step.
func TestBatchedHotPaths(t *testing.T) {
	t.Parallel()
	const tasks = 40
	h := newHarness(t, store.Options{})
	ns := testsupport.LinearNamespace
	ids := make([]uuid.UUID, tasks)
	for i := range ids {
		ids[i] = h.submit(ns, testsupport.LinearName, `{"even_number": 6}`)
	}

	// Roots: start all at once, the first one twice.
	roots := h.readAll(queue.NamespaceQueue(ns))
	require.Len(t, roots, tasks)
	msgs := append([]queue.Message{roots[0]}, roots...)
	works, errs := race(msgs, func(m queue.Message) (store.StepWork, error) {
		sm, err := queue.DecodeStepMessage(m.Body)
		if err != nil {
			return store.StepWork{}, err
		}
		return h.st.StepStart(h.ctx, sm.StepUUID)
	})
	for i, err := range errs {
		require.NoError(t, err, "start %d", i)
	}
	require.ElementsMatch(t, []int{1, 2}, []int{works[0].Attempt, works[1].Attempt}, "the step started twice has attempts 1 and 2")
	for _, w := range works[2:] {
		require.Equal(t, 1, w.Attempt)
	}

	// Outcomes: all at once; only the superseded attempt's is stale.
	indexes := make([]int, len(msgs))
	for i := range indexes {
		indexes[i] = i
	}
	_, errs = race(indexes, func(i int) (struct{}, error) {
		return struct{}{}, h.st.StepOutcomeRecord(h.ctx, h.outcome(msgs[i], works[i]))
	})
	stale := 0
	for i, err := range errs {
		if errors.Is(err, store.ErrStale) {
			stale++
			require.Equal(t, 1, works[i].Attempt, "the stale outcome is attempt 1's")
			continue
		}
		require.NoError(t, err, "outcome %d", i)
	}
	require.Equal(t, 1, stale)

	// The remaining stages: every result, then every step message, at once.
	for stage := 0; stage < 4; stage++ {
		results := h.readAll(queue.StepResultsQueue)
		require.Len(t, results, tasks, "stage %d", stage)
		outs, errs := race(results, h.applyResult)
		for i, err := range errs {
			require.NoError(t, err)
			require.False(t, outs[i].Ignored, outs[i].Reason)
		}
		next := h.readAll(queue.NamespaceQueue(ns))
		if stage == 3 {
			require.Empty(t, next)
			break
		}
		require.Len(t, next, tasks, "stage %d", stage)
		_, errs = race(next, func(m queue.Message) (struct{}, error) { return struct{}{}, h.tryRunStep(m) })
		require.NoError(t, errors.Join(errs...))
	}

	for i, id := range ids {
		d := h.show(id)
		require.Equal(t, workflow.TaskStateComplete, d.State, "task %d", i)
		if id != works[0].TaskUUID {
			requireCleanRun(t, d)
		}
	}
	d := h.show(works[0].TaskUUID)
	first := d.Steps[0]
	require.Equal(t, 2, first.Attempts, "the step started twice ran two attempts")
}
