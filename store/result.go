package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// ResultOutcome says what applying one result message did.
type ResultOutcome struct {
	TaskUUID  uuid.UUID
	StepUUID  uuid.UUID
	Namespace string
	// StepState is the step's state afterwards.
	StepState workflow.StepState
	// TaskState is the task's state afterwards.
	TaskState workflow.TaskState
	// Ignored results (stale attempt, finished or cancelled task) were
	// acknowledged without effect; Reason says why.
	Ignored bool
	Reason  string
	// Archived results (undecodable, or quarantined) were moved to the
	// result queue's archive.
	Archived bool
	// Enqueued counts the steps that became ready and were sent.
	Enqueued int
	// RetryAt is set when the step was scheduled for another attempt.
	RetryAt time.Time
}

// ResultApply applies one message of the step result queue in one
// transaction, holding the task row lock so two results of one task never
// race: it completes the step, schedules its retry or fails it (as
// workflow.Decide says), enqueues the steps that became ready, finalizes
// the task, and deletes the message. A result whose attempt is not current,
// or whose task has finished or was cancelled, is acknowledged and ignored.
// A message that does not decode is archived. Concurrent calls go together:
// two round trips and one commit for the batch.
func (s *Store) ResultApply(ctx context.Context, msg queue.Message) (ResultOutcome, error) {
	res, err := queue.DecodeStepResult(msg.Body)
	if err != nil {
		return s.resultArchive(ctx, msg, err.Error())
	}
	return s.results.do(ctx, resultCall{msgID: msg.ID, res: res})
}

// ResultQuarantine handles a result message delivered too many times (it
// keeps failing to apply): the message is archived for inspection and, when
// its attempt is still current, the step is failed with reason instead of
// whatever the worker recorded, so the task can end rather than wait.
func (s *Store) ResultQuarantine(ctx context.Context, msg queue.Message, reason string) (ResultOutcome, error) {
	res, err := queue.DecodeStepResult(msg.Body)
	if err != nil {
		return s.resultArchive(ctx, msg, reason)
	}
	poison, err := json.Marshal(storedError{Kind: "poison", Message: reason, Attempt: res.Attempt})
	if err != nil {
		return ResultOutcome{}, err
	}
	out, err := s.results.do(ctx, resultCall{msgID: msg.ID, res: res, poison: poison, reason: reason})
	out.Archived = err == nil
	if out.Ignored {
		out.Reason = reason + " (" + out.Reason + ")"
	}
	return out, err
}

// resultArchive archives a result message that cannot be applied, with
// reason in its headers.
func (s *Store) resultArchive(ctx context.Context, msg queue.Message, reason string) (ResultOutcome, error) {
	out := ResultOutcome{Ignored: true, Reason: reason, Archived: true}
	if err := s.messageArchive(ctx, s.pool, queue.StepResultsQueue, msg.ID, reason); err != nil {
		return out, fmt.Errorf("archiving result %d: %w", msg.ID, err)
	}
	return out, nil
}

// MessageArchive moves message id of queueName to its archive with reason,
// for a message nothing else can be done with (a step message that does not
// decode); ArchivedList lists it with the reason.
func (s *Store) MessageArchive(ctx context.Context, queueName string, id int64, reason string) error {
	return s.messageArchive(ctx, s.pool, queueName, id, reason)
}

// messageArchive moves message id of queueName to its archive, with reason
// in its headers where ArchivedList finds it.
func (s *Store) messageArchive(ctx context.Context, d db, queueName string, id int64, reason string) error {
	ack, err := stmt("message_ack").forQueues("queue", queueName)
	if err != nil {
		return err
	}
	ids := []int64{id}
	var acked, archived int64
	return translate(ack.queryRow(ctx, d, args{
		"msg_ids": ids, "archive_ids": ids, "archive_reasons": []string{reason}, "node_id": s.nodeID,
	}).Scan(&acked, &archived))
}

// resultCall is one result to apply in a batch. A quarantined result
// carries the poison error that replaces the recorded outcome, and its
// message is archived rather than deleted.
type resultCall struct {
	msgID  int64
	res    queue.StepResult
	poison []byte
	reason string
}

func (c resultCall) archive() bool { return c.poison != nil }

// resultRounds bounds how often one batch reads again the results whose
// compare-and-set lost a race since their read; past it the result is left
// for its redelivery (ErrStale).
const resultRounds = 3

