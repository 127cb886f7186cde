package store_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// runDirect is a worker turn of a node that runs the step-result actor: the
// outcome is recorded without a result message, and the step message stays
// until the outcome is applied. It returns what the step-result actor is
// handed.
func (h *harness) runDirect(msg queue.Message) store.OutcomeDue {
	h.t.Helper()
	w := h.start(msg)
	require.False(h.t, w.OutcomeWaiting)
	o := h.outcome(msg, w)
	o.Direct = true
	require.NoError(h.t, h.st.StepOutcomeRecord(h.ctx, o))
	return store.OutcomeDue{MsgID: msg.ID, Namespace: w.Namespace, TaskUUID: w.TaskUUID, StepUUID: w.StepUUID, Attempt: w.Attempt}
}

// runToEndDirect runs a task to its end through outcomes handed over in the
// node, checking after each step that no result message was sent and that
// the step message went with its outcome's application.
func (h *harness) runToEndDirect(task uuid.UUID) store.TaskDetail {
	h.t.Helper()
	return h.runRounds(task, func(q string, tk store.Task) {
		msgs := h.readAll(q)
		require.NotEmpty(h.t, msgs, "task %s is stuck in %s", task, tk.State)
		for _, m := range msgs {
			due := h.runDirect(m)
			live, _ := h.inQueue(q, m.ID)
			require.True(h.t, live, "the step message stays until its outcome is applied")
			require.Zero(h.t, h.queueLen(queue.StepResultsQueue), "no result message")
			out, err := h.st.OutcomeApply(h.ctx, due)
			require.NoError(h.t, err)
			require.False(h.t, out.Ignored, "outcome ignored: %s", out.Reason)
			live, archived := h.inQueue(q, m.ID)
			require.False(h.t, live || archived, "the step message is deleted with the outcome's application")
		}
	})
}

// Outcomes handed over in the node run the reference workflows to the same
// end, with the same transitions, as results through the result queue.
func TestHandedOverOutcomesRunWorkflows(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	for _, w := range []struct{ ns, name string }{
		{testsupport.LinearNamespace, testsupport.LinearName},
		{testsupport.DiamondNamespace, testsupport.DiamondName},
		{testsupport.MixedDAGNamespace, testsupport.MixedDAGName},
	} {
		t.Run(w.ns, func(t *testing.T) {
			h := h.with(t)
			direct := h.runToEndDirect(h.submit(w.ns, w.name, `{"even_number": 6}`))
			requireCleanRun(t, direct)
			viaQueue := h.runToEnd(h.submit(w.ns, w.name, `{"even_number": 6}`))
			require.Equal(t, taskMoves(viaQueue), taskMoves(direct))
			require.Equal(t, stepMoves(viaQueue), stepMoves(direct))
		})
	}
}

// An outcome whose node died before applying it comes back with its step
// message: StepStart then starts nothing and says the outcome waits, and
// applying it from there completes the step once; a second application is
// ignored.
func TestHandedOverOutcomeComesBackWithItsMessage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	task, q, first := h.linearFirst()
	lost := h.runDirect(first) // never applied: the node is gone

	// The visibility timeout ends; another worker reads the message.
	require.NoError(t, h.q.SetVisibility(h.ctx, q, first.ID, 0))
	again := h.readAll(q)
	require.Len(t, again, 1)
	require.Equal(t, first.ID, again[0].ID)
	w := h.start(again[0])
	require.True(t, w.OutcomeWaiting)
	require.Equal(t, lost.Attempt, w.Attempt)
	require.Equal(t, lost.StepUUID, w.StepUUID)

	due := store.OutcomeDue{MsgID: again[0].ID, Namespace: w.Namespace, TaskUUID: w.TaskUUID, StepUUID: w.StepUUID, Attempt: w.Attempt}
	out, err := h.st.OutcomeApply(h.ctx, due)
	require.NoError(t, err)
	require.False(t, out.Ignored, out.Reason)
	require.Equal(t, workflow.StepStateComplete, out.StepState)
	require.Equal(t, 1, out.Enqueued)

	// The first node's hand-over arrives late: it changes nothing.
	out, err = h.st.OutcomeApply(h.ctx, lost)
	require.NoError(t, err)
	require.True(t, out.Ignored)
	require.Contains(t, out.Reason, "not current")

	d := h.runToEndDirect(task)
	requireCleanRun(t, d)
	require.Equal(t, 1, step(t, d, "linear_step_1").Attempts, "the step ran once")
}

