package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// The operator's actions. Each is one transaction that locks the task row,
// asks the machines of package workflow whether the action is allowed from
// the task's state (refusing with the reason when not), and applies it with
// the statements of sql/operator.sql — and, for a resolved step, the same
// step move and finalization that applying a result uses.

// lockedTask is a task row held for update.
type lockedTask struct {
	id          uuid.UUID
	state       workflow.TaskState
	correlation uuid.UUID
	namespace   string
}

func (s *Store) taskLock(ctx context.Context, tx pgx.Tx, task uuid.UUID) (lockedTask, error) {
	lt := lockedTask{id: task}
	var state string
	err := stmt("task_lock").queryRow(ctx, tx, args{"task": pgUUID(task)}).Scan(&state, scanUUID(&lt.correlation), &lt.namespace)
	if err != nil {
		if err = translate(err); errors.Is(err, ErrNotFound) {
			return lt, fmt.Errorf("task %s: %w", task, ErrNotFound)
		}
		return lt, fmt.Errorf("locking task %s: %w", task, err)
	}
	lt.state = workflow.TaskState(state)
	return lt, nil
}

// refuse turns a refused transition into the operator's error.
func refuse(action string, err error) error {
	var te *workflow.TransitionError
	if errors.As(err, &te) {
		return &RefusedError{Action: action, Reason: err.Error()}
	}
	return err
}

// taskMove moves a locked task to to on ev's behalf, with its transition.
func (s *Store) taskMove(ctx context.Context, tx pgx.Tx, t *lockedTask, ev workflow.TaskEvent, action, reason string) error {
	to, err := workflow.TaskTransition(t.state, ev)
	if err != nil {
		return refuse(action, err)
	}
	var n int64
	if err := stmt("task_move").queryRow(ctx, tx, args{
		"task": pgUUID(t.id), "from_state": string(t.state), "to_state": string(to), "terminal": to.Terminal(),
		"reason": reason, "node_id": s.nodeID,
	}).Scan(&n); err != nil {
		return fmt.Errorf("moving task %s to %s: %w", t.id, to, err)
	}
	if n == 0 {
		return ErrStale
	}
	t.state = to
	return nil
}

// movedStep is a step that steps_move moved.
type movedStep struct {
	id      uuid.UUID
	waiting int
}

// stepsMove moves every step of a task that the events ev apply to, as the
// step machine says, with the transitions; reset gives them a fresh set of
// attempts.
func (s *Store) stepsMove(ctx context.Context, tx pgx.Tx, task uuid.UUID, evs []workflow.StepEvent, reset bool, reason string) ([]movedStep, error) {
	var from, to []workflow.StepState
	for _, ev := range evs {
		f, t := workflow.StepEventEdges(ev)
		from, to = append(from, f...), append(to, t...)
	}
	rows, err := stmt("steps_move").query(ctx, tx, args{
		"task": pgUUID(task), "from_states": states(from), "to_states": states(to),
		"terminal_states": terminalStates, "reset": reset, "reason": reason, "node_id": s.nodeID,
	})
	if err != nil {
		return nil, fmt.Errorf("moving steps of %s: %w", task, err)
	}
	var (
		m     movedStep
		moved []movedStep
	)
	_, err = pgx.ForEachRow(rows, []any{scanUUID(&m.id), &m.waiting}, func() error {
		moved = append(moved, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("moving steps of %s: %w", task, err)
	}
	return moved, nil
}

// stepsEnqueue enqueues the steps of a locked task among ids that have no
// parent waiting, and returns how many it enqueued.
func (s *Store) stepsEnqueue(ctx context.Context, tx pgx.Tx, t lockedTask, ids []uuid.UUID, reason string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	msgs := make([][]byte, len(ids))
	for i, id := range ids {
		var err error
		if msgs[i], err = (queue.StepMessage{TaskUUID: t.id, StepUUID: id, CorrelationID: t.correlation}).Encode(); err != nil {
			return 0, fmt.Errorf("encoding step message: %w", err)
		}
	}
	stepQueue := queue.NamespaceQueue(t.namespace)
	st, err := stmt("steps_enqueue").forQueues("step_queue", stepQueue)
	if err != nil {
		return 0, err
	}
	var moved, throttled, sent, woke int64
	if err := st.queryRow(ctx, tx, args{
		"steps": pgUUIDs(ids), "messages": msgs, "from_state": string(workflow.StepStatePending),
		"to_state": string(enqueueTo), "throttled": string(throttleTo), "reason": reason, "node_id": s.nodeID,
		"wake_channel": WakeChannel, "wake_queue": stepQueue,
	}).Scan(&moved, &throttled, &sent, &woke); err != nil {
		return 0, fmt.Errorf("enqueueing steps of %s: %w", t.id, translate(err))
	}
	return int(moved + throttled), nil
}

// TaskCancel cancels a pending, running or failed task and its unfinished
// steps. Messages already queued for those steps are acknowledged and
// ignored when a worker takes them.
func (s *Store) TaskCancel(ctx context.Context, task uuid.UUID, reason string) error {
	if reason == "" {
		reason = "cancelled by operator"
	}
	// Cancelling gives back the slots of the task's steps under flow
	// limits, if any.
	defer s.flowChanged()
	return s.inTx(ctx, func(tx pgx.Tx) error { return s.taskCancel(ctx, tx, task, reason) })
}

// taskCancel is TaskCancel within tx.
func (s *Store) taskCancel(ctx context.Context, tx pgx.Tx, task uuid.UUID, reason string) error {
	t, err := s.taskLock(ctx, tx, task)
	if err != nil {
		return err
	}
	if err := s.taskMove(ctx, tx, &t, workflow.TaskEventCancel, "cancel", reason); err != nil {
		return err
	}
	_, err = s.stepsMove(ctx, tx, task, []workflow.StepEvent{workflow.StepEventCancel}, false, reason)
	return err
}

// TaskRetry puts a task in error back to work: its failed steps return to
// pending with a fresh set of attempts, and those whose parents are done are
// enqueued. It returns how many it enqueued.
func (s *Store) TaskRetry(ctx context.Context, task uuid.UUID) (int, error) {
	const reason = "retried by operator"
	var enqueued int
	defer s.flowChanged() // after the commit: steps may be throttled
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		t, err := s.taskLock(ctx, tx, task)
		if err != nil {
			return err
		}
		if err := s.taskMove(ctx, tx, &t, workflow.TaskEventRetry, "retry", reason); err != nil {
			return err
		}
		moved, err := s.stepsMove(ctx, tx, task, []workflow.StepEvent{workflow.StepEventRetry}, true, reason)
		if err != nil {
			return err
		}
		if len(moved) == 0 {
			return &RefusedError{Action: "retry", Reason: "the task has no failed step"}
		}
		var ready []uuid.UUID
		for _, m := range moved {
			if m.waiting == 0 {
				ready = append(ready, m.id)
			}
		}
		enqueued, err = s.stepsEnqueue(ctx, tx, t, ready, reason)
		return err
	})
	return enqueued, err
}

