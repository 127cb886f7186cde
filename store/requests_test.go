package store_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// TestRequestIdempotent accepts the same request twice: one task, and the
// second answer names it.
func TestRequestIdempotent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	req := request(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)

	first := h.accept(req)
	require.True(t, first.Created)
	require.Equal(t, 1, first.Enqueued)
	second := h.accept(req)
	require.False(t, second.Created)
	require.False(t, second.Rejected)
	require.Equal(t, first.TaskUUID, second.TaskUUID)
	require.Equal(t, req.RequestID, second.RequestID)
	require.Zero(t, second.Enqueued)

	require.Zero(t, h.queueLen(queue.TaskRequestsQueue), "both requests acknowledged")
	require.EqualValues(t, 1, h.queueLen(queue.NamespaceQueue(testsupport.LinearNamespace)), "the root enqueued once")
	tasks, err := h.st.TaskList(h.ctx, store.TaskListParams{})
	require.NoError(t, err)
	require.Len(t, tasks, 1)
	byRequest, err := h.st.TaskGet(h.ctx, req.RequestID)
	require.NoError(t, err)
	require.Equal(t, first.TaskUUID, byRequest.TaskUUID)
	require.Equal(t, req.RequestID, byRequest.CorrelationID, "correlation defaults to the request id")

	requireCleanRun(t, h.runToEnd(first.TaskUUID))
}

