package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/workflow"
)

// Task is a task row.
type Task struct {
	TaskUUID      uuid.UUID          `json:"task_uuid"`
	RequestID     uuid.UUID          `json:"request_id"`
	CorrelationID uuid.UUID          `json:"correlation_id"`
	Namespace     string             `json:"namespace"`
	Name          string             `json:"name"`
	Version       string             `json:"version"`
	State         workflow.TaskState `json:"state"`
	Context       json.RawMessage    `json:"context"`
	Priority      int                `json:"priority"`
	RequestedBy   string             `json:"requested_by,omitempty"`
	CreatedAt     time.Time          `json:"created_at"`
	UpdatedAt     time.Time          `json:"updated_at"`
	FinishedAt    *time.Time         `json:"finished_at,omitempty"`
}

// Step is a step row with the names of its parents.
type Step struct {
	StepUUID        uuid.UUID          `json:"step_uuid"`
	Name            string             `json:"name"`
	Handler         string             `json:"handler"`
	State           workflow.StepState `json:"state"`
	Attempts        int                `json:"attempts"`
	MaxAttempts     int                `json:"max_attempts"`
	DependsOn       []string           `json:"depends_on"`
	Result          json.RawMessage    `json:"result,omitempty"`
	Error           json.RawMessage    `json:"error,omitempty"`
	EnqueuedAt      *time.Time         `json:"enqueued_at,omitempty"`
	LastAttemptedAt *time.Time         `json:"last_attempted_at,omitempty"`
	NextAttemptAt   *time.Time         `json:"next_attempt_at,omitempty"`
	FinishedAt      *time.Time         `json:"finished_at,omitempty"`
	DurationMS      *int64             `json:"duration_ms,omitempty"`
}

// Transition is one row of task_transitions or step_transitions.
type Transition struct {
	StepName  string    `json:"step,omitempty"`
	From      string    `json:"from,omitempty"`
	To        string    `json:"to"`
	Reason    string    `json:"reason"`
	Attempt   int       `json:"attempt,omitempty"`
	NodeID    string    `json:"node_id"`
	CreatedAt time.Time `json:"created_at"`
}

// TaskDetail is a task with its steps (in template order) and its history.
type TaskDetail struct {
	Task
	Steps           []Step       `json:"steps"`
	TaskTransitions []Transition `json:"task_transitions"`
	StepTransitions []Transition `json:"step_transitions"`
}

const taskColumns = `task_uuid, request_id, correlation_id, namespace, name, version, state, context,
	priority, requested_by, created_at, updated_at, finished_at`

func scanTask(row pgx.Row) (Task, error) {
	var t Task
	var state string
	err := row.Scan(&t.TaskUUID, &t.RequestID, &t.CorrelationID, &t.Namespace, &t.Name, &t.Version, &state,
		&t.Context, &t.Priority, &t.RequestedBy, &t.CreatedAt, &t.UpdatedAt, &t.FinishedAt)
	t.State = workflow.TaskState(state)
	return t, err
}

// TaskGet returns a task by its uuid or by the request id that created it.
func (s *Store) TaskGet(ctx context.Context, id uuid.UUID) (Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasker.tasks WHERE task_uuid = $1
		UNION ALL SELECT `+taskColumns+` FROM tasker.tasks WHERE request_id = $1 LIMIT 1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("reading task %s: %w", id, err)
	}
	return t, nil
}

