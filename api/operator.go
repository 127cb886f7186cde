// Package api is the node's HTTP API and the operator service behind it:
// the health, actor tree and metrics endpoints, and the task, template,
// rejected request, archived message, schedule and flow limit routes
// under /v1. The node mounts Handler; the CLI calls
// Operator directly, so both accept the same input and refuse with the same
// reasons.
package api

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// Operator carries out what an operator asks of tasks — list, show, retry,
// cancel, resolve — of templates, of rejected requests (list, replay) and
// of the queues' archives, and shows the flow limits. The CLI and the
// HTTP API both go through it, so they accept the same input and refuse
// with the same reasons.
type Operator struct {
	Store *store.Store
	// Now is the clock used for relative filters (--since). Defaults to
	// time.Now.
	Now func() time.Time
}

// List limits.
const (
	// ListLimitDefault is the number of rows a list returns when no limit
	// is given.
	ListLimitDefault = 50
	// ListLimitMax is the largest limit accepted.
	ListLimitMax = 1000
)

// InvalidError is operator input that cannot be used: a malformed id, an
// unknown state, a bad duration or limit. The HTTP API answers it with 400,
// the CLI with a usage error.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

func invalidf(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

// ParseTaskID parses a task uuid or request id.
func ParseTaskID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(strings.TrimSpace(s))
	if err != nil {
		return uuid.Nil, invalidf("%q is not a task uuid or request id (a UUID)", s)
	}
	return id, nil
}

// ParseSince parses the age of a --since filter: a Go duration ("90m",
// "1h30m") or a number of days ("7d").
func ParseSince(s string) (time.Duration, error) {
	var (
		d   time.Duration
		err error
	)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n float64
		n, err = strconv.ParseFloat(days, 64)
		d = time.Duration(n * float64(24*time.Hour))
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 {
		return 0, invalidf(`since %q is not a positive duration such as "90m", "24h" or "7d"`, s)
	}
	return d, nil
}

// TaskFilter is a task list filter as an operator types it.
type TaskFilter struct {
	// State keeps tasks in this state.
	State string
	// Namespace keeps tasks of this namespace.
	Namespace string
	// Name keeps tasks of this template name.
	Name string
	// Since keeps tasks created within this age ("1h", "7d").
	Since string
	// Limit is the number of tasks returned. Defaults to ListLimitDefault.
	Limit int
	// Before is a cursor: the next_cursor of the previous page.
	Before string
	// Search keeps the tasks whose task uuid, request id or correlation id
	// begins with it (ParseSearch).
	Search string
}

// searchMinDigits is the shortest search: fewer hex digits would match
// too large a share of the tasks to be a search.
const searchMinDigits = 8

// ParseSearch turns a search into the UUIDs it stands for: a task uuid,
// request id or correlation id, or the beginning of one (at least 8 hex
// digits; dashes and case do not matter).
func ParseSearch(s string) (store.UUIDRange, error) {
	bad := func() (store.UUIDRange, error) {
		return store.UUIDRange{}, invalidf("search %q is not a task uuid, request id or correlation id, nor the beginning of one (at least %d hex digits)", s, searchMinDigits)
	}
	digits := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "-", ""))
	if len(digits) < searchMinDigits || len(digits) > 32 {
		return bad()
	}
	lo, hi := []byte(digits+strings.Repeat("0", 32-len(digits))), []byte(digits+strings.Repeat("f", 32-len(digits)))
	var r store.UUIDRange
	if _, err := hex.Decode(r.Low[:], lo); err != nil {
		return bad()
	}
	if _, err := hex.Decode(r.High[:], hi); err != nil {
		return bad()
	}
	return r, nil
}

