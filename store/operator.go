package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/workflow"
)

// lockTask locks the task row and returns its state and correlation id.
func lockTask(ctx context.Context, tx pgx.Tx, task uuid.UUID) (workflow.TaskState, uuid.UUID, string, error) {
	var (
		state       string
		correlation uuid.UUID
		namespace   string
	)
	err := tx.QueryRow(ctx, `SELECT state, correlation_id, namespace FROM tasker.tasks WHERE task_uuid = $1 FOR UPDATE`, task).
		Scan(&state, &correlation, &namespace)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", uuid.Nil, "", fmt.Errorf("task %s: %w", task, ErrNotFound)
	}
	if err != nil {
		return "", uuid.Nil, "", fmt.Errorf("locking task %s: %w", task, err)
	}
	return workflow.TaskState(state), correlation, namespace, nil
}

// refuse turns a refused transition into the operator's error.
func refuse(action string, err error) error {
	var te *workflow.TransitionError
	if errors.As(err, &te) {
		return &RefusedError{Action: action, Reason: err.Error()}
	}
	return err
}

// TaskCancel cancels a pending, running or failed task and its unfinished
// steps. Messages already queued for those steps are acknowledged and
// ignored when a worker takes them.
func (s *Store) TaskCancel(ctx context.Context, task uuid.UUID, reason string) error {
	if reason == "" {
		reason = "cancelled by operator"
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		state, _, _, err := lockTask(ctx, tx, task)
		if err != nil {
			return err
		}
		if _, err := s.moveTask(ctx, tx, task, state, workflow.TaskEventCancel, reason); err != nil {
			return refuse("cancel", err)
		}
		rows, err := tx.Query(ctx, `
			UPDATE tasker.steps s SET state = 'cancelled', finished_at = now(), outcome_attempt = NULL, outcome_ok = NULL
			FROM (SELECT step_uuid, state FROM tasker.steps WHERE task_uuid = $1
				AND state IN ('pending', 'enqueued', 'in_progress', 'waiting_for_retry') FOR UPDATE) old
			WHERE s.step_uuid = old.step_uuid
			RETURNING s.step_uuid, old.state, s.attempts`, task)
		if err != nil {
			return fmt.Errorf("cancelling steps of %s: %w", task, err)
		}
		var (
			id      uuid.UUID
			from    string
			attempt int
			moves   []stepMove
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &from, &attempt}, func() error {
			to, err := workflow.StepTransition(workflow.StepState(from), workflow.StepEventCancel)
			if err != nil {
				return err
			}
			moves = append(moves, stepMove{Step: id, Task: task, From: workflow.StepState(from), To: to, Reason: reason, Attempt: attempt})
			return nil
		})
		if err != nil {
			return fmt.Errorf("cancelling steps of %s: %w", task, err)
		}
		return s.recordStepMoves(ctx, tx, moves)
	})
}

// TaskRetry puts a task in error back to work: its failed steps return to
// pending with a fresh set of attempts, and those whose parents are done are
// enqueued.
func (s *Store) TaskRetry(ctx context.Context, task uuid.UUID) (int, error) {
	var enqueued int
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		state, correlation, namespace, err := lockTask(ctx, tx, task)
		if err != nil {
			return err
		}
		if _, err := s.moveTask(ctx, tx, task, state, workflow.TaskEventRetry, "retried by operator"); err != nil {
			return refuse("retry", err)
		}
		rows, err := tx.Query(ctx, `
			UPDATE tasker.steps SET state = 'pending', attempts_base = attempts, error = NULL,
				next_attempt_at = NULL, finished_at = NULL
			WHERE task_uuid = $1 AND state = 'error'
			RETURNING step_uuid, attempts, waiting_parents`, task)
		if err != nil {
			return fmt.Errorf("resetting failed steps of %s: %w", task, err)
		}
		var (
			id       uuid.UUID
			attempts int
			waiting  int
			moves    []stepMove
			ready    []readyStep
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &attempts, &waiting}, func() error {
			to, err := workflow.StepTransition(workflow.StepStateError, workflow.StepEventRetry)
			if err != nil {
				return err
			}
			moves = append(moves, stepMove{Step: id, Task: task, From: workflow.StepStateError, To: to, Reason: "retried by operator", Attempt: attempts})
			if waiting == 0 {
				ready = append(ready, readyStep{Step: id, Task: task, Namespace: namespace, CorrelationID: correlation})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("resetting failed steps of %s: %w", task, err)
		}
		if len(moves) == 0 {
			return &RefusedError{Action: "retry", Reason: "the task has no failed step"}
		}
		if err := s.recordStepMoves(ctx, tx, moves); err != nil {
			return err
		}
		enqueued, err = s.enqueuePending(ctx, tx, ready, "retried by operator")
		return err
	})
	return enqueued, err
}

