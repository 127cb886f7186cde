package store_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/backoff"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// fixedNow is the injected clock of the retry tests.
var fixedNow = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

func fixedClock() time.Time { return fixedNow }

// exactBackoff is a policy without jitter on the fixed clock, so retry
// times are exact: 2s, 4s, 8s, … capped at 1m.
func exactBackoff() store.Options {
	return store.Options{
		Backoff: backoff.Policy{Base: 2 * time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0, Now: fixedClock},
		Now:     fixedClock,
	}
}

// dbNow reads the database clock.
func (h *harness) dbNow() time.Time {
	h.t.Helper()
	var now time.Time
	require.NoError(h.t, h.pool.QueryRow(h.ctx, "SELECT clock_timestamp()").Scan(&now))
	return now
}

// retryVisibleAt returns when the single message of a namespace queue
// becomes visible.
func (h *harness) retryVisibleAt(namespace string) time.Time {
	h.t.Helper()
	var vt time.Time
	require.NoError(h.t, h.pool.QueryRow(h.ctx, "SELECT vt FROM pgmq.q_"+namespace+"_queue").Scan(&vt))
	return vt
}

// applyRetry runs one attempt of the only visible step message (which fails
// through the injected handler) and applies its result; it checks the retry
// is scheduled wantDelay after the fixed clock and its message is delayed by
// wantDelay on the database clock, so it cannot be read now.
func (h *harness) applyRetry(namespace string, wantAttempt int, wantDelay time.Duration) store.ResultOutcome {
	h.t.Helper()
	msgs := h.readAll(queue.NamespaceQueue(namespace))
	require.Len(h.t, msgs, 1)
	w := h.runStep(msgs[0])
	require.Equal(h.t, wantAttempt, w.Attempt)
	results := h.readAll(queue.StepResultsQueue)
	require.Len(h.t, results, 1)
	before := h.dbNow()
	out := h.apply(results[0])
	after := h.dbNow()
	require.False(h.t, out.Ignored, out.Reason)
	require.Equal(h.t, workflow.StepStateWaitingForRetry, out.StepState)
	require.Equal(h.t, workflow.TaskStateInProgress, out.TaskState)
	require.True(h.t, fixedNow.Add(wantDelay).Equal(out.RetryAt), "retry at %s, want %s", out.RetryAt, fixedNow.Add(wantDelay))

	// The retry message exists but is delayed by the backoff.
	require.Empty(h.t, h.readAll(queue.NamespaceQueue(namespace)), "retry message readable before its delay")
	require.EqualValues(h.t, 1, h.queueLen(queue.NamespaceQueue(namespace)))
	vt := h.retryVisibleAt(namespace)
	require.False(h.t, vt.Before(before.Add(wantDelay)), "visible at %s, before %s", vt, before.Add(wantDelay))
	require.False(h.t, vt.After(after.Add(wantDelay)), "visible at %s, after %s", vt, after.Add(wantDelay))
	return out
}

