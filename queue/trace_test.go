package queue

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/workflow"
)

func TestTraceHeaders(t *testing.T) {
	t.Parallel()
	tr := workflow.Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "a=b"}
	got, err := TraceFromHeaders(TraceHeaders(tr))
	require.NoError(t, err)
	require.Equal(t, tr, got)
	require.Nil(t, TraceHeaders(workflow.Trace{}))

	for _, none := range []string{"", "null", "[1, 2]", `"text"`, `{"x": 1}`, `{"traceparent": null}`} {
		got, err := TraceFromHeaders([]byte(none))
		require.NoError(t, err, none)
		require.True(t, got.IsZero(), none)
	}
	_, err = TraceFromHeaders([]byte(`{"traceparent": ["x"]}`))
	require.ErrorContains(t, err, "header traceparent is not a string")
	_, err = TraceFromHeaders([]byte(`{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": 1}`))
	require.ErrorContains(t, err, "header tracestate is not a string")
}
