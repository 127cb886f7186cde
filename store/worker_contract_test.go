package store_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// begun is the row tasker.step_begin answers.
type begun struct {
	Status, Reason string
	Work           store.StepWork
	Headers        []byte
}

// sqlBegin calls tasker.step_begin as a worker outside Go does.
func (h *harness) sqlBegin(q string, msgID int64) (begun, error) {
	var (
		b                                  begun
		reason, name, handler, taskName    *string
		taskUUID, stepUUID, correlation    *uuid.UUID
		attempt, maxAttempts               *int
		timeoutMS                          *int64
		config, taskContext, parents, hdrs []byte
	)
	err := h.pool.QueryRow(h.ctx, `SELECT status, reason, task_uuid, step_uuid, step_name, handler, attempt, max_attempts,
		timeout_ms, config, task_name, correlation_id, context, parents, headers FROM tasker.step_begin($1, $2)`, q, msgID).
		Scan(&b.Status, &reason, &taskUUID, &stepUUID, &name, &handler, &attempt, &maxAttempts, &timeoutMS, &config,
			&taskName, &correlation, &taskContext, &parents, &hdrs)
	if err != nil {
		return b, err
	}
	deref := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	b.Reason, b.Headers = deref(reason), hdrs
	w := &b.Work
	w.Namespace = strings.TrimSuffix(q, "_queue")
	w.StepName, w.Handler, w.TaskName = deref(name), deref(handler), deref(taskName)
	if taskUUID != nil {
		w.TaskUUID = *taskUUID
	}
	if stepUUID != nil {
		w.StepUUID = *stepUUID
	}
	if correlation != nil {
		w.CorrelationID = *correlation
	}
	if attempt != nil {
		w.Attempt = *attempt
	}
	if maxAttempts != nil {
		w.MaxAttempts = *maxAttempts
	}
	if timeoutMS != nil {
		w.Timeout = time.Duration(*timeoutMS) * time.Millisecond
	}
	w.Config, w.Context = config, taskContext
	if parents != nil {
		require.NoError(h.t, json.Unmarshal(parents, &w.Parents))
	}
	return b, nil
}

// sqlComplete and sqlFail call tasker.step_complete and tasker.step_fail.
func (h *harness) sqlComplete(q string, msgID int64, w store.StepWork, result string) (status, reason string, err error) {
	var r *string
	err = h.pool.QueryRow(h.ctx, `SELECT status, reason FROM tasker.step_complete($1, $2, $3, $4, $5::jsonb)`,
		q, msgID, w.StepUUID, w.Attempt, result).Scan(&status, &r)
	if r != nil {
		reason = *r
	}
	return status, reason, err
}

func (h *harness) sqlFail(q string, msgID int64, w store.StepWork, stepErr string) (status string, err error) {
	var r *string
	err = h.pool.QueryRow(h.ctx, `SELECT status, reason FROM tasker.step_fail($1, $2, $3, $4, $5::jsonb)`,
		q, msgID, w.StepUUID, w.Attempt, stepErr).Scan(&status, &r)
	return status, err
}

// runToEndSQL runs a task to its end with every step taken through the SQL
// worker contract and its results applied by orchestration.
func (h *harness) runToEndSQL(task uuid.UUID) store.TaskDetail {
	h.t.Helper()
	return h.runRounds(task, func(q string, _ store.Task) {
		for _, m := range h.readAll(q) {
			b, err := h.sqlBegin(q, m.ID)
			require.NoError(h.t, err)
			require.Equal(h.t, "started", b.Status, b.Reason)
			res, herr := h.handler(b.Work).Handle(h.ctx, b.Work.Input())
			require.NoError(h.t, herr)
			status, _, err := h.sqlComplete(q, m.ID, b.Work, string(res))
			require.NoError(h.t, err)
			require.Equal(h.t, "recorded", status)
			live, _ := h.inQueue(q, m.ID)
			require.False(h.t, live, "step_complete deletes the step message")
		}
		h.applyAll()
	})
}