// resultPlan is what applying one result decided.
type resultPlan struct {
	i         int
	namespace string
	stepName  string
	from      workflow.StepState
	d         workflow.Decision
	retryAt   *time.Time
	children  [][16]byte
	childMsgs [][]byte
	retryMsg  []byte

	movedCounts
	finalState workflow.TaskState
}

// applyResults applies results of different tasks. Each round is two round
// trips: an unlocked read of what the decisions need, then, in one implicit
// transaction, the tasks' locks and, for each result, the compare-and-set
// of the step with everything that follows from it and the task's
// finalization, and the acknowledgement of the results to ignore. A result
// whose compare-and-set lost a race since the read changes nothing (every
// write of its statement hangs on the step's move) and is decided again in
// the next round.
func (s *Store) applyResults(ctx context.Context, calls []resultCall) ([]answer[ResultOutcome], error) {
	answers := make([]answer[ResultOutcome], len(calls))
	pending := make([]int, len(calls))
	for i, c := range calls {
		pending[i] = i
		answers[i].res = ResultOutcome{TaskUUID: c.res.TaskUUID, StepUUID: c.res.StepUUID}
	}
	for round := 0; len(pending) > 0; round++ {
		if round == resultRounds {
			for _, i := range pending {
				answers[i].err = fmt.Errorf("applying result of step %s: its state kept changing: %w", calls[i].res.StepUUID, ErrStale)
			}
			break
		}
		plans, ignored, err := s.resultsDecide(ctx, calls, pending, answers)
		if err != nil {
			return nil, err
		}
		if len(plans) == 0 && len(ignored) == 0 {
			break
		}
		if err := s.resultsApply(ctx, calls, plans, ignored, answers); err != nil {
			return nil, err
		}
		pending = pending[:0]
		for _, p := range plans {
			if p.moved == 0 {
				pending = append(pending, p.i) // lost a race since the read
				continue
			}
			a := &answers[p.i].res
			a.Namespace, a.StepState, a.TaskState, a.Enqueued = p.namespace, p.d.To, p.finalState, int(p.enqueued)
			if p.retryAt != nil {
				a.RetryAt = *p.retryAt
			}
		}
	}
	return answers, nil
}

// resultsDecide reads the steps and tasks of the results at the indexes
// pending and decides each: a plan to apply, or a result to ignore (its
// answer filled in) or an error of its own.
func (s *Store) resultsDecide(ctx context.Context, calls []resultCall, pending []int, answers []answer[ResultOutcome]) (plans []*resultPlan, ignored []int, err error) {
	steps, tasks := make([][16]byte, len(pending)), make([][16]byte, len(pending))
	index := make(map[uuid.UUID]int, len(pending))
	for j, i := range pending {
		steps[j], tasks[j] = calls[i].res.StepUUID, calls[i].res.TaskUUID
		index[calls[i].res.StepUUID] = i
	}
	read := newBatch()
	stmt("result_read").queue(read, args{"steps": steps, "tasks": tasks}).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				step        uuid.UUID
				r           resultRow
				correlation *[16]byte
			)
			if err := rows.Scan(scanUUID(&step), &r.taskState, &correlation, &r.state, &r.name, &r.namespace,
				&r.attempts, &r.attemptsBase, &r.maxAttempts, &r.retryable, &r.outcomeAttempt, &r.outcomeOK, &r.errJSON,
				&r.retryAfterMS, &r.backoffBaseMS, &r.backoffMaxMS, &r.children); err != nil {
				return err
			}
			i := index[step]
			var corr uuid.UUID
			if correlation != nil {
				corr = *correlation
			}
			p, why, err := s.resultDecide(calls[i], r, corr)
			switch {
			case err != nil:
				answers[i].err = err
			case why != "":
				a := &answers[i].res
				a.Ignored, a.Reason = true, why
				if r.taskState != nil {
					a.TaskState = workflow.TaskState(*r.taskState)
				}
				if r.state != nil {
					a.StepState, a.Namespace = workflow.StepState(*r.state), *r.namespace
				}
				ignored = append(ignored, i)
			default:
				p.i = i
				plans = append(plans, p)
			}
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, read).Close(); err != nil {
		return nil, nil, fmt.Errorf("reading steps: %w", translate(err))
	}
	return plans, ignored, nil
}

// resultRow is what result_read returns of one result; a missing task or
// step reads as nil.
type resultRow struct {
	taskState, state, name, namespace         *string
	attempts, attemptsBase, maxAttempts       *int
	retryable                                 *bool
	outcomeAttempt                            *int
	outcomeOK                                 *bool
	errJSON                                   []byte
	retryAfterMS, backoffBaseMS, backoffMaxMS *int64
	children                                  [][16]byte
}

