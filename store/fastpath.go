package store

// The hot operations — starting an attempt, recording its outcome, applying
// it, creating a task — in as few round trips as the decisions between their
// statements allow. A batch of statements sent together runs as one implicit
// transaction; where a later statement must happen only if an earlier
// compare-and-set succeeded, both are one statement whose data-modifying WITH
// queries read the compare-and-set's RETURNING. The conditions are those of
// the statement-by-statement versions, which remain for the rare paths (an
// ignored or raced result, a poison message) and for a database with the
// real pgmq, whose queues may be more than their tables.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// stepStates lists every step state (the CHECK constraint of steps.state).
var stepStates = []workflow.StepState{
	workflow.StepStatePending, workflow.StepStateEnqueued, workflow.StepStateInProgress,
	workflow.StepStateWaitingForRetry, workflow.StepStateComplete, workflow.StepStateError,
	workflow.StepStateCancelled, workflow.StepStateResolvedManually,
}

// startFrom are the states the start event moves a step from, and startTo
// where it moves them, read off workflow's step machine so that the
// compare-and-set in SQL is the machine's.
var startFrom, startTo = eventEdges(workflow.StepEventStart)

func eventEdges(ev workflow.StepEvent) ([]string, workflow.StepState) {
	var (
		from []string
		to   workflow.StepState
	)
	for _, st := range stepStates {
		t, err := workflow.StepTransition(st, ev)
		if err != nil {
			continue
		}
		if to != "" && t != to {
			panic(fmt.Sprintf("store: step event %s leads to both %s and %s", ev, to, t))
		}
		from, to = append(from, string(st)), t
	}
	return from, to
}

const (
	reasonTaken       = "worker took the message"
	reasonRedelivered = "redelivered after the previous attempt was lost"
)

// sqlStepStart moves a step to in_progress (attempts+1) from a state the
// start event allows ($2) while no outcome waits, records the transition,
// and returns the work with its task's name, correlation and context.
const sqlStepStart = `
	WITH old AS (
		SELECT step_uuid, state FROM tasker.steps
		WHERE step_uuid = $1 AND state = ANY($2::text[]) AND outcome_attempt IS NULL
		FOR UPDATE
	), moved AS (
		UPDATE tasker.steps s
		SET state = $3, attempts = s.attempts + 1, last_attempted_at = now(), next_attempt_at = NULL
		FROM old WHERE s.step_uuid = old.step_uuid
		RETURNING old.state AS from_state, s.task_uuid, s.namespace, s.name, s.handler, s.attempts,
			s.attempts_base + s.max_attempts AS max_attempts, s.timeout_ms, s.config
	), recorded AS (
		INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
		SELECT $1, task_uuid, from_state, $3, CASE WHEN from_state = $5 THEN $6 ELSE $7 END, attempts, $4
		FROM moved
	)
	SELECT m.from_state, m.task_uuid, m.namespace, m.name, m.handler, m.attempts, m.max_attempts,
		m.timeout_ms, m.config, t.name, t.correlation_id, t.context
	FROM moved m JOIN tasker.tasks t ON t.task_uuid = m.task_uuid`

const sqlStepParents = `
	SELECT p.name, COALESCE(p.result, 'null'::jsonb)
	FROM tasker.step_edges e JOIN tasker.steps p ON p.step_uuid = e.from_step
	WHERE e.to_step = $1`

// StepStart begins an attempt of a step when a worker takes its message:
// enqueued, waiting_for_retry or in_progress (a redelivery after a lost
// worker) move to in_progress with attempts+1. It returns ErrStale when the
// step is in no such state (cancelled, finished, or an outcome is already
// recorded): the worker acknowledges the message and runs nothing. One round
// trip: the start and the read of the parents' results travel together.
func (s *Store) StepStart(ctx context.Context, step uuid.UUID) (StepWork, error) {
	w := StepWork{StepUUID: step}
	var (
		from      string
		timeoutMS int64
		stale     bool
	)
	b := &pgx.Batch{}
	b.Queue(sqlStepStart, pgUUID(step), startFrom, string(startTo), s.nodeID,
		string(workflow.StepStateInProgress), reasonRedelivered, reasonTaken).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&from, scanUUID(&w.TaskUUID), &w.Namespace, &w.StepName, &w.Handler, &w.Attempt,
			&w.MaxAttempts, &timeoutMS, &w.Config, &w.TaskName, scanUUID(&w.CorrelationID), &w.Context)
		if errors.Is(err, pgx.ErrNoRows) {
			stale = true
			return nil
		}
		return err
	})
	b.Queue(sqlStepParents, pgUUID(step)).Query(func(rows pgx.Rows) error {
		w.Parents = map[string]json.RawMessage{}
		var (
			name   string
			result []byte
		)
		_, err := pgx.ForEachRow(rows, []any{&name, &result}, func() error {
			w.Parents[name] = json.RawMessage(append([]byte(nil), result...))
			return nil
		})
		return err
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return StepWork{}, fmt.Errorf("starting step %s: %w", step, translate(err))
	}
	if stale {
		return StepWork{}, ErrStale
	}
	w.Timeout = time.Duration(timeoutMS) * time.Millisecond
	return w, nil
}

