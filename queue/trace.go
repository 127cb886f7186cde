package queue

import (
	"encoding/json"
	"fmt"

	"github.com/tasker-run/tasker/workflow"
)

// The pgmq headers that carry a W3C trace context through the queues: on a
// task request, then on every step and result message of its task.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// TraceFromHeaders reads the trace context of a message's headers (a JSON
// object, or nil). A message without one gives the zero Trace; a malformed
// traceparent or tracestate gives an error naming it (the W3C
// recommendation has a receiver ignore it and start a new trace).
func TraceFromHeaders(headers []byte) (workflow.Trace, error) {
	if len(headers) == 0 {
		return workflow.Trace{}, nil
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(headers, &h); err != nil {
		// Headers that are not an object (pgmq takes any JSON) carry no
		// trace context.
		return workflow.Trace{}, nil //nolint:nilerr // not an object: no trace headers
	}
	parent, err := headerString(h, HeaderTraceParent)
	if err != nil {
		return workflow.Trace{}, err
	}
	state, err := headerString(h, HeaderTraceState)
	if err != nil {
		return workflow.Trace{}, err
	}
	return workflow.ParseTrace(parent, state)
}

func headerString(h map[string]json.RawMessage, name string) (string, error) {
	raw, ok := h[name]
	if !ok || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("header %s is not a string", name)
	}
	return s, nil
}

// TraceHeaders is t as message headers: nil for the zero Trace.
func TraceHeaders(t workflow.Trace) []byte {
	if t.IsZero() {
		return nil
	}
	h := map[string]string{HeaderTraceParent: t.Parent}
	if t.State != "" {
		h[HeaderTraceState] = t.State
	}
	b, _ := json.Marshal(h) // a map of strings always encodes
	return b
}
