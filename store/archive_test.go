package store_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// TestRequestsReplay rejects a request for a template registered only
// afterwards, replays it (a new message with the same body, accepted) and
// refuses a second replay, naming the message the first one sent.
func TestRequestsReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	tmpl := laterTemplate(t, "replayed_later")
	req := request(tmpl.Namespace, tmpl.Name, `{"even_number": 6}`)
	body, err := req.Encode()
	require.NoError(t, err)
	requireRejected(t, h, string(body), "", req.RequestID, `unknown template "replayed_later"`)
	list, err := h.st.RejectedList(h.ctx, 10)
	require.NoError(t, err)
	require.Len(t, list, 1)
	msgID := list[0].MsgID
	require.Nil(t, list[0].ReplayedMsgID)

	_, err = h.st.TemplateRegister(h.ctx, tmpl)
	require.NoError(t, err)
	rr, err := h.st.RequestReplay(h.ctx, msgID)
	require.NoError(t, err)
	require.Equal(t, msgID, rr.MsgID)
	require.NotNil(t, rr.ReplayedMsgID)
	require.NotNil(t, rr.ReplayedAt)
	require.NotEqual(t, msgID, *rr.ReplayedMsgID)

	// The replay is a new message with the same body, its headers naming
	// the one it replays.
	msgs := h.readAll(queue.TaskRequestsQueue)
	require.Len(t, msgs, 1)
	require.Equal(t, *rr.ReplayedMsgID, msgs[0].ID)
	require.JSONEq(t, string(body), string(msgs[0].Body))
	require.JSONEq(t, `{"replay_of": `+strconv.FormatInt(msgID, 10)+`}`, string(msgs[0].Headers))
	// A replayed rejection is no longer the request's answer.
	_, err = h.st.RequestRejection(h.ctx, req.RequestID)
	require.ErrorIs(t, err, store.ErrNotFound)

	out, err := h.st.RequestAccept(h.ctx, msgs[0])
	require.NoError(t, err)
	require.True(t, out.Created, "%+v", out)
	requireCleanRun(t, h.runToEnd(out.TaskUUID))

	// Listed as replayed; a second replay is refused.
	list, err = h.st.RejectedList(h.ctx, 10)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, rr.ReplayedMsgID, list[0].ReplayedMsgID)
	_, err = h.st.RequestReplay(h.ctx, msgID)
	var refused *store.RefusedError
	require.ErrorAs(t, err, &refused)
	require.Contains(t, refused.Reason, "already replayed, as message "+strconv.FormatInt(*rr.ReplayedMsgID, 10))
	require.Zero(t, h.queueLen(queue.TaskRequestsQueue), "nothing sent by the refused replay")

	_, err = h.st.RequestReplay(h.ctx, msgID+1000)
	require.ErrorIs(t, err, store.ErrNotFound)

	// A rejection whose message left the archive cannot be replayed.
	other := request(testsupport.LinearNamespace, "never_registered", `{}`)
	body, err = other.Encode()
	require.NoError(t, err)
	requireRejected(t, h, string(body), "", other.RequestID, "unknown template")
	rr, err = h.st.RequestRejection(h.ctx, other.RequestID)
	require.NoError(t, err)
	_, err = h.pool.Exec(h.ctx, `DELETE FROM pgmq.a_orchestration_task_requests WHERE msg_id = $1`, rr.MsgID)
	require.NoError(t, err)
	_, err = h.st.RequestReplay(h.ctx, rr.MsgID)
	require.ErrorAs(t, err, &refused)
	require.Contains(t, refused.Reason, "no longer in the archive of orchestration_task_requests")
}