// TestRequestIdempotentRace accepts two copies of one request at the same
// moment: exactly one creates the task.
func TestRequestIdempotentRace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	for range 20 {
		body, err := request(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 4}`).Encode()
		require.NoError(t, err)
		_, err = h.q.SendBatch(h.ctx, queue.TaskRequestsQueue, [][]byte{body, body}, 0)
		require.NoError(t, err)
		msgs := h.readAll(queue.TaskRequestsQueue)
		require.Len(t, msgs, 2)
		outs, errs := race(msgs, func(m queue.Message) (store.RequestOutcome, error) { return h.st.RequestAccept(h.ctx, m) })
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		require.True(t, outs[0].Created != outs[1].Created, "exactly one creates: %+v", outs)
		require.Equal(t, outs[0].TaskUUID, outs[1].TaskUUID)
	}
	tasks, err := h.st.TaskList(h.ctx, store.TaskListParams{Limit: 100})
	require.NoError(t, err)
	require.Len(t, tasks, 20)
	require.EqualValues(t, 20, h.queueLen(queue.NamespaceQueue(testsupport.DiamondNamespace)))
	require.Zero(t, h.queueLen(queue.TaskRequestsQueue))
}

// TestRequestRejected feeds requests that cannot be honoured: each is
// rejected with a reason naming the problem, archived, and listed.
func TestRequestRejected(t *testing.T) {
	t.Parallel()
	id := func() uuid.UUID { return uuid.Must(uuid.NewV7()) }
	reqBody := func(rid uuid.UUID, namespace, name, version, taskContext string) string {
		return fmt.Sprintf(`{"request_id": %q, "namespace": %q, "name": %q, "version": %q, "context": %s}`,
			rid, namespace, name, version, taskContext)
	}
	type rejectCase struct {
		name string
		// body is sent through the queue; raw, when set, replaces the body
		// read back (the queue itself only carries valid JSON).
		body, raw string
		reqID     uuid.UUID
		want      []string
	}
	var cases []rejectCase
	add := func(name string, rid uuid.UUID, body, raw string, want ...string) {
		cases = append(cases, rejectCase{name: name, body: body, raw: raw, reqID: rid, want: want})
	}
	r := id()
	add("unknown namespace", r, reqBody(r, "nowhere", "mathematical_sequence", "1.0.0", `{}`), "", `unknown namespace "nowhere"`)
	r = id()
	add("unknown template", r, reqBody(r, "linear_workflow", "nothing_here", "1.0.0", `{}`), "",
		`unknown template "nothing_here" in namespace "linear_workflow"`)
	r = id()
	add("unknown version", r, reqBody(r, "linear_workflow", "mathematical_sequence", "9.9.9", `{}`), "",
		`unknown version "9.9.9" of template linear_workflow/mathematical_sequence`)
	r = id()
	add("context not an object", r, reqBody(r, "linear_workflow", "mathematical_sequence", "1.0.0", `[6]`), "",
		"context: must be a JSON object")
	r = id()
	add("context a string", r, reqBody(r, "linear_workflow", "mathematical_sequence", "1.0.0", `"even_number=6"`), "",
		"context: must be a JSON object")
	add("not an object", uuid.Nil, `[1, 2, 3]`, "", "$: must be a JSON object")
	// The request id is read before the document breaks off.
	r = id()
	add("malformed JSON", r, `{"placeholder": true}`, `{"request_id": "`+r.String()+`", "namespace": `, "$: malformed JSON")
	add("malformed before the id", uuid.Nil, `{"placeholder": true}`, `{"namespace": [, "request_id": "`+id().String()+`"}`, "$: malformed JSON")
	add("missing request_id", uuid.Nil, `{"namespace": "linear_workflow", "name": "mathematical_sequence", "context": {}}`, "",
		"request_id: missing")
	r = id()
	add("bad namespace", r, reqBody(r, "Linear-Workflow", "mathematical_sequence", "1.0.0", `{}`), "", "namespace: must be lower-case")

	h := newHarness(t, store.Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			requireRejected(t, h, tc.body, tc.raw, tc.reqID, tc.want...)
		})
	}

	t.Run("over the size limit", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, store.Options{MaxRequestBytes: 100})
		rid := id()
		body := reqBody(rid, "linear_workflow", "mathematical_sequence", "1.0.0", `{"even_number": 6, "note": "`+strings.Repeat("x", 50)+`"}`)
		// The request id is read first, so the rejection can be found by it.
		requireRejected(t, h, body, "", rid, "bytes exceeds the limit of 100 bytes")
	})

	t.Run("nested too deep", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, store.Options{})
		for _, depth := range []int{workflow.MaxJSONDepth + 1, 5000, 20000} {
			rid := id()
			deep := strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
			body := fmt.Sprintf(`{"name": "request_id", "context": %s, "request_id": %q, "namespace": "linear_workflow"}`, deep, rid)
			// The queue client refuses to send what is not JSON to
			// encoding/json (deeper than 10,000 levels): the payload is
			// put in place of a placeholder, as a client without that check
			// would send it.
			requireRejected(t, h, `{"placeholder": true}`, body, rid, "levels deep, more than the limit of 64")
		}
	})

	t.Run("oversized multibyte payload", func(t *testing.T) {
		t.Parallel()
		// The stored payload is cut to 4 KiB; the cut must not split a
		// character, or the rejection itself fails and the message loops.
		h := newHarness(t, store.Options{MaxRequestBytes: 1000})
		for pad := range 2 {
			rid := id()
			body := fmt.Sprintf(`{"pad": %q, "context": {"note": %q}, "request_id": %q}`,
				strings.Repeat("p", pad), strings.Repeat("é", 3000), rid)
			requireRejected(t, h, body, "", rid, "exceeds the limit of 1000 bytes")
		}
		list, err := h.st.RejectedList(h.ctx, 10)
		require.NoError(t, err)
		for _, rr := range list {
			require.LessOrEqual(t, len(rr.Payload), 4096+len("…"))
			require.True(t, strings.HasSuffix(rr.Payload, "…"))
			require.True(t, strings.ToValidUTF8(rr.Payload, "?") == rr.Payload)
		}
	})

	// Nothing was created by any of them.
	tasks, err := h.st.TaskList(h.ctx, store.TaskListParams{})
	require.NoError(t, err)
	require.Empty(t, tasks)
	list, err := h.st.RejectedList(h.ctx, 100)
	require.NoError(t, err)
	require.Len(t, list, len(cases))
	require.Equal(t, "test-node", list[0].NodeID)
	require.Greater(t, list[0].ID, list[len(list)-1].ID, "newest first")
}

// requireRejected sends body (replaced by raw when set) as a task request
// and checks it is rejected for a reason holding every want, archived, and
// listed.
func requireRejected(t *testing.T, h *harness, body, raw string, reqID uuid.UUID, want ...string) store.RequestOutcome {
	t.Helper()
	msg := h.sendRaw([]byte(body))
	if raw != "" {
		msg.Body = []byte(raw)
	}
	out, err := h.st.RequestAccept(h.ctx, msg)
	require.NoError(t, err)
	require.True(t, out.Rejected, "%+v", out)
	require.False(t, out.Created)
	require.Equal(t, uuid.Nil, out.TaskUUID)
	require.Equal(t, reqID, out.RequestID)
	for _, w := range want {
		require.Contains(t, out.Reason, w)
	}

	live, archived := h.inQueue(queue.TaskRequestsQueue, msg.ID)
	require.False(t, live, "rejected request left in the queue")
	require.True(t, archived, "rejected request not archived")

	list, err := h.st.RejectedList(h.ctx, 100)
	require.NoError(t, err)
	var found *store.RejectedRequest
	for i := range list {
		if list[i].MsgID == msg.ID {
			found = &list[i]
		}
	}
	require.NotNil(t, found, "rejection of message %d not listed", msg.ID)
	require.Equal(t, out.Reason, found.Reason)
	if reqID == uuid.Nil {
		require.Nil(t, found.RequestID)
	} else {
		require.NotNil(t, found.RequestID)
		require.Equal(t, reqID, *found.RequestID)
	}
	if raw == "" && len(body) <= 4096 {
		require.JSONEq(t, body, found.Payload)
	}
	return out
}

// TestReusedRequestIDWithAnotherRequest: a request id used again for a
// different request is rejected with the reason, archived and listed; the
// same request sent again is still a repeat, acknowledged without effect.
func TestReusedRequestIDWithAnotherRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	req := request(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	first := h.accept(req)
	require.True(t, first.Created)

	again := h.accept(req)
	require.False(t, again.Created)
	require.False(t, again.Rejected, again.Reason)
	require.Equal(t, first.TaskUUID, again.TaskUUID)

	other := req
	other.Context = `{"even_number": 8}`
	body, err := other.Encode()
	require.NoError(t, err)
	requireRejected(t, h, string(body), "", req.RequestID, "already used by task "+first.TaskUUID.String(), "different request")

	d, err := h.st.TaskShow(h.ctx, first.TaskUUID)
	require.NoError(t, err)
	require.JSONEq(t, `{"even_number": 6}`, string(d.Context), "the first request's task is untouched")
}