// A Direct outcome recorded again — the worker's retry after the commit of
// its first try lost its answer — is answered as recorded and changes
// nothing, so the worker hands it over now rather than leave it waiting for
// its message's visibility timeout; one of an attempt no longer current is
// still stale.
func TestDirectOutcomeRecordedAgainAfterLostAnswer(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	task, q, first := h.linearFirst()
	w := h.start(first)
	o := h.outcome(first, w)
	o.Direct = true
	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, o))
	before := step(t, h.show(task), "linear_step_1")
	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, o), "the repeated call is answered as recorded")
	after := step(t, h.show(task), "linear_step_1")
	require.Equal(t, before, after, "recording again changes nothing")
	require.Zero(t, h.queueLen(queue.StepResultsQueue), "no result message")
	live, _ := h.inQueue(q, first.ID)
	require.True(t, live, "the step message waits for the outcome's application")

	stale := o
	stale.Attempt = w.Attempt + 1
	require.ErrorIs(t, h.st.StepOutcomeRecord(h.ctx, stale), store.ErrStale)

	out, err := h.st.OutcomeApply(h.ctx, store.OutcomeDue{MsgID: first.ID, Namespace: w.Namespace,
		TaskUUID: w.TaskUUID, StepUUID: w.StepUUID, Attempt: w.Attempt})
	require.NoError(t, err)
	require.False(t, out.Ignored, out.Reason)
	require.ErrorIs(t, h.st.StepOutcomeRecord(h.ctx, o), store.ErrStale, "an applied outcome is not recorded again")
	d := h.runToEndDirect(task)
	requireCleanRun(t, d)
}

// A handed-over outcome of a task cancelled meanwhile is ignored, and its
// step message acknowledged; one that keeps failing to apply is
// quarantined: the step fails as poison and its message is archived with
// the reason.
func TestHandedOverOutcomeIgnoredOrQuarantined(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	q := queue.NamespaceQueue(testsupport.LinearNamespace)

	t.Run("cancelled", func(t *testing.T) {
		h := h.with(t)
		task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
		msgs := h.readAll(q)
		require.Len(t, msgs, 1)
		due := h.runDirect(msgs[0])
		require.NoError(t, h.st.TaskCancel(h.ctx, task, "cancelled by the test"))
		out, err := h.st.OutcomeApply(h.ctx, due)
		require.NoError(t, err)
		require.True(t, out.Ignored)
		live, archived := h.inQueue(q, msgs[0].ID)
		require.False(t, live || archived, "the step message is acknowledged")
		require.Equal(t, workflow.TaskStateCancelled, h.show(task).State)
	})

	t.Run("quarantined", func(t *testing.T) {
		h := h.with(t)
		task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
		msgs := h.readAll(q)
		require.Len(t, msgs, 1)
		due := h.runDirect(msgs[0])
		out, err := h.st.OutcomeQuarantine(h.ctx, due, "result delivered 3 times")
		require.NoError(t, err)
		require.True(t, out.Archived)
		require.Equal(t, workflow.StepStateError, out.StepState)
		live, archived := h.inQueue(q, msgs[0].ID)
		require.False(t, live)
		require.True(t, archived, "the step message is archived")
		list, err := h.st.ArchivedList(h.ctx, store.ArchivedParams{Queue: q})
		require.NoError(t, err)
		var reasons []string
		for _, m := range list {
			if m.MsgID == msgs[0].ID {
				reasons = append(reasons, m.Reason)
			}
		}
		require.Len(t, reasons, 1)
		require.Contains(t, reasons[0], "result delivered 3 times")
		d := h.show(task)
		require.Equal(t, workflow.TaskStateError, d.State)
	})

	t.Run("archive goes through the result queue", func(t *testing.T) {
		h := h.with(t)
		err := h.st.StepOutcomeRecord(h.ctx, store.Outcome{Direct: true, Archive: true, Namespace: testsupport.LinearNamespace,
			StepUUID: uuid.New(), Attempt: 1})
		require.Error(t, err)
		require.False(t, errors.Is(err, store.ErrStale))
		require.Contains(t, err.Error(), "result queue")
	})
}