// pgUUID passes a UUID as the [16]byte pgx encodes natively: uuid.UUID is a
// driver.Valuer, which pgx encodes through its text form, a failed binary
// attempt and a parse — a tenth of the node's CPU time on the hot paths.
func pgUUID(u uuid.UUID) [16]byte { return u }

func pgUUIDs(us []uuid.UUID) [][16]byte {
	out := make([][16]byte, len(us))
	for i, u := range us {
		out[i] = u
	}
	return out
}

// scanUUID scans a uuid column natively (see pgUUID).
func scanUUID(u *uuid.UUID) *[16]byte { return (*[16]byte)(u) }

// Statements that name queue tables are built once per queue from a template
// whose %[n]s are the tables (validated and quoted by package queue).
type queueStatementKey struct {
	template string
	queues   [2]string
}

var queueStatements sync.Map // queueStatementKey → string

func withQueues(template string, queues ...string) (string, error) {
	key := queueStatementKey{template: template}
	copy(key.queues[:], queues)
	if sql, ok := queueStatements.Load(key); ok {
		return sql.(string), nil
	}
	tables := make([]any, len(queues))
	for i, q := range queues {
		t, err := queue.Table(q)
		if err != nil {
			return "", err
		}
		tables[i] = t
	}
	sql := fmt.Sprintf(template, tables...)
	queueStatements.Store(key, sql)
	return sql, nil
}

// sqlRecordOutcome records an outcome on the step (compare-and-set on the
// attempt, no outcome waiting) and, only then, sends the result message to
// %[1]s (the result queue), deletes the step message from %[2]s (the
// namespace queue) and wakes the result's consumer at commit.
const sqlRecordOutcome = `
	WITH recorded AS (
		UPDATE tasker.steps
		SET outcome_attempt = $2, outcome_ok = $3,
			result = CASE WHEN $3 THEN $4::jsonb ELSE result END,
			error = CASE WHEN $3 THEN NULL ELSE $5::jsonb END,
			retry_after_ms = $6, duration_ms = $7
		WHERE step_uuid = $1 AND state = 'in_progress' AND attempts = $2 AND outcome_attempt IS NULL
		RETURNING step_uuid
	), sent AS (
		INSERT INTO %[1]s (vt, message) SELECT clock_timestamp(), $8::jsonb FROM recorded
		RETURNING msg_id
	), acked AS (
		DELETE FROM %[2]s WHERE msg_id = $9 AND EXISTS (SELECT FROM recorded)
		RETURNING msg_id
	), woke AS (
		SELECT pg_notify($10, $11) FROM recorded
	)
	SELECT (SELECT count(*) FROM recorded), (SELECT count(*) FROM sent), (SELECT count(*) FROM woke)`

// recordOutcomeFast is StepRecordOutcome in one statement. ok is false when
// the fast path does not apply (the real pgmq); the caller then takes the
// statement-by-statement path.
func (s *Store) recordOutcomeFast(ctx context.Context, o Outcome, okOutcome bool, result, errJSON, body []byte, retryAfterMS *int64) (bool, error) {
	if o.Archive {
		return false, nil
	}
	if direct, err := s.queue.Direct(ctx); err != nil || !direct {
		return false, err
	}
	nsQueue := queue.NamespaceQueue(o.Namespace)
	sql, err := withQueues(sqlRecordOutcome, queue.StepResultsQueue, nsQueue)
	if err != nil {
		return true, err
	}
	var recorded, sent, woke int64
	err = s.pool.QueryRow(ctx, sql, pgUUID(o.StepUUID), o.Attempt, okOutcome, result, errJSON, retryAfterMS,
		o.Duration.Milliseconds(), body, o.MsgID, WakeChannel, queue.StepResultsQueue).Scan(&recorded, &sent, &woke)
	if err != nil {
		return true, fmt.Errorf("recording outcome of step %s: %w", o.StepUUID, translate(err))
	}
	if recorded == 0 {
		return true, ErrStale
	}
	return true, nil
}

