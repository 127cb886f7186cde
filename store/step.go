package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// StepAttempt is what names one attempt of a step and bounds it: the
// facts that StepWork and StartedAttempt both carry.
type StepAttempt struct {
	TaskUUID      uuid.UUID
	StepUUID      uuid.UUID
	CorrelationID uuid.UUID
	Namespace     string
	TaskName      string
	StepName      string
	Handler       string
	Attempt       int
	MaxAttempts   int
	Timeout       time.Duration
	// Trace is the trace context of the task's request.
	Trace workflow.Trace
}

// StepWork is everything a worker needs to run one attempt of a step.
type StepWork struct {
	StepAttempt
	Context json.RawMessage
	Config  json.RawMessage
	// Parents holds the results of the step's parents by step name.
	Parents map[string]json.RawMessage
	// OutcomeWaiting says that no attempt was started: an outcome of
	// attempt Attempt, recorded in a node (Outcome.Direct), waits to be
	// applied. The reader hands it over (OutcomeDue) instead of running
	// the step; only TaskUUID, StepUUID, CorrelationID, Namespace and
	// Attempt are set.
	OutcomeWaiting bool
}

// Input is the handler's view of the work.
func (w StepWork) Input() workflow.StepInput {
	return workflow.StepInput{
		TaskUUID:  w.TaskUUID,
		StepUUID:  w.StepUUID,
		Namespace: w.Namespace,
		TaskName:  w.TaskName,
		StepName:  w.StepName,
		Attempt:   w.Attempt,
		Context:   w.Context,
		Config:    w.Config,
		Parents:   w.Parents,
		Trace:     w.Trace,
	}
}

const (
	reasonTaken       = "worker took the message"
	reasonRedelivered = "redelivered after the previous attempt was lost"
)