func newContractHarness(t *testing.T, lim store.WorkerLimits) *harness {
	h := newHarness(t, store.Options{})
	require.NoError(t, h.st.WorkerContractPublish(h.ctx, lim))
	return h
}

func sqlState(t *testing.T, err error) string {
	t.Helper()
	var pe *pgconn.PgError
	require.True(t, errors.As(err, &pe), "not a database error: %v", err)
	return pe.Code
}

// The reference workflows run through the SQL contract to the values and
// transitions they reach through Go workers; the external worker's
// transitions carry its application_name.
func TestWorkerContractRunsWorkflows(t *testing.T) {
	t.Parallel()
	h := newContractHarness(t, store.WorkerLimits{})
	for _, w := range []struct{ ns, name string }{
		{testsupport.LinearNamespace, testsupport.LinearName},
		{testsupport.DiamondNamespace, testsupport.DiamondName},
		{testsupport.MixedDAGNamespace, testsupport.MixedDAGName},
		{testsupport.TreeNamespace, testsupport.TreeName},
	} {
		t.Run(w.ns, func(t *testing.T) {
			h := h.with(t)
			viaSQL := h.runToEndSQL(h.submit(w.ns, w.name, `{"even_number": 6}`))
			requireCleanRun(t, viaSQL)
			viaGo := h.runToEnd(h.submit(w.ns, w.name, `{"even_number": 6}`))
			require.Equal(t, taskMoves(viaGo), taskMoves(viaSQL))
			require.Equal(t, stepMoves(viaGo), stepMoves(viaSQL))
			for i := range viaGo.Steps {
				require.JSONEq(t, string(viaGo.Steps[i].Result), string(viaSQL.Steps[i].Result), viaGo.Steps[i].Name)
			}
			for _, tr := range viaSQL.StepTransitions {
				if tr.To == string(workflow.StepStateInProgress) {
					require.True(t, strings.HasPrefix(tr.NodeID, "external:"), tr.NodeID)
				}
			}
		})
	}
}

