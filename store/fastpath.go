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

// sqlStepStart moves steps ($1) to in_progress (attempts+1) from a state
// the start event allows ($2) while no outcome waits, locking them in the
// order of their ids, records the transitions, and returns the work with
// each task's name, correlation and context.
const sqlStepStart = `
	WITH old AS (
		SELECT step_uuid, state FROM tasker.steps
		WHERE step_uuid = ANY($1::uuid[]) AND state = ANY($2::text[]) AND outcome_attempt IS NULL
		ORDER BY step_uuid
		FOR UPDATE
	), moved AS (
		UPDATE tasker.steps s
		SET state = $3, attempts = s.attempts + 1, last_attempted_at = now(), next_attempt_at = NULL
		FROM old WHERE s.step_uuid = old.step_uuid
		RETURNING s.step_uuid, old.state AS from_state, s.task_uuid, s.namespace, s.name, s.handler, s.attempts,
			s.attempts_base + s.max_attempts AS max_attempts, s.timeout_ms, s.config
	), recorded AS (
		INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
		SELECT step_uuid, task_uuid, from_state, $3, CASE WHEN from_state = $5 THEN $6 ELSE $7 END, attempts, $4
		FROM moved
	)
	SELECT m.step_uuid, m.task_uuid, m.namespace, m.name, m.handler, m.attempts, m.max_attempts,
		m.timeout_ms, m.config, t.name, t.correlation_id, t.context
	FROM moved m JOIN tasker.tasks t ON t.task_uuid = m.task_uuid`

// sqlStepParents reads the results of the parents of steps $1.
const sqlStepParents = `
	SELECT e.to_step, p.name, COALESCE(p.result, 'null'::jsonb)
	FROM tasker.step_edges e JOIN tasker.steps p ON p.step_uuid = e.from_step
	WHERE e.to_step = ANY($1::uuid[])`

// StepStart begins an attempt of a step when a worker takes its message:
// enqueued, waiting_for_retry or in_progress (a redelivery after a lost
// worker) move to in_progress with attempts+1. It returns ErrStale when the
// step is in no such state (cancelled, finished, or an outcome is already
// recorded): the worker acknowledges the message and runs nothing.
// Concurrent starts go together: one round trip and one commit for the
// batch.
func (s *Store) StepStart(ctx context.Context, step uuid.UUID) (StepWork, error) {
	return s.starts.do(ctx, step)
}

// startSteps starts a batch of steps, each at most once.
func (s *Store) startSteps(ctx context.Context, steps []uuid.UUID) ([]answer[StepWork], error) {
	answers := make([]answer[StepWork], len(steps))
	index := make(map[uuid.UUID]int, len(steps))
	for i, st := range steps {
		index[st] = i
		answers[i].err = ErrStale
	}
	ids := pgUUIDs(steps)
	b := newBatch()
	b.Queue(sqlStepStart, ids, startFrom, string(startTo), s.nodeID,
		string(workflow.StepStateInProgress), reasonRedelivered, reasonTaken).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				w         StepWork
				timeoutMS int64
			)
			if err := rows.Scan(scanUUID(&w.StepUUID), scanUUID(&w.TaskUUID), &w.Namespace, &w.StepName, &w.Handler, &w.Attempt,
				&w.MaxAttempts, &timeoutMS, &w.Config, &w.TaskName, scanUUID(&w.CorrelationID), &w.Context); err != nil {
				return err
			}
			w.Timeout = time.Duration(timeoutMS) * time.Millisecond
			w.Parents = map[string]json.RawMessage{}
			answers[index[w.StepUUID]] = answer[StepWork]{res: w}
		}
		return rows.Err()
	})
	b.Queue(sqlStepParents, ids).Query(func(rows pgx.Rows) error {
		var (
			step   uuid.UUID
			name   string
			result []byte
		)
		_, err := pgx.ForEachRow(rows, []any{scanUUID(&step), &name, &result}, func() error {
			if a := &answers[index[step]]; a.err == nil {
				a.res.Parents[name] = json.RawMessage(append([]byte(nil), result...))
			}
			return nil
		})
		return err
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("starting steps: %w", translate(err))
	}
	return answers, nil
}