// sqlResultRead reads, without locking, what applying a result decides on:
// the task's state and correlation, the step, and the step's children.
const sqlResultRead = `
	SELECT t.state, t.correlation_id, s.name, s.namespace, s.state, s.attempts, s.attempts_base,
		s.max_attempts, s.retryable, s.outcome_attempt, s.outcome_ok, s.error, s.retry_after_ms,
		s.backoff_base_ms, s.backoff_max_ms,
		ARRAY(SELECT e.to_step FROM tasker.step_edges e WHERE e.from_step = s.step_uuid)
	FROM tasker.steps s JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
	WHERE s.step_uuid = $1 AND s.task_uuid = $2`

const sqlLockTask = `SELECT FROM tasker.tasks WHERE task_uuid = $1 FOR UPDATE`

// sqlApplyResult applies a decided outcome: the step's compare-and-set (the
// state, attempt and outcome read before, its task still in progress) and,
// only when it succeeds, its transition; on success the release of its
// children, enqueueing those with no parent left (compare-and-set on
// pending) with their transitions and messages to %[1]s (the namespace
// queue); on a retryable failure the retry message, delayed; the wake-up of
// the namespace's poller; the deletion of the result message from %[2]s.
const sqlApplyResult = `
	WITH moved AS (
		UPDATE tasker.steps SET state = $3, outcome_attempt = NULL, outcome_ok = NULL,
			next_attempt_at = $4, finished_at = CASE WHEN $5 THEN now() END
		WHERE step_uuid = $1 AND state = $2 AND attempts = $6 AND outcome_attempt = $6
			AND EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = $7 AND state = $8)
		RETURNING step_uuid
	), moved_recorded AS (
		INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
		SELECT step_uuid, $7, $2, $3, $9, $6, $10 FROM moved
		RETURNING id
	), released AS (
		UPDATE tasker.steps c
		SET waiting_parents = c.waiting_parents - 1,
			state = CASE WHEN old.ready THEN $12 ELSE c.state END,
			enqueued_at = CASE WHEN old.ready THEN now() ELSE c.enqueued_at END
		FROM (
			SELECT c2.step_uuid, c2.waiting_parents = 1 AND c2.state = $11 AS ready
			FROM tasker.step_edges e JOIN tasker.steps c2 ON c2.step_uuid = e.to_step
			WHERE e.from_step = $1 AND $13 AND EXISTS (SELECT FROM moved)
			FOR UPDATE OF c2
		) old
		WHERE c.step_uuid = old.step_uuid
		RETURNING c.step_uuid, old.ready
	), released_recorded AS (
		-- Reading moved_recorded first orders the children's transitions
		-- after their parent's.
		INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
		SELECT r.step_uuid, $7, $11, $12, $14, 0, $10
		FROM (SELECT count(*) FROM moved_recorded) parent, released r WHERE r.ready
	), sent AS (
		INSERT INTO %[1]s (vt, message)
		SELECT clock_timestamp(), m.msg
		FROM unnest($15::uuid[], $16::jsonb[]) AS m(step_uuid, msg)
			JOIN released r ON r.step_uuid = m.step_uuid AND r.ready
		UNION ALL
		SELECT clock_timestamp() + $17::bigint * interval '1 microsecond', $18::jsonb FROM moved WHERE $19
		RETURNING msg_id
	), woke AS (
		SELECT pg_notify($20, $21)
		FROM (SELECT FROM released WHERE ready UNION ALL SELECT FROM moved WHERE $19 AND $17 = 0 LIMIT 1) r
	), acked AS (
		DELETE FROM %[2]s WHERE msg_id = $22 AND EXISTS (SELECT FROM moved)
		RETURNING msg_id
	)
	SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM released WHERE ready),
		(SELECT count(*) FROM sent), (SELECT count(*) FROM woke), (SELECT count(*) FROM acked)`