// resultDecide decides one result: the plan that applies it, or why it is
// to be ignored.
func (s *Store) resultDecide(c resultCall, r resultRow, correlation uuid.UUID) (*resultPlan, string, error) {
	res := c.res
	switch {
	case r.taskState == nil:
		return nil, "task does not exist", nil
	case workflow.TaskState(*r.taskState) != resultTaskState:
		return nil, fmt.Sprintf("task is %s", *r.taskState), nil
	case r.state == nil:
		return nil, "step does not exist", nil
	case !takesOutcome(workflow.StepState(*r.state)) || *r.attempts != res.Attempt || r.outcomeAttempt == nil || *r.outcomeAttempt != res.Attempt:
		return nil, fmt.Sprintf("attempt %d is not current (step %s, attempt %d)", res.Attempt, *r.state, *r.attempts), nil
	}
	o := workflow.Outcome{OK: *r.outcomeOK}
	if c.poison != nil {
		o = workflow.Outcome{Kind: "poison", Message: c.reason}
	} else if !o.OK {
		var se storedError
		_ = json.Unmarshal(r.errJSON, &se)
		o.Kind, o.Message, o.Retryable = se.Kind, se.Message, se.Retryable
		if r.retryAfterMS != nil {
			o.RetryAfter = time.Duration(*r.retryAfterMS) * time.Millisecond
		}
	}
	policy := s.backoff.Load().WithOverrides(time.Duration(*r.backoffBaseMS)*time.Millisecond, time.Duration(*r.backoffMaxMS)*time.Millisecond)
	from := workflow.StepState(*r.state)
	d, err := workflow.Decide(from, o, workflow.Attempts{
		Made: *r.attempts - *r.attemptsBase, Max: *r.maxAttempts, Retryable: *r.retryable, Backoff: policy,
	})
	if err != nil {
		return nil, "", err
	}
	p := &resultPlan{namespace: *r.namespace, stepName: *r.name, from: from, d: d}
	switch {
	case d.To.Satisfies():
		p.children = r.children
		p.childMsgs = make([][]byte, len(r.children))
		for i, ch := range r.children {
			if p.childMsgs[i], err = (queue.StepMessage{TaskUUID: res.TaskUUID, StepUUID: uuid.UUID(ch), CorrelationID: correlation}).Encode(); err != nil {
				return nil, "", fmt.Errorf("encoding step message: %w", err)
			}
		}
	case d.Retry():
		t := s.now().Add(d.Delay)
		p.retryAt = &t
		if p.retryMsg, err = (queue.StepMessage{TaskUUID: res.TaskUUID, StepUUID: res.StepUUID, CorrelationID: correlation}).Encode(); err != nil {
			return nil, "", fmt.Errorf("encoding step message: %w", err)
		}
	}
	return p, "", nil
}

// The reason of a child's enqueueing: its parent satisfied.
const (
	releasePrefix         = "parent "
	releaseCompleteSuffix = " complete"
	releaseResolvedSuffix = " resolved"
)

// resultTaskState is the state a task must be in for its results to apply.
const resultTaskState = workflow.TaskStateInProgress

func takesOutcome(st workflow.StepState) bool { return slices.Contains(outcomeStates, string(st)) }

// resultsApply sends, in one implicit transaction, the tasks' locks, each
// plan's step move and finalization, and the acknowledgement of the results
// to ignore (a quarantined one archived with its reason and why it was
// ignored, from answers).
func (s *Store) resultsApply(ctx context.Context, calls []resultCall, plans []*resultPlan, ignored []int, answers []answer[ResultOutcome]) error {
	b := newBatch()
	if len(plans) > 0 {
		locked := make([][16]byte, len(plans))
		for i, p := range plans {
			locked[i] = calls[p.i].res.TaskUUID
		}
		stmt("tasks_lock").queue(b, args{"tasks": locked})
	}
	for _, p := range plans {
		c := calls[p.i]
		move := stepMove{
			task: c.res.TaskUUID, step: c.res.StepUUID, namespace: p.namespace, from: p.from, d: p.d,
			attempt: c.res.Attempt, outcomeAttempt: &c.res.Attempt, errJSON: c.poison, retryAt: p.retryAt,
			releaseReason: releasePrefix + p.stepName + releaseCompleteSuffix, children: p.children, childMsgs: p.childMsgs,
			retryMsg: p.retryMsg, msgID: &c.msgID, archive: c.archive(), archiveReason: c.reason,
		}
		if err := s.queueStepMove(b, move, &p.movedCounts); err != nil {
			return err
		}
		p.finalState = resultTaskState
		if !p.d.Retry() {
			s.queueTaskFinalize(b, c.res.TaskUUID, resultTaskState, &p.finalState)
		}
	}
	if len(ignored) > 0 {
		ack, err := stmt("message_ack").forQueues("queue", queue.StepResultsQueue)
		if err != nil {
			return err
		}
		var (
			ids, archive []int64
			reasons      []string
		)
		for _, i := range ignored {
			ids = append(ids, calls[i].msgID)
			if calls[i].archive() {
				archive = append(archive, calls[i].msgID)
				reasons = append(reasons, calls[i].reason+" ("+answers[i].res.Reason+")")
			}
		}
		ack.queue(b, args{"msg_ids": ids, "archive_ids": archive, "archive_reasons": reasons, "node_id": s.nodeID})
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("applying results: %w", translate(err))
	}
	return nil
}

