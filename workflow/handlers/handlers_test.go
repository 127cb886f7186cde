package handlers

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/workflow"
)

var (
	testTask = uuid.MustParse("01900000-0000-7000-8000-000000000001")
	testStep = uuid.MustParse("01900000-0000-7000-8000-000000000002")
)

// stepInput is a step of an order task with two parents, running its second
// attempt with the given config.
func stepInput(config string) workflow.StepInput {
	return workflow.StepInput{
		TaskUUID:  testTask,
		StepUUID:  testStep,
		Namespace: "shop",
		TaskName:  "process_order",
		StepName:  "notify",
		Attempt:   2,
		Context: json.RawMessage(`{"order":{"id":"A 1/2","total":12.5,"items":[{"sku":"x-1"}]},
			"user":{"name":"Zoë & co"},"paid":true,"note":null,"evil":"a\r\nX-Injected: 1"}`),
		Config: json.RawMessage(config),
		Parents: map[string]json.RawMessage{
			"charge":  json.RawMessage(`{"receipt":{"number":42,"lines":[7,8]}}`),
			"reserve": json.RawMessage(`{"ok":true}`),
		},
	}
}

// requireStepError asserts err is a *workflow.StepError of kind with the
// given retryability, and returns it.
func requireStepError(t *testing.T, err error, kind string, retryable bool) *workflow.StepError {
	t.Helper()
	require.Error(t, err)
	se, ok := err.(*workflow.StepError)
	require.True(t, ok, "want a *workflow.StepError, got %T: %v", err, err)
	require.Equal(t, kind, se.Kind, "kind of %v", se)
	require.Equal(t, retryable, se.Retryable, "retryable of %v", se)
	return se
}

func TestRegister(t *testing.T) {
	t.Parallel()
	reg := workflow.NewRegistry()
	require.NoError(t, Register(reg, HTTPOptions{}))
	require.Equal(t, []string{"http", "noop", "sleep"}, reg.Names())
	require.ErrorContains(t, Register(reg, HTTPOptions{}), `registering handler "http": already registered`)
}

func TestNoop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, config, want, err string
	}{
		{name: "no config", config: ``, want: `{}`},
		{name: "empty config", config: `{}`, want: `{}`},
		{name: "result", config: `{"result":{"even_number":4,"tags":["a"]}}`, want: `{"even_number":4,"tags":["a"]}`},
		{name: "scalar result", config: `{"result":7}`, want: `7`},
		{name: "unknown key", config: `{"reslt":1}`, err: "unknown config key reslt (known: result)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := Noop().Handle(context.Background(), stepInput(tt.config))
			if tt.err != "" {
				se := requireStepError(t, err, KindBadConfig, false)
				require.Equal(t, tt.err, se.Message)
				return
			}
			require.NoError(t, err)
			require.JSONEq(t, tt.want, string(res))
		})
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()
	res, err := Sleep().Handle(context.Background(), stepInput(`{"duration":"5ms"}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"slept_ms":5}`, string(res))
}

func TestSleepHonoursCancellation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Sleep().Handle(ctx, stepInput(`{"duration":"1h"}`))
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("sleep did not return after its context was cancelled")
	}
}

func TestSleepHonoursDeadline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := Sleep().Handle(ctx, stepInput(`{"duration":"1h"}`))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, workflow.KindTimeout, workflow.AsStepError(err).Kind)
}

func TestSleepBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct{ config, want string }{
		{`{}`, `duration is required, e.g. "250ms"`},
		{`{"duration":"abc"}`, `duration "abc" is not a duration such as "250ms"`},
		{`{"duration":250}`, `duration must be a string such as "250ms", got 250`},
		{`{"duration":"-1s"}`, `duration "-1s" must not be negative`},
		{`{"duration":"1s","extra":true}`, `unknown config key extra (known: duration)`},
		{`[1]`, `config must be a table`},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			t.Parallel()
			_, err := Sleep().Handle(context.Background(), stepInput(tt.config))
			se := requireStepError(t, err, KindBadConfig, false)
			require.Equal(t, tt.want, se.Message)
		})
	}
}
