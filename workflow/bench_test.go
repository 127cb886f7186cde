package workflow_test

import (
	"testing"

	"github.com/tasker-run/tasker/workflow"
)

// Sinks keep the compiler from discarding the look-ups.
var (
	stepSink workflow.StepState
	taskSink workflow.TaskState
	errSink  error
)

type stepPair struct {
	from workflow.StepState
	ev   workflow.StepEvent
}

type taskPair struct {
	from workflow.TaskState
	ev   workflow.TaskEvent
}

// validStepPairs are the (state, event) pairs the step machine accepts.
func validStepPairs(b *testing.B) []stepPair {
	var pairs []stepPair
	for _, st := range workflow.AllStepStates() {
		for _, ev := range workflow.AllStepEvents() {
			if _, err := workflow.StepTransition(st, ev); err == nil {
				pairs = append(pairs, stepPair{st, ev})
			}
		}
	}
	if len(pairs) == 0 {
		b.Fatal("the step machine accepts no pair")
	}
	return pairs
}

// validTaskPairs are the (state, event) pairs the task machine accepts.
func validTaskPairs(b *testing.B) []taskPair {
	var pairs []taskPair
	for _, st := range workflow.AllTaskStates() {
		for _, ev := range workflow.AllTaskEvents() {
			if _, err := workflow.TaskTransition(st, ev); err == nil {
				pairs = append(pairs, taskPair{st, ev})
			}
		}
	}
	if len(pairs) == 0 {
		b.Fatal("the task machine accepts no pair")
	}
	return pairs
}

// BenchmarkStepTransition looks up the step machine: "valid" goes round
// every pair it accepts, one look-up per operation; "invalid" is a refused
// pair, whose *TransitionError is allocated.
func BenchmarkStepTransition(b *testing.B) {
	b.Run("valid", func(b *testing.B) {
		pairs := validStepPairs(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			p := pairs[i]
			to, err := workflow.StepTransition(p.from, p.ev)
			if err != nil {
				b.Fatal(err)
			}
			stepSink = to
			if i++; i == len(pairs) {
				i = 0
			}
		}
	})
	b.Run("invalid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			to, err := workflow.StepTransition(workflow.StepStateComplete, workflow.StepEventStart)
			if err == nil {
				b.Fatal("complete + start accepted")
			}
			stepSink, errSink = to, err
		}
	})
}

// BenchmarkTaskTransition is BenchmarkStepTransition for the task machine.
func BenchmarkTaskTransition(b *testing.B) {
	b.Run("valid", func(b *testing.B) {
		pairs := validTaskPairs(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			p := pairs[i]
			to, err := workflow.TaskTransition(p.from, p.ev)
			if err != nil {
				b.Fatal(err)
			}
			taskSink = to
			if i++; i == len(pairs) {
				i = 0
			}
		}
	})
	b.Run("invalid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			to, err := workflow.TaskTransition(workflow.TaskStateComplete, workflow.TaskEventStart)
			if err == nil {
				b.Fatal("complete + start accepted")
			}
			taskSink, errSink = to, err
		}
	})
}
