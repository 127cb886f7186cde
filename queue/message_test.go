package queue_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

const (
	reqID  = "0190f1c2-7a4b-7c3d-8e9f-0123456789ab"
	corrID = "0190f1c2-7a4b-7c3d-8e9f-ba9876543210"
)

func TestDecodeTaskRequest(t *testing.T) {
	t.Parallel()
	full, err := queue.DecodeTaskRequest([]byte(`{
		"request_id": "` + reqID + `", "namespace": "billing", "name": "charge_card",
		"version": "1.2.0-rc.1", "context": {"amount": 10, "items": [1, 2]}, "priority": -3,
		"requested_by": "ops@example.com", "correlation_id": "` + corrID + `", "extra": "ignored"}`))
	require.NoError(t, err)
	require.Equal(t, queue.TaskRequest{
		RequestID: uuid.MustParse(reqID), Namespace: "billing", Name: "charge_card", Version: "1.2.0-rc.1",
		Context: `{"amount":10,"items":[1,2]}`, Priority: -3, RequestedBy: "ops@example.com",
		CorrelationID: uuid.MustParse(corrID),
	}, full)

	minimal, err := queue.DecodeTaskRequest([]byte(`{"request_id":"` + reqID + `","namespace":"ns","name":"n","context":null}`))
	require.NoError(t, err)
	require.Equal(t, "{}", minimal.Context, "context defaults to an empty object")
	require.Equal(t, minimal.RequestID, minimal.CorrelationID, "correlation id defaults to the request id")
	require.Empty(t, minimal.Version)
}

func TestDecodeTaskRequestReportsEveryProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		input string
		want  []queue.FieldProblem
		text  string
	}{
		{
			name:  "malformed json",
			input: `{"request_id": `,
			want:  []queue.FieldProblem{{Field: "$", Problem: "malformed JSON"}},
			text:  "invalid task request: $: malformed JSON",
		},
		{
			name:  "not an object",
			input: `["request_id"]`,
			want:  []queue.FieldProblem{{Field: "$", Problem: "must be a JSON object"}},
		},
		{
			name:  "empty object",
			input: `{}`,
			want: []queue.FieldProblem{
				{Field: "request_id", Problem: "missing"},
				{Field: "namespace", Problem: "missing"},
				{Field: "name", Problem: "missing"},
			},
			text: "invalid task request: request_id: missing; namespace: missing; name: missing",
		},
		{
			name:  "missing id and context not an object",
			input: `{"namespace":"ns","name":"n","context":[1]}`,
			want: []queue.FieldProblem{
				{Field: "request_id", Problem: "missing"},
				{Field: "context", Problem: "must be a JSON object"},
			},
			text: "invalid task request: request_id: missing; context: must be a JSON object",
		},
		{
			name: "everything malformed",
			input: `{"request_id":"nope","namespace":"Bad-NS","name":7,"version":"v1","context":"{}",
				"priority":1.5,"requested_by":false,"correlation_id":"00000000-0000-0000-0000-000000000000"}`,
			want: []queue.FieldProblem{
				{Field: "request_id", Problem: "must be a UUID"},
				{Field: "namespace", Problem: "must be lower-case letters, digits and underscores, starting with a letter"},
				{Field: "name", Problem: "must be a string"},
				{Field: "version", Problem: "must be a semantic version such as 1.0.0"},
				{Field: "context", Problem: "must be a JSON object"},
				{Field: "priority", Problem: "must be an integer"},
				{Field: "requested_by", Problem: "must be a string"},
				{Field: "correlation_id", Problem: "must not be the nil UUID"},
			},
		},
		{
			name:  "too long and out of range",
			input: `{"request_id":"` + reqID + `","namespace":"n234567890123456789012345678901234567890x","name":"ok","priority":"5"}`,
			want: []queue.FieldProblem{
				{Field: "namespace", Problem: "longer than 40 characters"},
				{Field: "priority", Problem: "must be an integer"},
			},
		},
		{
			name:  "priority beyond 32 bits",
			input: `{"request_id":"` + reqID + `","namespace":"ns","name":"n","priority":4294967296}`,
			want:  []queue.FieldProblem{{Field: "priority", Problem: "must be an integer between -2147483648 and 2147483647"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := queue.DecodeTaskRequest([]byte(tt.input))
			var verr *queue.ValidationError
			require.True(t, errors.As(err, &verr), "got %v", err)
			require.Equal(t, tt.want, verr.Problems)
			if tt.text != "" {
				require.EqualError(t, err, tt.text)
			}
		})
	}
}