// params validates f and turns it into the store's filter.
func (f TaskFilter) params(now time.Time) (store.TaskListParams, error) {
	p := store.TaskListParams{Namespace: f.Namespace, Name: f.Name}
	if f.State != "" {
		st := workflow.TaskState(f.State)
		if !st.Valid() {
			return p, invalidf("state %q is not a task state (one of %s)", f.State, joinStates(workflow.AllTaskStates()))
		}
		p.State = st
	}
	if f.Since != "" {
		d, err := ParseSince(f.Since)
		if err != nil {
			return p, err
		}
		p.CreatedAfter = now.Add(-d)
	}
	if f.Before != "" {
		id, err := uuid.Parse(f.Before)
		if err != nil {
			return p, invalidf("before %q is not a cursor (a task uuid)", f.Before)
		}
		p.Before = id
	}
	if f.Search != "" {
		r, err := ParseSearch(f.Search)
		if err != nil {
			return p, err
		}
		p.Search = &r
	}
	limit, err := checkLimit(f.Limit)
	p.Limit = limit
	return p, err
}

func checkLimit(n int) (int, error) {
	switch {
	case n == 0:
		return ListLimitDefault, nil
	case n < 0 || n > ListLimitMax:
		return 0, invalidf("limit %d is out of range (1 to %d)", n, ListLimitMax)
	}
	return n, nil
}

// TaskPage, TemplatePage and RejectedPage are the lists as JSON: the
// bodies of the HTTP API and the CLI's --json output alike.
type (
	TaskPage struct {
		Tasks []store.Task `json:"tasks"`
		// NextCursor, when set, is the before of the next page.
		NextCursor string `json:"next_cursor,omitempty"`
	}
	TemplatePage struct {
		Templates []store.TemplateInfo `json:"templates"`
	}
	RejectedPage struct {
		Rejected []store.RejectedRequest `json:"rejected"`
	}
	// ArchivedPage is a page of a queue's archive.
	ArchivedPage struct {
		Messages []store.ArchivedMessage `json:"messages"`
		// NextCursor, when set, is the before of the next page.
		NextCursor string `json:"next_cursor,omitempty"`
	}
)

// ActionResult is what an operator action did.
type ActionResult struct {
	// Action is retry, cancel or resolve.
	Action   string    `json:"action"`
	TaskUUID uuid.UUID `json:"task_uuid"`
	// Step is the step resolved, when one was named.
	Step string `json:"step,omitempty"`
	// State is the task's state after the action.
	State workflow.TaskState `json:"state"`
	// Enqueued counts the steps a retry sent back to work.
	Enqueued *int `json:"enqueued,omitempty"`
}

func (o Operator) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// Tasks lists tasks newest first.
func (o Operator) Tasks(ctx context.Context, f TaskFilter) (TaskPage, error) {
	p, err := f.params(o.now())
	if err != nil {
		return TaskPage{}, err
	}
	// One more than asked tells whether a next page exists.
	want := p.Limit
	p.Limit++
	tasks, err := o.Store.TaskList(ctx, p)
	page := TaskPage{Tasks: nonNil(tasks)}
	if len(page.Tasks) > want {
		page.Tasks = page.Tasks[:want]
		page.NextCursor = page.Tasks[want-1].TaskUUID.String()
	}
	return page, err
}

// Task returns a task, by task uuid or request id, with its steps and
// transitions.
func (o Operator) Task(ctx context.Context, id uuid.UUID) (store.TaskDetail, error) {
	d, err := o.Store.TaskShow(ctx, id)
	d.Steps = nonNil(d.Steps)
	d.TaskTransitions = nonNil(d.TaskTransitions)
	d.StepTransitions = nonNil(d.StepTransitions)
	return d, err
}

// Templates lists the registered templates, every version.
func (o Operator) Templates(ctx context.Context) (TemplatePage, error) {
	ts, err := o.Store.TemplateList(ctx)
	return TemplatePage{Templates: nonNil(ts)}, err
}

// ParseTemplateID parses a template id (the id of GET /v1/templates).
func ParseTemplateID(s string) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || id <= 0 {
		return 0, invalidf("%q is not a template id (a positive number)", s)
	}
	return id, nil
}

// Template returns a registered template, by its id, with its steps.
func (o Operator) Template(ctx context.Context, id int64) (store.TemplateDetail, error) {
	d, err := o.Store.TemplateShow(ctx, id)
	d.StepList = nonNil(d.StepList)
	return d, err
}