// TaskResolve marks a failed task resolved by an operator: its failed steps
// become resolved_manually and the steps that never ran are cancelled.
func (s *Store) TaskResolve(ctx context.Context, task uuid.UUID) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		t, err := s.taskLock(ctx, tx, task)
		if err != nil {
			return err
		}
		if err := s.taskMove(ctx, tx, &t, workflow.TaskEventResolve, "resolve", "resolved by operator"); err != nil {
			return err
		}
		_, err = s.stepsMove(ctx, tx, task, []workflow.StepEvent{workflow.StepEventResolve, workflow.StepEventCancel}, false, "task resolved by operator")
		return err
	})
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
	defer s.flowChanged() // after the commit: children may be throttled
	return s.inTx(ctx, func(tx pgx.Tx) error {
		t, err := s.taskLock(ctx, tx, task)
		if err != nil {
			return err
		}
		if !stepResolvable(t.state) {
			return &RefusedError{Action: "resolve", Reason: fmt.Sprintf("task %s is %q; only a step of a task in progress or in error can be resolved", task, t.state)}
		}
		var (
			id       uuid.UUID
			state    string
			attempts int
		)
		err = stmt("step_lock").queryRow(ctx, tx, args{"task": pgUUID(task), "name": stepName}).Scan(scanUUID(&id), &state, &attempts)
		if errors.Is(translate(err), ErrNotFound) {
			return &RefusedError{Action: "resolve", Reason: fmt.Sprintf("task %s has no step %q", task, stepName)}
		}
		if err != nil {
			return fmt.Errorf("reading step %q: %w", stepName, err)
		}
		from := workflow.StepState(state)
		to, err := workflow.StepTransition(from, workflow.StepEventResolve)
		if err != nil {
			return refuse("resolve", err)
		}
		// A task that had ended in error resumes when the resolved step
		// unblocks others.
		if t.state != resultTaskState {
			if err := s.taskMove(ctx, tx, &t, workflow.TaskEventRetry, "resolve", fmt.Sprintf("step %s resolved by operator", stepName)); err != nil {
				return err
			}
		}
		children, childMsgs, err := s.stepChildren(ctx, tx, t, id)
		if err != nil {
			return err
		}
		var (
			b     = &pgx.Batch{}
			moved movedCounts
		)
		if err := s.queueStepsMove(b, t.namespace, []stepMove{{
			task: task, step: id, from: from,
			d:       workflow.Decision{Event: workflow.StepEventResolve, To: to, Reason: "resolved by operator"},
			attempt: attempts, result: result, releaseReason: releasePrefix + stepName + releaseResolvedSuffix,
			children: children, childMsgs: childMsgs, into: &moved,
		}}); err != nil {
			return err
		}
		s.queueTasksFinalize(b, []uuid.UUID{task}, t.state, func(uuid.UUID, workflow.TaskState) {})
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("resolving step %q: %w", stepName, translate(err))
		}
		if !moved.moved {
			return ErrStale
		}
		return nil
	})
}

// stepResolvable reports whether a step of a task in state can be
// resolved: the task is in progress, or in error and resumes on a retry.
func stepResolvable(state workflow.TaskState) bool {
	if state == resultTaskState {
		return true
	}
	to, err := workflow.TaskTransition(state, workflow.TaskEventRetry)
	return err == nil && to == resultTaskState
}

// stepChildren returns the children of a step and their messages.
func (s *Store) stepChildren(ctx context.Context, tx pgx.Tx, t lockedTask, step uuid.UUID) ([][16]byte, [][]byte, error) {
	rows, err := stmt("step_children").query(ctx, tx, args{"step": pgUUID(step)})
	if err != nil {
		return nil, nil, fmt.Errorf("reading children of %s: %w", step, err)
	}
	var (
		child    uuid.UUID
		children [][16]byte
		msgs     [][]byte
	)
	_, err = pgx.ForEachRow(rows, []any{scanUUID(&child)}, func() error {
		msg, err := queue.StepMessage{TaskUUID: t.id, StepUUID: child, CorrelationID: t.correlation}.Encode()
		if err != nil {
			return err
		}
		children, msgs = append(children, child), append(msgs, msg)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading children of %s: %w", step, err)
	}
	return children, msgs, nil
}
