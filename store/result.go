package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

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
	// Unrecorded is set with Ignored for a carried outcome
	// (OutcomeDue.Carried) of an attempt that is not current while its task
	// is in progress: nothing was written or acknowledged, and its worker
	// records it, as it would have without the hand-over (the step message
	// may be another attempt's now). A carried outcome of a task no longer
	// in progress is ignored as any other, its step message acknowledged.
	Unrecorded bool
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
	return s.results.do(ctx, resultCall{msgID: &msg.ID, res: res})
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
	return s.resultQuarantine(ctx, resultCall{msgID: &msg.ID, res: res}, reason)
}

func (s *Store) resultQuarantine(ctx context.Context, c resultCall, reason string) (ResultOutcome, error) {
	poison, err := json.Marshal(storedError{Kind: "poison", Message: reason, Attempt: c.res.Attempt})
	if err != nil {
		return ResultOutcome{}, err
	}
	c.poison, c.reason = poison, reason
	out, err := s.results.do(ctx, c)
	out.Archived = err == nil
	if out.Ignored {
		out.Reason = reason + " (" + out.Reason + ")"
	}
	return out, err
}

// OutcomeDue is an outcome a worker of this node recorded without a result
// message (Outcome.Direct), handed to the step-result actor in the process.
// MsgID is the step's message in the namespace's queue: it stays there,
// invisible, until the outcome is applied, and is acknowledged with it. If
// the node dies first, the message is read again when its visibility
// timeout ends, and StepStart says the outcome is waiting (StepWork.
// OutcomeWaiting) instead of starting an attempt: the reader hands it over
// in its own node. That redelivery is the sweep for outcomes whose node
// died.
//
// A Carried outcome (Outcome) was recorded nowhere yet: OutcomeApply
// records it on the step with the move it decides, in one transaction, and
// when it cannot (the attempt is not current, the task no longer in
// progress, the database failed) it changes nothing, the step message
// included, and the worker records the outcome itself (StepOutcomeRecord)
// as it would have without the step-result actor.
type OutcomeDue struct {
	MsgID         int64
	Namespace     string
	TaskUUID      uuid.UUID
	StepUUID      uuid.UUID
	CorrelationID uuid.UUID
	Attempt       int
	Carried       bool
	Outcome       CarriedOutcome
}

func (d OutcomeDue) call() resultCall {
	c := resultCall{stepMsgID: &d.MsgID, namespace: d.Namespace,
		res: queue.StepResult{TaskUUID: d.TaskUUID, StepUUID: d.StepUUID, Attempt: d.Attempt}}
	if d.Carried {
		e := d.Outcome.encoded()
		c.carried, c.durationMS = &e, d.Outcome.DurationMS
	}
	return c
}

// OutcomeApply applies an outcome handed over in the node as ResultApply
// applies a result message, in the same batches; the step message is
// deleted with it, or when the outcome is ignored (a Carried one's is
// not: see OutcomeDue).
func (s *Store) OutcomeApply(ctx context.Context, d OutcomeDue) (ResultOutcome, error) {
	return s.results.do(ctx, d.call())
}