// Every refusal names what is wrong and changes nothing.
func TestWorkerContractRefusals(t *testing.T) {
	t.Parallel()
	h := newContractHarness(t, store.WorkerLimits{MaxResultBytes: 1 << 10})
	q := queue.NamespaceQueue(testsupport.LinearNamespace)
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	msgs := h.readAll(q)
	require.Len(t, msgs, 1)

	_, err := h.sqlBegin(q, msgs[0].ID+1000)
	require.Equal(t, "TK404", sqlState(t, err))
	require.ErrorContains(t, err, "is not in queue")
	_, err = h.sqlBegin("Robert'); DROP TABLE tasker.steps; --", msgs[0].ID)
	require.Equal(t, "22023", sqlState(t, err))
	require.ErrorContains(t, err, "not a namespace queue")

	// A message that names no step is archived with the reason.
	junk, err := h.q.Send(h.ctx, q, []byte(`{"step_uuid": "not-a-uuid"}`), 0)
	require.NoError(t, err)
	b, err := h.sqlBegin(q, junk)
	require.NoError(t, err)
	require.Equal(t, "archived", b.Status)
	require.Contains(t, b.Reason, "undecodable")
	live, archived := h.inQueue(q, junk)
	require.True(t, !live && archived, "the undecodable message is archived")

	b, err = h.sqlBegin(q, msgs[0].ID)
	require.NoError(t, err)
	require.Equal(t, "started", b.Status)
	require.Equal(t, 1, b.Work.Attempt)
	before := h.show(task)

	stale := b.Work
	stale.Attempt = 2
	_, _, err = h.sqlComplete(q, msgs[0].ID, stale, `1`)
	require.Equal(t, "TK409", sqlState(t, err))
	require.ErrorContains(t, err, "attempt 2 of step")
	for _, bad := range []struct{ body, names string }{
		{`"boom"`, "JSON object"},
		{`{"message": "x"}`, "error.kind"},
		{`{"kind": "x", "message": 3}`, "error.message"},
		{`{"kind": "x", "message": "m", "retryable": "yes"}`, "error.retryable"},
		{`{"kind": "x", "message": "m", "retry_after_seconds": -1}`, "error.retry_after_seconds"},
		{`{"kind": "x", "message": "m", "http_status": 700}`, "error.http_status"},
		{`{"kind": "x", "message": "m", "metadata": []}`, "error.metadata"},
		{`{"kind": "x", "message": "m", "stack": "s"}`, "unknown field(s) stack"},
	} {
		_, err := h.sqlFail(q, msgs[0].ID, b.Work, bad.body)
		require.Equal(t, "22023", sqlState(t, err), bad.body)
		require.ErrorContains(t, err, bad.names, bad.body)
	}
	_, err = h.pool.Exec(h.ctx, `SELECT tasker.step_heartbeat($1, $2, $3, 1, 0)`, q, msgs[0].ID, b.Work.StepUUID)
	require.Equal(t, "22023", sqlState(t, err))
	require.Equal(t, before, h.show(task), "a refused call changes nothing")
	require.Zero(t, h.queueLen(queue.StepResultsQueue))

	// A long step keeps its message invisible.
	var vt time.Time
	require.NoError(t, h.pool.QueryRow(h.ctx, `SELECT tasker.step_heartbeat($1, $2, $3, 1, 600)`, q, msgs[0].ID, b.Work.StepUUID).Scan(&vt))
	require.WithinDuration(t, h.dbNow().Add(10*time.Minute), vt, 5*time.Second)

	// A result over the limit fails the step for good, as in a Go worker.
	status, reason, err := h.sqlComplete(q, msgs[0].ID, b.Work, fmt.Sprintf(`"%s"`, strings.Repeat("x", 2000)))
	require.NoError(t, err)
	require.Equal(t, "failed", status)
	require.Contains(t, reason, "queue.max_result_bytes")
	// The same call again (its answer lost) is told it is recorded.
	status, _, err = h.sqlComplete(q, msgs[0].ID, b.Work, `1`)
	require.NoError(t, err)
	require.Equal(t, "already recorded", status)
	h.applyAll()
	d := h.show(task)
	require.Equal(t, workflow.TaskStateError, d.State)
	s := step(t, d, "linear_step_1")
	require.Equal(t, workflow.StepStateError, s.State)
	require.Contains(t, string(s.Error), workflow.KindResultTooLarge)
}

// A retryable failure reported through step_fail is retried by
// orchestration after the Retry-After it carries; a message whose step was
// cancelled is acknowledged by step_begin with the reason.
func TestWorkerContractFailAndStale(t *testing.T) {
	t.Parallel()
	h := newContractHarness(t, store.WorkerLimits{})
	q := queue.NamespaceQueue(testsupport.LinearNamespace)
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	msgs := h.readAll(q)
	require.Len(t, msgs, 1)
	b, err := h.sqlBegin(q, msgs[0].ID)
	require.NoError(t, err)
	status, err := h.sqlFail(q, msgs[0].ID, b.Work,
		`{"kind": "http", "message": "upstream said 503", "retryable": true, "retry_after_seconds": 30, "http_status": 503, "metadata": {"host": "api.example"}}`)
	require.NoError(t, err)
	require.Equal(t, "recorded", status)
	out := h.applyAll()
	require.Len(t, out, 1)
	s := step(t, h.show(task), "linear_step_1")
	require.Equal(t, workflow.StepStateWaitingForRetry, s.State)
	var stored map[string]any
	require.NoError(t, json.Unmarshal(s.Error, &stored))
	require.Equal(t, "http", stored["kind"])
	require.EqualValues(t, 503, stored["http_status"])
	require.EqualValues(t, 30000, stored["retry_after_ms"])
	require.GreaterOrEqual(t, h.retryVisibleAt(testsupport.LinearNamespace).Sub(h.dbNow()), 25*time.Second)

	// The retry's message, its task cancelled before a worker begins it.
	require.Equal(t, 1, h.makeVisible(testsupport.LinearNamespace))
	again := h.readAll(q)
	require.Len(t, again, 1)
	err = h.st.TaskCancel(h.ctx, task, "test")
	require.NoError(t, err)
	b, err = h.sqlBegin(q, again[0].ID)
	require.NoError(t, err)
	require.Equal(t, "stale", b.Status)
	require.Contains(t, b.Reason, "cancelled")
	live, archived := h.inQueue(q, again[0].ID)
	require.False(t, live || archived, "a stale message is acknowledged")
}

