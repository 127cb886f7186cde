package workflow

import "fmt"

// StepState is the state of one step. The values mirror the CHECK
// constraint on the steps table.
type StepState string

// Step states.
const (
	StepStatePending          StepState = "pending"
	StepStateThrottled        StepState = "throttled"
	StepStateEnqueued         StepState = "enqueued"
	StepStateInProgress       StepState = "in_progress"
	StepStateWaitingForRetry  StepState = "waiting_for_retry"
	StepStateComplete         StepState = "complete"
	StepStateError            StepState = "error"
	StepStateCancelled        StepState = "cancelled"
	StepStateResolvedManually StepState = "resolved_manually"
)

// StepEvent is what happens to a step.
type StepEvent string

// Step events.
const (
	StepEventEnqueue       StepEvent = "enqueue"
	StepEventThrottle      StepEvent = "throttle"
	StepEventAdmit         StepEvent = "admit"
	StepEventStart         StepEvent = "start"
	StepEventSucceed       StepEvent = "succeed"
	StepEventFailRetryable StepEvent = "fail_retryable"
	StepEventFailPermanent StepEvent = "fail_permanent"
	StepEventCancel        StepEvent = "cancel"
	StepEventRetry         StepEvent = "retry"
	StepEventResolve       StepEvent = "resolve"
)

// TaskState is the state of one task. The values mirror the CHECK
// constraint on the tasks table.
type TaskState string

// Task states.
const (
	TaskStatePending          TaskState = "pending"
	TaskStateInProgress       TaskState = "in_progress"
	TaskStateComplete         TaskState = "complete"
	TaskStateError            TaskState = "error"
	TaskStateCancelled        TaskState = "cancelled"
	TaskStateResolvedManually TaskState = "resolved_manually"
)

// TaskEvent is what happens to a task.
type TaskEvent string

// Task events.
const (
	TaskEventStart    TaskEvent = "start"
	TaskEventComplete TaskEvent = "complete"
	TaskEventFail     TaskEvent = "fail"
	TaskEventCancel   TaskEvent = "cancel"
	TaskEventRetry    TaskEvent = "retry"
	TaskEventResolve  TaskEvent = "resolve"
)

// stepTransitions is the step machine; a missing pair is refused.
var stepTransitions = map[StepState]map[StepEvent]StepState{
	StepStatePending: {
		StepEventEnqueue: StepStateEnqueued,
		// A ready step under a flow limit waits for its admission instead.
		StepEventThrottle: StepStateThrottled,
		StepEventCancel:   StepStateCancelled,
	},
	StepStateThrottled: {
		StepEventAdmit:  StepStateEnqueued,
		StepEventCancel: StepStateCancelled,
	},
	StepStateEnqueued: {
		StepEventStart:  StepStateInProgress,
		StepEventCancel: StepStateCancelled,
	},
	StepStateInProgress: {
		// A redelivered message (the worker died, the visibility timeout
		// passed) starts a new attempt of a step already in progress.
		StepEventStart:         StepStateInProgress,
		StepEventSucceed:       StepStateComplete,
		StepEventFailRetryable: StepStateWaitingForRetry,
		StepEventFailPermanent: StepStateError,
		StepEventCancel:        StepStateCancelled,
	},
	StepStateWaitingForRetry: {
		StepEventStart:  StepStateInProgress,
		StepEventCancel: StepStateCancelled,
	},
	StepStateError: {
		StepEventRetry:   StepStatePending,
		StepEventResolve: StepStateResolvedManually,
	},
	StepStateComplete:         {},
	StepStateCancelled:        {},
	StepStateResolvedManually: {},
}