// newBatch starts a batch of hot statements: one implicit transaction,
// planned by key (see queue.KeyAccess).
func newBatch() *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(queue.KeyAccess)
	return b
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

// sqlRecordOutcomes records outcomes on steps (compare-and-set on the
// attempt, no outcome waiting) and, for those recorded, sends the result
// messages to %[1]s (the result queue), deletes the step messages from
// %[2]s (the namespace queue) and wakes the results' consumer at commit. It
// returns the steps recorded.
const sqlRecordOutcomes = `
	WITH o AS (
		SELECT * FROM unnest($1::uuid[], $2::int[], $3::bool[], $4::jsonb[], $5::jsonb[], $6::bigint[],
			$7::bigint[], $8::jsonb[], $9::bigint[])
			AS o(step_uuid, attempt, ok, result, error, retry_after_ms, duration_ms, body, msg_id)
		ORDER BY step_uuid
	), recorded AS (
		UPDATE tasker.steps s
		SET outcome_attempt = o.attempt, outcome_ok = o.ok,
			result = CASE WHEN o.ok THEN o.result ELSE s.result END,
			error = CASE WHEN o.ok THEN NULL ELSE o.error END,
			retry_after_ms = o.retry_after_ms, duration_ms = o.duration_ms
		FROM o
		WHERE s.step_uuid = o.step_uuid AND s.state = 'in_progress' AND s.attempts = o.attempt
			AND s.outcome_attempt IS NULL
		RETURNING s.step_uuid, o.body, o.msg_id
	), sent AS (
		INSERT INTO %[1]s (vt, message) SELECT clock_timestamp(), body FROM recorded
		RETURNING msg_id
	), acked AS (
		DELETE FROM %[2]s WHERE msg_id IN (SELECT msg_id FROM recorded)
		RETURNING msg_id
	), woke AS (
		SELECT pg_notify($10, $11) WHERE EXISTS (SELECT FROM recorded)
	)
	SELECT r.step_uuid FROM recorded r, (SELECT count(*) FROM woke) w`

// outcomeCall is one outcome to record in a batch, encoded.
type outcomeCall struct {
	o            Outcome
	ok           bool
	result       []byte
	errJSON      []byte
	retryAfterMS *int64
	body         []byte
}

// recordOutcomes records a batch of outcomes: one statement per namespace,
// all in one implicit transaction. A stale outcome is answered ErrStale and
// changes nothing.
func (s *Store) recordOutcomes(ctx context.Context, calls []outcomeCall) ([]answer[struct{}], error) {
	answers := make([]answer[struct{}], len(calls))
	index := make(map[uuid.UUID]int, len(calls))
	byNamespace := map[string][]int{}
	for i, c := range calls {
		index[c.o.StepUUID] = i
		answers[i].err = ErrStale
		byNamespace[c.o.Namespace] = append(byNamespace[c.o.Namespace], i)
	}
	b := newBatch()
	for ns, is := range byNamespace {
		sql, err := withQueues(sqlRecordOutcomes, queue.StepResultsQueue, queue.NamespaceQueue(ns))
		if err != nil {
			return nil, err
		}
		n := len(is)
		var (
			steps      = make([][16]byte, n)
			attempts   = make([]int32, n)
			oks        = make([]bool, n)
			results    = make([][]byte, n)
			errs       = make([][]byte, n)
			retryAfter = make([]*int64, n)
			durations  = make([]int64, n)
			bodies     = make([][]byte, n)
			msgIDs     = make([]int64, n)
		)
		for j, i := range is {
			c := calls[i]
			steps[j], attempts[j], oks[j], results[j], errs[j] = c.o.StepUUID, int32(c.o.Attempt), c.ok, c.result, c.errJSON
			retryAfter[j], durations[j], bodies[j], msgIDs[j] = c.retryAfterMS, c.o.Duration.Milliseconds(), c.body, c.o.MsgID
		}
		b.Queue(sql, steps, attempts, oks, results, errs, retryAfter, durations, bodies, msgIDs,
			WakeChannel, queue.StepResultsQueue).Query(func(rows pgx.Rows) error {
			var step uuid.UUID
			_, err := pgx.ForEachRow(rows, []any{scanUUID(&step)}, func() error {
				answers[index[step]].err = nil
				return nil
			})
			return err
		})
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("recording outcomes: %w", translate(err))
	}
	return answers, nil
}