// TestRetryBackoffThenExhausted fails the first linear step three times:
// the first two failures wait for the policy's backoff (then the handler's
// RetryAfter), the third exhausts the attempts and fails the task.
func TestRetryBackoffThenExhausted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, exactBackoff())
	h.inject("linear_step_1", func(_ context.Context, in workflow.StepInput) (json.RawMessage, error) {
		if in.Attempt == 2 {
			return nil, workflow.Retryable("http_429", 7*time.Second, "rate limited on attempt %d", in.Attempt)
		}
		return nil, workflow.Retryable("flaky", 0, "flaked on attempt %d", in.Attempt)
	})
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)

	// Attempt 1: Base × 2⁰ = 2s.
	h.applyRetry(testsupport.LinearNamespace, 1, 2*time.Second)
	s := step(t, h.show(task), "linear_step_1")
	require.Equal(t, workflow.StepStateWaitingForRetry, s.State)
	require.NotNil(t, s.NextAttemptAt)
	require.True(t, fixedNow.Add(2*time.Second).Equal(*s.NextAttemptAt), "next attempt at %s", s.NextAttemptAt)
	require.JSONEq(t, `{"kind":"flaky","message":"flaked on attempt 1","retryable":true,"attempt":1}`, string(s.Error))

	// Attempt 2: the handler asks for 7s, which replaces the computed 4s.
	require.Equal(t, 1, h.makeVisible(testsupport.LinearNamespace))
	h.applyRetry(testsupport.LinearNamespace, 2, 7*time.Second)
	s = step(t, h.show(task), "linear_step_1")
	require.True(t, fixedNow.Add(7*time.Second).Equal(*s.NextAttemptAt), "next attempt at %s", s.NextAttemptAt)

	// Attempt 3 of 3: exhausted.
	require.Equal(t, 1, h.makeVisible(testsupport.LinearNamespace))
	require.Equal(t, 1, h.work(testsupport.LinearNamespace))
	outs := h.applyAll()
	require.Len(t, outs, 1)
	require.Equal(t, workflow.StepStateError, outs[0].StepState)
	require.Equal(t, workflow.TaskStateError, outs[0].TaskState)
	require.True(t, outs[0].RetryAt.IsZero())
	require.Zero(t, h.queueLen(queue.NamespaceQueue(testsupport.LinearNamespace)), "no retry after the last attempt")

	d := h.show(task)
	require.Equal(t, workflow.TaskStateError, d.State)
	s = step(t, d, "linear_step_1")
	require.Equal(t, workflow.StepStateError, s.State)
	require.Equal(t, 3, s.Attempts)
	require.Nil(t, s.NextAttemptAt)
	require.Equal(t, []string{
		"→pending@0", "pending→enqueued@0",
		"enqueued→in_progress@1", "in_progress→waiting_for_retry@1",
		"waiting_for_retry→in_progress@2", "in_progress→waiting_for_retry@2",
		"waiting_for_retry→in_progress@3", "in_progress→error@3",
	}, stepMoves(d)["linear_step_1"])
	last := d.StepTransitions[len(d.StepTransitions)-1]
	require.Equal(t, "linear_step_1", last.StepName)
	require.Contains(t, last.Reason, "attempts exhausted (3 of 3)")
	require.Contains(t, last.Reason, "flaked on attempt 3")
	require.Equal(t, "test-node", last.NodeID)
	for _, name := range []string{"linear_step_2", "linear_step_3", "linear_step_4"} {
		require.Equal(t, workflow.StepStatePending, step(t, d, name).State, name)
	}
	require.Equal(t, []string{"→pending@0", "pending→in_progress@0", "in_progress→error@0"}, taskMoves(d))
	require.Contains(t, d.TaskTransitions[2].Reason, "linear_step_1")
}

// TestRetryThenSucceed fails once, then succeeds on the retry: the task
// completes with the right values.
func TestRetryThenSucceed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, exactBackoff())
	h.inject("linear_step_2", h.failing(func(int) error { return context.DeadlineExceeded }, 1))
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)

	require.Equal(t, 1, h.work(testsupport.LinearNamespace))
	h.applyAll()
	out := h.applyRetry(testsupport.LinearNamespace, 1, 2*time.Second)
	require.Equal(t, workflow.StepStateWaitingForRetry, out.StepState)
	s := step(t, h.show(task), "linear_step_2")
	require.JSONEq(t, `{"kind":"timeout","message":"context deadline exceeded","retryable":true,"attempt":1}`, string(s.Error))

	require.Equal(t, 1, h.makeVisible(testsupport.LinearNamespace))
	d := h.runToEnd(task)
	require.Equal(t, workflow.TaskStateComplete, d.State)
	require.Equal(t, 69.0, number(t, step(t, d, "linear_step_4").Result))
	s = step(t, d, "linear_step_2")
	require.Equal(t, 2, s.Attempts)
	require.Nil(t, s.Error)
	require.Nil(t, s.NextAttemptAt)
	require.Equal(t, 46.0, number(t, s.Result))
	require.Equal(t, []string{
		"→pending@0", "pending→enqueued@0",
		"enqueued→in_progress@1", "in_progress→waiting_for_retry@1",
		"waiting_for_retry→in_progress@2", "in_progress→complete@2",
	}, stepMoves(d)["linear_step_2"])
	require.Equal(t, cleanTaskHistory, taskMoves(d))
}

// TestRetryUsesTemplateBackoff checks a step's backoff overrides from its
// template (process_payment: base 2s, max 1m) win over the store's policy.
func TestRetryUsesTemplateBackoff(t *testing.T) {
	t.Parallel()
	opts := exactBackoff()
	opts.Backoff.Base = 100 * time.Millisecond
	h := newHarness(t, opts)
	h.inject("process_payment", func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		return nil, workflow.Retryable("http_503", 0, "provider unavailable")
	})
	task := h.submit(testsupport.FulfillmentNamespace, testsupport.FulfillmentName, `{"order_id":"x"}`)
	h.inject("validate_order", func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		return json.RawMessage(`{"total": 1}`), nil
	})
	for range 2 {
		require.Equal(t, 1, h.work(testsupport.FulfillmentNamespace))
		h.applyAll()
	}
	h.applyRetry(testsupport.FulfillmentNamespace, 1, 2*time.Second)
	require.Equal(t, 1, h.makeVisible(testsupport.FulfillmentNamespace))
	h.applyRetry(testsupport.FulfillmentNamespace, 2, 4*time.Second)
	require.Equal(t, workflow.StepStateWaitingForRetry, step(t, h.show(task), "process_payment").State)
}

