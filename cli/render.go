package cli

// Text output of the CLI: what a person reads. The --json output is the
// HTTP API's body instead.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

const timeLayout = "2006-01-02 15:04:05"

// writeTaskList writes tasks as a table, ages relative to now.
func writeTaskList(w io.Writer, tasks []store.Task, now time.Time) error {
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

// detailOptions choose what writeTaskDetail shows beyond the task, its
// steps, the DAG and the task's history.
type detailOptions struct {
	// StepHistory adds every step transition.
	StepHistory bool
}

// writeTaskDetail writes a task for a person: the task, a table of its
// steps (times relative to the task's creation), the DAG in dependency
// order and the task's history.
func writeTaskDetail(w io.Writer, d store.TaskDetail, opts detailOptions) error {
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
	if tp := d.TraceParent(); tp != "" {
		fmt.Fprintf(tw, "traceparent\t%s\n", tp)
	}
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
	if err := writeDAG(w, d.Steps); err != nil {
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

// writeDAG draws steps in dependency order, one line each: its layer (the
// longest path from a root), name, state and parents. Steps of one layer
// keep the template's order.
func writeDAG(w io.Writer, steps []store.Step) error {
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

// dagLayers gives each step its depth in the DAG (workflow.Layers).
func dagLayers(steps []store.Step) []int {
	names, deps := make([]string, len(steps)), make([][]string, len(steps))
	for i, st := range steps {
		names[i], deps[i] = st.Name, st.DependsOn
	}
	return workflow.Layers(names, deps)
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
	if st.State == workflow.StepStateThrottled && st.ThrottledReason != "" {
		out = "throttled " + offset(created, st.ThrottledSince) + ": " + st.ThrottledReason
	}
	if st.State == workflow.StepStateWaitingForRetry && st.NextAttemptAt != nil {
		out = strings.TrimSpace(out + " (next attempt " + offset(created, st.NextAttemptAt) + ")")
	}
	return cmp.Or(oneLine(out, 100), "-")
}

// writeTemplates writes the registered templates as a table.
func writeTemplates(w io.Writer, ts []store.TemplateInfo) error {
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

// writeRejected writes rejected task requests as a table.
func writeRejected(w io.Writer, rs []store.RejectedRequest) error {
	if len(rs) == 0 {
		_, err := fmt.Fprintln(w, "no rejected requests")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tMSG\tREJECTED\tREQUEST\tREPLAYED AS\tREASON\tPAYLOAD")
	for _, r := range rs {
		req, replayed := "-", "-"
		if r.RequestID != nil {
			req = r.RequestID.String()
		}
		if r.ReplayedMsgID != nil {
			replayed = strconv.FormatInt(*r.ReplayedMsgID, 10)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.MsgID, r.RejectedAt.Local().Format(timeLayout), req, replayed,
			oneLine(r.Reason, 100), oneLine(compactJSON(json.RawMessage(r.Payload)), 60))
	}
	return tw.Flush()
}

// writeReplayed says what a replay sent.
func writeReplayed(w io.Writer, r store.RejectedRequest) error {
	req := "without a request id"
	if r.RequestID != nil {
		req = "request " + r.RequestID.String()
	}
	_, err := fmt.Fprintf(w, "message %d (%s) replayed as message %d\n", r.MsgID, req, *r.ReplayedMsgID)
	return err
}

// writeArchived writes archived messages as a table.
func writeArchived(w io.Writer, ms []store.ArchivedMessage) error {
	if len(ms) == 0 {
		_, err := fmt.Fprintln(w, "no archived messages")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "MSG\tARCHIVED\tREADS\tREASON\tMESSAGE")
	for _, m := range ms {
		reason := m.Reason
		if m.Inferred {
			reason += " (inferred)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", m.MsgID, m.ArchivedAt.Local().Format(timeLayout), m.ReadCount,
			oneLine(reason, 100), oneLine(compactJSON(json.RawMessage(m.Message)), 60))
	}
	return tw.Flush()
}

// writeAction writes what an action did, in a sentence.
func writeAction(w io.Writer, r api.ActionResult) error {
	var err error
	switch {
	case r.Step != "":
		_, err = fmt.Fprintf(w, "step %s of task %s resolved; the task is %s\n", r.Step, r.TaskUUID, r.State)
	case r.Enqueued != nil:
		_, err = fmt.Fprintf(w, "task %s %s (%d step(s) enqueued); it is %s\n", r.TaskUUID, api.PastTense(r.Action), *r.Enqueued, r.State)
	default:
		_, err = fmt.Fprintf(w, "task %s %s; it is %s\n", r.TaskUUID, api.PastTense(r.Action), r.State)
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

// printTask writes a task's final state and each step's result or error.
func printTask(w io.Writer, d store.TaskDetail) {
	fmt.Fprintf(w, "task %s %s/%s@%s: %s\n", d.TaskUUID, d.Namespace, d.Name, d.Version, d.State)
	for _, st := range d.Steps {
		line := fmt.Sprintf("  %-28s %-18s attempts=%d", st.Name, st.State, st.Attempts)
		switch {
		case len(st.Error) > 0 && st.State != workflow.StepStateComplete:
			var e struct {
				Kind    string `json:"kind"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(st.Error, &e)
			line += fmt.Sprintf(" error=%s: %s", e.Kind, e.Message)
		case len(st.Result) > 0:
			line += " result=" + string(st.Result)
		}
		fmt.Fprintln(w, line)
	}
}
