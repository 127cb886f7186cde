package workflow

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		s                   string
		namespace, name, id bool
	}{
		{"payments", true, true, true},
		{"a1_b", true, true, true},
		{"", false, false, false},
		{"1a", false, false, false},
		{"Payments", false, false, false},
		{"a-b", false, false, false},
		{strings.Repeat("n", MaxNamespaceLen), true, true, true},
		{strings.Repeat("n", MaxNamespaceLen+1), false, true, true},
		{strings.Repeat("n", MaxNameLen+1), false, false, true},
	} {
		require.Equal(t, tc.namespace, ValidNamespace(tc.s), "namespace %q", tc.s)
		require.Equal(t, tc.name, ValidName(tc.s), "name %q", tc.s)
		require.Equal(t, tc.id, ValidIdent(tc.s), "ident %q", tc.s)
	}
	for v, ok := range map[string]bool{
		"1.2.3": true, "0.0.1": true, "1.0.0-rc.1": true, "2.0.0-alpha-2.x": true,
		"1.0": false, "01.0.0": false, "v1.0.0": false, "1.0.0-": false, "1.0.0+build": false,
	} {
		require.Equal(t, ok, ValidVersion(v), v)
	}
}

func TestJSONDepth(t *testing.T) {
	for text, want := range map[string]int{
		`1`: 0, `"[{"`: 0, `[]`: 1, `{"a": [1, {"b": "]]]"}]}`: 3, `"\"[" `: 0, `[["\\"], [[]]]`: 3,
		strings.Repeat("[", 20000) + strings.Repeat("]", 20000): 20000,
	} {
		require.Equal(t, want, JSONDepth([]byte(text)), text[:min(len(text), 20)])
	}
	se := CheckResult("h", []byte(strings.Repeat("[", MaxJSONDepth+1)+strings.Repeat("]", MaxJSONDepth+1)), 0)
	require.NotNil(t, se)
	require.Equal(t, KindInvalidResult, se.Kind)
	require.Contains(t, se.Message, "levels deep")
	require.Nil(t, CheckResult("h", []byte(strings.Repeat("[", MaxJSONDepth)+strings.Repeat("]", MaxJSONDepth)), 0))
}