// TaskCounts counts the tasks in each state (each up to
// store.TaskStateCountsCap).
func (o Operator) TaskCounts(ctx context.Context) ([]store.TaskStateCount, error) {
	return o.Store.TaskStateCounts(ctx)
}

// Rejected lists the rejected task requests, newest first.
func (o Operator) Rejected(ctx context.Context, limit int) (RejectedPage, error) {
	limit, err := checkLimit(limit)
	if err != nil {
		return RejectedPage{}, err
	}
	rs, err := o.Store.RejectedList(ctx, limit)
	return RejectedPage{Rejected: nonNil(rs)}, err
}

// ParseMsgID parses a queue message id.
func ParseMsgID(s string) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || id <= 0 {
		return 0, invalidf("%q is not a message id (a positive number)", s)
	}
	return id, nil
}

// Replay sends the rejected task request of message msgID again, as a new
// message with the same body, and returns the rejection recording it. A
// rejection is replayed once; a second replay is refused.
func (o Operator) Replay(ctx context.Context, msgID int64) (store.RejectedRequest, error) {
	return o.Store.RequestReplay(ctx, msgID)
}

// ArchivedFilter selects a page of a queue's archive as an operator types
// it.
type ArchivedFilter struct {
	// Queue is the queue whose archive is listed. Required.
	Queue string
	// Limit is the number of messages returned. Defaults to
	// ListLimitDefault.
	Limit int
	// Before is a cursor: the next_cursor of the previous page.
	Before string
}

// Archived lists the messages archived from a queue, newest first, each
// with the reason it was archived.
func (o Operator) Archived(ctx context.Context, f ArchivedFilter) (ArchivedPage, error) {
	limit, err := checkLimit(f.Limit)
	if err != nil {
		return ArchivedPage{}, err
	}
	p := store.ArchivedParams{Queue: f.Queue, Limit: limit + 1}
	if f.Before != "" {
		if p.Before, err = ParseMsgID(f.Before); err != nil {
			return ArchivedPage{}, invalidf("before %q is not a cursor (a message id)", f.Before)
		}
	}
	queues, err := o.Store.Queue().List(ctx)
	if err != nil {
		return ArchivedPage{}, err
	}
	names := make([]string, len(queues))
	for i, q := range queues {
		names[i] = q.Name
	}
	slices.Sort(names)
	switch {
	case f.Queue == "":
		return ArchivedPage{}, invalidf("a queue is required (one of %s)", strings.Join(names, ", "))
	case !slices.Contains(names, f.Queue):
		return ArchivedPage{}, invalidf("queue %q does not exist (one of %s)", f.Queue, strings.Join(names, ", "))
	}
	msgs, err := o.Store.ArchivedList(ctx, p)
	page := ArchivedPage{Messages: nonNil(msgs)}
	if len(page.Messages) > limit {
		page.Messages = page.Messages[:limit]
		page.NextCursor = strconv.FormatInt(page.Messages[limit-1].MsgID, 10)
	}
	return page, err
}

// Retry puts a task in error back to work.
func (o Operator) Retry(ctx context.Context, id uuid.UUID) (ActionResult, error) {
	var n int
	res, err := o.act(ctx, id, "retry", workflow.TaskEventRetry, func(task uuid.UUID) error {
		var err error
		n, err = o.Store.TaskRetry(ctx, task)
		return err
	})
	if err == nil {
		res.Enqueued = &n
	}
	return res, err
}

// Cancel cancels a pending, running or failed task.
func (o Operator) Cancel(ctx context.Context, id uuid.UUID, reason string) (ActionResult, error) {
	return o.act(ctx, id, "cancel", workflow.TaskEventCancel, func(task uuid.UUID) error {
		return o.Store.TaskCancel(ctx, task, reason)
	})
}

