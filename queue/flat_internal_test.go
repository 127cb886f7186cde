package queue

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// The JSON shapes the encoders replace, as encoding/json writes them.
type (
	stepMessageJSON struct {
		TaskUUID      uuid.UUID `json:"task_uuid"`
		StepUUID      uuid.UUID `json:"step_uuid"`
		CorrelationID uuid.UUID `json:"correlation_id,omitzero"`
	}
	stepResultJSON struct {
		TaskUUID      uuid.UUID `json:"task_uuid"`
		StepUUID      uuid.UUID `json:"step_uuid"`
		CorrelationID uuid.UUID `json:"correlation_id,omitzero"`
		Attempt       int       `json:"attempt"`
	}
)

// The encoders write the bytes encoding/json writes, without its
// allocations.
func TestStepJSONAsEncodingJSON(t *testing.T) {
	for i, corr := range []uuid.UUID{uuid.Nil, uuid.New(), uuid.MustParse("ffffffff-ffff-ffff-ffff-ffffffffffff")} {
		m := StepMessage{TaskUUID: uuid.New(), StepUUID: uuid.Must(uuid.NewV7()), CorrelationID: corr}
		want, err := json.Marshal(stepMessageJSON(m))
		require.NoError(t, err)
		got, err := m.Encode()
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
		for _, attempt := range []int{-3, 0, 1, i + 7, 2147483647, 1 << 40} {
			r := StepResult{TaskUUID: m.TaskUUID, StepUUID: m.StepUUID, CorrelationID: corr, Attempt: attempt}
			want, err := json.Marshal(stepResultJSON(r))
			require.NoError(t, err)
			got, err := r.Encode()
			require.NoError(t, err)
			require.Equal(t, string(want), string(got))
		}
	}
	m := StepMessage{TaskUUID: uuid.New(), StepUUID: uuid.New(), CorrelationID: uuid.New()}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := m.Encode(); err != nil {
			t.Fatal(err)
		}
	})
	require.Equal(t, 1.0, allocs, "allocations encoding a step message")
}

// flatSeeds are shapes the plain decoding takes and those it leaves to the
// general decoder.
var flatSeeds = []string{
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b"}`,
	`{"step_uuid": "0190f1c2-0000-7000-8000-00000000000b", "task_uuid": "0190f1c2-0000-7000-8000-00000000000a", "correlation_id": "0190F1C2-0000-7000-8000-00000000000C"}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b","attempt":3}`,
	"\t{\n\"attempt\" : 12 ,\"task_uuid\":\"0190f1c2-0000-7000-8000-00000000000a\",\"step_uuid\":\"0190f1c2-0000-7000-8000-00000000000b\"}\r\n",
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b","attempt":999999999}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b","attempt":2147483647}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b","attempt":01}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b","attempt":1e2}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b","attempt":-1}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b","attempt":0}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","task_uuid":"0190f1c2-0000-7000-8000-00000000000b","step_uuid":"0190f1c2-0000-7000-8000-00000000000b"}`,
	`{"task_uuid":"00000000-0000-0000-0000-000000000000","step_uuid":"0190f1c2-0000-7000-8000-00000000000b"}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b","correlation_id":null}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b","other":1}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"{0190f1c2-0000-7000-8000-00000000000b"}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2\u002d0000-7000-8000-00000000000b"}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b"}x`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b",}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a"}`,
	`{"task_uuid":"0190f1c2-0000-7000-8000-00000000000a","step_uuid":"0190f1c2-0000-7000-8000-00000000000b"`,
	`{}`, `{`, ``, `null`, `"x"`,
}

// FuzzStepFlatAgreesWithDecoder: whatever the plain decoding takes, the
// general decoder takes too, to the same message or result.
func FuzzStepFlatAgreesWithDecoder(f *testing.F) {
	for _, s := range flatSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if task, step, corr, _, ok := decodeStepFlat(data, false); ok {
			m, err := decodeStepMessage(data)
			require.NoError(t, err, "%s", data)
			require.Equal(t, m, StepMessage{TaskUUID: task, StepUUID: step, CorrelationID: corr}, "%s", data)
		}
		if task, step, corr, attempt, ok := decodeStepFlat(data, true); ok {
			r, err := decodeStepResult(data)
			require.NoError(t, err, "%s", data)
			require.Equal(t, r, StepResult{TaskUUID: task, StepUUID: step, CorrelationID: corr, Attempt: attempt}, "%s", data)
		}
	})
}

// The plain shapes are decoded without allocating, and Tasker's own
// messages have them.
func TestStepFlatTakesTaskersMessages(t *testing.T) {
	took := 0
	for _, s := range flatSeeds {
		if _, _, _, _, ok := decodeStepFlat([]byte(s), false); ok {
			took++
		}
	}
	require.Equal(t, 2, took, "seeds decoded plainly as step messages")
	m := StepMessage{TaskUUID: uuid.New(), StepUUID: uuid.New(), CorrelationID: uuid.New()}
	data, err := m.Encode()
	require.NoError(t, err)
	_, _, _, _, ok := decodeStepFlat(data, false)
	require.True(t, ok)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := DecodeStepMessage(data); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "allocations decoding a step message")
	r := StepResult{TaskUUID: m.TaskUUID, StepUUID: m.StepUUID, Attempt: 4}
	data, err = r.Encode()
	require.NoError(t, err)
	_, _, _, attempt, ok := decodeStepFlat(data, true)
	require.True(t, ok)
	require.Equal(t, 4, attempt)
}

// NamespaceQueue names a namespace's queue without allocating once it has
// named it, and keeps no more than 256 names.
func TestNamespaceQueueKeepsItsNames(t *testing.T) {
	require.Equal(t, "billing_queue", NamespaceQueue("billing"))
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = NamespaceQueue("billing") }))
	for i := range 512 {
		require.Equal(t, "ns"+strconv.Itoa(i)+"_queue", NamespaceQueue("ns"+strconv.Itoa(i)))
	}
	require.LessOrEqual(t, namespaceQueues.Len(), 256)
	require.Equal(t, "billing_queue", NamespaceQueue("billing"))
}