// With EXECUTE on the functions and nothing else on Tasker's tables, a
// worker's role runs steps but reads no task it does not hold.
func TestWorkerContractNeedsNoTableRights(t *testing.T) {
	t.Parallel()
	h := newContractHarness(t, store.WorkerLimits{})
	role := "worker_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	for _, stmt := range []string{
		"CREATE ROLE " + role,
		"GRANT USAGE ON SCHEMA tasker TO " + role,
		"GRANT EXECUTE ON FUNCTION tasker.step_begin(text, bigint), tasker.step_complete(text, bigint, uuid, int, jsonb) TO " + role,
	} {
		_, err := h.pool.Exec(h.ctx, stmt)
		require.NoError(t, err, stmt)
	}
	t.Cleanup(func() {
		_, _ = h.pool.Exec(h.ctx, "DROP OWNED BY "+role)
		_, _ = h.pool.Exec(h.ctx, "DROP ROLE "+role)
	})
	q := queue.NamespaceQueue(testsupport.LinearNamespace)
	h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	msgs := h.readAll(q)
	require.Len(t, msgs, 1)

	tx, err := h.pool.Begin(h.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(h.ctx) }()
	_, err = tx.Exec(h.ctx, "SET LOCAL ROLE "+role)
	require.NoError(t, err)
	var status string
	require.NoError(t, tx.QueryRow(h.ctx, `SELECT status FROM tasker.step_begin($1, $2)`, q, msgs[0].ID).Scan(&status))
	require.Equal(t, "started", status)
	_, err = tx.Exec(h.ctx, "SAVEPOINT s")
	require.NoError(t, err)
	err = tx.QueryRow(h.ctx, `SELECT count(*) FROM tasker.tasks`).Scan(new(int))
	require.Equal(t, "42501", sqlState(t, err), "the role reads no table")
	_, err = tx.Exec(h.ctx, "ROLLBACK TO SAVEPOINT s")
	require.NoError(t, err)
	err = tx.QueryRow(h.ctx, `SELECT tasker.step_heartbeat($1, $2, $3, 1, 60)`, q, msgs[0].ID, uuid.New()).Scan(new(time.Time))
	require.Equal(t, "42501", sqlState(t, err), "a function not granted is refused")
}

// A message read more often than queue.max_deliveries fails its step as
// poison in step_begin, and goes to the archive with the reason.
func TestWorkerContractPoison(t *testing.T) {
	t.Parallel()
	h := newContractHarness(t, store.WorkerLimits{MaxDeliveries: 1})
	q := queue.NamespaceQueue(testsupport.LinearNamespace)
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	msgs := h.readAll(q)
	require.Len(t, msgs, 1)
	require.NoError(t, h.q.SetVisibility(h.ctx, q, msgs[0].ID, 0))
	again := h.readAll(q)
	require.Len(t, again, 1)
	require.Equal(t, 2, again[0].ReadCount)
	b, err := h.sqlBegin(q, again[0].ID)
	require.NoError(t, err)
	require.Equal(t, "archived", b.Status)
	require.Contains(t, b.Reason, "queue.max_deliveries (1)")
	live, archived := h.inQueue(q, again[0].ID)
	require.True(t, !live && archived, "the message is archived")
	h.applyAll()
	s := step(t, h.show(task), "linear_step_1")
	require.Equal(t, workflow.StepStateError, s.State)
	require.Contains(t, string(s.Error), "poison")
}
