package store_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// submitWithHeaders sends a reference workflow's request with headers and
// accepts it.
func (h *harness) submitWithHeaders(headers string) store.RequestOutcome {
	h.t.Helper()
	body, err := request(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 6}`).Encode()
	require.NoError(h.t, err)
	id, err := h.q.SendWithHeaders(h.ctx, queue.TaskRequestsQueue, body, []byte(headers))
	require.NoError(h.t, err)
	msgs := h.readAll(queue.TaskRequestsQueue)
	require.Len(h.t, msgs, 1)
	require.Equal(h.t, id, msgs[0].ID)
	out, err := h.st.RequestAccept(h.ctx, msgs[0])
	require.NoError(h.t, err)
	require.False(h.t, out.Rejected, out.Reason)
	return out
}

func requireTrace(t *testing.T, headers []byte, what string) {
	t.Helper()
	tr, err := queue.TraceFromHeaders(headers)
	require.NoError(t, err, what)
	require.Equal(t, workflow.Trace{Parent: testTraceParent, State: "congo=t61rcWkgMzE"}, tr, what)
}

// A request's trace context stays on its task and goes with every step
// message (roots, children, retries) and result message, to the handlers
// and through the SQL worker contract.
func TestTraceContextThroughTheQueues(t *testing.T) {
	t.Parallel()
	h := newContractHarness(t, store.WorkerLimits{})
	out := h.submitWithHeaders(`{"traceparent": "` + testTraceParent + `", "tracestate": "congo=t61rcWkgMzE", "x-other": 1}`)
	d := h.show(out.TaskUUID)
	requireTrace(t, d.Trace, "the task")

	q := queue.NamespaceQueue(testsupport.DiamondNamespace)
	// The root fails once (a retry's message), then every step runs.
	h.inject("diamond_start", h.failing(func(int) error { return workflow.Retryable("flaky", 0, "once") }, 1))
	for round := 0; round < 10 && !h.show(out.TaskUUID).State.Terminal(); round++ {
		h.makeVisible(testsupport.DiamondNamespace)
		for _, m := range h.readAll(q) {
			requireTrace(t, m.Headers, "step message")
			w := h.start(m)
			requireTrace(t, queue.TraceHeaders(w.Input().Trace), "the handler's input")
			require.NoError(t, h.st.StepOutcomeRecord(h.ctx, h.outcome(m, w)))
		}
		for _, m := range h.readAll(queue.StepResultsQueue) {
			requireTrace(t, m.Headers, "result message")
			h.apply(m)
		}
	}
	d = h.show(out.TaskUUID)
	requireCleanRunAfterRetry(t, d)

	// Through the SQL contract: step_begin answers the headers.
	h.inject("diamond_start", nil)
	out = h.submitWithHeaders(`{"traceparent": "` + testTraceParent + `", "tracestate": "congo=t61rcWkgMzE"}`)
	msgs := h.readAll(q)
	require.Len(t, msgs, 1)
	b, err := h.sqlBegin(q, msgs[0].ID)
	require.NoError(t, err)
	requireTrace(t, b.Headers, "step_begin's headers")
	res, herr := h.handler(b.Work).Handle(h.ctx, b.Work.Input())
	require.NoError(t, herr)
	_, _, err = h.sqlComplete(q, msgs[0].ID, b.Work, string(res))
	require.NoError(t, err)
	results := h.readAll(queue.StepResultsQueue)
	require.Len(t, results, 1)
	requireTrace(t, results[0].Headers, "the contract's result message")
}

// A malformed trace context is ignored (the task starts without one) and
// the request is accepted; headers without one carry nothing.
func TestTraceContextMalformedIgnored(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	for _, headers := range []string{
		`{"traceparent": "00-zz-00f067aa0ba902b7-01"}`,
		`{"traceparent": 7}`,
		`{"x-request-source": "billing"}`,
	} {
		out := h.submitWithHeaders(headers)
		require.Empty(t, h.show(out.TaskUUID).Trace, headers)
		for _, m := range h.readAll(queue.NamespaceQueue(testsupport.DiamondNamespace)) {
			require.Empty(t, m.Headers, headers)
		}
	}
	_, err := h.q.SendWithHeaders(h.ctx, queue.TaskRequestsQueue, []byte(`{}`), []byte(`"x"`))
	require.ErrorContains(t, err, "headers are not a JSON object")
}

// requireCleanRunAfterRetry: the task completed, its root after one retry.
func requireCleanRunAfterRetry(t *testing.T, d store.TaskDetail) {
	t.Helper()
	require.Equal(t, workflow.TaskStateComplete, d.State)
	var trace map[string]string
	require.NoError(t, json.Unmarshal(d.Trace, &trace))
	require.Equal(t, testTraceParent, trace["traceparent"])
	require.Equal(t, 2, step(t, d, "diamond_start").Attempts)
}