// sqlResultRead reads, without locking, what applying results decides on:
// for each (step $1[i], task $2[i]), the task's state and correlation, the
// step, and the step's children.
const sqlResultRead = `
	SELECT s.step_uuid, t.state, t.correlation_id, s.name, s.namespace, s.state, s.attempts, s.attempts_base,
		s.max_attempts, s.retryable, s.outcome_attempt, s.outcome_ok, s.error, s.retry_after_ms,
		s.backoff_base_ms, s.backoff_max_ms,
		ARRAY(SELECT e.to_step FROM tasker.step_edges e WHERE e.from_step = s.step_uuid)
	FROM unnest($1::uuid[], $2::uuid[]) AS r(step_uuid, task_uuid)
		JOIN tasker.steps s ON s.step_uuid = r.step_uuid AND s.task_uuid = r.task_uuid
		JOIN tasker.tasks t ON t.task_uuid = s.task_uuid`

// sqlLockTasks locks tasks in the order of their ids, the order every
// batch takes them in, so two batches never wait on each other in a cycle.
const sqlLockTasks = `SELECT FROM tasker.tasks WHERE task_uuid = ANY($1::uuid[]) ORDER BY task_uuid FOR UPDATE`

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

// resultCall is one result to apply in a batch.
type resultCall struct {
	msg queue.Message
	res queue.StepResult
}

// resultAnswer is a batch's answer for one result. fast is false when the
// batch did not apply it — the result is to be ignored, or a compare-and-set
// lost a race — and the caller then applies it the
// statement-by-statement way, which also acknowledges what is to be ignored.
type resultAnswer struct {
	out  ResultOutcome
	fast bool
}

// resultPlan is what applying one result of a batch decided.
type resultPlan struct {
	i         int
	st        stepRow
	d         resultDecision
	namespace string
	children  [][16]byte
	childMsgs [][]byte
	retryMsg  []byte

	moved, enqueued, sent, woke, acked int64
	finalState                         workflow.TaskState
}

// applyResults applies results of different tasks in two round trips: an
// unlocked read of what the decisions need, then, in one implicit
// transaction, the tasks' locks and, for each result, the compare-and-set
// of the step with everything that follows from it and the task's
// finalization. A result whose compare-and-set fails changes nothing and is
// not acknowledged (its statement's writes all hang on the step's move); the
// others commit.
func (s *Store) applyResults(ctx context.Context, calls []resultCall) ([]answer[resultAnswer], error) {
	answers := make([]answer[resultAnswer], len(calls))
	steps, tasks := make([][16]byte, len(calls)), make([][16]byte, len(calls))
	index := make(map[uuid.UUID]int, len(calls))
	for i, c := range calls {
		answers[i].res.out = ResultOutcome{TaskUUID: c.res.TaskUUID, StepUUID: c.res.StepUUID}
		steps[i], tasks[i] = c.res.StepUUID, c.res.TaskUUID
		index[c.res.StepUUID] = i
	}
	var plans []*resultPlan
	read := newBatch()
	read.Queue(sqlResultRead, steps, tasks).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				step        uuid.UUID
				taskState   string
				stepState   string
				correlation uuid.UUID
				p           resultPlan
			)
			if err := rows.Scan(scanUUID(&step), &taskState, scanUUID(&correlation), &p.st.Name, &p.st.Namespace, &stepState,
				&p.st.Attempts, &p.st.AttemptsBase, &p.st.MaxAttempts, &p.st.Retryable, &p.st.OutcomeAttempt, &p.st.OutcomeOK,
				&p.st.Error, &p.st.RetryAfterMS, &p.st.BackoffBaseMS, &p.st.BackoffMaxMS, &p.children); err != nil {
				return err
			}
			p.i = index[step]
			res := calls[p.i].res
			p.st.State = workflow.StepState(stepState)
			if workflow.TaskState(taskState) != workflow.TaskStateInProgress || p.st.State != workflow.StepStateInProgress ||
				p.st.Attempts != res.Attempt || p.st.OutcomeAttempt == nil || *p.st.OutcomeAttempt != res.Attempt {
				continue // the careful path decides what to ignore
			}
			var err error
			if p.d, err = s.decide(p.st); err != nil {
				answers[p.i].err = err
				continue
			}
			if err := p.messages(res, correlation); err != nil {
				answers[p.i].err = err
				continue
			}
			plans = append(plans, &p)
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, read).Close(); err != nil {
		return nil, fmt.Errorf("reading steps: %w", translate(err))
	}
	if len(plans) == 0 {
		return answers, nil
	}

	locked := make([][16]byte, len(plans))
	for i, p := range plans {
		locked[i] = calls[p.i].res.TaskUUID
	}
	b := newBatch()
	b.Queue(sqlLockTasks, locked)
	for _, p := range plans {
		if err := s.queueApply(b, p, calls[p.i]); err != nil {
			return nil, err
		}
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("applying results: %w", translate(err))
	}
	for _, p := range plans {
		if p.moved == 0 {
			continue // lost a race since the read: the careful path decides again
		}
		a := &answers[p.i].res
		a.fast = true
		a.out.Namespace = p.st.Namespace
		a.out.StepState = p.d.to
		a.out.TaskState = p.finalState
		a.out.Enqueued = int(p.enqueued)
		if p.d.retryAt != nil {
			a.out.RetryAt = *p.d.retryAt
		}
	}
	return answers, nil
}

