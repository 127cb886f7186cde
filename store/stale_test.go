package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// TestRedeliveryAfterLostWorker lets a worker take a step and vanish: the
// message comes back, a second worker starts attempt 2, and the first
// worker's late outcome is stale and leaves the message alone.
func TestRedeliveryAfterLostWorker(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	ns := queue.NamespaceQueue(testsupport.LinearNamespace)
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)

	msgs := h.readAll(ns)
	require.Len(t, msgs, 1)
	lost := h.start(msgs[0])
	require.Equal(t, 1, lost.Attempt)
	lostOutcome := h.outcome(msgs[0], lost)

	// The visibility timeout passes (made to pass now) and the message is
	// delivered again.
	require.NoError(t, h.q.SetVisibility(h.ctx, ns, msgs[0].ID, 0))
	again := h.readAll(ns)
	require.Len(t, again, 1)
	require.Equal(t, msgs[0].ID, again[0].ID)
	require.Equal(t, 2, again[0].ReadCount)
	w := h.start(again[0])
	require.Equal(t, 2, w.Attempt)

	// The first worker comes back with attempt 1.
	err := h.st.StepOutcomeRecord(h.ctx, lostOutcome)
	require.ErrorIs(t, err, store.ErrStale)
	live, _ := h.inQueue(ns, msgs[0].ID)
	require.True(t, live, "a stale outcome must leave the message")
	require.Zero(t, h.queueLen(queue.StepResultsQueue), "a stale outcome sends no result")
	s := step(t, h.show(task), "linear_step_1")
	require.Equal(t, workflow.StepStateInProgress, s.State)
	require.Nil(t, s.Result)

	// The second worker finishes; the task runs to the end.
	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, h.outcome(again[0], w)))
	// The same call again (its answer lost to a dropped connection) is told
	// it is recorded, and nothing is recorded or sent twice.
	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, h.outcome(again[0], w)), "a repeated call is answered as recorded")
	require.EqualValues(t, 1, h.queueLen(queue.StepResultsQueue), "an outcome is recorded once")
	d := h.runToEnd(task)
	require.Equal(t, workflow.TaskStateComplete, d.State)
	require.Equal(t, 69.0, number(t, step(t, d, "linear_step_4").Result))
	s = step(t, d, "linear_step_1")
	require.Equal(t, 2, s.Attempts)
	require.Equal(t, 36.0, number(t, s.Result))
	require.Equal(t, []string{
		"→pending@0", "pending→enqueued@0", "enqueued→in_progress@1",
		"in_progress→in_progress@2", "in_progress→complete@2",
	}, stepMoves(d)["linear_step_1"])
	for _, tr := range d.StepTransitions {
		if tr.StepName == "linear_step_1" && tr.From == "in_progress" && tr.To == "in_progress" {
			require.Contains(t, tr.Reason, "redelivered")
		}
	}
	for _, name := range []string{"linear_step_2", "linear_step_3", "linear_step_4"} {
		require.Equal(t, cleanStepHistory, stepMoves(d)[name], name)
	}
}

// TestStaleResultOfOldAttempt applies a result whose attempt is no longer
// current: it is acknowledged and ignored.
func TestStaleResultOfOldAttempt(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	ns := queue.NamespaceQueue(testsupport.LinearNamespace)
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	msgs := h.readAll(ns)
	require.Len(t, msgs, 1)
	w := h.start(msgs[0])
	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, h.outcome(msgs[0], w)))

	// A forged result for attempt 7 of the same step.
	body, err := queue.StepResult{TaskUUID: w.TaskUUID, StepUUID: w.StepUUID, CorrelationID: w.CorrelationID, Attempt: 7}.Encode()
	require.NoError(t, err)
	_, err = h.q.Send(h.ctx, queue.StepResultsQueue, body, 0)
	require.NoError(t, err)
	// And one that does not decode.
	_, err = h.q.Send(h.ctx, queue.StepResultsQueue, []byte(`{"task_uuid": "nope"}`), 0)
	require.NoError(t, err)

	results := h.readAll(queue.StepResultsQueue)
	require.Len(t, results, 3)
	applied := h.apply(results[0])
	require.False(t, applied.Ignored)
	stale := h.apply(results[1])
	require.True(t, stale.Ignored)
	require.Contains(t, stale.Reason, "attempt 7 is not current")
	bad := h.apply(results[2])
	require.True(t, bad.Ignored)
	require.Contains(t, bad.Reason, "task_uuid")
	_, archived := h.inQueue(queue.StepResultsQueue, results[2].ID)
	require.True(t, archived, "an undecodable result is archived")
	require.Zero(t, h.queueLen(queue.StepResultsQueue))

	requireCleanRun(t, h.runToEnd(task))
}
