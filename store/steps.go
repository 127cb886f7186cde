package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// StepWork is everything a worker needs to run one attempt of a step.
type StepWork struct {
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
	Context       json.RawMessage
	Config        json.RawMessage
	// Parents holds the results of the step's parents by step name.
	Parents map[string]json.RawMessage
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
	}
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

// StepOutcomeRecord writes a worker's outcome on the step, sends the result
// message and deletes the step message, in one transaction (shared, on
// Tasker's own queues, with the outcomes recorded at the same moment). It
// returns ErrStale (and changes nothing) when the attempt is no longer
// current.
func (s *Store) StepOutcomeRecord(ctx context.Context, o Outcome) error {
	ok := o.Err == nil
	var (
		result, errJSON []byte
		retryAfterMS    *int64
		err             error
	)
	if ok {
		result = o.Result
		if len(result) == 0 {
			result = []byte("null")
		}
	} else {
		errJSON, err = json.Marshal(storedError{
			Kind: o.Err.Kind, Message: o.Err.Message, Retryable: o.Err.Retryable,
			HTTPStatus: o.Err.HTTPStatus, RetryAfter: o.Err.RetryAfter.Milliseconds(),
			Metadata: o.Err.Metadata, Attempt: o.Attempt,
		})
		if err != nil {
			return fmt.Errorf("encoding step error: %w", err)
		}
		if o.Err.RetryAfter > 0 {
			ms := o.Err.RetryAfter.Milliseconds()
			retryAfterMS = &ms
		}
	}
	body, err := queue.StepResult{TaskUUID: o.TaskUUID, StepUUID: o.StepUUID, CorrelationID: o.CorrelationID, Attempt: o.Attempt}.Encode()
	if err != nil {
		return fmt.Errorf("encoding step result: %w", err)
	}
	if !o.Archive {
		direct, err := s.queue.Direct(ctx)
		if err != nil {
			return err
		}
		if direct {
			_, err := s.outcomes.do(ctx, outcomeCall{o: o, ok: ok, result: result, errJSON: errJSON, retryAfterMS: retryAfterMS, body: body})
			return err
		}
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			UPDATE tasker.steps
			SET outcome_attempt = $2, outcome_ok = $3,
				result = CASE WHEN $3 THEN $4::jsonb ELSE result END,
				error = CASE WHEN $3 THEN NULL ELSE $5::jsonb END,
				retry_after_ms = $6, duration_ms = $7
			WHERE step_uuid = $1 AND state = 'in_progress' AND attempts = $2 AND outcome_attempt IS NULL`,
			o.StepUUID, o.Attempt, ok, result, errJSON, retryAfterMS, o.Duration.Milliseconds())
		if err != nil {
			return fmt.Errorf("recording outcome of step %s: %w", o.StepUUID, err)
		}
		if tag.RowsAffected() == 0 {
			return ErrStale
		}
		qc := s.queue.WithDB(tx)
		if _, err := qc.Send(ctx, queue.StepResultsQueue, body, 0); err != nil {
			return fmt.Errorf("sending step result: %w", err)
		}
		if err := wake(ctx, tx, queue.StepResultsQueue); err != nil {
			return err
		}
		ack := qc.Delete
		if o.Archive {
			ack = qc.Archive
		}
		if _, err := ack(ctx, queue.NamespaceQueue(o.Namespace), o.MsgID); err != nil {
			return fmt.Errorf("acknowledging step message %d: %w", o.MsgID, err)
		}
		return nil
	})
}

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
	// Enqueued counts the steps that became ready and were sent.
	Enqueued int
	// RetryAt is set when the step was scheduled for another attempt.
	RetryAt time.Time
}

// ResultApply applies one message of the step result queue in one
// transaction, holding the task row lock so two results of one task never
// race: it completes the step, schedules its retry or fails it, enqueues the
// steps that became ready, finalizes the task, and deletes the message. A
// result whose attempt is not current, or whose task has finished or was
// cancelled, is acknowledged and ignored. A message that does not decode is
// archived.
func (s *Store) ResultApply(ctx context.Context, msg queue.Message) (ResultOutcome, error) {
	res, err := queue.DecodeStepResult(msg.Body)
	if err != nil {
		out := ResultOutcome{Ignored: true, Reason: err.Error()}
		if _, aerr := s.queue.Archive(ctx, queue.StepResultsQueue, msg.ID); aerr != nil {
			return out, fmt.Errorf("archiving undecodable result %d: %w", msg.ID, aerr)
		}
		return out, nil
	}
	if direct, err := s.queue.Direct(ctx); err != nil {
		return ResultOutcome{TaskUUID: res.TaskUUID, StepUUID: res.StepUUID}, err
	} else if direct {
		a, err := s.results.do(ctx, resultCall{msg: msg, res: res})
		if err != nil || a.fast {
			return a.out, err
		}
	}
	var out ResultOutcome
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = s.applyResult(ctx, tx, res)
		if err != nil {
			return err
		}
		if _, err := s.queue.WithDB(tx).Delete(ctx, queue.StepResultsQueue, msg.ID); err != nil {
			return fmt.Errorf("deleting result message %d: %w", msg.ID, err)
		}
		return nil
	})
	return out, err
}

// stepRow is the part of a step that applying a result reads.
type stepRow struct {
	Name           string
	Namespace      string
	State          workflow.StepState
	Attempts       int
	AttemptsBase   int
	MaxAttempts    int
	Retryable      bool
	OutcomeAttempt *int
	OutcomeOK      *bool
	Error          []byte
	RetryAfterMS   *int64
	BackoffBaseMS  int64
	BackoffMaxMS   int64
}

func (s *Store) applyResult(ctx context.Context, tx pgx.Tx, res queue.StepResult) (ResultOutcome, error) {
	out := ResultOutcome{TaskUUID: res.TaskUUID, StepUUID: res.StepUUID}
	var (
		taskState   string
		correlation uuid.UUID
	)
	err := tx.QueryRow(ctx, `SELECT state, correlation_id FROM tasker.tasks WHERE task_uuid = $1 FOR UPDATE`, res.TaskUUID).Scan(&taskState, &correlation)
	if errors.Is(err, pgx.ErrNoRows) {
		out.Ignored, out.Reason = true, "task does not exist"
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("locking task %s: %w", res.TaskUUID, err)
	}
	out.TaskState = workflow.TaskState(taskState)
	if out.TaskState != workflow.TaskStateInProgress {
		out.Ignored, out.Reason = true, fmt.Sprintf("task is %s", taskState)
		return out, nil
	}

	var st stepRow
	var state string
	err = tx.QueryRow(ctx, `
		SELECT name, namespace, state, attempts, attempts_base, max_attempts, retryable, outcome_attempt,
			outcome_ok, error, retry_after_ms, backoff_base_ms, backoff_max_ms
		FROM tasker.steps WHERE step_uuid = $1 AND task_uuid = $2`, res.StepUUID, res.TaskUUID).
		Scan(&st.Name, &st.Namespace, &state, &st.Attempts, &st.AttemptsBase, &st.MaxAttempts, &st.Retryable,
			&st.OutcomeAttempt, &st.OutcomeOK, &st.Error, &st.RetryAfterMS, &st.BackoffBaseMS, &st.BackoffMaxMS)
	if errors.Is(err, pgx.ErrNoRows) {
		out.Ignored, out.Reason = true, "step does not exist"
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("reading step %s: %w", res.StepUUID, err)
	}
	st.State = workflow.StepState(state)
	out.StepState = st.State
	out.Namespace = st.Namespace
	if st.State != workflow.StepStateInProgress || st.Attempts != res.Attempt || st.OutcomeAttempt == nil || *st.OutcomeAttempt != res.Attempt {
		out.Ignored = true
		out.Reason = fmt.Sprintf("attempt %d is not current (step %s, attempt %d)", res.Attempt, st.State, st.Attempts)
		return out, nil
	}

	d, err := s.decide(st)
	if err != nil {
		return out, err
	}
	to, reason, delay, retryAt := d.to, d.reason, d.delay, d.retryAt
	if retryAt != nil {
		out.RetryAt = *retryAt
	}
	tag, err := tx.Exec(ctx, `
		UPDATE tasker.steps SET state = $3, outcome_attempt = NULL, outcome_ok = NULL,
			next_attempt_at = $4, finished_at = CASE WHEN $5 THEN now() END
		WHERE step_uuid = $1 AND state = $2 AND attempts = $6`,
		res.StepUUID, string(st.State), string(to), retryAt, to.Terminal(), res.Attempt)
	if err != nil {
		return out, fmt.Errorf("moving step %s to %s: %w", res.StepUUID, to, err)
	}
	if tag.RowsAffected() == 0 {
		return out, ErrStale
	}
	out.StepState = to
	if err := s.recordStepMoves(ctx, tx, []stepMove{{Step: res.StepUUID, Task: res.TaskUUID, From: st.State, To: to, Reason: reason, Attempt: res.Attempt}}); err != nil {
		return out, err
	}

	switch to {
	case workflow.StepStateWaitingForRetry:
		if err := s.sendStepMessages(ctx, tx, []readyStep{{Step: res.StepUUID, Task: res.TaskUUID, Namespace: st.Namespace, CorrelationID: correlation}}, delay); err != nil {
			return out, err
		}
		return out, nil
	case workflow.StepStateComplete:
		n, err := s.releaseChildren(ctx, tx, res.StepUUID, res.TaskUUID, st.Namespace, correlation, fmt.Sprintf("parent %s complete", st.Name))
		if err != nil {
			return out, err
		}
		out.Enqueued = n
	}
	out.TaskState, err = s.finalize(ctx, tx, res.TaskUUID, workflow.TaskStateInProgress)
	return out, err
}

// resultDecision is what applying a step's recorded outcome does to it.
type resultDecision struct {
	to     workflow.StepState
	reason string
	// delay and retryAt schedule the next attempt of a retryable failure.
	delay   time.Duration
	retryAt *time.Time
}

// decide applies the step machine and the retry policy to the outcome
// recorded on st (its current attempt's).
func (s *Store) decide(st stepRow) (resultDecision, error) {
	var (
		event  workflow.StepEvent
		reason string
		delay  time.Duration
	)
	switch {
	case *st.OutcomeOK:
		event, reason = workflow.StepEventSucceed, "handler succeeded"
	default:
		var se storedError
		_ = json.Unmarshal(st.Error, &se)
		reason = fmt.Sprintf("%s: %s", se.Kind, se.Message)
		if se.Retryable && st.Retryable && st.Attempts-st.AttemptsBase < st.MaxAttempts {
			event = workflow.StepEventFailRetryable
			var requested time.Duration
			if st.RetryAfterMS != nil {
				requested = time.Duration(*st.RetryAfterMS) * time.Millisecond
			}
			policy := s.backoff.Load().WithOverrides(time.Duration(st.BackoffBaseMS)*time.Millisecond, time.Duration(st.BackoffMaxMS)*time.Millisecond)
			delay = policy.Next(st.Attempts-st.AttemptsBase, requested)
		} else {
			event = workflow.StepEventFailPermanent
			switch {
			case se.Retryable && !st.Retryable:
				reason = "the step is not retryable: " + reason
			case se.Retryable:
				reason = fmt.Sprintf("attempts exhausted (%d of %d): %s", st.Attempts-st.AttemptsBase, st.MaxAttempts, reason)
			}
		}
	}
	to, err := workflow.StepTransition(st.State, event)
	if err != nil {
		return resultDecision{}, err
	}
	d := resultDecision{to: to, reason: reason, delay: delay}
	if event == workflow.StepEventFailRetryable {
		t := s.now().Add(delay)
		d.retryAt = &t
	}
	return d, nil
}

// releaseChildren counts a satisfied parent off each child of step and
// enqueues the children that have no unsatisfied parent left.
func (s *Store) releaseChildren(ctx context.Context, tx pgx.Tx, step, task uuid.UUID, namespace string, correlation uuid.UUID, reason string) (int, error) {
	rows, err := tx.Query(ctx, `
		UPDATE tasker.steps c SET waiting_parents = c.waiting_parents - 1
		FROM tasker.step_edges e
		WHERE e.from_step = $1 AND c.step_uuid = e.to_step
		RETURNING c.step_uuid, c.waiting_parents, c.state`, step)
	if err != nil {
		return 0, fmt.Errorf("releasing children of %s: %w", step, err)
	}
	var (
		id      uuid.UUID
		waiting int
		state   string
		ready   []readyStep
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &waiting, &state}, func() error {
		if waiting == 0 && state == string(workflow.StepStatePending) {
			ready = append(ready, readyStep{Step: id, Task: task, Namespace: namespace, CorrelationID: correlation})
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("releasing children of %s: %w", step, err)
	}
	return s.enqueuePending(ctx, tx, ready, reason)
}

// finalize ends the task when nothing is left to do: complete when every
// step is complete or resolved, error when a step failed and no step is in
// flight any more (branches that do not depend on the failed step have run
// to their end). The task must be in state from.
func (s *Store) finalize(ctx context.Context, tx pgx.Tx, task uuid.UUID, from workflow.TaskState) (workflow.TaskState, error) {
	var total, satisfied, inFlight, failed int
	var failedNames []string
	err := tx.QueryRow(ctx, `
		SELECT count(*),
			count(*) FILTER (WHERE state IN ('complete', 'resolved_manually')),
			count(*) FILTER (WHERE state IN ('enqueued', 'in_progress', 'waiting_for_retry')),
			count(*) FILTER (WHERE state = 'error'),
			COALESCE(array_agg(name ORDER BY position) FILTER (WHERE state = 'error'), '{}')
		FROM tasker.steps WHERE task_uuid = $1`, task).Scan(&total, &satisfied, &inFlight, &failed, &failedNames)
	if err != nil {
		return from, fmt.Errorf("counting steps of %s: %w", task, err)
	}
	switch {
	case satisfied == total:
		return s.moveTask(ctx, tx, task, from, workflow.TaskEventComplete, "every step complete")
	case inFlight == 0 && failed > 0:
		return s.moveTask(ctx, tx, task, from, workflow.TaskEventFail, fmt.Sprintf("step %s failed", joinNames(failedNames)))
	}
	return from, nil
}

func joinNames(names []string) string {
	out := ""
	for i, n := range names {
		if i > 0 {
			out += ", "
		}
		out += n
	}
	return out
}

// ResultQuarantine handles a result message delivered too many times (it
// keeps failing to apply): the message is archived for inspection and, when
// its attempt is still current, the step is failed with reason instead of
// whatever the worker recorded, so the task can end rather than wait.
func (s *Store) ResultQuarantine(ctx context.Context, msg queue.Message, reason string) (ResultOutcome, error) {
	out := ResultOutcome{Ignored: true, Reason: reason}
	res, derr := queue.DecodeStepResult(msg.Body)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if derr == nil {
			errJSON, err := json.Marshal(storedError{Kind: "poison", Message: reason, Attempt: res.Attempt})
			if err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `
				UPDATE tasker.steps SET outcome_ok = false, error = $3::jsonb, retry_after_ms = NULL
				WHERE step_uuid = $1 AND state = 'in_progress' AND attempts = $2 AND outcome_attempt = $2`,
				res.StepUUID, res.Attempt, errJSON)
			if err != nil {
				return fmt.Errorf("failing step %s: %w", res.StepUUID, err)
			}
			if tag.RowsAffected() == 1 {
				if out, err = s.applyResult(ctx, tx, res); err != nil {
					return err
				}
			}
		}
		if _, err := s.queue.WithDB(tx).Archive(ctx, queue.StepResultsQueue, msg.ID); err != nil {
			return fmt.Errorf("archiving result message %d: %w", msg.ID, err)
		}
		return nil
	})
	return out, err
}