// OutcomeQuarantine is ResultQuarantine for an outcome handed over in the
// node whose step message keeps coming back: the step message is archived
// with reason and, when the attempt is still current, the step failed.
func (s *Store) OutcomeQuarantine(ctx context.Context, d OutcomeDue, reason string) (ResultOutcome, error) {
	return s.resultQuarantine(ctx, d.call(), reason)
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

// resultCall is one result to apply in a batch: a message of the result
// queue (msgID), or an outcome handed over in the node, whose step message
// (stepMsgID of the namespace's queue) is acknowledged instead. A
// quarantined result carries the poison error that replaces the recorded
// outcome, and its message is archived rather than deleted. A carried
// outcome (OutcomeDue.Carried) is the outcome itself, recorded with the
// move.
type resultCall struct {
	msgID      *int64
	stepMsgID  *int64
	namespace  string
	res        queue.StepResult
	poison     []byte
	reason     string
	carried    *encodedOutcome
	durationMS int64
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
	// limited is true when the step is under a flow limit (its children
	// likely are too).
	limited bool
	// pause is how long a Retry-After answer pauses the step's groups of
	// pauseScope (its retry's delay); zero for none.
	pause      time.Duration
	pauseScope workflow.PauseScope

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
	flow := false
	// Signalled once the moves are committed.
	defer func() {
		if flow {
			s.flowChanged()
		}
	}()
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
			if !p.moved {
				pending = append(pending, p.i) // lost a race since the read
				continue
			}
			if p.flow {
				flow = true
			}
			a := &answers[p.i].res
			a.Namespace, a.StepState, a.TaskState, a.Enqueued = p.namespace, p.d.To, p.finalState, p.enqueued
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
				correlation pgtype.UUID
			)
			if err := rows.Scan(scanUUID(&step), &r.taskState, &correlation, &r.state, &r.name, &r.namespace,
				&r.attempts, &r.attemptsBase, &r.maxAttempts, &r.retryable, &r.outcomeAttempt, &r.outcomeOK, &r.errJSON,
				&r.retryAfterMS, &r.backoffBaseMS, &r.backoffMaxMS, &r.children, &r.limited); err != nil {
				return err
			}
			i := index[step]
			p, why, err := s.resultDecide(calls[i], r, correlation.Bytes)
			switch {
			case err != nil:
				answers[i].err = err
			case why != "":
				a := &answers[i].res
				a.Ignored, a.Reason = true, why
				if r.taskState.Valid {
					a.TaskState = workflow.TaskState(r.taskState.String)
				}
				if r.state.Valid {
					a.StepState, a.Namespace = workflow.StepState(r.state.String), r.namespace.String
				}
				if calls[i].carried != nil && a.TaskState == resultTaskState {
					a.Unrecorded = true
					continue
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
// step reads as not Valid. (Scanned into pgtype values and interned texts,
// not pointers: a pointer is an allocation per column.)
type resultRow struct {
	taskState, state, name, namespace         internedText
	attempts, attemptsBase, maxAttempts       pgtype.Int4
	retryable                                 pgtype.Bool
	outcomeAttempt                            pgtype.Int4
	outcomeOK                                 pgtype.Bool
	errJSON                                   []byte
	retryAfterMS, backoffBaseMS, backoffMaxMS pgtype.Int8
	children                                  [][16]byte
	// limited is true when the step is under a flow limit.
	limited bool
}

// resultDecide decides one result: the plan that applies it, or why it is
// to be ignored.
func (s *Store) resultDecide(c resultCall, r resultRow, correlation uuid.UUID) (*resultPlan, string, error) {
	res := c.res
	switch {
	case !r.taskState.Valid:
		return nil, "task does not exist", nil
	case workflow.TaskState(r.taskState.String) != resultTaskState:
		return nil, fmt.Sprintf("task is %s", r.taskState.String), nil
	case !r.state.Valid:
		return nil, "step does not exist", nil
	case !takesOutcome(workflow.StepState(r.state.String)) || int(r.attempts.Int32) != res.Attempt ||
		// A carried outcome finds none waiting; any other, its own.
		r.outcomeAttempt.Valid == (c.carried != nil) || (c.carried == nil && int(r.outcomeAttempt.Int32) != res.Attempt):
		return nil, fmt.Sprintf("attempt %d is not current (step %s, attempt %d)", res.Attempt, r.state.String, r.attempts.Int32), nil
	}
	o := workflow.Outcome{OK: r.outcomeOK.Bool}
	errJSON, retryAfterMS := r.errJSON, r.retryAfterMS
	if e := c.carried; e != nil {
		o.OK, errJSON, retryAfterMS = e.ok, e.errJSON, pgtype.Int8{}
		if e.retryAfterMS != nil {
			retryAfterMS = pgtype.Int8{Int64: *e.retryAfterMS, Valid: true}
		}
	}
	if c.poison != nil {
		o = workflow.Outcome{Kind: "poison", Message: c.reason}
	} else if !o.OK {
		var se storedError
		_ = json.Unmarshal(errJSON, &se)
		o.Kind, o.Message, o.Retryable = se.Kind, se.Message, se.Retryable
		if retryAfterMS.Valid {
			o.RetryAfter = time.Duration(retryAfterMS.Int64) * time.Millisecond
		}
	}
	policy := s.backoff.Load().WithOverrides(time.Duration(r.backoffBaseMS.Int64)*time.Millisecond, time.Duration(r.backoffMaxMS.Int64)*time.Millisecond)
	from := workflow.StepState(r.state.String)
	d, err := workflow.Decide(from, o, workflow.Attempts{
		Made: int(r.attempts.Int32 - r.attemptsBase.Int32), Max: int(r.maxAttempts.Int32), Retryable: r.retryable.Bool, Backoff: policy,
	})
	if err != nil {
		return nil, "", err
	}
	p := &resultPlan{namespace: r.namespace.String, stepName: r.name.String, from: from, d: d, limited: r.limited}
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
		if scope := s.FlowPolicy().Pauses[r.namespace.String]; scope != "" && r.limited && o.RetryAfter > 0 {
			p.pause, p.pauseScope = d.Delay, scope
		}
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

// resultsApply sends, in one implicit transaction, the tasks' locks, the
// plans' step moves (one statement per namespace) and finalizations (one
// statement), and the acknowledgement of the results to ignore (a
// quarantined one archived with its reason and why it was ignored, from
// answers).
func (s *Store) resultsApply(ctx context.Context, calls []resultCall, plans []*resultPlan, ignored []int, answers []answer[ResultOutcome]) error {
	b := newBatch()
	if len(plans) > 0 {
		locked := make([][16]byte, len(plans))
		for i, p := range plans {
			locked[i] = calls[p.i].res.TaskUUID
		}
		stmt("tasks_lock").queue(b, args{"tasks": locked})
	}
	byNamespace := map[string][]stepMove{}
	var namespaces []string
	finalize := map[uuid.UUID]*resultPlan{}
	for _, p := range plans {
		c := calls[p.i]
		if _, ok := byNamespace[p.namespace]; !ok {
			namespaces = append(namespaces, p.namespace)
		}
		m := stepMove{
			task: c.res.TaskUUID, step: c.res.StepUUID, from: p.from, d: p.d,
			attempt: c.res.Attempt, outcomeAttempt: &c.res.Attempt, errJSON: c.poison, retryAt: p.retryAt,
			releaseReason: releasePrefix + p.stepName + releaseCompleteSuffix, children: p.children, childMsgs: p.childMsgs,
			retryMsg: p.retryMsg, msgID: c.msgID, stepMsgID: c.stepMsgID, archive: c.archive(), archiveReason: c.reason,
			limited: p.limited, pause: p.pause, pauseScope: p.pauseScope, into: &p.movedCounts,
		}
		if e := c.carried; e != nil {
			// Recorded with the move: none waits on the step.
			m.outcomeAttempt, m.carried = nil, &carriedWrite{encodedOutcome: *e, durationMS: c.durationMS}
			m.result, m.errJSON = e.result, e.errJSON
		}
		byNamespace[p.namespace] = append(byNamespace[p.namespace], m)
		p.finalState = resultTaskState
		if !p.d.Retry() {
			finalize[c.res.TaskUUID] = p
		}
	}
	// In order: every transaction takes the flow counters of namespaces in
	// the same order (migrations/0014_flow_counts.sql).
	slices.Sort(namespaces)
	policy := s.FlowPolicy()
	for _, p := range plans {
		if p.limited || !policy.Namespaces[p.namespace].IsZero() {
			s.queueFlowShard(b, 1)
			break
		}
	}
	for _, ns := range namespaces {
		if err := s.queueStepsMove(b, ns, byNamespace[ns]); err != nil {
			return err
		}
	}
	if len(finalize) > 0 {
		tasks := make([]uuid.UUID, 0, len(finalize))
		for t := range finalize {
			tasks = append(tasks, t)
		}
		s.queueTasksFinalize(b, tasks, resultTaskState, func(task uuid.UUID, to workflow.TaskState) {
			if p := finalize[task]; p != nil {
				p.finalState = to
			}
		})
	}
	if err := s.queueIgnoredAcks(b, calls, ignored, answers); err != nil {
		return err
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("applying results: %w", translate(err))
	}
	return nil
}

// queueIgnoredAcks adds to b the acknowledgement of the ignored results'
// messages: one statement for the result queue's, one per namespace for
// the step messages of outcomes handed over in the node.
func (s *Store) queueIgnoredAcks(b *pgx.Batch, calls []resultCall, ignored []int, answers []answer[ResultOutcome]) error {
	type acks struct {
		ids, archive []int64
		reasons      []string
	}
	byQueue := map[string]*acks{}
	var queues []string
	for _, i := range ignored {
		c := calls[i]
		q, id := queue.StepResultsQueue, c.msgID
		if id == nil {
			q, id = queue.NamespaceQueue(c.namespace), c.stepMsgID
		}
		a := byQueue[q]
		if a == nil {
			a = &acks{}
			byQueue[q] = a
			queues = append(queues, q)
		}
		a.ids = append(a.ids, *id)
		if c.archive() {
			a.archive = append(a.archive, *id)
			a.reasons = append(a.reasons, c.reason+" ("+answers[i].res.Reason+")")
		}
	}
	for _, q := range queues {
		ack, err := stmt("message_ack").forQueues("queue", q)
		if err != nil {
			return err
		}
		a := byQueue[q]
		ack.queue(b, args{"msg_ids": a.ids, "archive_ids": a.archive, "archive_reasons": a.reasons, "node_id": s.nodeID})
	}
	return nil
}

// stepMove is a decided move of one step with what follows from it (see
// decisions_apply in sql/result_apply.sql); into receives what it did.
type stepMove struct {
	task, step     uuid.UUID
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
	stepMsgID      *int64
	archive        bool
	archiveReason  string
	// limited is true when the step is under a flow limit.
	limited bool
	// pause is how long the move pauses the step's groups of pauseScope
	// (resultPlan.pause).
	pause      time.Duration
	pauseScope workflow.PauseScope
	// carried is the outcome the move records, when none was recorded
	// before it (result and errJSON hold its result or error).
	carried *carriedWrite
	into    *movedCounts
}

// carriedWrite is what a move records of a carried outcome beyond its
// result or error.
type carriedWrite struct {
	encodedOutcome
	durationMS int64
}

// movedCounts receives what a step move did: whether the step moved (its
// compare-and-set held) and how many children it enqueued.
type movedCounts struct {
	moved    bool
	enqueued int
	// flow is true when the move concerns flow control: the step is under
	// a limit, or a child of it was throttled.
	flow bool
}

// queueStepsMove adds the moves of steps of namespace (of different tasks)
// to b, in one statement.
func (s *Store) queueStepsMove(b *pgx.Batch, namespace string, moves []stepMove) error {
	stepQueue := queue.NamespaceQueue(namespace)
	st, err := stmt("decisions_apply").forQueues("step_queue", stepQueue, "result_queue", queue.StepResultsQueue)
	if err != nil {
		return err
	}
	policyGroups, policyMax, policyByRound := s.FlowPolicy().Arrays()
	n := len(moves)
	var (
		steps, tasks    = make([][16]byte, n), make([][16]byte, n)
		from, to        = make([]string, n), make([]string, n)
		results, errs   = make([][]byte, n), make([][]byte, n)
		nextAttempt     = make([]*time.Time, n)
		finished        = make([]bool, n)
		attempts        = make([]int32, n)
		outcomeAttempts = make([]*int32, n)
		reasons         = make([]string, n)
		release         = make([]bool, n)
		releaseReasons  = make([]string, n)
		retry           = make([]bool, n)
		retryDelays     = make([]int64, n)
		retryMsgs       = make([][]byte, n)
		msgIDs          = make([]*int64, n)
		stepMsgIDs      = make([]*int64, n)
		carried         = make([]bool, n)
		retryAfterMS    = make([]*int64, n)
		durationsMS     = make([]*int64, n)
		archive         = make([]bool, n)
		archiveReasons  = make([]string, n)
		children        [][16]byte
		childParents    [][16]byte
		childMsgs       [][]byte
		byStep          = make(map[uuid.UUID]*movedCounts, n)
	)
	for i, m := range moves {
		steps[i], tasks[i], from[i], to[i] = m.step, m.task, string(m.from), string(m.d.To)
		results[i], errs[i], nextAttempt[i], finished[i] = m.result, m.errJSON, m.retryAt, m.d.To.Terminal()
		attempts[i], reasons[i], release[i], releaseReasons[i] = int32(m.attempt), m.d.Reason, m.d.To.Satisfies(), m.releaseReason
		if m.outcomeAttempt != nil {
			a := int32(*m.outcomeAttempt)
			outcomeAttempts[i] = &a
		}
		retry[i], retryDelays[i], retryMsgs[i] = m.d.Retry(), m.d.Delay.Microseconds(), m.retryMsg
		msgIDs[i], stepMsgIDs[i], archive[i], archiveReasons[i] = m.msgID, m.stepMsgID, m.archive, m.archiveReason
		if c := m.carried; c != nil {
			carried[i], retryAfterMS[i], durationsMS[i] = true, c.retryAfterMS, &c.durationMS
		}
		children, childMsgs = append(children, m.children...), append(childMsgs, m.childMsgs...)
		for range m.children {
			childParents = append(childParents, m.step)
		}
		byStep[m.step] = m.into
	}
	st.queue(b, args{
		"steps": steps, "tasks": tasks, "from_states": from, "to_states": to, "results": results, "errors": errs,
		"next_attempt_ats": nextAttempt, "finished": finished, "attempts": attempts, "outcome_attempts": outcomeAttempts,
		"reasons": reasons, "release": release, "release_reasons": releaseReasons, "retry": retry,
		"retry_delays_us": retryDelays, "retry_messages": retryMsgs, "msg_ids": msgIDs, "step_msg_ids": stepMsgIDs,
		"carried": carried, "retry_after_ms": retryAfterMS, "durations_ms": durationsMS, "archive": archive,
		"archive_reasons": archiveReasons, "task_state": string(resultTaskState), "node_id": s.nodeID,
		"enqueued": string(enqueueTo), "throttled": string(throttleTo), "pending": string(workflow.StepStatePending),
		"children": children, "child_parents": childParents, "child_messages": childMsgs, "wake_channel": WakeChannel, "wake_queue": stepQueue,
		"namespace": namespace, "policy_groups": policyGroups, "policy_max": policyMax,
		"policy_by_round": policyByRound, "slot_states": slotStates,
	}).Query(func(rows pgx.Rows) error {
		var (
			step     uuid.UUID
			enqueued int
			flow     bool
		)
		_, err := pgx.ForEachRow(rows, []any{scanUUID(&step), &enqueued, &flow}, func() error {
			if into := byStep[step]; into != nil {
				into.moved, into.enqueued, into.flow = true, enqueued, flow
			}
			return nil
		})
		return err
	})
	s.queueFlowPauses(b, moves)
	return nil
}

// queueFlowPauses adds to b, after the moves, the pauses that their
// Retry-After answers ask for (flow_pause), one statement per scope.
func (s *Store) queueFlowPauses(b *pgx.Batch, moves []stepMove) {
	byScope := map[workflow.PauseScope][]stepMove{}
	for _, m := range moves {
		if m.pause > 0 {
			byScope[m.pauseScope] = append(byScope[m.pauseScope], m)
		}
	}
	for _, scope := range slices.Sorted(maps.Keys(byScope)) {
		var (
			steps  [][16]byte
			pauses []int64
		)
		for _, m := range byScope[scope] {
			steps, pauses = append(steps, m.step), append(pauses, m.pause.Microseconds())
		}
		stmt("flow_pause").queue(b, args{"steps": steps, "pauses_us": pauses, "scope": scope.Prefix() + "%",
			"waiting": string(workflow.StepStateWaitingForRetry)})
	}
}

// queueTasksFinalize adds to b the finalization of tasks, each in state
// from; moved is told each task that moved and its state afterwards.
func (s *Store) queueTasksFinalize(b *pgx.Batch, tasks []uuid.UUID, from workflow.TaskState, moved func(uuid.UUID, workflow.TaskState)) {
	froms := make([]string, len(tasks))
	for i := range froms {
		froms[i] = string(from)
	}
	stmt("tasks_finalize").queue(b, args{
		"tasks": pgUUIDs(tasks), "from_states": froms,
		"satisfied": satisfiedStates, "in_flight": inFlightStates, "failed_state": string(workflow.StepStateError),
		"complete_to": string(taskCompleteTo), "fail_to": string(taskFailTo),
		"complete_reason": workflow.ReasonEveryStepComplete, "fail_prefix": workflow.FailedReasonPrefix,
		"fail_separator": workflow.FailedReasonSeparator, "fail_suffix": workflow.FailedReasonSuffix,
		"complete_terminal": taskCompleteTo.Terminal(), "fail_terminal": taskFailTo.Terminal(), "node_id": s.nodeID,
	}).Query(func(rows pgx.Rows) error {
		var (
			task uuid.UUID
			to   string
		)
		_, err := pgx.ForEachRow(rows, []any{scanUUID(&task), &to}, func() error {
			moved(task, workflow.TaskState(to))
			return nil
		})
		return err
	})
}
