package store_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// laterTemplate is a copy of the linear reference template under another
// name, registered by a test when it chooses.
func laterTemplate(t *testing.T, name string) *workflow.Template {
	t.Helper()
	for _, tmpl := range testsupport.Templates(t) {
		if tmpl.Namespace == testsupport.LinearNamespace {
			c := *tmpl
			c.Name = name
			return &c
		}
	}
	t.Fatal("no linear template")
	return nil
}

// afterFirstRead runs statements on a pool and calls then once, after the
// first row has been read: another session's commit between two statements
// of one look-up.
type afterFirstRead struct {
	store.DB
	once sync.Once
	then func()
	rows int
}

func (d *afterFirstRead) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	d.rows++
	return afterScan{row: d.DB.QueryRow(ctx, sql, args...), after: func() { d.once.Do(d.then) }}
}

func (d *afterFirstRead) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return d.DB.Exec(ctx, sql, args...)
}

type afterScan struct {
	row   pgx.Row
	after func()
}

func (r afterScan) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	r.after()
	return err
}

// TestTemplateMissExplainedInOneSnapshot registers the template a request
// asks for right after the look-up's first read: the miss is explained as
// that read saw the templates (an unknown template), not by a later read
// that finds the name and blames the version.
func TestTemplateMissExplainedInOneSnapshot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	tmpl := laterTemplate(t, "registered_meanwhile")
	d := &afterFirstRead{DB: h.pool, then: func() {
		_, err := h.st.TemplateRegister(h.ctx, tmpl)
		require.NoError(t, err)
	}}
	_, err := h.st.TemplateResolveOn(h.ctx, d, tmpl.Namespace, tmpl.Name, "")
	var refused *store.RefusedError
	require.ErrorAs(t, err, &refused)
	require.Equal(t, `unknown template "registered_meanwhile" in namespace "linear_workflow"`, refused.Reason)
	require.Equal(t, 1, d.rows, "a miss is read and explained by one statement")

	// Registered now: found, newest and by its version.
	v, err := h.st.TemplateResolveOn(h.ctx, h.pool, tmpl.Namespace, tmpl.Name, "")
	require.NoError(t, err)
	require.Equal(t, tmpl.Version, v)
	v, err = h.st.TemplateResolveOn(h.ctx, h.pool, tmpl.Namespace, tmpl.Name, tmpl.Version)
	require.NoError(t, err)
	require.Equal(t, tmpl.Version, v)
	_, err = h.st.TemplateResolveOn(h.ctx, h.pool, tmpl.Namespace, tmpl.Name, "9.9.9")
	require.ErrorAs(t, err, &refused)
	require.Equal(t, `unknown version "9.9.9" of template linear_workflow/registered_meanwhile`, refused.Reason)
}

// requestRow is a request message as the queue table holds it.
func (h *harness) requestRow(msgID int64) (readCount int, waits *int, visibleIn time.Duration) {
	h.t.Helper()
	var us int64
	err := h.pool.QueryRow(h.ctx, `SELECT read_ct, (headers->>'template_waits')::int,
		(extract(epoch FROM vt - clock_timestamp()) * 1e6)::bigint
		FROM pgmq.q_orchestration_task_requests WHERE msg_id = $1`, msgID).Scan(&readCount, &waits, &us)
	require.NoError(h.t, err, "request %d is in the queue", msgID)
	return readCount, waits, time.Duration(us) * time.Microsecond
}

// redeliver makes a put-off request visible now, standing in for the
// passing of its delay, and reads it again.
func (h *harness) redeliver(msgID int64) queue.Message {
	h.t.Helper()
	_, err := h.pool.Exec(h.ctx, `UPDATE pgmq.q_orchestration_task_requests SET vt = clock_timestamp() WHERE msg_id = $1`, msgID)
	require.NoError(h.t, err)
	msgs, err := h.q.Read(h.ctx, queue.TaskRequestsQueue, readVT, 1)
	require.NoError(h.t, err)
	require.Len(h.t, msgs, 1)
	require.Equal(h.t, msgID, msgs[0].ID)
	return msgs[0]
}

