package dashboard

import (
	"fmt"
	"time"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// The timeline (a Gantt chart) of a task: one row per step, one bar per
// attempt, from the moment the step waited for a worker (enqueued, or
// scheduled again after a failure) to the attempt's end, the wait drawn
// lighter than the run; before it, in the throttled colour, the wait for a
// slot under its flow limits, and a step throttled now has that wait alone.

// attempt is one attempt of a step, read off its transitions.
type attempt struct {
	Step   string
	Number int
	// Throttled is when the step began to wait for its admission under
	// its flow limits (zero when it did not); Queued when it began to wait
	// for this attempt; Start when a worker took it; End when it ended
	// (zero while it runs).
	Throttled, Queued, Start, End time.Time
	// Outcome is the state the attempt ended in; empty while it runs.
	Outcome string
}

// stepAttempts reads a task's attempts off its step transitions, in the
// order of the steps. A step whose transitions show no attempt but whose
// row says it was attempted gets one from the row's times.
func stepAttempts(d store.TaskDetail) map[string][]attempt {
	out := map[string][]attempt{}
	queued := map[string]time.Time{}
	throttled := map[string]time.Time{}
	open := map[string]int{} // step → index of its running attempt, +1
	for _, tr := range d.StepTransitions {
		s := tr.StepName
		to := workflow.StepState(tr.To)
		// An attempt in progress ends with the step leaving in_progress
		// (or with a redelivery that starts another).
		if k := open[s]; k > 0 && (to != workflow.StepStateInProgress || tr.From == string(workflow.StepStateInProgress)) {
			a := &out[s][k-1]
			a.End, a.Outcome = tr.CreatedAt, tr.To
			if to == workflow.StepStateInProgress {
				a.Outcome = "redelivered"
			}
			open[s] = 0
		}
		switch to {
		case workflow.StepStateThrottled:
			throttled[s] = tr.CreatedAt
		case workflow.StepStateEnqueued, workflow.StepStateWaitingForRetry:
			queued[s] = tr.CreatedAt
		case workflow.StepStateInProgress:
			// A redelivery starts at once; another attempt waited since
			// the step was enqueued or scheduled again.
			q, ok := queued[s]
			if !ok || tr.From == string(workflow.StepStateInProgress) {
				q = tr.CreatedAt
			}
			delete(queued, s)
			out[s] = append(out[s], attempt{Step: s, Number: tr.Attempt, Throttled: throttled[s], Queued: q, Start: tr.CreatedAt})
			delete(throttled, s)
			open[s] = len(out[s])
		}
	}
	for _, st := range d.Steps {
		if len(out[st.Name]) > 0 || st.LastAttemptedAt == nil {
			continue
		}
		a := attempt{Step: st.Name, Number: st.Attempts, Start: *st.LastAttemptedAt, Queued: *st.LastAttemptedAt}
		if st.EnqueuedAt != nil && st.EnqueuedAt.Before(a.Start) {
			a.Queued = *st.EnqueuedAt
		}
		if st.FinishedAt != nil && st.State.Terminal() {
			a.End, a.Outcome = *st.FinishedAt, string(st.State)
		}
		out[st.Name] = []attempt{a}
	}
	return out
}

// timeline is a laid-out Gantt chart.
type timeline struct {
	Width, Height int
	// LabelW is the width of the step names' column.
	LabelW int
	Rows   []timelineRow
	Ticks  []timelineTick
	// Span is the time the chart covers.
	Span string
	// Attempts counts the bars.
	Attempts int
}

type timelineRow struct {
	Step  string
	Y     int
	Label string
	Bars  []timelineBar
}

type timelineBar struct {
	// HoldX..HoldX+HoldW is the wait for a slot, QueueX..RunX the wait
	// for a worker, RunX..RunX+RunW the run (RunW 0: not run yet).
	HoldX, HoldW   float64
	QueueX, QueueW float64
	RunX, RunW     float64
	Class          string
	Title          string
}

type timelineTick struct {
	X     float64
	Label string
}

// Sizes of the chart, in SVG user units.
const (
	tlWidth  = 960
	tlLabelW = 150
	tlRowH   = 24
	tlBarH   = 14
	tlTop    = 22
	tlMinBar = 2.0
)

// layoutTimeline draws the attempts of d's steps (in template order) on
// one time axis from the task's creation to the last end, or to now while
// an attempt runs.
func layoutTimeline(d store.TaskDetail, now time.Time) timeline {
	attempts := stepAttempts(d)
	t0 := d.CreatedAt
	end := t0
	running := false
	for _, st := range d.Steps {
		if st.State == workflow.StepStateThrottled && st.ThrottledSince != nil {
			running = true
			if st.ThrottledSince.Before(t0) {
				t0 = *st.ThrottledSince
			}
		}
	}
	for _, as := range attempts {
		for _, a := range as {
			if a.Queued.Before(t0) {
				t0 = a.Queued
			}
			if a.End.IsZero() {
				running = true
			} else if a.End.After(end) {
				end = a.End
			}
			if a.Start.After(end) {
				end = a.Start
			}
		}
	}
	if running && now.After(end) {
		end = now
	}
	span := end.Sub(t0)
	if span <= 0 {
		span = time.Millisecond
	}
	plot := float64(tlWidth - tlLabelW - 10)
	x := func(t time.Time) float64 { return float64(tlLabelW) + plot*float64(t.Sub(t0))/float64(span) }

	tl := timeline{Width: tlWidth, LabelW: tlLabelW, Span: roundDuration(span)}
	for i, st := range d.Steps {
		row := timelineRow{Step: st.Name, Y: tlTop + i*tlRowH, Label: ellipsis(st.Name, 20)}
		for _, a := range attempts[st.Name] {
			stop, outcome := a.End, a.Outcome
			if stop.IsZero() {
				stop, outcome = end, string(workflow.StepStateInProgress)
			}
			b := timelineBar{QueueX: x(a.Queued), RunX: x(a.Start), Class: "attempt st-" + outcome}
			b.QueueW = max(0, b.RunX-b.QueueX)
			b.RunW = max(tlMinBar, x(stop)-b.RunX)
			b.Title = fmt.Sprintf("%s · attempt %d · waited %s · ran %s · %s", st.Name, a.Number,
				roundDuration(a.Start.Sub(a.Queued)), roundDuration(stop.Sub(a.Start)), outcome)
			if !a.Throttled.IsZero() && a.Throttled.Before(a.Queued) {
				b.HoldX = x(a.Throttled)
				b.HoldW = b.QueueX - b.HoldX
				b.Title = fmt.Sprintf("%s · throttled %s", b.Title, roundDuration(a.Queued.Sub(a.Throttled)))
			}
			if a.End.IsZero() {
				b.Title += " (running)"
			}
			row.Bars = append(row.Bars, b)
			tl.Attempts++
		}
		if st.State == workflow.StepStateThrottled && st.ThrottledSince != nil {
			b := timelineBar{HoldX: x(*st.ThrottledSince), Class: "attempt st-" + string(workflow.StepStateThrottled)}
			b.HoldW = max(tlMinBar, x(end)-b.HoldX)
			b.Title = fmt.Sprintf("%s · throttled for %s · %s", st.Name, roundDuration(end.Sub(*st.ThrottledSince)), st.ThrottledReason)
			row.Bars = append(row.Bars, b)
		}
		tl.Rows = append(tl.Rows, row)
	}
	tl.Height = tlTop + len(d.Steps)*tlRowH + 4
	step := tickStep(span)
	for t := time.Duration(0); t <= span; t += step {
		tl.Ticks = append(tl.Ticks, timelineTick{X: x(t0.Add(t)), Label: "+" + roundDuration(t)})
	}
	return tl
}

// tickStep is a round interval giving four to ten ticks over span.
func tickStep(span time.Duration) time.Duration {
	for _, s := range []time.Duration{
		time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond,
		50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
		time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
		time.Hour, 2 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
	} {
		if span/s <= 8 {
			return s
		}
	}
	return span / 8
}

// roundDuration prints d to a precision that suits its size.
func roundDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}