// sqlFinalize is finalize in one statement: complete the task ($3) when
// every step is complete or resolved, fail it ($4) when a step failed and
// none is in flight, from state $2 (compare-and-set), with the transition.
const sqlFinalize = `
	WITH counts AS (
		SELECT count(*) AS total,
			count(*) FILTER (WHERE state IN ('complete', 'resolved_manually')) AS satisfied,
			count(*) FILTER (WHERE state IN ('enqueued', 'in_progress', 'waiting_for_retry')) AS in_flight,
			array_agg(name ORDER BY position) FILTER (WHERE state = 'error') AS failed
		FROM tasker.steps WHERE task_uuid = $1
	), decided AS (
		SELECT CASE WHEN satisfied = total THEN $3 WHEN in_flight = 0 AND failed IS NOT NULL THEN $4 END AS to_state,
			CASE WHEN satisfied = total THEN $5 ELSE 'step ' || array_to_string(failed, ', ') || ' failed' END AS reason,
			CASE WHEN satisfied = total THEN $6::bool ELSE $7::bool END AS terminal
		FROM counts
	), moved AS (
		UPDATE tasker.tasks t SET state = d.to_state, updated_at = now(),
			finished_at = CASE WHEN d.terminal THEN now() END
		FROM decided d
		WHERE t.task_uuid = $1 AND t.state = $2 AND d.to_state IS NOT NULL
		RETURNING t.state, d.reason
	), recorded AS (
		INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id)
		SELECT $1, $2, state, reason, $8 FROM moved
	)
	SELECT state FROM moved`

// taskEnds are the states finalize moves an in-progress task to.
var taskCompleteTo, taskFailTo = mustTaskTransition(workflow.TaskEventComplete), mustTaskTransition(workflow.TaskEventFail)

func mustTaskTransition(ev workflow.TaskEvent) workflow.TaskState {
	to, err := workflow.TaskTransition(workflow.TaskStateInProgress, ev)
	if err != nil {
		panic(fmt.Sprintf("store: %v", err))
	}
	return to
}

// enqueueTo is where the enqueue event moves a pending step.
var enqueueTo = func() workflow.StepState {
	to, err := workflow.StepTransition(workflow.StepStatePending, workflow.StepEventEnqueue)
	if err != nil {
		panic(fmt.Sprintf("store: %v", err))
	}
	return to
}()