// TestPermanentErrorFailsAtOnce fails the second linear step permanently on
// its first attempt: no retry, the task ends in error naming the step.
func TestPermanentErrorFailsAtOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, exactBackoff())
	h.inject("linear_step_2", func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		return nil, &workflow.StepError{Kind: "http_400", Message: "bad request", HTTPStatus: 400, Metadata: map[string]any{"body": "nope"}}
	})
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)

	d := h.runToEnd(task)
	require.Equal(t, workflow.TaskStateError, d.State)
	s := step(t, d, "linear_step_2")
	require.Equal(t, workflow.StepStateError, s.State)
	require.Equal(t, 1, s.Attempts)
	require.Nil(t, s.NextAttemptAt)
	require.NotNil(t, s.FinishedAt)
	require.JSONEq(t, `{"kind":"http_400","message":"bad request","retryable":false,"http_status":400,"metadata":{"body":"nope"},"attempt":1}`, string(s.Error))
	require.Equal(t, []string{"→pending@0", "pending→enqueued@0", "enqueued→in_progress@1", "in_progress→error@1"}, stepMoves(d)["linear_step_2"])
	require.Equal(t, workflow.StepStateComplete, step(t, d, "linear_step_1").State)
	require.Equal(t, workflow.StepStatePending, step(t, d, "linear_step_3").State)
	require.Equal(t, workflow.StepStatePending, step(t, d, "linear_step_4").State)
	require.Equal(t, []string{"→pending@0", "pending→in_progress@0", "in_progress→error@0"}, taskMoves(d))
	require.Equal(t, "step linear_step_2 failed", d.TaskTransitions[2].Reason)
	require.Zero(t, h.queueLen(queue.NamespaceQueue(testsupport.LinearNamespace)))
}

// TestOddNumber is a permanent step error with a clear message, in every
// numeric workflow.
func TestOddNumber(t *testing.T) {
	t.Parallel()
	for _, wf := range []struct{ namespace, name, root string }{
		{testsupport.LinearNamespace, testsupport.LinearName, "linear_step_1"},
		{testsupport.DiamondNamespace, testsupport.DiamondName, "diamond_start"},
		{testsupport.TreeNamespace, testsupport.TreeName, "tree_root"},
		{testsupport.MixedDAGNamespace, testsupport.MixedDAGName, "dag_init"},
	} {
		t.Run(wf.namespace, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, store.Options{})
			odd := h.submit(wf.namespace, wf.name, `{"even_number": 7}`)
			missing := h.submit(wf.namespace, wf.name, `{}`)
			for _, tc := range []struct {
				task uuid.UUID
				want string
			}{
				{odd, "context.even_number must be even, got 7"},
				{missing, "context.even_number is missing"},
			} {
				d := h.runToEnd(tc.task)
				require.Equal(t, workflow.TaskStateError, d.State)
				s := step(t, d, wf.root)
				require.Equal(t, workflow.StepStateError, s.State)
				require.Equal(t, 1, s.Attempts, "a permanent error is not retried")
				var se struct {
					Kind      string `json:"kind"`
					Message   string `json:"message"`
					Retryable bool   `json:"retryable"`
				}
				require.NoError(t, json.Unmarshal(s.Error, &se))
				require.Equal(t, "invalid_input", se.Kind)
				require.Contains(t, se.Message, tc.want)
				require.False(t, se.Retryable)
				for _, other := range d.Steps {
					if other.Name != wf.root {
						require.Equal(t, workflow.StepStatePending, other.State, other.Name)
					}
				}
				require.Equal(t, "step "+wf.root+" failed", d.TaskTransitions[len(d.TaskTransitions)-1].Reason)
			}
		})
	}
}