// TaskShow returns a task (by task uuid or request id) with its steps and
// transitions.
func (s *Store) TaskShow(ctx context.Context, id uuid.UUID) (TaskDetail, error) {
	var d TaskDetail
	t, err := s.TaskGet(ctx, id)
	if err != nil {
		return d, err
	}
	d.Task = t
	rows, err := s.pool.Query(ctx, `
		SELECT s.step_uuid, s.name, s.handler, s.state, s.attempts, s.attempts_base + s.max_attempts,
			COALESCE((SELECT array_agg(p.name ORDER BY p.position) FROM tasker.step_edges e
				JOIN tasker.steps p ON p.step_uuid = e.from_step WHERE e.to_step = s.step_uuid), '{}'),
			s.result, s.error, s.enqueued_at, s.last_attempted_at, s.next_attempt_at, s.finished_at, s.duration_ms
		FROM tasker.steps s WHERE s.task_uuid = $1 ORDER BY s.position`, t.TaskUUID)
	if err != nil {
		return d, fmt.Errorf("reading steps of %s: %w", t.TaskUUID, err)
	}
	d.Steps, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Step, error) {
		var st Step
		var state string
		err := r.Scan(&st.StepUUID, &st.Name, &st.Handler, &state, &st.Attempts, &st.MaxAttempts, &st.DependsOn,
			&st.Result, &st.Error, &st.EnqueuedAt, &st.LastAttemptedAt, &st.NextAttemptAt, &st.FinishedAt, &st.DurationMS)
		st.State = workflow.StepState(state)
		return st, err
	})
	if err != nil {
		return d, fmt.Errorf("reading steps of %s: %w", t.TaskUUID, err)
	}
	if d.TaskTransitions, err = s.transitions(ctx, `
		SELECT '', COALESCE(from_state, ''), to_state, reason, 0, node_id, created_at
		FROM tasker.task_transitions WHERE task_uuid = $1 ORDER BY id`, t.TaskUUID); err != nil {
		return d, err
	}
	if d.StepTransitions, err = s.transitions(ctx, `
		SELECT s.name, COALESCE(x.from_state, ''), x.to_state, x.reason, x.attempt, x.node_id, x.created_at
		FROM tasker.step_transitions x JOIN tasker.steps s ON s.step_uuid = x.step_uuid
		WHERE x.task_uuid = $1 ORDER BY x.id`, t.TaskUUID); err != nil {
		return d, err
	}
	return d, nil
}

func (s *Store) transitions(ctx context.Context, sql string, task uuid.UUID) ([]Transition, error) {
	rows, err := s.pool.Query(ctx, sql, task)
	if err != nil {
		return nil, fmt.Errorf("reading transitions of %s: %w", task, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Transition, error) {
		var tr Transition
		err := r.Scan(&tr.StepName, &tr.From, &tr.To, &tr.Reason, &tr.Attempt, &tr.NodeID, &tr.CreatedAt)
		return tr, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading transitions of %s: %w", task, err)
	}
	return out, nil
}

// TaskListParams filter TaskList. Zero values do not filter.
type TaskListParams struct {
	State     workflow.TaskState
	Namespace string
	Name      string
	// CreatedAfter keeps tasks newer than this.
	CreatedAfter time.Time
	// Limit defaults to 50.
	Limit int
}

// TaskList returns tasks newest first.
func (s *Store) TaskList(ctx context.Context, p TaskListParams) ([]Task, error) {
	if p.Limit <= 0 {
		p.Limit = 50
	}
	var after *time.Time
	if !p.CreatedAfter.IsZero() {
		after = &p.CreatedAfter
	}
	rows, err := s.pool.Query(ctx, `SELECT `+taskColumns+` FROM tasker.tasks
		WHERE ($1 = '' OR state = $1) AND ($2 = '' OR namespace = $2) AND ($3 = '' OR name = $3)
			AND ($4::timestamptz IS NULL OR created_at > $4)
		ORDER BY created_at DESC LIMIT $5`, string(p.State), p.Namespace, p.Name, after, p.Limit)
	if err != nil {
		return nil, fmt.Errorf("listing tasks: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Task, error) { return scanTask(r) })
	if err != nil {
		return nil, fmt.Errorf("listing tasks: %w", err)
	}
	return out, nil
}

// RejectedRequest is a task request that could not be honoured.
type RejectedRequest struct {
	ID         int64      `json:"id"`
	RequestID  *uuid.UUID `json:"request_id,omitempty"`
	MsgID      int64      `json:"msg_id"`
	Payload    string     `json:"payload"`
	Reason     string     `json:"reason"`
	NodeID     string     `json:"node_id"`
	RejectedAt time.Time  `json:"rejected_at"`
}

// RejectedList returns the rejected task requests, newest first.
func (s *Store) RejectedList(ctx context.Context, limit int) ([]RejectedRequest, error) {
	if limit <= 0 {
		limit = 50
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id, request_id, msg_id, payload, reason, node_id, rejected_at
		FROM tasker.rejected_requests ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("listing rejected requests: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RejectedRequest, error) {
		var rr RejectedRequest
		err := r.Scan(&rr.ID, &rr.RequestID, &rr.MsgID, &rr.Payload, &rr.Reason, &rr.NodeID, &rr.RejectedAt)
		return rr, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing rejected requests: %w", err)
	}
	return out, nil
}