func TestTaskRequestEncodeRoundTrip(t *testing.T) {
	t.Parallel()
	in := queue.TaskRequest{
		RequestID: uuid.MustParse(reqID), Namespace: "billing", Name: "charge", Version: "2.0.0",
		Context: `{"a":{"b":[true,null]}}`, Priority: 5, RequestedBy: "cli", CorrelationID: uuid.MustParse(corrID),
	}
	data, err := in.Encode()
	require.NoError(t, err)
	require.JSONEq(t, `{"request_id":"`+reqID+`","namespace":"billing","name":"charge","version":"2.0.0",
		"context":{"a":{"b":[true,null]}},"priority":5,"requested_by":"cli","correlation_id":"`+corrID+`"}`, string(data))
	out, err := queue.DecodeTaskRequest(data)
	require.NoError(t, err)
	require.Equal(t, in, out)

	bare, err := queue.TaskRequest{RequestID: uuid.MustParse(reqID), Namespace: "a", Name: "b"}.Encode()
	require.NoError(t, err)
	require.JSONEq(t, `{"request_id":"`+reqID+`","namespace":"a","name":"b","context":{}}`, string(bare))

	_, err = queue.TaskRequest{RequestID: uuid.MustParse(reqID), Context: `[1]`}.Encode()
	require.Error(t, err)
}