// StepStart begins an attempt of a step when a worker takes its message:
// enqueued, waiting_for_retry or in_progress (a redelivery after a lost
// worker) move to in_progress with attempts+1. When an outcome recorded in a
// node waits on the step, it starts nothing and says so (StepWork.
// OutcomeWaiting). It returns ErrStale when the step is in no such state
// (cancelled, finished, or an outcome waits on the result queue): the
// worker acknowledges the message and runs nothing.
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
	stmt("step_start").queue(b, args{
		"steps": ids, "from_states": startFrom, "to_state": startTo, "node_id": s.nodeID,
		"reason_redelivered": reasonRedelivered, "reason_taken": reasonTaken, "outcome_states": outcomeStates,
	}).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			// Scanned into pgtype values and interned texts (the columns
			// an outcome_waiting row leaves NULL) and byte slices, not
			// pointers or json.RawMessage: each of those is an allocation
			// or a JSON parse per column.
			var (
				w         StepWork
				timeoutMS pgtype.Int8
				maxAtt    pgtype.Int4
				namespace internedText
				stepName  internedText
				handler   internedText
				taskName  internedText
				corr      pgtype.UUID
				trace     []byte
			)
			if err := rows.Scan(scanUUID(&w.StepUUID), scanUUID(&w.TaskUUID), &namespace, &stepName, &handler, &w.Attempt,
				&maxAtt, &timeoutMS, (*[]byte)(&w.Config), &taskName, &corr, (*[]byte)(&w.Context), &trace,
				&w.OutcomeWaiting); err != nil {
				return err
			}
			// Checked when the request was accepted.
			w.Trace, _ = queue.TraceFromHeaders(trace)
			w.CorrelationID, w.Namespace = corr.Bytes, namespace.String
			if w.OutcomeWaiting {
				answers[index[w.StepUUID]] = answer[StepWork]{res: w}
				continue
			}
			w.StepName, w.Handler, w.MaxAttempts, w.TaskName = stepName.String, handler.String, int(maxAtt.Int32), taskName.String
			w.Timeout = time.Duration(timeoutMS.Int64) * time.Millisecond
			w.Parents = map[string]json.RawMessage{}
			answers[index[w.StepUUID]] = answer[StepWork]{res: w}
		}
		return rows.Err()
	})
	stmt("step_parents").queue(b, args{"steps": ids}).Query(func(rows pgx.Rows) error {
		var (
			step   uuid.UUID
			name   string
			result []byte
		)
		_, err := pgx.ForEachRow(rows, []any{scanUUID(&step), &name, &result}, func() error {
			if a := &answers[index[step]]; a.err == nil && !a.res.OutcomeWaiting {
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

// TakenStep is one message a poller took from a namespace's step queue
// (StepsTake).
type TakenStep struct {
	// Message is the message as read: ID, ReadCount and Body are set.
	Message queue.Message
	// Started is the attempt started for the message's step; its Attempt
	// is 0 when the read started none: the reader decodes the message and
	// starts its step (StepStart), which says why it cannot when it cannot
	// (stale, an outcome waiting, not a step message).
	Started StartedAttempt
}

// StartedAttempt is an attempt a poller's read started, as immutable
// values (UUIDs, numbers and strings, the JSON documents as text), so that
// it can travel from the poller to a worker as an actor message: what the
// start read of its step and task in its transaction. Work gives the
// handler's view.
type StartedAttempt struct {
	StepAttempt
	// Context and Config are the task's context and the step's config,
	// JSON; Config is empty when the step has none.
	Context string
	Config  string
	// Parents is a JSON object of the parents' results by step name.
	Parents string
}

// Work is the attempt as StepStart gives it. It fails only on a parents'
// object that is no JSON object, which the statement cannot make.
func (a StartedAttempt) Work() (StepWork, error) {
	w := StepWork{StepAttempt: a.StepAttempt, Context: json.RawMessage(a.Context)}
	if a.Config != "" {
		w.Config = json.RawMessage(a.Config)
	}
	if a.Parents == "" || a.Parents == "{}" {
		w.Parents = map[string]json.RawMessage{}
		return w, nil
	}
	if err := json.Unmarshal([]byte(a.Parents), &w.Parents); err != nil || w.Parents == nil {
		return StepWork{}, fmt.Errorf("parents of step %s: not a JSON object: %v", a.StepUUID, err)
	}
	return w, nil
}

// StepsTake reads up to qty messages of namespace's step queue, oldest
// first, making them invisible for vt (pgmq's read), and starts the step of
// each, as StepStart does, in the same transaction: one round trip and one
// commit for both. A message whose step is in no state to start, one that
// names no step, and the second message of a step in one read are returned
// without a started attempt, for the reader to handle as before starts were
// read.
//
// The transaction is committed once the rows have arrived, as a queue read
// is (queue.Client.Read). A connection lost before they did rolls it back;
// one lost during the commit (a server that stops or crashes) leaves the
// reader holding the messages and their attempts, which it runs: a take
// that committed has no other reader, and one that did not has its
// attempts' outcomes refused as stale and its messages read again
// (at-least-once). In the batch's implicit transaction the commit would
// come before the answer, and an answer lost then would leave the messages
// invisible, their steps in progress, until vt ended.
func (s *Store) StepsTake(ctx context.Context, namespace string, vt time.Duration, qty int) ([]TakenStep, error) {
	q := queue.NamespaceQueue(namespace)
	if qty <= 0 || qty > math.MaxInt32 {
		return nil, fmt.Errorf("taking steps from queue %s: quantity %d out of range", q, qty)
	}
	if vt <= 0 || vt > time.Duration(math.MaxInt32)*time.Second {
		return nil, fmt.Errorf("taking steps from queue %s: visibility timeout %s out of range", q, vt)
	}
	st, err := stmt("steps_take").forQueues("step_queue", q)
	if err != nil {
		return nil, fmt.Errorf("taking steps: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("taking steps from queue %s: %w", q, translate(err))
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // a no-op once committed
	var taken []TakenStep
	b := newBatch()
	st.queue(b, args{
		"qty": int32(qty), "vt_secs": int32((vt + time.Second - 1) / time.Second),
		"from_states": startFrom, "to_state": startTo, "node_id": s.nodeID,
		"reason_redelivered": reasonRedelivered, "reason_taken": reasonTaken,
	}).Query(func(rows pgx.Rows) error {
		var err error
		taken, err = scanTaken(rows)
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("taking steps from queue %s: %w", q, translate(err))
	}
	if err := tx.Commit(ctx); err != nil && len(taken) == 0 {
		return nil, fmt.Errorf("taking steps from queue %s: %w", q, translate(err))
	}
	return taken, nil
}

// scanTaken reads the rows of steps_take, one per message. The columns are
// scanned into one set of values, reused row after row (each would
// otherwise escape once per row): pgtype values and interned texts rather
// than pointers.
func scanTaken(rows pgx.Rows) ([]TakenStep, error) {
	var (
		taken []TakenStep

		msgID     int64
		readCount int32
		body      []byte
		step      pgtype.UUID
		task      pgtype.UUID
		attempts  pgtype.Int4
		maxAtt    pgtype.Int4
		timeoutMS pgtype.Int8
		config    pgtype.Text
		namespace internedText
		stepName  internedText
		handler   internedText
		taskName  internedText
		corr      pgtype.UUID
		taskCtx   pgtype.Text
		trace     []byte
		parents   pgtype.Text
	)
	dest := []any{&msgID, &readCount, &body, &step, &task, &namespace, &stepName, &handler, &attempts,
		&maxAtt, &timeoutMS, &config, &taskName, &corr, &taskCtx, &trace, &parents}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		t := TakenStep{Message: queue.Message{ID: msgID, ReadCount: int(readCount), Body: body}}
		if step.Valid {
			t.Started = StartedAttempt{
				StepAttempt: StepAttempt{
					TaskUUID: task.Bytes, StepUUID: step.Bytes, CorrelationID: corr.Bytes, Namespace: namespace.String,
					TaskName: taskName.String, StepName: stepName.String, Handler: handler.String,
					Attempt: int(attempts.Int32), MaxAttempts: int(maxAtt.Int32),
					Timeout: time.Duration(timeoutMS.Int64) * time.Millisecond,
				},
				Context: taskCtx.String, Config: config.String, Parents: parents.String,
			}
			// Checked when the request was accepted.
			t.Started.Trace, _ = queue.TraceFromHeaders(trace)
		}
		taken = append(taken, t)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// UPDATE … RETURNING has no order; the queue's is the messages' ids.
	slices.SortFunc(taken, func(a, b TakenStep) int { return cmp.Compare(a.Message.ID, b.Message.ID) })
	return taken, nil
}

// Outcome is what a worker reports of one attempt.
type Outcome struct {
	// MsgID is the step message to delete.
	MsgID         int64
	Namespace     string
	TaskUUID      uuid.UUID
	StepUUID      uuid.UUID
	CorrelationID uuid.UUID
	Attempt       int
	// Result is the handler's result on success.
	Result json.RawMessage
	// Err is the failure; nil means success.
	Err      *workflow.StepError
	Duration time.Duration
	// Archive moves the step message to the archive instead of deleting it
	// (a poison message, kept for inspection).
	Archive bool
	// Direct records the outcome for this node's step-result actor, handed
	// over in the process (OutcomeApply), instead of sending a result
	// message: the step message stays, invisible, until the outcome is
	// applied. Not with Archive.
	Direct bool
}

// storedError is the JSON of steps.error.
type storedError struct {
	Kind       string         `json:"kind"`
	Message    string         `json:"message"`
	Retryable  bool           `json:"retryable"`
	HTTPStatus int            `json:"http_status,omitempty"`
	RetryAfter int64          `json:"retry_after_ms,omitempty"`
	Metadata   map[string]any `json:"metadata,omitempty"`
	Attempt    int            `json:"attempt"`
}

// outcomeCall is one outcome to record in a batch, encoded.
type outcomeCall struct {
	o Outcome
	encodedOutcome
	body []byte
}

// encodedOutcome is an outcome as the steps table holds it: the result on
// success (JSON null for none), else the error as storedError JSON, and a
// Retry-After in milliseconds when the failure asked for one.
type encodedOutcome struct {
	ok           bool
	result       []byte
	errJSON      []byte
	retryAfterMS *int64
}

func (o Outcome) encode() (encodedOutcome, error) {
	e := encodedOutcome{ok: o.Err == nil}
	if e.ok {
		e.result = o.Result
		if len(e.result) == 0 {
			e.result = []byte("null")
		}
		return e, nil
	}
	var err error
	e.errJSON, err = json.Marshal(storedError{
		Kind: o.Err.Kind, Message: o.Err.Message, Retryable: o.Err.Retryable,
		HTTPStatus: o.Err.HTTPStatus, RetryAfter: o.Err.RetryAfter.Milliseconds(),
		Metadata: o.Err.Metadata, Attempt: o.Attempt,
	})
	if err != nil {
		return e, fmt.Errorf("encoding step error: %w", err)
	}
	if o.Err.RetryAfter > 0 {
		ms := o.Err.RetryAfter.Milliseconds()
		e.retryAfterMS = &ms
	}
	return e, nil
}

// CarriedOutcome is an outcome handed to this node's step-result actor
// before anything recorded it (OutcomeDue.Carried), as immutable values:
// applying it records it on the step in the same transaction as the move
// it decides, one write of the step and one commit instead of two.
type CarriedOutcome struct {
	OK bool
	// Result is the handler's result (JSON) on success; Error the failure
	// as steps.error holds it otherwise.
	Result, Error string
	// RetryAfterMS is the Retry-After the failure asked for; 0 for none.
	RetryAfterMS int64
	DurationMS   int64
}

// Carry is o as a CarriedOutcome.
func (o Outcome) Carry() (CarriedOutcome, error) {
	e, err := o.encode()
	if err != nil {
		return CarriedOutcome{}, err
	}
	c := CarriedOutcome{OK: e.ok, Result: string(e.result), Error: string(e.errJSON), DurationMS: o.Duration.Milliseconds()}
	if e.retryAfterMS != nil {
		c.RetryAfterMS = *e.retryAfterMS
	}
	return c, nil
}

func (c CarriedOutcome) encoded() encodedOutcome {
	e := encodedOutcome{ok: c.OK}
	if c.OK {
		e.result = []byte(c.Result)
	} else {
		e.errJSON = []byte(c.Error)
	}
	if c.RetryAfterMS > 0 {
		ms := c.RetryAfterMS
		e.retryAfterMS = &ms
	}
	return e
}

// StepOutcomeRecord writes a worker's outcome on the step, sends the result
// message and deletes (or archives) the step message, in one transaction
// shared with the outcomes recorded at the same moment; a Direct outcome
// is only written on the step. It returns ErrStale (and changes nothing)
// when the attempt is no longer current. Recording the same outcome again
// succeeds and changes nothing, so a call retried after its commit lost its
// answer is told the outcome is recorded (and a Direct one is handed over).
func (s *Store) StepOutcomeRecord(ctx context.Context, o Outcome) error {
	if o.Direct && o.Archive {
		return fmt.Errorf("recording outcome of step %s: a message to archive goes through the result queue", o.StepUUID)
	}
	e, err := o.encode()
	if err != nil {
		return err
	}
	c := outcomeCall{o: o, encodedOutcome: e}
	if !o.Direct { // a Direct outcome sends no result message
		c.body, err = queue.StepResult{TaskUUID: o.TaskUUID, StepUUID: o.StepUUID, CorrelationID: o.CorrelationID, Attempt: o.Attempt}.Encode()
		if err != nil {
			return fmt.Errorf("encoding step result: %w", err)
		}
	}
	_, err = s.outcomes.do(ctx, c)
	return err
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
		st, err := stmt("step_outcome_record").forQueues("result_queue", queue.StepResultsQueue, "step_queue", queue.NamespaceQueue(ns))
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
			archive    = make([]bool, n)
			direct     = make([]bool, n)
		)
		for j, i := range is {
			c := calls[i]
			steps[j], attempts[j], oks[j], results[j], errs[j] = c.o.StepUUID, int32(c.o.Attempt), c.ok, c.result, c.errJSON
			retryAfter[j], durations[j], bodies[j], msgIDs[j] = c.retryAfterMS, c.o.Duration.Milliseconds(), c.body, c.o.MsgID
			archive[j], direct[j] = c.o.Archive, c.o.Direct
		}
		st.queue(b, args{
			"steps": steps, "attempts": attempts, "oks": oks, "results": results, "errors": errs,
			"retry_after_ms": retryAfter, "durations_ms": durations, "bodies": bodies, "msg_ids": msgIDs,
			"archive": archive, "direct": direct, "outcome_states": outcomeStates, "node_id": s.nodeID,
			"wake_channel": WakeChannel, "wake_queue": queue.StepResultsQueue,
		}).Query(func(rows pgx.Rows) error {
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

// OutcomeForward sends an outcome that waits on its step (recorded in a
// node that did not apply it) to the result queue, for a node that runs no
// step-result actor to pass it on: in one transaction, the result message
// is sent while the outcome still waits, and the step message d.MsgID is
// deleted either way.
func (s *Store) OutcomeForward(ctx context.Context, d OutcomeDue) error {
	st, err := stmt("outcome_forward").forQueues("result_queue", queue.StepResultsQueue, "step_queue", queue.NamespaceQueue(d.Namespace))
	if err != nil {
		return err
	}
	body, err := queue.StepResult{TaskUUID: d.TaskUUID, StepUUID: d.StepUUID, CorrelationID: d.CorrelationID, Attempt: d.Attempt}.Encode()
	if err != nil {
		return fmt.Errorf("encoding step result: %w", err)
	}
	var sent, acked, woke int64
	err = st.queryRow(ctx, s.pool, args{
		"step": pgUUID(d.StepUUID), "attempt": d.Attempt, "outcome_states": outcomeStates, "body": body,
		"msg_id": d.MsgID, "wake_channel": WakeChannel, "wake_queue": queue.StepResultsQueue,
	}).Scan(&sent, &acked, &woke)
	if err != nil {
		return fmt.Errorf("forwarding outcome of step %s: %w", d.StepUUID, translate(err))
	}
	return nil
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

// WakeChannel is the LISTEN/NOTIFY channel on which the store announces, at
// commit, the queues it has just sent to (the payload is the queue name).
// Nodes listen to wake their pollers; polling remains the fallback.
const WakeChannel = "tasker_wake"