// A node that applies no outcomes passes a waiting one on through the
// result queue: the result message is sent and the step message deleted;
// once the outcome no longer waits, only the step message is deleted.
func TestWaitingOutcomeForwardedToResultQueue(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	task, q, first := h.linearFirst()
	h.runDirect(first)
	require.NoError(t, h.q.SetVisibility(h.ctx, q, first.ID, 0))
	again := h.readAll(q)
	require.Len(t, again, 1)
	w := h.start(again[0])
	require.True(t, w.OutcomeWaiting)
	due := store.OutcomeDue{MsgID: again[0].ID, Namespace: w.Namespace, TaskUUID: w.TaskUUID, StepUUID: w.StepUUID,
		CorrelationID: w.CorrelationID, Attempt: w.Attempt}
	require.NoError(t, h.st.OutcomeForward(h.ctx, due))
	live, _ := h.inQueue(q, again[0].ID)
	require.False(t, live, "the step message is deleted")
	results := h.readAll(queue.StepResultsQueue)
	require.Len(t, results, 1)
	res, err := queue.DecodeStepResult(results[0].Body)
	require.NoError(t, err)
	require.Equal(t, queue.StepResult{TaskUUID: task, StepUUID: w.StepUUID, CorrelationID: w.CorrelationID, Attempt: 1}, res)
	out := h.apply(results[0])
	require.False(t, out.Ignored, out.Reason)
	require.Equal(t, workflow.StepStateComplete, out.StepState)

	// Forwarding again, late: nothing is sent.
	require.NoError(t, h.st.OutcomeForward(h.ctx, due))
	require.Zero(t, h.queueLen(queue.StepResultsQueue))
	requireCleanRun(t, h.runToEnd(task))
}

// runCarried is a worker turn that hands its outcome, recorded nowhere
// yet, to the step-result actor (OutcomeDue.Carried), which records and
// applies it in one transaction.
func (h *harness) runCarried(msg queue.Message) store.ResultOutcome {
	h.t.Helper()
	w := h.start(msg)
	due := h.carried(msg, w, h.outcome(msg, w))
	out, err := h.st.OutcomeApply(h.ctx, due)
	require.NoError(h.t, err)
	return out
}

// carried is the hand-over of outcome o of attempt w, carried.
func (h *harness) carried(msg queue.Message, w store.StepWork, o store.Outcome) store.OutcomeDue {
	h.t.Helper()
	c, err := o.Carry()
	require.NoError(h.t, err)
	return store.OutcomeDue{MsgID: msg.ID, Namespace: w.Namespace, TaskUUID: w.TaskUUID, StepUUID: w.StepUUID,
		Attempt: w.Attempt, Carried: true, Outcome: c}
}

// runToEndCarried runs a task to its end through carried outcomes, checking
// that each went with its step message and sent no result message.
func (h *harness) runToEndCarried(task uuid.UUID) store.TaskDetail {
	h.t.Helper()
	return h.runRounds(task, func(q string, tk store.Task) {
		h.makeVisible(tk.Namespace) // a retry's delay, passed
		msgs := h.readAll(q)
		require.NotEmpty(h.t, msgs, "task %s is stuck in %s", task, tk.State)
		for _, m := range msgs {
			out := h.runCarried(m)
			require.False(h.t, out.Ignored, "outcome ignored: %s", out.Reason)
			live, archived := h.inQueue(q, m.ID)
			require.False(h.t, live || archived, "the step message is deleted with the outcome")
			require.Zero(h.t, h.queueLen(queue.StepResultsQueue), "no result message")
		}
	})
}

// stepFacts is what a step records of its attempts, without its times.
func stepFacts(d store.TaskDetail) map[string]string {
	out := map[string]string{}
	for _, s := range d.Steps {
		out[s.Name] = fmt.Sprintf("%s attempts=%d result=%s error=%s duration=%t",
			s.State, s.Attempts, s.Result, s.Error, s.DurationMS != nil)
	}
	return out
}

