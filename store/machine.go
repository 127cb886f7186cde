package store

import (
	"fmt"

	"github.com/tasker-run/tasker/workflow"
)

// The state sets the statements take as arguments, each read off the
// machines of package workflow, so that every compare-and-set in SQL is the
// machine's own (machine_test.go checks that no statement names a state
// itself).
var (
	// startFrom are the states the start event moves a step from, to
	// startTo.
	startFrom, startTo = eventEdge(workflow.StepEventStart)
	// outcomeStates take a worker's outcome: those a success leaves.
	outcomeStates = states(workflow.StepStatesAllowing(workflow.StepEventSucceed))
	// enqueueTo is where the enqueue event moves a pending step.
	enqueueTo = mustStep(workflow.StepStatePending, workflow.StepEventEnqueue)
	// throttleTo is where a ready step under a flow limit waits.
	throttleTo = mustStep(workflow.StepStatePending, workflow.StepEventThrottle)

	satisfiedStates = states(workflow.StepStatesWhere(workflow.StepState.Satisfies))
	inFlightStates  = states(workflow.StepStatesWhere(workflow.StepState.InFlight))
	// slotStates are the states that hold a slot of a step's flow limits.
	slotStates     = states(workflow.StepStatesWhere(workflow.StepState.HoldsSlot))
	terminalStates = states(workflow.StepStatesWhere(workflow.StepState.Terminal))

	// taskCompleteTo and taskFailTo are where finalization moves a task in
	// progress.
	taskCompleteTo = mustTask(workflow.TaskStateInProgress, workflow.TaskEventComplete)
	taskFailTo     = mustTask(workflow.TaskStateInProgress, workflow.TaskEventFail)
)

// eventEdge returns the states ev moves a step from and the one state it
// moves them all to.
func eventEdge(ev workflow.StepEvent) ([]string, string) {
	from, to := workflow.StepEventEdges(ev)
	for _, t := range to {
		if t != to[0] {
			panic(fmt.Sprintf("store: step event %s leads to both %s and %s", ev, to[0], t))
		}
	}
	return states(from), string(to[0])
}

func states[S ~string](ss []S) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return out
}

func mustStep(from workflow.StepState, ev workflow.StepEvent) workflow.StepState {
	to, err := workflow.StepTransition(from, ev)
	if err != nil {
		panic(fmt.Sprintf("store: %v", err))
	}
	return to
}

func mustTask(from workflow.TaskState, ev workflow.TaskEvent) workflow.TaskState {
	to, err := workflow.TaskTransition(from, ev)
	if err != nil {
		panic(fmt.Sprintf("store: %v", err))
	}
	return to
}
