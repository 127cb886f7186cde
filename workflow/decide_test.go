package workflow

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/backoff"
)

func TestDecide(t *testing.T) {
	policy := backoff.Policy{Base: time.Second, Max: time.Minute, Multiplier: 2}
	attempts := func(made, max int, retryable bool) Attempts {
		return Attempts{Made: made, Max: max, Retryable: retryable, Backoff: policy}
	}
	flaky := Outcome{Kind: "timeout", Message: "took too long", Retryable: true}
	for _, tc := range []struct {
		name    string
		from    StepState
		o       Outcome
		a       Attempts
		want    Decision
		wantErr bool
	}{
		{"success", StepStateInProgress, Outcome{OK: true}, attempts(1, 3, true),
			Decision{Event: StepEventSucceed, To: StepStateComplete, Reason: "handler succeeded"}, false},
		{"retryable with attempts left", StepStateInProgress, flaky, attempts(1, 3, true),
			Decision{Event: StepEventFailRetryable, To: StepStateWaitingForRetry, Reason: "timeout: took too long", Delay: time.Second}, false},
		{"backoff grows with the attempt", StepStateInProgress, flaky, attempts(2, 3, true),
			Decision{Event: StepEventFailRetryable, To: StepStateWaitingForRetry, Reason: "timeout: took too long", Delay: 2 * time.Second}, false},
		{"server-requested delay wins", StepStateInProgress, Outcome{Kind: "http", Message: "429", Retryable: true, RetryAfter: 7 * time.Second}, attempts(1, 3, true),
			Decision{Event: StepEventFailRetryable, To: StepStateWaitingForRetry, Reason: "http: 429", Delay: 7 * time.Second}, false},
		{"attempts exhausted", StepStateInProgress, flaky, attempts(3, 3, true),
			Decision{Event: StepEventFailPermanent, To: StepStateError, Reason: "attempts exhausted (3 of 3): timeout: took too long"}, false},
		{"step not retryable", StepStateInProgress, flaky, attempts(1, 3, false),
			Decision{Event: StepEventFailPermanent, To: StepStateError, Reason: "the step is not retryable: timeout: took too long"}, false},
		{"permanent error", StepStateInProgress, Outcome{Kind: "validation", Message: "odd number"}, attempts(1, 3, true),
			Decision{Event: StepEventFailPermanent, To: StepStateError, Reason: "validation: odd number"}, false},
		{"a step not in progress takes no outcome", StepStateComplete, Outcome{OK: true}, attempts(1, 3, true), Decision{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decide(tc.from, tc.o, tc.a)
			if tc.wantErr {
				var te *TransitionError
				require.True(t, errors.As(err, &te), "%v", err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.want.Event == StepEventFailRetryable, got.Retry())
		})
	}
}

func TestTaskVerdict(t *testing.T) {
	names := []string{"a", "b", "c"}
	for _, tc := range []struct {
		states []StepState
		want   Verdict
	}{
		{[]StepState{StepStateComplete, StepStateComplete, StepStateComplete}, Verdict{TaskEventComplete, ReasonEveryStepComplete}},
		{[]StepState{StepStateComplete, StepStateResolvedManually, StepStateComplete}, Verdict{TaskEventComplete, ReasonEveryStepComplete}},
		{[]StepState{StepStateComplete, StepStateInProgress, StepStatePending}, Verdict{}},
		{[]StepState{StepStateError, StepStatePending, StepStatePending}, Verdict{TaskEventFail, "step a failed"}},
		// A branch still in flight runs to its end before the task fails.
		{[]StepState{StepStateError, StepStateEnqueued, StepStatePending}, Verdict{}},
		{[]StepState{StepStateError, StepStateWaitingForRetry, StepStatePending}, Verdict{}},
		{[]StepState{StepStateError, StepStateComplete, StepStateError}, Verdict{TaskEventFail, "step a, c failed"}},
		{[]StepState{StepStateCancelled, StepStateComplete, StepStateComplete}, Verdict{}},
	} {
		t.Run(fmt.Sprint(tc.states), func(t *testing.T) {
			require.Equal(t, tc.want, TaskVerdict(names, tc.states))
		})
	}
}

func TestStateSets(t *testing.T) {
	require.Equal(t, []StepState{StepStateThrottled, StepStateEnqueued, StepStateInProgress, StepStateWaitingForRetry}, StepStatesWhere(StepState.InFlight))
	require.Equal(t, []StepState{StepStateEnqueued, StepStateInProgress, StepStateWaitingForRetry}, StepStatesWhere(StepState.HoldsSlot))
	require.Equal(t, []StepState{StepStateComplete, StepStateResolvedManually}, StepStatesWhere(StepState.Satisfies))
	from, to := StepEventEdges(StepEventStart)
	require.Equal(t, []StepState{StepStateEnqueued, StepStateInProgress, StepStateWaitingForRetry}, from)
	require.Equal(t, []StepState{StepStateInProgress, StepStateInProgress, StepStateInProgress}, to)
	require.Equal(t, []StepState{StepStateInProgress}, StepStatesAllowing(StepEventSucceed))
	require.Equal(t, []TaskState{TaskStatePending, TaskStateInProgress, TaskStateError}, TaskStatesAllowing(TaskEventCancel))
	require.Equal(t, []TaskState{TaskStateError}, TaskStatesAllowing(TaskEventRetry))
	// Every state set agrees with the machine.
	for _, ev := range AllStepEvents() {
		from, to := StepEventEdges(ev)
		for i, s := range from {
			got, err := StepTransition(s, ev)
			require.NoError(t, err)
			require.Equal(t, to[i], got)
		}
	}
}

func TestPlanTask(t *testing.T) {
	steps := []StepTemplate{
		{Name: "a"},
		{Name: "b", DependsOn: []string{"a"}},
		{Name: "c", DependsOn: []string{"a"}},
		{Name: "d", DependsOn: []string{"b", "c"}},
	}
	n := 0
	newID := func() (uuid.UUID, error) {
		n++
		return uuid.UUID{byte(n)}, nil
	}
	p, err := PlanTask(steps, newID)
	require.NoError(t, err)
	require.Equal(t, uuid.UUID{1}, p.Task)
	require.Equal(t, TaskStateInProgress, p.State)
	require.Len(t, p.Steps, 4)
	require.Equal(t, StepStateEnqueued, p.Steps[0].State, "the root is enqueued at once")
	for _, st := range p.Steps[1:] {
		require.Equal(t, StepStatePending, st.State, st.Name)
	}
	require.Equal(t, []Edge{{0, 1}, {0, 2}, {1, 3}, {2, 3}}, p.Edges)
	require.Equal(t, []TaskMove{
		{To: TaskStatePending, Reason: ReasonTaskCreated},
		{From: TaskStatePending, To: TaskStateInProgress, Reason: ReasonTaskStarted},
	}, p.TaskMoves)
	require.Equal(t, []StepMove{
		{Step: 0, To: StepStatePending, Reason: ReasonTaskCreated},
		{Step: 0, From: StepStatePending, To: StepStateEnqueued, Reason: ReasonStepReady},
		{Step: 1, To: StepStatePending, Reason: ReasonTaskCreated},
		{Step: 2, To: StepStatePending, Reason: ReasonTaskCreated},
		{Step: 3, To: StepStatePending, Reason: ReasonTaskCreated},
	}, p.StepMoves)

	_, err = PlanTask([]StepTemplate{{Name: "a", DependsOn: []string{"b"}}, {Name: "b", DependsOn: []string{"a"}}}, newID)
	require.ErrorContains(t, err, "no step without dependencies")
	_, err = PlanTask([]StepTemplate{{Name: "a", DependsOn: []string{"x"}}}, newID)
	require.ErrorContains(t, err, "unknown step x")
	boom := errors.New("no entropy")
	_, err = PlanTask(steps, func() (uuid.UUID, error) { return uuid.Nil, boom })
	require.ErrorIs(t, err, boom)
}

func TestLayers(t *testing.T) {
	names := []string{"init", "left", "right", "validate", "finalize"}
	deps := [][]string{nil, {"init"}, {"init"}, {"left", "right"}, {"validate", "left"}}
	require.Equal(t, []int{0, 1, 1, 2, 3}, Layers(names, deps))
	// An unknown parent is left out; a cycle is cut where it closes.
	require.Equal(t, []int{0}, Layers([]string{"a"}, [][]string{{"ghost"}}))
	require.Equal(t, []int{2, 1}, Layers([]string{"a", "b"}, [][]string{{"b"}, {"a"}}))
}