// stepMove is a decided move of one step with what follows from it (see
// step_move in sql/result_apply.sql).
type stepMove struct {
	task, step     uuid.UUID
	namespace      string
	from           workflow.StepState
	d              workflow.Decision
	attempt        int
	outcomeAttempt *int
	result         []byte
	errJSON        []byte
	retryAt        *time.Time
	releaseReason  string
	children       [][16]byte
	childMsgs      [][]byte
	retryMsg       []byte
	msgID          *int64
	archive        bool
	archiveReason  string
}

// queueStepMove adds a step's move to b; into receives its counts.
func (s *Store) queueStepMove(b *pgx.Batch, m stepMove, into *movedCounts) error {
	stepQueue := queue.NamespaceQueue(m.namespace)
	st, err := stmt("step_move").forQueues("step_queue", stepQueue, "result_queue", queue.StepResultsQueue)
	if err != nil {
		return err
	}
	var result any
	if m.result != nil {
		result = m.result
	}
	var errJSON any
	if m.errJSON != nil {
		errJSON = m.errJSON
	}
	st.queue(b, args{
		"step": pgUUID(m.step), "from_state": string(m.from), "to_state": string(m.d.To),
		"result": result, "error": errJSON, "next_attempt_at": m.retryAt, "finished": m.d.To.Terminal(),
		"attempt": m.attempt, "outcome_attempt": m.outcomeAttempt, "task": pgUUID(m.task),
		"task_state": string(resultTaskState), "reason": m.d.Reason, "node_id": s.nodeID,
		"enqueued": string(enqueueTo), "pending": string(workflow.StepStatePending),
		"release": m.d.To.Satisfies(), "release_reason": m.releaseReason,
		"children": m.children, "child_messages": m.childMsgs,
		"retry_delay_us": m.d.Delay.Microseconds(), "retry_message": m.retryMsg, "retry": m.d.Retry(),
		"wake_channel": WakeChannel, "wake_queue": stepQueue, "msg_id": m.msgID, "archive": m.archive,
		"archive_reason": m.archiveReason,
	}).QueryRow(func(row pgx.Row) error { return row.Scan(into.counts()...) })
	return nil
}

// queueTaskFinalize adds the finalization of a task in state from to b;
// the task's state afterwards is scanned into state (left alone when
// nothing changed).
func (s *Store) queueTaskFinalize(b *pgx.Batch, task uuid.UUID, from workflow.TaskState, state *workflow.TaskState) {
	stmt("task_finalize").queue(b, args{
		"task": pgUUID(task), "from_state": string(from),
		"satisfied": satisfiedStates, "in_flight": inFlightStates, "failed_state": string(workflow.StepStateError),
		"complete_to": string(taskCompleteTo), "fail_to": string(taskFailTo),
		"complete_reason": workflow.ReasonEveryStepComplete, "fail_prefix": workflow.FailedReasonPrefix,
		"fail_separator": workflow.FailedReasonSeparator, "fail_suffix": workflow.FailedReasonSuffix,
		"complete_terminal": taskCompleteTo.Terminal(), "fail_terminal": taskFailTo.Terminal(), "node_id": s.nodeID,
	}).QueryRow(func(row pgx.Row) error {
		var to string
		err := row.Scan(&to)
		if errors.Is(translate(err), ErrNotFound) {
			return nil
		}
		*state = workflow.TaskState(to)
		return err
	})
}