func TestStepMessages(t *testing.T) {
	t.Parallel()
	task, step, corr := uuid.MustParse(reqID), uuid.MustParse(corrID), uuid.MustParse("0190f1c2-0000-7000-8000-000000000001")

	msg := queue.StepMessage{TaskUUID: task, StepUUID: step, CorrelationID: corr}
	data, err := msg.Encode()
	require.NoError(t, err)
	require.JSONEq(t, `{"task_uuid":"`+reqID+`","step_uuid":"`+corrID+`","correlation_id":"`+corr.String()+`"}`, string(data))
	back, err := queue.DecodeStepMessage(data)
	require.NoError(t, err)
	require.Equal(t, msg, back)

	res := queue.StepResult{TaskUUID: task, StepUUID: step, CorrelationID: corr, Attempt: 3}
	data, err = res.Encode()
	require.NoError(t, err)
	require.JSONEq(t, `{"task_uuid":"`+reqID+`","step_uuid":"`+corrID+`","correlation_id":"`+corr.String()+`","attempt":3}`, string(data))
	backRes, err := queue.DecodeStepResult(data)
	require.NoError(t, err)
	require.Equal(t, res, backRes)

	_, err = queue.DecodeStepMessage([]byte(`{"task_uuid":"x"}`))
	require.EqualError(t, err, "invalid step message: task_uuid: must be a UUID; step_uuid: missing")
	_, err = queue.DecodeStepResult([]byte(`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `","attempt":0}`))
	require.EqualError(t, err, "invalid step result: attempt: must be at least 1")
	_, err = queue.DecodeStepResult([]byte(`{"task_uuid":"` + reqID + `","step_uuid":"` + corrID + `"}`))
	require.EqualError(t, err, "invalid step result: attempt: missing")
	_, err = queue.DecodeStepResult([]byte(`nope`))
	require.EqualError(t, err, "invalid step result: $: malformed JSON")
}

func FuzzDecodeTaskRequest(f *testing.F) {
	seeds := []string{
		`{"request_id":"` + reqID + `","namespace":"ns","name":"n"}`,
		`{"request_id":"` + reqID + `","namespace":"billing","name":"charge","version":"1.0.0","context":{"a":[1,{"b":null}]},"priority":3,"requested_by":"x","correlation_id":"` + corrID + `"}`,
		`{"request_id":"` + reqID + `","namespace":"ns","name":"n","context":"{}"}`,
		`{"request_id":"{` + reqID + `}","namespace":"ns","name":"n","context":  {  } }`,
		`{"request_id":"urn:uuid:` + reqID + `","namespace":"ns","name":"n","priority":-0}`,
		`{"request_id":null,"namespace":null,"name":null,"context":null,"priority":null}`,
		`{"namespace":"NS","name":"a-b","priority":1e3,"version":"01.0.0"}`,
		`{}`, `[]`, `null`, `"x"`, `{"request_id":`, ``, "\xff", `{"context":{"a":"\ud800"}}`,
		`{"request_id":"` + reqID + `","request_id":"bad","namespace":"ns","name":"n"}`,
		`{"request_id":"` + reqID + `","namespace":"ns","name":"n","context":{"a":` +
			strings.Repeat("[", workflow.MaxJSONDepth-1) + strings.Repeat("]", workflow.MaxJSONDepth-1) + `}}`,
		`{"request_id":"` + reqID + `","namespace":"ns","name":"n","context":{"a":` +
			strings.Repeat("[", workflow.MaxJSONDepth) + strings.Repeat("]", workflow.MaxJSONDepth) + `}}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := queue.DecodeTaskRequest(data)
		checkDecodeError(t, data, err)
		if err != nil {
			if r != (queue.TaskRequest{}) {
				t.Fatalf("failed decode returned a request: %+v", r)
			}
			return
		}
		if r.RequestID == uuid.Nil || r.CorrelationID == uuid.Nil {
			t.Fatalf("nil UUID in decoded request: %+v", r)
		}
		if !workflow.ValidNamespace(r.Namespace) || !workflow.ValidName(r.Name) {
			t.Fatalf("invalid namespace or name: %+v", r)
		}
		if r.Version != "" && !workflow.ValidVersion(r.Version) {
			t.Fatalf("invalid version: %q", r.Version)
		}
		if len(r.Context) == 0 || r.Context[0] != '{' {
			t.Fatalf("context is not an object: %q", r.Context)
		}
		if d := workflow.JSONDepth([]byte(r.Context)); d > workflow.MaxJSONDepth {
			t.Fatalf("context nested %d deep accepted", d)
		}
		// A decoded request encodes and decodes to itself.
		data2, err := r.Encode()
		if err != nil {
			t.Fatalf("encoding decoded request: %v", err)
		}
		r2, err := queue.DecodeTaskRequest(data2)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", data2, err)
		}
		if r2 != r {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", r, r2)
		}
	})
}

func TestDecodeTaskRequestTooDeep(t *testing.T) {
	t.Parallel()
	ok := `{"request_id": "` + reqID + `", "namespace": "ns", "name": "t", "context": {"a": ` +
		strings.Repeat("[", workflow.MaxJSONDepth-1) + strings.Repeat("]", workflow.MaxJSONDepth-1) + `}}`
	_, err := queue.DecodeTaskRequest([]byte(ok))
	require.NoError(t, err, "a context of the limit's depth is accepted")
	deep := `{"request_id": "` + reqID + `", "namespace": "ns", "name": "t", "context": ` +
		strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000) + `}`
	_, err = queue.DecodeTaskRequest([]byte(deep))
	var verr *queue.ValidationError
	require.ErrorAs(t, err, &verr)
	require.Contains(t, err.Error(), "nested 5001 levels deep, more than the limit of 64")
}