// messages encodes the step messages the decision sends: the children's on
// success (those that turn out ready are sent), the step's own on a retry.
func (p *resultPlan) messages(res queue.StepResult, correlation uuid.UUID) error {
	var err error
	switch p.d.to {
	case workflow.StepStateComplete:
		p.childMsgs = make([][]byte, len(p.children))
		for i, c := range p.children {
			if p.childMsgs[i], err = (queue.StepMessage{TaskUUID: res.TaskUUID, StepUUID: uuid.UUID(c), CorrelationID: correlation}).Encode(); err != nil {
				return fmt.Errorf("encoding step message: %w", err)
			}
		}
	case workflow.StepStateWaitingForRetry:
		p.children = nil
		if p.retryMsg, err = (queue.StepMessage{TaskUUID: res.TaskUUID, StepUUID: res.StepUUID, CorrelationID: correlation}).Encode(); err != nil {
			return fmt.Errorf("encoding step message: %w", err)
		}
	default:
		p.children = nil
	}
	return nil
}

// queueApply adds one result's statements to b: the apply and, unless the
// step waits for a retry, the task's finalization.
func (s *Store) queueApply(b *pgx.Batch, p *resultPlan, c resultCall) error {
	nsQueue := queue.NamespaceQueue(p.st.Namespace)
	sql, err := withQueues(sqlApplyResult, nsQueue, queue.StepResultsQueue)
	if err != nil {
		return err
	}
	res := c.res
	complete := p.d.to == workflow.StepStateComplete
	retry := p.d.to == workflow.StepStateWaitingForRetry
	p.finalState = workflow.TaskStateInProgress
	b.Queue(sql, pgUUID(res.StepUUID), string(p.st.State), string(p.d.to), p.d.retryAt, p.d.to.Terminal(), res.Attempt,
		pgUUID(res.TaskUUID), string(workflow.TaskStateInProgress), p.d.reason, s.nodeID,
		string(workflow.StepStatePending), string(enqueueTo), complete, "parent "+p.st.Name+" complete",
		p.children, p.childMsgs, p.d.delay.Microseconds(), p.retryMsg, retry,
		WakeChannel, nsQueue, c.msg.ID).QueryRow(func(row pgx.Row) error {
		return row.Scan(&p.moved, &p.enqueued, &p.sent, &p.woke, &p.acked)
	})
	if !retry {
		b.Queue(sqlFinalize, pgUUID(res.TaskUUID), string(workflow.TaskStateInProgress), string(taskCompleteTo), string(taskFailTo),
			"every step complete", taskCompleteTo.Terminal(), taskFailTo.Terminal(), s.nodeID).QueryRow(func(row pgx.Row) error {
			var state string
			err := row.Scan(&state)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			p.finalState = workflow.TaskState(state)
			return err
		})
	}
	return nil
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

// acceptCall is one task request to accept in a batch.
type acceptCall struct {
	msg queue.Message
	req queue.TaskRequest
}

// templateKey names a template as a request asks for it.
type templateKey struct{ namespace, name, version string }

// acceptRequests creates the tasks of a batch of requests: a look-up per
// distinct template asked for, then every task's creation with its
// request's deletion in one implicit transaction. A request whose template
// is refused is answered with the refusal (the caller rejects it); a repeated
// request creates nothing and is acknowledged.
func (s *Store) acceptRequests(ctx context.Context, calls []acceptCall) ([]answer[RequestOutcome], error) {
	answers := make([]answer[RequestOutcome], len(calls))
	type resolved struct {
		tmpl resolvedTemplate
		err  error
	}
	templates := map[templateKey]resolved{}
	type created struct {
		i    int
		id   uuid.UUID
		sent int64
	}
	var batched []*created
	b := newBatch()
	for i, c := range calls {
		req := c.req
		a := &answers[i]
		a.res = RequestOutcome{RequestID: req.RequestID}
		key := templateKey{req.Namespace, req.Name, req.Version}
		r, ok := templates[key]
		if !ok {
			r.tmpl, r.err = s.templateResolve(ctx, s.pool, req.Namespace, req.Name, req.Version)
			templates[key] = r
		}
		if r.err != nil {
			a.err = r.err
			continue
		}
		cr := &created{i: i}
		var err error
		if cr.id, err = s.queueCreate(b, c, r.tmpl, &answers[i].res, &cr.sent); err != nil {
			a.err = err
			continue
		}
		batched = append(batched, cr)
	}
	if len(batched) == 0 {
		return answers, nil
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("creating tasks: %w", translate(err))
	}
	for _, cr := range batched {
		out := &answers[cr.i].res
		if out.TaskUUID == cr.id {
			out.Created, out.Enqueued = true, int(cr.sent)
		}
	}
	return answers, nil
}

// queueCreate adds one task's creation to b: the task row first, then every
// other row only if that row is the one this batch inserted, the roots'
// messages, and the request's deletion. The task of the request (this one,
// or the one an earlier request with its id created) is scanned into
// out.TaskUUID, the roots sent into sent. It returns the new task's id.
func (s *Store) queueCreate(b *pgx.Batch, c acceptCall, tmpl resolvedTemplate, out *RequestOutcome, sent *int64) (uuid.UUID, error) {
	req := c.req
	p, err := planTask(req, tmpl)
	if err != nil {
		return uuid.Nil, err
	}
	roots, err := withQueues(sqlTaskRoots, queue.NamespaceQueue(req.Namespace), queue.TaskRequestsQueue)
	if err != nil {
		return uuid.Nil, err
	}
	rootMsgs := make([][]byte, len(p.ready))
	for i, r := range p.ready {
		if rootMsgs[i], err = (queue.StepMessage{TaskUUID: r.Task, StepUUID: r.Step, CorrelationID: r.CorrelationID}).Encode(); err != nil {
			return uuid.Nil, fmt.Errorf("encoding step message: %w", err)
		}
	}
	s.queueTaskRows(b, p, req, tmpl)
	var woke, acked int64
	b.Queue(roots, rootMsgs, pgUUID(p.id), WakeChannel, queue.NamespaceQueue(req.Namespace), c.msg.ID, pgUUID(req.RequestID)).
		QueryRow(func(row pgx.Row) error { return row.Scan(scanUUID(&out.TaskUUID), sent, &woke, &acked) })
	return p.id, nil
}

// queueTaskRows adds a new task's rows to b: the task row first, then its
// steps, edges and first transitions, each only if that row is the one this
// batch inserted (a repeated request inserts nothing, and so creates
// nothing).
func (s *Store) queueTaskRows(b *pgx.Batch, p taskPlan, req queue.TaskRequest, tmpl resolvedTemplate) {
	n := len(p.moves)
	moveSteps, moveTasks := make([][16]byte, n), make([][16]byte, n)
	froms, tos, reasons, attempts := make([]string, n), make([]string, n), make([]string, n), make([]int32, n)
	for i, m := range p.moves {
		moveSteps[i], moveTasks[i], froms[i], tos[i], reasons[i], attempts[i] = m.Step, m.Task, string(m.From), string(m.To), m.Reason, int32(m.Attempt)
	}
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
}
