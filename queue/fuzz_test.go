package queue_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

const stepID = "0190f1c2-0000-7000-8000-000000000001"

// stepSeeds are step messages and results as the orchestrator and the
// workers send them, and the malformed shapes the decoding tests cover.
func stepSeeds() []string {
	deep := func(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }
	return []string{
		`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","correlation_id":"` + stepID + `"}`,
		`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","correlation_id":"` + stepID + `","attempt":3}`,
		`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","attempt":1}`,
		`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","correlation_id":null,"attempt":2147483647}`,
		`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","attempt":0}`,
		`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","attempt":"1"}`,
		`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","attempt":1.0}`,
		`{"task_uuid":"x"}`,
		`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","extra":` + deep(workflow.MaxJSONDepth) + `,"attempt":1}`,
		`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","extra":` + deep(workflow.MaxJSONDepth+1) + `,"attempt":1}`,
		`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","extra":"` + strings.Repeat("[", 100) + `","attempt":1}`,
		`nope`, `{}`, `[]`, `null`, ``, "\xff",
	}
}

// TestStepMessagesWithoutCorrelationRoundTrip: correlation_id is optional,
// so a message or result without one encodes to what decodes to it.
func TestStepMessagesWithoutCorrelationRoundTrip(t *testing.T) {
	t.Parallel()
	msg := queue.StepMessage{TaskUUID: uuid.MustParse(reqID), StepUUID: uuid.MustParse(corrID)}
	data, err := msg.Encode()
	require.NoError(t, err)
	require.JSONEq(t, `{"task_uuid":"`+reqID+`","step_uuid":"`+corrID+`"}`, string(data))
	back, err := queue.DecodeStepMessage(data)
	require.NoError(t, err)
	require.Equal(t, msg, back)

	res := queue.StepResult{TaskUUID: msg.TaskUUID, StepUUID: msg.StepUUID, Attempt: 2}
	data, err = res.Encode()
	require.NoError(t, err)
	require.JSONEq(t, `{"task_uuid":"`+reqID+`","step_uuid":"`+corrID+`","attempt":2}`, string(data))
	backRes, err := queue.DecodeStepResult(data)
	require.NoError(t, err)
	require.Equal(t, res, backRes)
}

// FuzzDecodeStepMessage decodes arbitrary bytes as a step message: it must
// never panic, must refuse anything nested deeper than the limit, and what it
// decodes encodes and decodes to itself.
func FuzzDecodeStepMessage(f *testing.F) {
	for _, s := range stepSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := queue.DecodeStepMessage(data)
		checkDecodeError(t, data, err)
		if err != nil {
			if m != (queue.StepMessage{}) {
				t.Fatalf("failed decode returned a message: %+v", m)
			}
			return
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("encoding decoded message: %v", err)
		}
		back, err := queue.DecodeStepMessage(enc)
		if err != nil || back != m {
			t.Fatalf("round trip of %+v through %s gave %+v, %v", m, enc, back, err)
		}
	})
}

// FuzzDecodeStepResult is FuzzDecodeStepMessage for step results.
func FuzzDecodeStepResult(f *testing.F) {
	for _, s := range stepSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := queue.DecodeStepResult(data)
		checkDecodeError(t, data, err)
		if err != nil {
			if r != (queue.StepResult{}) {
				t.Fatalf("failed decode returned a result: %+v", r)
			}
			return
		}
		if r.Attempt < 1 {
			t.Fatalf("decoded attempt %d", r.Attempt)
		}
		enc, err := r.Encode()
		if err != nil {
			t.Fatalf("encoding decoded result: %v", err)
		}
		back, err := queue.DecodeStepResult(enc)
		if err != nil || back != r {
			t.Fatalf("round trip of %+v through %s gave %+v, %v", r, enc, back, err)
		}
	})
}

// checkDecodeError checks what every message decoder promises about err:
// nil or a *ValidationError whose problems all name a field and say
// something, and the one problem "$: nested N levels deep" for a payload
// nested deeper than the message's object and workflow.MaxJSONDepth.
func checkDecodeError(t *testing.T, data []byte, err error) {
	t.Helper()
	depth := workflow.JSONDepth(data)
	if depth > workflow.MaxJSONDepth+1 {
		want := []queue.FieldProblem{{Field: "$", Problem: fmt.Sprintf(
			"nested %d levels deep, more than the limit of %d within a field", depth, workflow.MaxJSONDepth)}}
		var verr *queue.ValidationError
		if !errors.As(err, &verr) || !reflect.DeepEqual(verr.Problems, want) {
			t.Fatalf("a payload nested %d deep gave %v", depth, err)
		}
		return
	}
	if err == nil {
		return
	}
	var verr *queue.ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("error is %T, not *ValidationError: %v", err, err)
	}
	if len(verr.Problems) == 0 {
		t.Fatalf("validation error without problems")
	}
	for _, p := range verr.Problems {
		if p.Field == "" || p.Problem == "" {
			t.Fatalf("problem without field or text: %+v", p)
		}
	}
}
