package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// stepMove is one step state change to record. From is empty for the row
// that creates the step.
type stepMove struct {
	Step    uuid.UUID
	Task    uuid.UUID
	From    workflow.StepState
	To      workflow.StepState
	Reason  string
	Attempt int
}

// taskMove is one task state change to record.
type taskMove struct {
	Task   uuid.UUID
	From   workflow.TaskState
	To     workflow.TaskState
	Reason string
}

// recordStepMoves appends the rows of moves to step_transitions in one
// statement.
func (s *Store) recordStepMoves(ctx context.Context, tx pgx.Tx, moves []stepMove) error {
	if len(moves) == 0 {
		return nil
	}
	steps := make([]uuid.UUID, len(moves))
	tasks := make([]uuid.UUID, len(moves))
	froms := make([]string, len(moves))
	tos := make([]string, len(moves))
	reasons := make([]string, len(moves))
	attempts := make([]int32, len(moves))
	for i, m := range moves {
		steps[i], tasks[i], froms[i], tos[i], reasons[i], attempts[i] = m.Step, m.Task, string(m.From), string(m.To), m.Reason, int32(m.Attempt)
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
		SELECT s, t, NULLIF(f, ''), o, r, a, $7
		FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[]) AS x(s, t, f, o, r, a)`,
		steps, tasks, froms, tos, reasons, attempts, s.nodeID)
	if err != nil {
		return fmt.Errorf("recording step transitions: %w", err)
	}
	return nil
}

// recordTaskMove appends one row to task_transitions.
func (s *Store) recordTaskMove(ctx context.Context, tx pgx.Tx, m taskMove) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id)
		VALUES ($1, NULLIF($2, ''), $3, $4, $5)`,
		m.Task, string(m.From), string(m.To), m.Reason, s.nodeID)
	if err != nil {
		return fmt.Errorf("recording task transition: %w", err)
	}
	return nil
}

// moveTask changes a task's state with compare-and-set on from and records
// the transition. It returns ErrStale when the task is no longer in from.
func (s *Store) moveTask(ctx context.Context, tx pgx.Tx, task uuid.UUID, from workflow.TaskState, ev workflow.TaskEvent, reason string) (workflow.TaskState, error) {
	to, err := workflow.TaskTransition(from, ev)
	if err != nil {
		return from, err
	}
	tag, err := tx.Exec(ctx, `
		UPDATE tasker.tasks SET state = $3, updated_at = now(),
			finished_at = CASE WHEN $4 THEN now() ELSE NULL END
		WHERE task_uuid = $1 AND state = $2`, task, string(from), string(to), to.Terminal())
	if err != nil {
		return from, fmt.Errorf("moving task %s to %s: %w", task, to, err)
	}
	if tag.RowsAffected() == 0 {
		return from, ErrStale
	}
	return to, s.recordTaskMove(ctx, tx, taskMove{Task: task, From: from, To: to, Reason: reason})
}

// readyStep is a step whose message is to be sent.
type readyStep struct {
	Step uuid.UUID
	Task uuid.UUID
	// Namespace selects the queue.
	Namespace     string
	CorrelationID uuid.UUID
}

// enqueuePending moves pending steps to enqueued (compare-and-set) and sends
// one message per step in the same transaction, batched per namespace. It
// returns how many it enqueued.
func (s *Store) enqueuePending(ctx context.Context, tx pgx.Tx, steps []readyStep, reason string) (int, error) {
	if len(steps) == 0 {
		return 0, nil
	}
	ids := make([]uuid.UUID, len(steps))
	for i, st := range steps {
		ids[i] = st.Step
	}
	rows, err := tx.Query(ctx, `
		UPDATE tasker.steps SET state = 'enqueued', enqueued_at = now()
		WHERE step_uuid = ANY($1) AND state = 'pending'
		RETURNING step_uuid`, ids)
	if err != nil {
		return 0, fmt.Errorf("enqueueing steps: %w", err)
	}
	moved, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return 0, fmt.Errorf("enqueueing steps: %w", err)
	}
	isMoved := make(map[uuid.UUID]bool, len(moved))
	for _, id := range moved {
		isMoved[id] = true
	}
	var sent []readyStep
	for _, st := range steps {
		if isMoved[st.Step] {
			sent = append(sent, st)
		}
	}
	if err := s.sendStepMessages(ctx, tx, sent, 0); err != nil {
		return 0, err
	}
	moves := make([]stepMove, 0, len(sent))
	for _, st := range sent {
		moves = append(moves, stepMove{Step: st.Step, Task: st.Task, From: workflow.StepStatePending, To: workflow.StepStateEnqueued, Reason: reason})
	}
	return len(sent), s.recordStepMoves(ctx, tx, moves)
}

// sendStepMessages sends the step messages of steps, one batch per
// namespace queue, visible after delay.
func (s *Store) sendStepMessages(ctx context.Context, tx pgx.Tx, steps []readyStep, delay time.Duration) error {
	byQueue := map[string][][]byte{}
	var order []string
	for _, st := range steps {
		body, err := queue.StepMessage{TaskUUID: st.Task, StepUUID: st.Step, CorrelationID: st.CorrelationID}.Encode()
		if err != nil {
			return fmt.Errorf("encoding step message: %w", err)
		}
		q := queue.NamespaceQueue(st.Namespace)
		if _, ok := byQueue[q]; !ok {
			order = append(order, q)
		}
		byQueue[q] = append(byQueue[q], body)
	}
	qc := s.queue.WithDB(tx)
	for _, q := range order {
		if _, err := qc.SendBatch(ctx, q, byQueue[q], delay); err != nil {
			return fmt.Errorf("sending step messages to %s: %w", q, err)
		}
		if delay == 0 {
			if err := wake(ctx, tx, q); err != nil {
				return err
			}
		}
	}
	return nil
}

// WakeChannel is the LISTEN/NOTIFY channel on which the store announces, at
// commit, the queues it has just sent to (the payload is the queue name).
// Nodes listen to wake their pollers; polling remains the fallback.
const WakeChannel = "tasker_wake"

// wake announces a send to queueName when the transaction commits.
// PostgreSQL folds repeated identical notifications of one transaction.
func wake(ctx context.Context, tx pgx.Tx, queueName string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", WakeChannel, queueName); err != nil {
		return fmt.Errorf("notifying %s: %w", queueName, err)
	}
	return nil
}
