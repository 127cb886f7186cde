package bootstrap

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// Operator carries out what an operator asks of tasks — list, show, retry,
// cancel, resolve — and of templates and rejected requests. The CLI and the
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
	}
	TemplatePage struct {
		Templates []store.TemplateInfo `json:"templates"`
	}
	RejectedPage struct {
		Rejected []store.RejectedRequest `json:"rejected"`
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
	tasks, err := o.Store.TaskList(ctx, p)
	return TaskPage{Tasks: nonNil(tasks)}, err
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

// Rejected lists the rejected task requests, newest first.
func (o Operator) Rejected(ctx context.Context, limit int) (RejectedPage, error) {
	limit, err := checkLimit(limit)
	if err != nil {
		return RejectedPage{}, err
	}
	rs, err := o.Store.RejectedList(ctx, limit)
	return RejectedPage{Rejected: nonNil(rs)}, err
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
	var allowed []workflow.TaskState
	for _, s := range workflow.AllTaskStates() {
		if _, terr := workflow.TaskTransition(s, ev); terr == nil {
			allowed = append(allowed, s)
		}
	}
	return &store.RefusedError{Action: refused.Action, Reason: fmt.Sprintf("%s; the task is %s and can be %s only when it is %s",
		refused.Reason, state, pastTense[action], joinStates(allowed))}
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
	var allowed []workflow.StepState
	for _, s := range workflow.AllStepStates() {
		if _, terr := workflow.StepTransition(s, workflow.StepEventResolve); terr == nil {
			allowed = append(allowed, s)
		}
	}
	return &store.RefusedError{Action: refused.Action, Reason: fmt.Sprintf("%s; step %s is %s and can be resolved only when it is %s",
		refused.Reason, step, d.Steps[i].State, joinStates(allowed))}
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

// ---- Text output ----

// WriteJSON writes v as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

const timeLayout = "2006-01-02 15:04:05"

// WriteTaskList writes tasks as a table, ages relative to now.
func WriteTaskList(w io.Writer, tasks []store.Task, now time.Time) error {
	if len(tasks) == 0 {
		_, err := fmt.Fprintln(w, "no tasks")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "TASK\tSTATE\tNAMESPACE\tNAME\tVERSION\tCREATED\tAGE\tTOOK")
	for _, t := range tasks {
		took := "-"
		if t.FinishedAt != nil {
			took = roundDuration(t.FinishedAt.Sub(t.CreatedAt))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.TaskUUID, t.State, t.Namespace, t.Name, t.Version,
			t.CreatedAt.Local().Format(timeLayout), roundDuration(now.Sub(t.CreatedAt)), took)
	}
	return tw.Flush()
}

// DetailOptions choose what WriteTaskDetail shows beyond the task, its
// steps, the DAG and the task's history.
type DetailOptions struct {
	// StepHistory adds every step transition.
	StepHistory bool
}

// WriteTaskDetail writes a task for a person: the task, a table of its
// steps (times relative to the task's creation), the DAG in dependency
// order and the task's history.
func WriteTaskDetail(w io.Writer, d store.TaskDetail, opts DetailOptions) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "task\t%s\n", d.TaskUUID)
	fmt.Fprintf(tw, "request\t%s\n", d.RequestID)
	fmt.Fprintf(tw, "template\t%s/%s %s\n", d.Namespace, d.Name, d.Version)
	fmt.Fprintf(tw, "state\t%s\n", d.State)
	fmt.Fprintf(tw, "created\t%s\n", d.CreatedAt.Local().Format(timeLayout))
	if d.FinishedAt != nil {
		fmt.Fprintf(tw, "finished\t%s (took %s)\n", d.FinishedAt.Local().Format(timeLayout), roundDuration(d.FinishedAt.Sub(d.CreatedAt)))
	}
	if d.RequestedBy != "" {
		fmt.Fprintf(tw, "requested by\t%s\n", d.RequestedBy)
	}
	fmt.Fprintf(tw, "correlation\t%s\n", d.CorrelationID)
	fmt.Fprintf(tw, "context\t%s\n", oneLine(compactJSON(d.Context), 120))
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nsteps (times after the task's creation):\n")
	tw = newTable(w)
	fmt.Fprintln(tw, "STEP\tSTATE\tATTEMPTS\tENQUEUED\tLAST ATTEMPT\tFINISHED\tDURATION\tRESULT / ERROR")
	for _, st := range d.Steps {
		dur := "-"
		switch {
		case st.DurationMS == nil:
		case *st.DurationMS == 0:
			dur = "<1ms"
		default:
			dur = (time.Duration(*st.DurationMS) * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\n", st.Name, st.State, st.Attempts, st.MaxAttempts,
			offset(d.CreatedAt, st.EnqueuedAt), offset(d.CreatedAt, st.LastAttemptedAt), offset(d.CreatedAt, st.FinishedAt),
			dur, stepOutcome(d.CreatedAt, st))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\ndag (dependency order; ← parents):\n")
	if err := WriteDAG(w, d.Steps); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nhistory:\n")
	history := slices.Clone(d.TaskTransitions)
	if opts.StepHistory {
		// One timeline: task and step transitions by time, the task's
		// first when they tie.
		history = append(history, d.StepTransitions...)
		slices.SortStableFunc(history, func(a, b store.Transition) int { return a.CreatedAt.Compare(b.CreatedAt) })
	}
	tw = newTable(w)
	for _, tr := range history {
		subject, att := "task", ""
		if tr.StepName != "" {
			subject = tr.StepName
		}
		if tr.Attempt > 0 {
			att = fmt.Sprintf(" (attempt %d)", tr.Attempt)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s%s\n", offset(d.CreatedAt, &tr.CreatedAt), subject, move(tr), oneLine(tr.Reason, 100), att)
	}
	return tw.Flush()
}

func move(tr store.Transition) string {
	if tr.From == "" {
		return "→ " + tr.To
	}
	return tr.From + " → " + tr.To
}

// WriteDAG draws steps in dependency order, one line each: its layer (the
// longest path from a root), name, state and parents. Steps of one layer
// keep the template's order.
func WriteDAG(w io.Writer, steps []store.Step) error {
	layers := dagLayers(steps)
	order := make([]int, len(steps))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(layers[a], layers[b]) })
	tw := newTable(w)
	last := -1
	for _, i := range order {
		st := steps[i]
		layer := ""
		if layers[i] != last {
			layer = strconv.Itoa(layers[i])
			last = layers[i]
		}
		// The parents are the last cell, unpadded: a root's line ends
		// without trailing blanks.
		line := fmt.Sprintf("  %s\t%s\t%s", layer, st.Name, st.State)
		if len(st.DependsOn) > 0 {
			line += "\t← " + strings.Join(st.DependsOn, ", ")
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// dagLayers gives each step its depth: 0 for a root, else one more than its
// deepest parent. A parent that is not among steps (it cannot happen for a
// stored task) counts as a root; a cycle cannot happen either, and is cut.
func dagLayers(steps []store.Step) []int {
	index := make(map[string]int, len(steps))
	for i, st := range steps {
		index[st.Name] = i
	}
	layers := make([]int, len(steps))
	const (
		unseen = iota
		visiting
		done
	)
	mark := make([]int, len(steps))
	var depth func(i int) int
	depth = func(i int) int {
		switch mark[i] {
		case done:
			return layers[i]
		case visiting:
			return 0
		}
		mark[i] = visiting
		d := 0
		for _, p := range steps[i].DependsOn {
			if j, ok := index[p]; ok {
				d = max(d, depth(j)+1)
			}
		}
		mark[i], layers[i] = done, d
		return d
	}
	for i := range steps {
		depth(i)
	}
	return layers
}

// stepOutcome is a step's result, error or next attempt, on one line.
func stepOutcome(created time.Time, st store.Step) string {
	var out string
	switch {
	case len(st.Error) > 0 && st.State != workflow.StepStateComplete && st.State != workflow.StepStateResolvedManually:
		var e struct {
			Kind    string `json:"kind"`
			Message string `json:"message"`
		}
		if json.Unmarshal(st.Error, &e) == nil && e.Message != "" {
			out = "error " + cmp.Or(e.Kind, "unknown") + ": " + e.Message
		} else {
			out = "error " + compactJSON(st.Error)
		}
	case len(st.Result) > 0 && string(st.Result) != "null":
		out = compactJSON(st.Result)
	}
	if st.State == workflow.StepStateWaitingForRetry && st.NextAttemptAt != nil {
		out = strings.TrimSpace(out + " (next attempt " + offset(created, st.NextAttemptAt) + ")")
	}
	return cmp.Or(oneLine(out, 100), "-")
}

// WriteTemplates writes the registered templates as a table.
func WriteTemplates(w io.Writer, ts []store.TemplateInfo) error {
	if len(ts) == 0 {
		_, err := fmt.Fprintln(w, "no templates registered")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tVERSION\tSTEPS\tREGISTERED\tDESCRIPTION")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", t.Namespace, t.Name, t.Version, t.Steps,
			t.RegisteredAt.Local().Format(timeLayout), oneLine(t.Description, 80))
	}
	return tw.Flush()
}

// WriteRejected writes rejected task requests as a table.
func WriteRejected(w io.Writer, rs []store.RejectedRequest) error {
	if len(rs) == 0 {
		_, err := fmt.Fprintln(w, "no rejected requests")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tREJECTED\tREQUEST\tREASON\tPAYLOAD")
	for _, r := range rs {
		req := "-"
		if r.RequestID != nil {
			req = r.RequestID.String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.ID, r.RejectedAt.Local().Format(timeLayout), req,
			oneLine(r.Reason, 100), oneLine(compactJSON(json.RawMessage(r.Payload)), 60))
	}
	return tw.Flush()
}

// WriteAction writes what an action did, in a sentence.
func WriteAction(w io.Writer, r ActionResult) error {
	var err error
	switch {
	case r.Step != "":
		_, err = fmt.Fprintf(w, "step %s of task %s resolved; the task is %s\n", r.Step, r.TaskUUID, r.State)
	case r.Enqueued != nil:
		_, err = fmt.Fprintf(w, "task %s %s (%d step(s) enqueued); it is %s\n", r.TaskUUID, pastTense[r.Action], *r.Enqueued, r.State)
	default:
		_, err = fmt.Fprintf(w, "task %s %s; it is %s\n", r.TaskUUID, cmp.Or(pastTense[r.Action], r.Action), r.State)
	}
	return err
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// offset is t after base, for step times ("+1.25s"), or "-".
func offset(base time.Time, t *time.Time) string {
	if t == nil {
		return "-"
	}
	return "+" + roundDuration(t.Sub(base))
}

// roundDuration keeps a duration readable: milliseconds below a minute,
// seconds below an hour, minutes above.
func roundDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + roundDuration(-d)
	case d < time.Minute:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

// compactJSON is raw on one line, or raw as it is when it is not JSON.
func compactJSON(raw json.RawMessage) string {
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return string(raw)
	}
	return buf.String()
}

// oneLine makes s fit a table cell: its first line, tabs as spaces, at most
// limit runes (an ellipsis marks the cut).
func oneLine(s string, limit int) string {
	s, _, cut := strings.Cut(s, "\n")
	s = strings.ReplaceAll(strings.TrimSpace(s), "\t", " ")
	if utf8.RuneCountInString(s) > limit {
		r := []rune(s)
		return string(r[:limit-1]) + "…"
	}
	if cut {
		return s + " …"
	}
	return s
}