// applyResultFast applies a result in two round trips: an unlocked read of
// what the decision needs, then, in one implicit transaction, the task lock,
// the compare-and-set of the step with everything that follows from it, and
// finalization. ok is false when the fast path does not apply — the result
// is to be ignored, a compare-and-set lost a race, or the queues are the real
// pgmq's — and the caller then applies the result the statement-by-statement
// way, which also acknowledges what is to be ignored.
func (s *Store) applyResultFast(ctx context.Context, msg queue.Message, res queue.StepResult) (ResultOutcome, bool, error) {
	out := ResultOutcome{TaskUUID: res.TaskUUID, StepUUID: res.StepUUID}
	if direct, err := s.queue.Direct(ctx); err != nil || !direct {
		return out, false, err
	}
	var (
		st          stepRow
		taskState   string
		stepState   string
		correlation uuid.UUID
		children    [][16]byte
	)
	err := s.pool.QueryRow(ctx, sqlResultRead, pgUUID(res.StepUUID), pgUUID(res.TaskUUID)).Scan(&taskState, scanUUID(&correlation),
		&st.Name, &st.Namespace, &stepState, &st.Attempts, &st.AttemptsBase, &st.MaxAttempts, &st.Retryable,
		&st.OutcomeAttempt, &st.OutcomeOK, &st.Error, &st.RetryAfterMS, &st.BackoffBaseMS, &st.BackoffMaxMS, &children)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, false, nil
	}
	if err != nil {
		return out, false, fmt.Errorf("reading step %s: %w", res.StepUUID, err)
	}
	st.State = workflow.StepState(stepState)
	if workflow.TaskState(taskState) != workflow.TaskStateInProgress || st.State != workflow.StepStateInProgress ||
		st.Attempts != res.Attempt || st.OutcomeAttempt == nil || *st.OutcomeAttempt != res.Attempt {
		return out, false, nil
	}
	d, err := s.decide(st)
	if err != nil {
		return out, false, err
	}

	nsQueue := queue.NamespaceQueue(st.Namespace)
	sql, err := withQueues(sqlApplyResult, nsQueue, queue.StepResultsQueue)
	if err != nil {
		return out, true, err
	}
	complete := d.to == workflow.StepStateComplete
	retry := d.to == workflow.StepStateWaitingForRetry
	var childMsgs [][]byte
	if complete {
		childMsgs = make([][]byte, len(children))
		for i, c := range children {
			if childMsgs[i], err = (queue.StepMessage{TaskUUID: res.TaskUUID, StepUUID: uuid.UUID(c), CorrelationID: correlation}).Encode(); err != nil {
				return out, true, fmt.Errorf("encoding step message: %w", err)
			}
		}
	} else {
		children = nil
	}
	var retryMsg []byte
	if retry {
		if retryMsg, err = (queue.StepMessage{TaskUUID: res.TaskUUID, StepUUID: res.StepUUID, CorrelationID: correlation}).Encode(); err != nil {
			return out, true, fmt.Errorf("encoding step message: %w", err)
		}
	}

	var moved, enqueued, sent, woke, acked int64
	finalState := workflow.TaskStateInProgress
	b := &pgx.Batch{}
	b.Queue(sqlLockTask, pgUUID(res.TaskUUID))
	b.Queue(sql, pgUUID(res.StepUUID), string(st.State), string(d.to), d.retryAt, d.to.Terminal(), res.Attempt,
		pgUUID(res.TaskUUID), string(workflow.TaskStateInProgress), d.reason, s.nodeID,
		string(workflow.StepStatePending), string(enqueueTo), complete, fmt.Sprintf("parent %s complete", st.Name),
		children, childMsgs, d.delay.Microseconds(), retryMsg, retry,
		WakeChannel, nsQueue, msg.ID).QueryRow(func(row pgx.Row) error {
		return row.Scan(&moved, &enqueued, &sent, &woke, &acked)
	})
	if !retry {
		b.Queue(sqlFinalize, pgUUID(res.TaskUUID), string(workflow.TaskStateInProgress), string(taskCompleteTo), string(taskFailTo),
			"every step complete", taskCompleteTo.Terminal(), taskFailTo.Terminal(), s.nodeID).QueryRow(func(row pgx.Row) error {
			var state string
			err := row.Scan(&state)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			finalState = workflow.TaskState(state)
			return err
		})
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return out, true, fmt.Errorf("applying result of step %s: %w", res.StepUUID, translate(err))
	}
	if moved == 0 {
		// Lost a race since the read: the careful path decides again.
		return out, false, nil
	}
	out.Namespace = st.Namespace
	out.StepState = d.to
	out.TaskState = finalState
	out.Enqueued = int(enqueued)
	if d.retryAt != nil {
		out.RetryAt = *d.retryAt
	}
	return out, true, nil
}

// A task's creation in one implicit transaction: the task row first, then
// every other row only if that row is the one this batch inserted (a
// repeated request inserts nothing, and so creates nothing).
const (
	sqlTaskInsert = `
		INSERT INTO tasker.tasks (task_uuid, request_id, correlation_id, template_id, namespace, name,
			version, state, context, priority, requested_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11)
		ON CONFLICT (request_id) DO NOTHING`
	sqlTaskStepsInsert = `
		INSERT INTO tasker.steps (step_uuid, task_uuid, name, position, namespace, handler, config, state,
			max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms, waiting_parents, enqueued_at)
		SELECT u, $2, nm, p, $3, h, c::jsonb, st, m, r, t, bb, bm, w,
			CASE WHEN st = 'enqueued' THEN now() END
		FROM unnest($1::uuid[], $4::text[], $5::int[], $6::text[], $7::text[], $8::text[], $9::int[],
			$10::bool[], $11::bigint[], $12::bigint[], $13::bigint[], $14::int[])
			AS x(u, nm, p, h, c, st, m, r, t, bb, bm, w)
		WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = $2)`
	sqlTaskEdgesInsert = `
		INSERT INTO tasker.step_edges (task_uuid, from_step, to_step)
		SELECT $1, f, t FROM unnest($2::uuid[], $3::uuid[]) AS x(f, t)
		WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = $1)`
	sqlTaskMovesInsert = `
		INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id)
		SELECT $1, f, t, r, $6 FROM (VALUES (NULL, $2, $3, 1), ($2, $4, $5, 2)) AS v(f, t, r, n)
		WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = $1)
		ORDER BY n`
	sqlTaskStepMovesInsert = `
		INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
		SELECT s, t, NULLIF(f, ''), o, r, a, $7
		FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[])
			WITH ORDINALITY AS x(s, t, f, o, r, a, n)
		WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = $8)
		ORDER BY n`
	// sqlTaskRoots sends the roots' messages to %[1]s (the namespace queue)
	// and wakes its poller, if the task is new; deletes the request from
	// %[2]s either way; and returns the task of the request.
	sqlTaskRoots = `
		WITH sent AS (
			INSERT INTO %[1]s (vt, message)
			SELECT clock_timestamp(), m.msg FROM unnest($1::jsonb[]) WITH ORDINALITY AS m(msg, n)
			WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = $2)
			ORDER BY m.n
			RETURNING msg_id
		), woke AS (
			SELECT pg_notify($3, $4) WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = $2)
		), acked AS (
			DELETE FROM %[2]s WHERE msg_id = $5 RETURNING msg_id
		)
		SELECT t.task_uuid, (SELECT count(*) FROM sent), (SELECT count(*) FROM woke), (SELECT count(*) FROM acked)
		FROM tasker.tasks t WHERE t.request_id = $6`
)