// Carried outcomes run the reference workflows, failures and retries
// included, to the same end as outcomes recorded first: the same
// transitions, results and errors.
func TestCarriedOutcomesRunWorkflows(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	retry := h.failing(func(int) error {
		return &workflow.StepError{Kind: "http_status", Message: "busy", Retryable: true, HTTPStatus: 503, RetryAfter: 2 * time.Second}
	}, 1)
	for _, w := range []struct {
		ns, name, failing string
	}{
		{testsupport.LinearNamespace, testsupport.LinearName, ""},
		{testsupport.DiamondNamespace, testsupport.DiamondName, "diamond_start"},
		{testsupport.MixedDAGNamespace, testsupport.MixedDAGName, ""},
	} {
		t.Run(w.ns, func(t *testing.T) {
			h := h.with(t)
			if w.failing != "" {
				h.inject(w.failing, retry)
				defer h.inject(w.failing, nil)
			}
			carried := h.runToEndCarried(h.submit(w.ns, w.name, `{"even_number": 6}`))
			viaQueue := h.runRounds(h.submit(w.ns, w.name, `{"even_number": 6}`), func(string, store.Task) {
				h.makeVisible(w.ns)
				h.work(w.ns)
				h.applyAll()
			})
			require.Equal(t, workflow.TaskStateComplete, carried.State)
			if w.failing != "" {
				require.Equal(t, 2, step(t, carried, w.failing).Attempts, "the first attempt failed, the second ran")
			}
			require.Equal(t, taskMoves(viaQueue), taskMoves(carried))
			require.Equal(t, stepMoves(viaQueue), stepMoves(carried))
			require.Equal(t, stepFacts(viaQueue), stepFacts(carried))
		})
	}
}

// A carried outcome of an attempt no longer current changes nothing, its
// step message included (Unrecorded): the worker then records it
// (StepOutcomeRecord), as it would have without the hand-over. One of a
// task no longer in progress is ignored as any other outcome: its step
// message is acknowledged.
func TestCarriedOutcomeNotAppliedChangesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	task, q, first := h.linearFirst()
	w := h.start(first)
	o := h.outcome(first, w)

	stale := h.carried(first, w, o)
	stale.Attempt++
	before := h.show(task)
	out, err := h.st.OutcomeApply(h.ctx, stale)
	require.NoError(t, err)
	require.True(t, out.Ignored)
	require.True(t, out.Unrecorded)
	require.Contains(t, out.Reason, "not current")
	require.Equal(t, before, h.show(task))
	live, _ := h.inQueue(q, first.ID)
	require.True(t, live, "the step message stays for its worker")

	// An outcome recorded meanwhile (the worker gave up waiting and
	// recorded it): the carried one arrives second and changes nothing.
	o.Direct = true
	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, o))
	before = h.show(task)
	out, err = h.st.OutcomeApply(h.ctx, h.carried(first, w, o))
	require.NoError(t, err)
	require.True(t, out.Ignored)
	require.True(t, out.Unrecorded)
	require.Equal(t, before, h.show(task))

	// The recorded one applies as ever, once.
	due := store.OutcomeDue{MsgID: first.ID, Namespace: w.Namespace, TaskUUID: w.TaskUUID, StepUUID: w.StepUUID, Attempt: w.Attempt}
	out, err = h.st.OutcomeApply(h.ctx, due)
	require.NoError(t, err)
	require.False(t, out.Ignored, out.Reason)
	require.Equal(t, workflow.StepStateComplete, out.StepState)

	// A carried outcome of a cancelled task: nothing moves, and the step
	// message goes.
	next := h.readAll(q)
	require.Len(t, next, 1)
	w = h.start(next[0])
	require.NoError(t, h.st.TaskCancel(h.ctx, task, "test"))
	before = h.show(task)
	out, err = h.st.OutcomeApply(h.ctx, h.carried(next[0], w, h.outcome(next[0], w)))
	require.NoError(t, err)
	require.True(t, out.Ignored)
	require.False(t, out.Unrecorded)
	require.Equal(t, workflow.TaskStateCancelled, out.TaskState)
	require.Equal(t, before, h.show(task))
	live, archived := h.inQueue(q, next[0].ID)
	require.False(t, live || archived, "the step message is acknowledged")
}

// linearFirst submits a linear task and reads its one ready step message.
func (h *harness) linearFirst() (task uuid.UUID, q string, first queue.Message) {
	h.t.Helper()
	task = h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	q = queue.NamespaceQueue(testsupport.LinearNamespace)
	msgs := h.readAll(q)
	require.Len(h.t, msgs, 1)
	return task, q, msgs[0]
}