// TestTemplateRegisteredLaterIsAccepted: a request for a template not yet
// registered is put off, with a growing delay, and accepted once the
// template is registered — not rejected for good.
func TestTemplateRegisteredLaterIsAccepted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{TemplateGrace: time.Minute})
	tmpl := laterTemplate(t, "registered_later")
	req := request(tmpl.Namespace, tmpl.Name, `{"even_number": 6}`)
	body, err := req.Encode()
	require.NoError(t, err)
	msg := h.sendRaw(body)

	var delays []time.Duration
	for wait := 1; wait <= 3; wait++ {
		out, err := h.st.RequestAccept(h.ctx, msg)
		require.NoError(t, err)
		require.True(t, out.Waiting, "%+v", out)
		require.False(t, out.Rejected)
		require.False(t, out.Created)
		require.Equal(t, req.RequestID, out.RequestID)
		require.Equal(t, `unknown template "registered_later" in namespace "linear_workflow"`, out.Reason)
		readCount, waits, visibleIn := h.requestRow(msg.ID)
		require.Zero(t, readCount, "a wait is not a failed delivery: queue.max_deliveries counts from zero again")
		require.NotNil(t, waits)
		require.Equal(t, wait, *waits)
		require.Positive(t, visibleIn, "the request is put off")
		delays = append(delays, visibleIn)
		msg = h.redeliver(msg.ID)
	}
	require.Greater(t, delays[1], delays[0], "the delay grows: %v", delays)
	require.Greater(t, delays[2], delays[1], "the delay grows: %v", delays)

	_, err = h.st.TemplateRegister(h.ctx, tmpl)
	require.NoError(t, err)
	out, err := h.st.RequestAccept(h.ctx, msg)
	require.NoError(t, err)
	require.True(t, out.Created, "%+v", out)
	require.Equal(t, 1, out.Enqueued)
	require.Zero(t, h.queueLen(queue.TaskRequestsQueue))
	rejected, err := h.st.RejectedList(h.ctx, 10)
	require.NoError(t, err)
	require.Empty(t, rejected)
	requireCleanRun(t, h.runToEnd(out.TaskUUID))
}

// TestTemplateGraceExpiresRejects: a request whose template is still unknown
// when the grace period ends is rejected, archived and listed, the reason
// naming what is unknown and the period; the last wait ends with the period.
func TestTemplateGraceExpiresRejects(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{TemplateGrace: time.Minute})
	req := request(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	req.Version = "7.0.0"
	body, err := req.Encode()
	require.NoError(t, err)
	msg := h.sendRaw(body)

	// Sent 59.5s ago: the wait is cut at the end of the period.
	_, err = h.pool.Exec(h.ctx, `UPDATE pgmq.q_orchestration_task_requests
		SET enqueued_at = clock_timestamp() - interval '59.5 seconds' WHERE msg_id = $1`, msg.ID)
	require.NoError(t, err)
	out, err := h.st.RequestAccept(h.ctx, msg)
	require.NoError(t, err)
	require.True(t, out.Waiting, "%+v", out)
	var deadline time.Time
	require.NoError(t, h.pool.QueryRow(h.ctx, `SELECT enqueued_at + interval '1 minute' FROM pgmq.q_orchestration_task_requests
		WHERE msg_id = $1`, msg.ID).Scan(&deadline))
	require.True(t, out.VisibleAt.Equal(deadline), "the last wait ends with the grace period: %s, not %s", out.VisibleAt, deadline)

	_, err = h.pool.Exec(h.ctx, `UPDATE pgmq.q_orchestration_task_requests
		SET enqueued_at = clock_timestamp() - interval '61 seconds' WHERE msg_id = $1`, msg.ID)
	require.NoError(t, err)
	msg = h.redeliver(msg.ID)
	out, err = h.st.RequestAccept(h.ctx, msg)
	require.NoError(t, err)
	require.True(t, out.Rejected, "%+v", out)
	require.False(t, out.Waiting)
	require.Contains(t, out.Reason, `unknown version "7.0.0" of template linear_workflow/mathematical_sequence`)
	require.Contains(t, out.Reason, "queue.template_grace (1m0s")

	live, archived := h.inQueue(queue.TaskRequestsQueue, msg.ID)
	require.False(t, live)
	require.True(t, archived)
	rr, err := h.st.RequestRejection(h.ctx, req.RequestID)
	require.NoError(t, err)
	require.Equal(t, out.Reason, rr.Reason)
	require.Equal(t, msg.ID, rr.MsgID)
}

// TestTemplateWaitsCountedInHeaders keeps the headers a client sent and
// reads a wait count that is not a number as none.
func TestTemplateWaitsCountedInHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{TemplateGrace: time.Minute})
	body, err := request(testsupport.LinearNamespace, "nowhere_yet", `{}`).Encode()
	require.NoError(t, err)
	var id int64
	require.NoError(t, h.pool.QueryRow(h.ctx, `SELECT pgmq.send($1, $2::jsonb, '{"trace": "abc", "template_waits": "x"}'::jsonb)`,
		queue.TaskRequestsQueue, string(body)).Scan(&id))
	msgs, err := h.q.Read(h.ctx, queue.TaskRequestsQueue, readVT, 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	out, err := h.st.RequestAccept(h.ctx, msgs[0])
	require.NoError(t, err)
	require.True(t, out.Waiting)
	var headers []byte
	require.NoError(t, h.pool.QueryRow(h.ctx, `SELECT headers FROM pgmq.q_orchestration_task_requests WHERE msg_id = $1`, id).Scan(&headers))
	var got map[string]any
	require.NoError(t, json.Unmarshal(headers, &got))
	require.Equal(t, map[string]any{"trace": "abc", "template_waits": float64(1)}, got)
}
