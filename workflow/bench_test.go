package workflow_test

import (
	"testing"

	"github.com/tasker-run/tasker/workflow"
)

// Sinks keep the results of the look-ups alive.
var (
	stateSink any
	errSink   error
)

// machine is one state machine's look-up, its states and events, and a
// pair it refuses.
type machine[S, E any] struct {
	name         string
	lookup       func(S, E) (S, error)
	states       []S
	events       []E
	refusedState S
	refusedEvent E
}

// benchmarkMachine: "valid" goes round every pair the machine accepts, one
// look-up per operation; "invalid" is a refused pair, whose
// *TransitionError is allocated.
func benchmarkMachine[S, E any](b *testing.B, m machine[S, E]) {
	type pair struct {
		from S
		ev   E
	}
	var pairs []pair
	for _, st := range m.states {
		for _, ev := range m.events {
			if _, err := m.lookup(st, ev); err == nil {
				pairs = append(pairs, pair{st, ev})
			}
		}
	}
	if len(pairs) == 0 {
		b.Fatalf("the %s machine accepts no pair", m.name)
	}
	b.Run("valid", func(b *testing.B) {
		b.ReportAllocs()
		var last S
		i := 0
		for b.Loop() {
			p := pairs[i]
			to, err := m.lookup(p.from, p.ev)
			if err != nil {
				b.Fatal(err)
			}
			last = to
			if i++; i == len(pairs) {
				i = 0
			}
		}
		stateSink = last
	})
	b.Run("invalid", func(b *testing.B) {
		b.ReportAllocs()
		var err error
		for b.Loop() {
			if _, err = m.lookup(m.refusedState, m.refusedEvent); err == nil {
				b.Fatalf("the %s machine accepted its refused pair", m.name)
			}
		}
		errSink = err
	})
}

// BenchmarkStepTransition looks up the step machine (complete + start is
// the refused pair).
func BenchmarkStepTransition(b *testing.B) {
	benchmarkMachine(b, machine[workflow.StepState, workflow.StepEvent]{
		name: "step", lookup: workflow.StepTransition,
		states: workflow.AllStepStates(), events: workflow.AllStepEvents(),
		refusedState: workflow.StepStateComplete, refusedEvent: workflow.StepEventStart,
	})
}

// BenchmarkTaskTransition looks up the task machine (complete + start is
// the refused pair).
func BenchmarkTaskTransition(b *testing.B) {
	benchmarkMachine(b, machine[workflow.TaskState, workflow.TaskEvent]{
		name: "task", lookup: workflow.TaskTransition,
		states: workflow.AllTaskStates(), events: workflow.AllTaskEvents(),
		refusedState: workflow.TaskStateComplete, refusedEvent: workflow.TaskEventStart,
	})
}