// acceptFast is AcceptTaskRequest in two round trips: the template's
// look-up, then the task's creation with the request's deletion. ok is false
// when the fast path does not apply (the real pgmq).
func (s *Store) acceptFast(ctx context.Context, msg queue.Message, req queue.TaskRequest) (RequestOutcome, bool, error) {
	out := RequestOutcome{RequestID: req.RequestID}
	if direct, err := s.queue.Direct(ctx); err != nil || !direct {
		return out, false, err
	}
	tmpl, err := s.templateResolve(ctx, s.pool, req.Namespace, req.Name, req.Version)
	if err != nil {
		return out, true, err
	}
	p, err := planTask(req, tmpl)
	if err != nil {
		return out, true, err
	}
	roots, err := withQueues(sqlTaskRoots, queue.NamespaceQueue(req.Namespace), queue.TaskRequestsQueue)
	if err != nil {
		return out, true, err
	}
	rootMsgs := make([][]byte, len(p.ready))
	for i, r := range p.ready {
		if rootMsgs[i], err = (queue.StepMessage{TaskUUID: r.Task, StepUUID: r.Step, CorrelationID: r.CorrelationID}).Encode(); err != nil {
			return out, true, fmt.Errorf("encoding step message: %w", err)
		}
	}
	n := len(p.moves)
	moveSteps, moveTasks := make([][16]byte, n), make([][16]byte, n)
	froms, tos, reasons, attempts := make([]string, n), make([]string, n), make([]string, n), make([]int32, n)
	for i, m := range p.moves {
		moveSteps[i], moveTasks[i], froms[i], tos[i], reasons[i], attempts[i] = m.Step, m.Task, string(m.From), string(m.To), m.Reason, int32(m.Attempt)
	}

	b := &pgx.Batch{}
	id := pgUUID(p.id)
	b.Queue(sqlTaskInsert, id, pgUUID(req.RequestID), pgUUID(p.correlation), tmpl.ID, req.Namespace, req.Name, tmpl.Version,
		string(p.started), p.context, req.Priority, req.RequestedBy)
	b.Queue(sqlTaskStepsInsert, pgUUIDs(p.ids), id, req.Namespace, p.names, p.positions, p.handlers, p.configs, p.states,
		p.maxAttempts, p.retryable, p.timeouts, p.backoffBase, p.backoffMax, p.waiting)
	if len(p.edgeFrom) > 0 {
		b.Queue(sqlTaskEdgesInsert, id, pgUUIDs(p.edgeFrom), pgUUIDs(p.edgeTo))
	}
	b.Queue(sqlTaskMovesInsert, id, string(workflow.TaskStatePending), reasonTaskCreated, string(p.started), reasonTaskStarted, s.nodeID)
	b.Queue(sqlTaskStepMovesInsert, moveSteps, moveTasks, froms, tos, reasons, attempts, s.nodeID, id)
	var sent, woke, acked int64
	b.Queue(roots, rootMsgs, id, WakeChannel, queue.NamespaceQueue(req.Namespace), msg.ID, pgUUID(req.RequestID)).
		QueryRow(func(row pgx.Row) error { return row.Scan(scanUUID(&out.TaskUUID), &sent, &woke, &acked) })
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return out, true, fmt.Errorf("creating task: %w", translate(err))
	}
	if out.TaskUUID == p.id {
		out.Created, out.Enqueued = true, int(sent)
	}
	return out, true, nil
}