// taskTransitions is the task machine; a missing pair is refused.
var taskTransitions = map[TaskState]map[TaskEvent]TaskState{
	TaskStatePending: {
		TaskEventStart:  TaskStateInProgress,
		TaskEventCancel: TaskStateCancelled,
	},
	TaskStateInProgress: {
		TaskEventComplete: TaskStateComplete,
		TaskEventFail:     TaskStateError,
		TaskEventCancel:   TaskStateCancelled,
	},
	TaskStateError: {
		TaskEventCancel:  TaskStateCancelled,
		TaskEventRetry:   TaskStateInProgress,
		TaskEventResolve: TaskStateResolvedManually,
	},
	TaskStateComplete:         {},
	TaskStateCancelled:        {},
	TaskStateResolvedManually: {},
}

// TransitionError is returned for a (state, event) pair the machine refuses.
// Callers detect it with errors.As.
type TransitionError struct {
	Machine string // "step" or "task"
	From    string
	Event   string
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("%s cannot %q from %q", e.Machine, e.Event, e.From)
}

// StepTransition returns the state a step in from moves to on ev, or a
// *TransitionError if the machine refuses the pair.
func StepTransition(from StepState, ev StepEvent) (StepState, error) {
	if to, ok := stepTransitions[from][ev]; ok {
		return to, nil
	}
	return "", &TransitionError{Machine: "step", From: string(from), Event: string(ev)}
}

// TaskTransition returns the state a task in from moves to on ev, or a
// *TransitionError if the machine refuses the pair.
func TaskTransition(from TaskState, ev TaskEvent) (TaskState, error) {
	if to, ok := taskTransitions[from][ev]; ok {
		return to, nil
	}
	return "", &TransitionError{Machine: "task", From: string(from), Event: string(ev)}
}

// AllStepStates returns every step state in lifecycle order.
func AllStepStates() []StepState {
	return []StepState{
		StepStatePending, StepStateThrottled, StepStateEnqueued, StepStateInProgress, StepStateWaitingForRetry,
		StepStateComplete, StepStateError, StepStateCancelled, StepStateResolvedManually,
	}
}

// AllStepEvents returns every step event.
func AllStepEvents() []StepEvent {
	return []StepEvent{
		StepEventEnqueue, StepEventThrottle, StepEventAdmit, StepEventStart, StepEventSucceed, StepEventFailRetryable,
		StepEventFailPermanent, StepEventCancel, StepEventRetry, StepEventResolve,
	}
}

// AllTaskStates returns every task state in lifecycle order.
func AllTaskStates() []TaskState {
	return []TaskState{
		TaskStatePending, TaskStateInProgress, TaskStateComplete,
		TaskStateError, TaskStateCancelled, TaskStateResolvedManually,
	}
}

// AllTaskEvents returns every task event.
func AllTaskEvents() []TaskEvent {
	return []TaskEvent{
		TaskEventStart, TaskEventComplete, TaskEventFail,
		TaskEventCancel, TaskEventRetry, TaskEventResolve,
	}
}

// Valid reports whether s is one of the step states.
func (s StepState) Valid() bool { _, ok := stepTransitions[s]; return ok }

// Terminal reports whether the engine leaves a step in s alone: complete,
// error, cancelled or resolved_manually. A step in error can still be
// retried or resolved by an operator.
func (s StepState) Terminal() bool {
	switch s {
	case StepStateComplete, StepStateError, StepStateCancelled, StepStateResolvedManually:
		return true
	}
	return false
}

// Satisfies reports whether a step in s satisfies the dependency of its
// children: complete or resolved_manually.
func (s StepState) Satisfies() bool {
	return s == StepStateComplete || s == StepStateResolvedManually
}

// Valid reports whether s is one of the task states.
func (s TaskState) Valid() bool { _, ok := taskTransitions[s]; return ok }

// Terminal reports whether the engine leaves a task in s alone: complete,
// error, cancelled or resolved_manually. A task in error can still be
// retried, resolved or cancelled by an operator.
func (s TaskState) Terminal() bool {
	switch s {
	case TaskStateComplete, TaskStateError, TaskStateCancelled, TaskStateResolvedManually:
		return true
	}
	return false
}