// TestArchivedStepMessagesListedWithReason archives a poison step message,
// an undecodable one, an undecodable result, a quarantined result and a
// rejected request: each is listed under its queue with its reason,
// newest first, a page at a time.
func TestArchivedStepMessagesListedWithReason(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{NodeID: "archiving-node"})
	ns := testsupport.LinearNamespace
	stepQueue := queue.NamespaceQueue(ns)

	// A step message delivered too often: the worker records the poison
	// failure and archives it.
	task := h.submit(ns, testsupport.LinearName, `{"even_number": 6}`)
	msgs := h.readAll(stepQueue)
	require.Len(t, msgs, 1)
	w := h.start(msgs[0])
	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, store.Outcome{
		MsgID: msgs[0].ID, Namespace: ns, TaskUUID: task, StepUUID: w.StepUUID, CorrelationID: w.CorrelationID,
		Attempt: w.Attempt, Archive: true,
		Err: workflow.Permanent("poison", "message delivered 6 times, more than queue.max_deliveries (5)"),
	}))
	poisonID := msgs[0].ID

	// A step message that does not decode, archived by the worker with its
	// reason.
	garbageID, err := h.q.Send(h.ctx, stepQueue, []byte(`{"task_uuid": "not-a-uuid"}`), 0)
	require.NoError(t, err)
	require.NoError(t, h.st.MessageArchive(h.ctx, stepQueue, garbageID, "undecodable step message: task_uuid: invalid"))
	// One archived by someone else through pgmq (no reason kept: the
	// listing tells it from the body).
	otherID, err := h.q.Send(h.ctx, stepQueue, []byte(`{"task_uuid": "not-a-uuid"}`), 0)
	require.NoError(t, err)
	_, err = h.q.Archive(h.ctx, stepQueue, otherID)
	require.NoError(t, err)

	page, err := h.st.ArchivedList(h.ctx, store.ArchivedParams{Queue: stepQueue})
	require.NoError(t, err)
	require.Len(t, page, 3)
	require.Equal(t, otherID, page[0].MsgID, "newest first")
	require.True(t, page[0].Inferred)
	require.Contains(t, page[0].Reason, "does not decode: ")
	require.Contains(t, page[0].Reason, "task_uuid")
	require.Equal(t, garbageID, page[1].MsgID)
	require.False(t, page[1].Inferred)
	require.Equal(t, "undecodable step message: task_uuid: invalid", page[1].Reason)
	page = page[1:]
	require.Equal(t, poisonID, page[1].MsgID)
	require.False(t, page[1].Inferred)
	require.Equal(t, "poison: message delivered 6 times, more than queue.max_deliveries (5)", page[1].Reason)
	require.Equal(t, "archiving-node", page[1].ArchivedBy)
	require.Equal(t, stepQueue, page[1].Queue)
	require.Contains(t, page[1].Message, task.String())
	require.False(t, page[1].ArchivedAt.IsZero())
	require.WithinDuration(t, time.Now(), page[1].ArchivedAt, time.Hour)

	// Paged: one at a time, the cursor the last message id.
	first, err := h.st.ArchivedList(h.ctx, store.ArchivedParams{Queue: stepQueue, Limit: 1})
	require.NoError(t, err)
	require.Len(t, first, 1)
	second, err := h.st.ArchivedList(h.ctx, store.ArchivedParams{Queue: stepQueue, Limit: 2, Before: first[0].MsgID})
	require.NoError(t, err)
	require.Len(t, second, 2)
	require.Equal(t, []int64{garbageID, poisonID}, []int64{second[0].MsgID, second[1].MsgID})

	// A result that does not decode, and one quarantined after too many
	// deliveries.
	badID, err := h.q.Send(h.ctx, queue.StepResultsQueue, []byte(`{"step_uuid": 5}`), 0)
	require.NoError(t, err)
	results := h.readAll(queue.StepResultsQueue)
	require.Len(t, results, 2, "the poison outcome's result and the bad one")
	for _, m := range results {
		if m.ID == badID {
			out, err := h.st.ResultApply(h.ctx, m)
			require.NoError(t, err)
			require.True(t, out.Archived)
			continue
		}
		out, err := h.st.ResultQuarantine(h.ctx, m, "result delivered 6 times, more than queue.max_deliveries (5)")
		require.NoError(t, err)
		require.True(t, out.Archived)
	}
	page, err = h.st.ArchivedList(h.ctx, store.ArchivedParams{Queue: queue.StepResultsQueue})
	require.NoError(t, err)
	require.Len(t, page, 2)
	require.Equal(t, badID, page[0].MsgID)
	require.False(t, page[0].Inferred)
	require.Contains(t, page[0].Reason, "step_uuid")
	require.Equal(t, "archiving-node", page[0].ArchivedBy)
	require.Equal(t, "result delivered 6 times, more than queue.max_deliveries (5)", page[1].Reason)

	// A rejected request is listed under its queue with its rejection.
	body, err := request(ns, "never_registered", `{}`).Encode()
	require.NoError(t, err)
	out, err := h.st.RequestAccept(h.ctx, h.sendRaw(body))
	require.NoError(t, err)
	require.True(t, out.Rejected)
	page, err = h.st.ArchivedList(h.ctx, store.ArchivedParams{Queue: queue.TaskRequestsQueue})
	require.NoError(t, err)
	require.Len(t, page, 1)
	require.Equal(t, out.Reason, page[0].Reason)

	_, err = h.st.ArchivedList(h.ctx, store.ArchivedParams{Queue: "no_such_queue"})
	require.ErrorIs(t, err, store.ErrNotFound)
}
