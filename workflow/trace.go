package workflow

import (
	"context"
	"fmt"
	"strings"
)

// Trace is the W3C trace context a task request carried (the traceparent
// and tracestate headers): kept on the task, passed on every step and result
// message, and given to handlers, so that a trace started by the caller goes
// on through the steps.
type Trace struct {
	// Parent is the traceparent: version-traceid-parentid-flags, e.g.
	// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.
	Parent string
	// State is the tracestate, vendors' entries; empty when none came.
	State string
}

// IsZero reports whether no trace context came.
func (t Trace) IsZero() bool { return t.Parent == "" }

// TraceID is the trace id of Parent; empty when there is none.
func (t Trace) TraceID() string {
	if t.IsZero() {
		return ""
	}
	return t.Parent[3:35]
}

// maxTraceStateLen is the W3C limit on a tracestate header.
const maxTraceStateLen = 512

// ParseTrace checks a traceparent and tracestate as the W3C Trace Context
// recommendation defines them. A tracestate without a traceparent is
// refused, as the recommendation says a receiver must ignore it.
func ParseTrace(parent, state string) (Trace, error) {
	parent, state = strings.TrimSpace(parent), strings.TrimSpace(state)
	if parent == "" {
		if state != "" {
			return Trace{}, fmt.Errorf("tracestate without traceparent")
		}
		return Trace{}, nil
	}
	if len(parent) != 55 || parent[2] != '-' || parent[35] != '-' || parent[52] != '-' {
		return Trace{}, fmt.Errorf("traceparent %q: not version-traceid-parentid-flags (2-32-16-2 lower-case hex digits)", clip(parent))
	}
	version, traceID, parentID, flags := parent[0:2], parent[3:35], parent[36:52], parent[53:55]
	for _, f := range []struct{ name, v string }{{"version", version}, {"trace id", traceID}, {"parent id", parentID}, {"flags", flags}} {
		if !lowerHex(f.v) {
			return Trace{}, fmt.Errorf("traceparent %q: its %s is not lower-case hex", clip(parent), f.name)
		}
	}
	switch {
	case version != "00":
		return Trace{}, fmt.Errorf("traceparent %q: version %s is not 00", clip(parent), version)
	case strings.Trim(traceID, "0") == "":
		return Trace{}, fmt.Errorf("traceparent %q: the trace id is all zeros", clip(parent))
	case strings.Trim(parentID, "0") == "":
		return Trace{}, fmt.Errorf("traceparent %q: the parent id is all zeros", clip(parent))
	}
	if len(state) > maxTraceStateLen {
		return Trace{}, fmt.Errorf("tracestate of %d characters: more than %d", len(state), maxTraceStateLen)
	}
	for _, r := range state {
		if r < 0x20 || r > 0x7e {
			return Trace{}, fmt.Errorf("tracestate: character %q is not printable ASCII", r)
		}
	}
	return Trace{Parent: parent, State: state}, nil
}

func lowerHex(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

type traceKey struct{}

// WithTrace returns ctx carrying t, as a handler's context does.
func WithTrace(ctx context.Context, t Trace) context.Context {
	if t.IsZero() {
		return ctx
	}
	return context.WithValue(ctx, traceKey{}, t)
}

// TraceFrom returns the trace context a handler's ctx carries: the task
// request's, zero when it came without one.
func TraceFrom(ctx context.Context) Trace {
	t, _ := ctx.Value(traceKey{}).(Trace)
	return t
}