// Resolve resolves a failed task (step empty: its failed steps become
// resolved_manually, the rest is cancelled) or one failed step with result
// as its result, which then flows to the steps that depend on it.
func (o Operator) Resolve(ctx context.Context, id uuid.UUID, step string, result json.RawMessage) (ActionResult, error) {
	if step == "" {
		if len(result) > 0 {
			return ActionResult{}, invalidf("a result needs a step: name the step it is the result of")
		}
		return o.act(ctx, id, "resolve", workflow.TaskEventResolve, func(task uuid.UUID) error {
			return o.Store.TaskResolve(ctx, task)
		})
	}
	if len(result) > 0 && !json.Valid(result) {
		return ActionResult{}, invalidf("the result is not valid JSON")
	}
	d, err := o.Store.TaskShow(ctx, id)
	if err != nil {
		return ActionResult{}, err
	}
	if err := o.Store.StepResolve(ctx, d.TaskUUID, step, result); err != nil {
		return ActionResult{}, explainStepRefusal(err, d, step)
	}
	t, err := o.Store.TaskGet(ctx, d.TaskUUID)
	return ActionResult{Action: "resolve", TaskUUID: d.TaskUUID, Step: step, State: t.State}, err
}

// act runs a task-level action on the task id names (task uuid or request
// id) and reads the state it left the task in.
func (o Operator) act(ctx context.Context, id uuid.UUID, action string, ev workflow.TaskEvent, do func(task uuid.UUID) error) (ActionResult, error) {
	t, err := o.Store.TaskGet(ctx, id)
	if err != nil {
		return ActionResult{}, err
	}
	if err := do(t.TaskUUID); err != nil {
		return ActionResult{}, explainTaskRefusal(err, t.State, action, ev)
	}
	after, err := o.Store.TaskGet(ctx, t.TaskUUID)
	return ActionResult{Action: action, TaskUUID: t.TaskUUID, State: after.State}, err
}

var pastTense = map[string]string{"retry": "retried", "cancel": "cancelled", "resolve": "resolved"}

// PastTense is an action as messages report it done: "retry" is
// "retried".
func PastTense(action string) string { return cmp.Or(pastTense[action], action) }

// explainTaskRefusal adds to a refusal the states the task machine allows
// the action from, when the task's state was the reason.
func explainTaskRefusal(err error, state workflow.TaskState, action string, ev workflow.TaskEvent) error {
	var refused *store.RefusedError
	if !errors.As(err, &refused) {
		return err
	}
	if _, terr := workflow.TaskTransition(state, ev); terr == nil {
		return err
	}
	return &store.RefusedError{Action: refused.Action, Reason: fmt.Sprintf("%s; the task is %s and can be %s only when it is %s",
		refused.Reason, state, PastTense(action), joinStates(workflow.TaskStatesAllowing(ev)))}
}

// explainStepRefusal adds to a step resolve refusal the task's steps (an
// unknown step) or the state a step must be in.
func explainStepRefusal(err error, d store.TaskDetail, step string) error {
	var refused *store.RefusedError
	if !errors.As(err, &refused) {
		return err
	}
	i := slices.IndexFunc(d.Steps, func(s store.Step) bool { return s.Name == step })
	if i < 0 {
		names := make([]string, 0, len(d.Steps))
		for _, s := range d.Steps {
			names = append(names, s.Name)
		}
		return &store.RefusedError{Action: refused.Action, Reason: fmt.Sprintf("%s; its steps are %s", refused.Reason, strings.Join(names, ", "))}
	}
	if _, terr := workflow.StepTransition(d.Steps[i].State, workflow.StepEventResolve); terr == nil {
		return err
	}
	return &store.RefusedError{Action: refused.Action, Reason: fmt.Sprintf("%s; step %s is %s and can be resolved only when it is %s",
		refused.Reason, step, d.Steps[i].State, joinStates(workflow.StepStatesAllowing(workflow.StepEventResolve)))}
}

func joinStates[S ~string](states []S) string {
	parts := make([]string, len(states))
	for i, s := range states {
		parts[i] = string(s)
	}
	switch len(parts) {
	case 0:
		return "(none)"
	case 1:
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " or " + parts[len(parts)-1]
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
