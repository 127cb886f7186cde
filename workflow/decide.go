package workflow

import (
	"fmt"
	"strings"
	"time"

	"github.com/tasker-run/tasker/backoff"
)

// Outcome is what a worker recorded of one attempt of a step, as the
// orchestration reads it back to decide what happens next.
type Outcome struct {
	// OK is true when the handler succeeded.
	OK bool
	// Kind and Message describe the failure.
	Kind    string
	Message string
	// Retryable is the handler's verdict: another attempt could succeed.
	Retryable bool
	// RetryAfter is a delay the handler or its server asked for; zero means
	// none.
	RetryAfter time.Duration
}

// Attempts is a step's attempt count and retry policy when an outcome of it
// is applied.
type Attempts struct {
	// Made counts the attempts since the last operator retry, the current
	// one included.
	Made int
	// Max is the number of attempts the step may make, the first included.
	Max int
	// Retryable false makes every failure of the step permanent.
	Retryable bool
	// Backoff is the node's retry policy with the step's overrides applied.
	Backoff backoff.Policy
}

// Decision is what applying an outcome does to a step.
type Decision struct {
	Event  StepEvent
	To     StepState
	Reason string
	// Delay is the wait before the next attempt when Event is
	// StepEventFailRetryable; zero otherwise.
	Delay time.Duration
}

// Retry reports whether the decision schedules another attempt.
func (d Decision) Retry() bool { return d.Event == StepEventFailRetryable }

// Decide applies the step machine and the retry policy to the outcome of
// the current attempt of a step in from: a success completes it; a
// retryable failure of a retryable step with attempts left schedules the
// next attempt after the policy's delay (or the one the handler asked for);
// anything else fails it for good, saying why.
func Decide(from StepState, o Outcome, a Attempts) (Decision, error) {
	var d Decision
	switch {
	case o.OK:
		d.Event, d.Reason = StepEventSucceed, ReasonHandlerSucceeded
	case o.Retryable && a.Retryable && a.Made < a.Max:
		d.Event, d.Reason = StepEventFailRetryable, failure(o)
		d.Delay = a.Backoff.Next(a.Made, o.RetryAfter)
	default:
		d.Event, d.Reason = StepEventFailPermanent, failure(o)
		switch {
		case o.Retryable && !a.Retryable:
			d.Reason = "the step is not retryable: " + d.Reason
		case o.Retryable:
			d.Reason = fmt.Sprintf("attempts exhausted (%d of %d): %s", a.Made, a.Max, d.Reason)
		}
	}
	to, err := StepTransition(from, d.Event)
	if err != nil {
		return Decision{}, err
	}
	d.To = to
	return d, nil
}

func failure(o Outcome) string { return o.Kind + ": " + o.Message }

// Verdict is what a task's steps say about the task: an event to apply to a
// task in progress, with its reason, or none (Event empty) while work goes
// on.
type Verdict struct {
	Event  TaskEvent
	Reason string
}

// Reasons of the decisions.
const (
	// ReasonEveryStepComplete is the reason of a task's completion.
	ReasonEveryStepComplete = "every step complete"
	// ReasonHandlerSucceeded is the reason of a step's completion.
	ReasonHandlerSucceeded = "handler succeeded"
)

// TaskVerdict decides, from the states of a task's steps (in template order,
// with their names), whether the task is done: complete when every step
// satisfies its dependents; failed when a step is in error and none is in
// flight any more (so that the branches that do not depend on the failed
// step run to their end first); otherwise nothing yet.
func TaskVerdict(names []string, states []StepState) Verdict {
	satisfied, inFlight := 0, 0
	var failed []string
	for i, st := range states {
		switch {
		case st.Satisfies():
			satisfied++
		case st.InFlight():
			inFlight++
		case st == StepStateError:
			failed = append(failed, names[i])
		}
	}
	switch {
	case satisfied == len(states):
		return Verdict{Event: TaskEventComplete, Reason: ReasonEveryStepComplete}
	case inFlight == 0 && len(failed) > 0:
		return Verdict{Event: TaskEventFail, Reason: FailedReason(failed)}
	}
	return Verdict{}
}

// FailedReason is the reason of a task's failure from the names of its
// failed steps: FailedReasonPrefix, the names joined by
// FailedReasonSeparator, FailedReasonSuffix.
func FailedReason(failed []string) string {
	return FailedReasonPrefix + strings.Join(failed, FailedReasonSeparator) + FailedReasonSuffix
}

// The parts of FailedReason, for a statement that writes it.
const (
	FailedReasonPrefix    = "step "
	FailedReasonSeparator = ", "
	FailedReasonSuffix    = " failed"
)

// InFlight reports whether a step in s is on its way through a worker:
// throttled (waiting for its admission), enqueued, in progress or waiting
// for its retry.
func (s StepState) InFlight() bool {
	return s == StepStateThrottled || s.HoldsSlot()
}

// HoldsSlot reports whether a step in s takes one of the slots of its flow
// limits: from its admission (enqueued) until it ends; a step waiting for
// its retry keeps its slot.
func (s StepState) HoldsSlot() bool {
	return s == StepStateEnqueued || s == StepStateInProgress || s == StepStateWaitingForRetry
}

// StepStatesWhere returns the step states for which keep is true, in
// lifecycle order: the sets that statements on the steps table take as
// arguments, so that the database applies the machine's own sets.
func StepStatesWhere(keep func(StepState) bool) []StepState {
	return where(AllStepStates(), keep)
}

// TaskStatesWhere returns the task states for which keep is true, in
// lifecycle order.
func TaskStatesWhere(keep func(TaskState) bool) []TaskState {
	return where(AllTaskStates(), keep)
}

func where[S any](all []S, keep func(S) bool) []S {
	var out []S
	for _, s := range all {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// StepEventEdges returns the states a step event moves a step from, in
// lifecycle order, and where each goes (the same index).
func StepEventEdges(ev StepEvent) (from, to []StepState) {
	for _, s := range AllStepStates() {
		if t, ok := stepTransitions[s][ev]; ok {
			from, to = append(from, s), append(to, t)
		}
	}
	return from, to
}

// TaskStatesAllowing returns the task states from which ev is allowed, in
// lifecycle order.
func TaskStatesAllowing(ev TaskEvent) []TaskState {
	return where(AllTaskStates(), func(s TaskState) bool { _, ok := taskTransitions[s][ev]; return ok })
}

// StepStatesAllowing returns the step states from which ev is allowed, in
// lifecycle order.
func StepStatesAllowing(ev StepEvent) []StepState {
	from, _ := StepEventEdges(ev)
	return from
}
