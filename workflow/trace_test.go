package workflow

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseTrace(t *testing.T) {
	t.Parallel()
	good := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tr, err := ParseTrace(" "+good+" ", "congo=t61rcWkgMzE")
	require.NoError(t, err)
	require.Equal(t, Trace{Parent: good, State: "congo=t61rcWkgMzE"}, tr)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", tr.TraceID())

	tr, err = ParseTrace("", "")
	require.NoError(t, err)
	require.True(t, tr.IsZero())

	for _, bad := range []struct{ parent, state, says string }{
		{"", "a=b", "without traceparent"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "", "2-32-16-2"},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "", "trace id is not lower-case hex"},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", "version ff"},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "", "trace id is all zeros"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "", "parent id is all zeros"},
		{good, strings.Repeat("a", 513), "more than 512"},
		{good, "a=b\x01c", "printable"},
	} {
		_, err := ParseTrace(bad.parent, bad.state)
		require.ErrorContains(t, err, bad.says, bad)
	}
}

func TestTraceInContext(t *testing.T) {
	t.Parallel()
	require.True(t, TraceFrom(context.Background()).IsZero())
	tr := Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	require.Equal(t, tr, TraceFrom(WithTrace(context.Background(), tr)))
}
