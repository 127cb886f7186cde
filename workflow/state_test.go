package workflow

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// refused marks a pair the machine must refuse.
const refused = ""

func TestStepTransitionEveryPair(t *testing.T) {
	// Columns, in this order.
	events := []StepEvent{
		StepEventEnqueue, StepEventThrottle, StepEventAdmit, StepEventStart, StepEventSucceed,
		StepEventFailRetryable, StepEventFailPermanent, StepEventCancel, StepEventRetry, StepEventResolve,
	}
	require.ElementsMatch(t, AllStepEvents(), events, "the table must have a column per event")

	const (
		pen  = StepStatePending
		thr  = StepStateThrottled
		enq  = StepStateEnqueued
		inp  = StepStateInProgress
		wfr  = StepStateWaitingForRetry
		cmp  = StepStateComplete
		errS = StepStateError
		can  = StepStateCancelled
		res  = StepStateResolvedManually
		x    = StepState(refused)
	)
	expected := []struct {
		from StepState
		to   [10]StepState // enqueue, throttle, admit, start, succeed, fail_retryable, fail_permanent, cancel, retry, resolve
	}{
		{pen, [10]StepState{enq, thr, x, x, x, x, x, can, x, x}},
		{thr, [10]StepState{x, x, enq, x, x, x, x, can, x, x}},
		{enq, [10]StepState{x, x, x, inp, x, x, x, can, x, x}},
		{inp, [10]StepState{x, x, x, inp, cmp, wfr, errS, can, x, x}},
		{wfr, [10]StepState{x, x, x, inp, x, x, x, can, x, x}},
		{cmp, [10]StepState{x, x, x, x, x, x, x, x, x, x}},
		{errS, [10]StepState{x, x, x, x, x, x, x, x, pen, res}},
		{can, [10]StepState{x, x, x, x, x, x, x, x, x, x}},
		{res, [10]StepState{x, x, x, x, x, x, x, x, x, x}},
	}
	var rows []StepState
	for _, row := range expected {
		rows = append(rows, row.from)
	}
	require.ElementsMatch(t, AllStepStates(), rows, "the table must have a row per state")

	for _, row := range expected {
		for i, ev := range events {
			want := row.to[i]
			t.Run(fmt.Sprintf("%s/%s", row.from, ev), func(t *testing.T) {
				got, err := StepTransition(row.from, ev)
				if want == refused {
					require.Error(t, err)
					var te *TransitionError
					require.True(t, errors.As(err, &te))
					require.Equal(t, &TransitionError{Machine: "step", From: string(row.from), Event: string(ev)}, te)
					require.Equal(t, fmt.Sprintf("step cannot %q from %q", ev, row.from), err.Error())
					require.Empty(t, got)
					return
				}
				require.NoError(t, err)
				require.Equal(t, want, got)
			})
		}
	}
}

func TestTaskTransitionEveryPair(t *testing.T) {
	events := []TaskEvent{
		TaskEventStart, TaskEventComplete, TaskEventFail, TaskEventCancel, TaskEventRetry, TaskEventResolve,
	}
	require.ElementsMatch(t, AllTaskEvents(), events, "the table must have a column per event")

	const (
		pen  = TaskStatePending
		inp  = TaskStateInProgress
		cmp  = TaskStateComplete
		errS = TaskStateError
		can  = TaskStateCancelled
		res  = TaskStateResolvedManually
		x    = TaskState(refused)
	)
	expected := []struct {
		from TaskState
		to   [6]TaskState // start, complete, fail, cancel, retry, resolve
	}{
		{pen, [6]TaskState{inp, x, x, can, x, x}},
		{inp, [6]TaskState{x, cmp, errS, can, x, x}},
		{cmp, [6]TaskState{x, x, x, x, x, x}},
		{errS, [6]TaskState{x, x, x, can, inp, res}},
		{can, [6]TaskState{x, x, x, x, x, x}},
		{res, [6]TaskState{x, x, x, x, x, x}},
	}
	var rows []TaskState
	for _, row := range expected {
		rows = append(rows, row.from)
	}
	require.ElementsMatch(t, AllTaskStates(), rows, "the table must have a row per state")

	for _, row := range expected {
		for i, ev := range events {
			want := row.to[i]
			t.Run(fmt.Sprintf("%s/%s", row.from, ev), func(t *testing.T) {
				got, err := TaskTransition(row.from, ev)
				if want == refused {
					var te *TransitionError
					require.ErrorAs(t, err, &te)
					require.Equal(t, &TransitionError{Machine: "task", From: string(row.from), Event: string(ev)}, te)
					require.Equal(t, fmt.Sprintf("task cannot %q from %q", ev, row.from), err.Error())
					require.Empty(t, got)
					return
				}
				require.NoError(t, err)
				require.Equal(t, want, got)
			})
		}
	}
}

func TestTransitionErrorMessage(t *testing.T) {
	_, err := StepTransition(StepStateComplete, StepEventSucceed)
	require.EqualError(t, err, `step cannot "succeed" from "complete"`)
	_, err = TaskTransition("bogus", TaskEventStart)
	require.EqualError(t, err, `task cannot "start" from "bogus"`)
	_, err = StepTransition(StepStatePending, "bogus")
	require.EqualError(t, err, `step cannot "bogus" from "pending"`)
}

func TestStepStateProperties(t *testing.T) {
	tests := []struct {
		state     StepState
		terminal  bool
		satisfies bool
	}{
		{StepStatePending, false, false},
		{StepStateThrottled, false, false},
		{StepStateEnqueued, false, false},
		{StepStateInProgress, false, false},
		{StepStateWaitingForRetry, false, false},
		{StepStateComplete, true, true},
		{StepStateError, true, false},
		{StepStateCancelled, true, false},
		{StepStateResolvedManually, true, true},
	}
	require.Len(t, tests, len(AllStepStates()))
	for _, tt := range tests {
		require.True(t, tt.state.Valid(), tt.state)
		require.Equal(t, tt.terminal, tt.state.Terminal(), "%s terminal", tt.state)
		require.Equal(t, tt.satisfies, tt.state.Satisfies(), "%s satisfies", tt.state)
		// Exactly the non-terminal states can be cancelled.
		_, err := StepTransition(tt.state, StepEventCancel)
		require.Equal(t, !tt.terminal, err == nil, "%s cancel", tt.state)
	}
	require.False(t, StepState("running").Valid())
}

func TestTaskStateProperties(t *testing.T) {
	tests := []struct {
		state    TaskState
		terminal bool
	}{
		{TaskStatePending, false},
		{TaskStateInProgress, false},
		{TaskStateComplete, true},
		{TaskStateError, true},
		{TaskStateCancelled, true},
		{TaskStateResolvedManually, true},
	}
	require.Len(t, tests, len(AllTaskStates()))
	for _, tt := range tests {
		require.True(t, tt.state.Valid(), tt.state)
		require.Equal(t, tt.terminal, tt.state.Terminal(), "%s terminal", tt.state)
	}
	require.False(t, TaskState("done").Valid())
}