// StepResolve marks a failed step resolved by an operator, with result as
// its result (JSON; empty means null). The step then satisfies its
// dependents: those that become ready are enqueued and the task resumes, or
// ends resolved when nothing is left.
func (s *Store) StepResolve(ctx context.Context, task uuid.UUID, stepName string, result json.RawMessage) error {
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	if !json.Valid(result) {
		return &RefusedError{Action: "resolve", Reason: "the result is not valid JSON"}
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		taskState, correlation, namespace, err := lockTask(ctx, tx, task)
		if err != nil {
			return err
		}
		if taskState != workflow.TaskStateInProgress && taskState != workflow.TaskStateError {
			return &RefusedError{Action: "resolve", Reason: fmt.Sprintf("task %s is %q; only a step of a task in progress or in error can be resolved", task, taskState)}
		}
		var (
			id       uuid.UUID
			state    string
			attempts int
		)
		err = tx.QueryRow(ctx, `SELECT step_uuid, state, attempts FROM tasker.steps WHERE task_uuid = $1 AND name = $2 FOR UPDATE`, task, stepName).
			Scan(&id, &state, &attempts)
		if errors.Is(err, pgx.ErrNoRows) {
			return &RefusedError{Action: "resolve", Reason: fmt.Sprintf("task %s has no step %q", task, stepName)}
		}
		if err != nil {
			return fmt.Errorf("reading step %q: %w", stepName, err)
		}
		to, err := workflow.StepTransition(workflow.StepState(state), workflow.StepEventResolve)
		if err != nil {
			return refuse("resolve", err)
		}
		if _, err := tx.Exec(ctx, `
			UPDATE tasker.steps SET state = $2, result = $3::jsonb, finished_at = now()
			WHERE step_uuid = $1 AND state = 'error'`, id, string(to), []byte(result)); err != nil {
			return fmt.Errorf("resolving step %q: %w", stepName, err)
		}
		if err := s.recordStepMoves(ctx, tx, []stepMove{{Step: id, Task: task, From: workflow.StepState(state), To: to, Reason: "resolved by operator", Attempt: attempts}}); err != nil {
			return err
		}
		// A task that had ended in error resumes when the resolved step
		// unblocks others.
		current := taskState
		if taskState == workflow.TaskStateError {
			if current, err = s.moveTask(ctx, tx, task, taskState, workflow.TaskEventRetry, fmt.Sprintf("step %s resolved by operator", stepName)); err != nil {
				return refuse("resolve", err)
			}
		}
		if _, err := s.releaseChildren(ctx, tx, id, task, namespace, correlation, fmt.Sprintf("parent %s resolved", stepName)); err != nil {
			return err
		}
		_, err = s.finalize(ctx, tx, task, current)
		return err
	})
}

// TaskResolve marks a failed task resolved by an operator: its failed steps
// become resolved_manually and the steps that never ran are cancelled.
func (s *Store) TaskResolve(ctx context.Context, task uuid.UUID) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		state, _, _, err := lockTask(ctx, tx, task)
		if err != nil {
			return err
		}
		if _, err := s.moveTask(ctx, tx, task, state, workflow.TaskEventResolve, "resolved by operator"); err != nil {
			return refuse("resolve", err)
		}
		rows, err := tx.Query(ctx, `
			UPDATE tasker.steps s
			SET state = CASE old.state WHEN 'error' THEN 'resolved_manually' ELSE 'cancelled' END,
				finished_at = now()
			FROM (SELECT step_uuid, state FROM tasker.steps WHERE task_uuid = $1
				AND state IN ('error', 'pending') FOR UPDATE) old
			WHERE s.step_uuid = old.step_uuid
			RETURNING s.step_uuid, old.state, s.state, s.attempts`, task)
		if err != nil {
			return fmt.Errorf("resolving steps of %s: %w", task, err)
		}
		var (
			id       uuid.UUID
			from, to string
			attempts int
			moves    []stepMove
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &from, &to, &attempts}, func() error {
			moves = append(moves, stepMove{Step: id, Task: task, From: workflow.StepState(from), To: workflow.StepState(to), Reason: "task resolved by operator", Attempt: attempts})
			return nil
		})
		if err != nil {
			return fmt.Errorf("resolving steps of %s: %w", task, err)
		}
		return s.recordStepMoves(ctx, tx, moves)
	})
}