// TestDiamondBranchFailure fails one diamond branch permanently while the
// other is still running: the other finishes, the task ends in error naming
// the failed branch, and an operator retry (with the branch now working)
// completes it.
func TestDiamondBranchFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	h.inject("diamond_branch_b", func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		return nil, workflow.Permanent("downstream", "branch b cannot compute")
	})
	task := h.submit(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 4}`)
	ns := queue.NamespaceQueue(testsupport.DiamondNamespace)

	require.Equal(t, 1, h.work(testsupport.DiamondNamespace))
	outs := h.applyAll()
	require.Len(t, outs, 1)
	require.Equal(t, 2, outs[0].Enqueued)

	// Take both branch messages; run b to its failure first, c still held.
	branches := map[string]queue.Message{}
	works := map[string]store.StepWork{}
	for _, m := range h.readAll(ns) {
		w := h.start(m)
		branches[w.StepName], works[w.StepName] = m, w
	}
	require.Len(t, branches, 2)
	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, h.outcome(branches["diamond_branch_b"], works["diamond_branch_b"])))
	outs = h.applyAll()
	require.Len(t, outs, 1)
	require.Equal(t, workflow.StepStateError, outs[0].StepState)
	require.Equal(t, workflow.TaskStateInProgress, outs[0].TaskState, "c is still running")

	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, h.outcome(branches["diamond_branch_c"], works["diamond_branch_c"])))
	outs = h.applyAll()
	require.Len(t, outs, 1)
	require.Equal(t, workflow.StepStateComplete, outs[0].StepState)
	require.Zero(t, outs[0].Enqueued, "the join still waits for b")
	require.Equal(t, workflow.TaskStateError, outs[0].TaskState)

	d := h.show(task)
	require.Equal(t, workflow.TaskStateError, d.State)
	require.Equal(t, 32.0, number(t, step(t, d, "diamond_branch_c").Result))
	require.Equal(t, workflow.StepStatePending, step(t, d, "diamond_end").State)
	require.Equal(t, "step diamond_branch_b failed", d.TaskTransitions[len(d.TaskTransitions)-1].Reason)

	// The operator retries once the downstream is fixed.
	h.inject("diamond_branch_b", nil)
	n, err := h.st.TaskRetry(h.ctx, task)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	d = h.runToEnd(task)
	require.Equal(t, workflow.TaskStateComplete, d.State)
	for name, want := range map[string]float64{"diamond_start": 16, "diamond_branch_b": 41, "diamond_branch_c": 32, "diamond_end": 36.5} {
		require.Equal(t, want, number(t, step(t, d, name).Result), name)
	}
	b := step(t, d, "diamond_branch_b")
	require.Equal(t, 2, b.Attempts)
	require.Equal(t, 4, b.MaxAttempts, "a retry grants a fresh set of attempts")
	require.Nil(t, b.Error)
	moves := stepMoves(d)
	require.Equal(t, []string{
		"→pending@0", "pending→enqueued@0", "enqueued→in_progress@1", "in_progress→error@1",
		"error→pending@1", "pending→enqueued@0", "enqueued→in_progress@2", "in_progress→complete@2",
	}, moves["diamond_branch_b"])
	for _, name := range []string{"diamond_start", "diamond_branch_c", "diamond_end"} {
		require.Equal(t, cleanStepHistory, moves[name], name)
	}
	require.Equal(t, []string{
		"→pending@0", "pending→in_progress@0", "in_progress→error@0", "error→in_progress@0", "in_progress→complete@0",
	}, taskMoves(d))
	require.Equal(t, "retried by operator", d.TaskTransitions[3].Reason)
}

// TestSetBackoffWhileApplying reloads the retry policy while results are
// being applied (a config reload on a running node); the next retry uses
// the new policy.
func TestSetBackoffWhileApplying(t *testing.T) {
	t.Parallel()
	h := newHarness(t, exactBackoff())
	h.inject("linear_step_1", func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		return nil, workflow.Retryable("flaky", 0, "flaked")
	})
	const tasks = 10
	for range tasks {
		h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	}
	require.Equal(t, tasks, h.work(testsupport.LinearNamespace))
	results := h.readAll(queue.StepResultsQueue)
	require.Len(t, results, tasks)

	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				h.st.SetBackoff(backoff.Policy{Base: 3 * time.Second, Max: time.Minute, Jitter: 0})
			}
		}
	})
	err := concurrently(results, func(m queue.Message) error {
		_, err := h.st.ResultApply(h.ctx, m)
		return err
	})
	close(stop)
	wg.Wait()
	require.NoError(t, err)

	// Once reloaded, the new base applies.
	require.Equal(t, tasks, h.makeVisible(testsupport.LinearNamespace))
	require.Equal(t, tasks, h.work(testsupport.LinearNamespace))
	for _, out := range h.applyAll() {
		require.Equal(t, workflow.StepStateWaitingForRetry, out.StepState)
		require.True(t, fixedNow.Add(6*time.Second).Equal(out.RetryAt), "retry at %s", out.RetryAt)
	}
}
