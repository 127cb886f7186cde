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

// Task is a task row.
type Task struct {
	TaskUUID      uuid.UUID          `json:"task_uuid"`
	RequestID     uuid.UUID          `json:"request_id"`
	CorrelationID uuid.UUID          `json:"correlation_id"`
	Namespace     string             `json:"namespace"`
	Name          string             `json:"name"`
	Version       string             `json:"version"`
	State         workflow.TaskState `json:"state"`
	// Context is the task's input; lists leave it out (TaskShow has it).
	Context json.RawMessage `json:"context,omitempty"`
	// Trace is the trace context of the task's request, as the headers
	// object its messages carry ({"traceparent": …, "tracestate": …});
	// absent when none came. Lists leave it out (TaskShow has it).
	Trace       json.RawMessage `json:"trace,omitempty"`
	Priority    int             `json:"priority"`
	RequestedBy string          `json:"requested_by,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
	FinishedAt  *time.Time      `json:"finished_at,omitempty"`
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
	// ThrottledReason says why a throttled step waits for its admission
	// (the flow limit that holds it), since ThrottledSince; both are
	// empty for a step in any other state.
	ThrottledReason string     `json:"throttled_reason,omitempty"`
	ThrottledSince  *time.Time `json:"throttled_since,omitempty"`
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

// TraceParent is the traceparent of the task's request; empty when it
// carried none.
func (t Task) TraceParent() string {
	tr, _ := queue.TraceFromHeaders(t.Trace)
	return tr.Parent
}

func scanTask(row pgx.Row) (Task, error) {
	var t Task
	var state string
	err := row.Scan(&t.TaskUUID, &t.RequestID, &t.CorrelationID, &t.Namespace, &t.Name, &t.Version, &state,
		&t.Context, &t.Trace, &t.Priority, &t.RequestedBy, &t.CreatedAt, &t.UpdatedAt, &t.FinishedAt)
	t.State = workflow.TaskState(state)
	return t, err
}

// TaskGet returns a task by its uuid or by the request id that created it.
func (s *Store) TaskGet(ctx context.Context, id uuid.UUID) (Task, error) {
	t, err := scanTask(stmt("task_get").queryRow(ctx, s.pool, args{"id": id}))
	if errors.Is(translate(err), ErrNotFound) {
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
	rows, err := stmt("task_steps").query(ctx, s.pool, args{"task": t.TaskUUID})
	if err != nil {
		return d, fmt.Errorf("reading steps of %s: %w", t.TaskUUID, err)
	}
	d.Steps, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Step, error) {
		var st Step
		var state string
		err := r.Scan(&st.StepUUID, &st.Name, &st.Handler, &state, &st.Attempts, &st.MaxAttempts, &st.DependsOn,
			&st.Result, &st.Error, &st.EnqueuedAt, &st.LastAttemptedAt, &st.NextAttemptAt, &st.FinishedAt, &st.DurationMS,
			&st.ThrottledReason, &st.ThrottledSince)
		st.State = workflow.StepState(state)
		return st, err
	})
	if err != nil {
		return d, fmt.Errorf("reading steps of %s: %w", t.TaskUUID, err)
	}
	if d.TaskTransitions, err = s.transitions(ctx, stmt("task_transitions"), t.TaskUUID); err != nil {
		return d, err
	}
	if d.StepTransitions, err = s.transitions(ctx, stmt("task_step_transitions"), t.TaskUUID); err != nil {
		return d, err
	}
	return d, nil
}

func (s *Store) transitions(ctx context.Context, st *statement, task uuid.UUID) ([]Transition, error) {
	rows, err := st.query(ctx, s.pool, args{"task": task})
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
	State workflow.TaskState
	// States keeps tasks in any of these states (with State, in State).
	States    []workflow.TaskState
	Namespace string
	Name      string
	// CreatedAfter keeps tasks newer than this.
	CreatedAfter time.Time
	// CreatedBefore keeps tasks created at this time or earlier.
	CreatedBefore time.Time
	// Search keeps tasks whose task uuid, request id or correlation id lies
	// in the range.
	Search *UUIDRange
	// Before keeps tasks older than this task (a cursor: the last task of
	// the previous page).
	Before uuid.UUID
	// Limit defaults to 50.
	Limit int
}

// UUIDRange is the UUIDs from Low to High, both included: those that begin
// with a given prefix, say.
type UUIDRange struct{ Low, High uuid.UUID }

// TaskList returns tasks newest first.
func (s *Store) TaskList(ctx context.Context, p TaskListParams) ([]Task, error) {
	if p.Limit <= 0 {
		p.Limit = 50
	}
	a := args{
		"states": taskStates(p), "namespace": p.Namespace, "name": p.Name, "created_after": optionalTime(p.CreatedAfter),
		"created_before": optionalTime(p.CreatedBefore), "limit": p.Limit, "before": optionalUUID(p.Before),
	}
	st := stmt("task_list")
	if p.Search != nil {
		st = stmt("task_search")
		a["lo"], a["hi"] = pgUUID(p.Search.Low), pgUUID(p.Search.High)
	}
	rows, err := st.query(ctx, s.pool, a)
	if err != nil {
		return nil, fmt.Errorf("listing tasks: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Task, error) { return scanTask(r) })
	if err != nil {
		return nil, fmt.Errorf("listing tasks: %w", err)
	}
	return out, nil
}

// taskStates is the states filter of p: State alone, or States, or State
// where States has it (none when it does not: nothing matches).
func taskStates(p TaskListParams) []string {
	switch {
	case len(p.States) == 0 && p.State == "":
		return []string{}
	case len(p.States) == 0:
		return []string{string(p.State)}
	case p.State == "":
		return states(p.States)
	case slices.Contains(p.States, p.State):
		return []string{string(p.State)}
	}
	// No state is both; a state no task has keeps the filter non-empty.
	return []string{""}
}

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func optionalUUID(id uuid.UUID) *[16]byte {
	if id == uuid.Nil {
		return nil
	}
	b := pgUUID(id)
	return &b
}

// TaskStateCountsCap is where TaskStateCounts stops counting a state.
const TaskStateCountsCap = 10_000

// TaskStateCount is how many tasks are in one state; AtLeast says the
// count stopped at TaskStateCountsCap.
type TaskStateCount struct {
	State   workflow.TaskState `json:"state"`
	Count   int64              `json:"count"`
	AtLeast bool               `json:"at_least,omitempty"`
}

// TaskStateCounts counts the tasks in each state, in lifecycle order, up
// to TaskStateCountsCap each.
func (s *Store) TaskStateCounts(ctx context.Context) ([]TaskStateCount, error) {
	rows, err := stmt("task_state_counts").query(ctx, s.pool, args{
		"states": states(workflow.AllTaskStates()), "cap": TaskStateCountsCap,
	})
	if err != nil {
		return nil, fmt.Errorf("counting tasks by state: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TaskStateCount, error) {
		var c TaskStateCount
		var state string
		err := r.Scan(&state, &c.Count)
		c.State, c.AtLeast = workflow.TaskState(state), c.Count >= TaskStateCountsCap
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("counting tasks by state: %w", err)
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
	// ReplayedMsgID is the message an operator's replay sent, at
	// ReplayedAt; nil when the request was not replayed.
	ReplayedMsgID *int64     `json:"replayed_msg_id,omitempty"`
	ReplayedAt    *time.Time `json:"replayed_at,omitempty"`
}

// RejectedList returns the rejected task requests, newest first.
func (s *Store) RejectedList(ctx context.Context, limit int) ([]RejectedRequest, error) {
	if limit <= 0 {
		limit = 50
	}
	rows, err := stmt("rejected_list").query(ctx, s.pool, args{"limit": limit})
	if err != nil {
		return nil, fmt.Errorf("listing rejected requests: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RejectedRequest, error) { return scanRejected(r) })
	if err != nil {
		return nil, fmt.Errorf("listing rejected requests: %w", err)
	}
	return out, nil
}

func scanRejected(row pgx.Row) (RejectedRequest, error) {
	var rr RejectedRequest
	err := row.Scan(&rr.ID, &rr.RequestID, &rr.MsgID, &rr.Payload, &rr.Reason, &rr.NodeID, &rr.RejectedAt,
		&rr.ReplayedMsgID, &rr.ReplayedAt)
	return rr, err
}

// RequestRejection returns the latest rejection of the request id that was
// not replayed, or ErrNotFound when there is none.
func (s *Store) RequestRejection(ctx context.Context, requestID uuid.UUID) (RejectedRequest, error) {
	rr, err := scanRejected(stmt("request_rejection").queryRow(ctx, s.pool, args{"request_id": requestID}))
	if err != nil {
		return rr, fmt.Errorf("reading the rejection of request %s: %w", requestID, translate(err))
	}
	return rr, nil
}

// QueueWake wakes the pollers of a queue now rather than at their next
// poll; a lost notification costs only that poll interval.
func (s *Store) QueueWake(ctx context.Context, queueName string) error {
	if _, err := stmt("queue_wake").exec(ctx, s.pool, args{"channel": WakeChannel, "queue": queueName}); err != nil {
		return fmt.Errorf("waking queue %s: %w", queueName, translate(err))
	}
	return nil
}
