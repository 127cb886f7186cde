package store

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// intern gives back the texts it has seen without allocating, keeps at most
// internMax of them and none longer than internMaxLen, and scans NULL as
// not valid.
func TestInternKeepsShortTexts(t *testing.T) {
	in := []byte("in_progress")
	require.Equal(t, "in_progress", intern(in))
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = intern(in) }))

	long := []byte(strings.Repeat("x", internMaxLen+1))
	require.Equal(t, string(long), intern(long))
	_, kept := interned.Load()[string(long)]
	require.False(t, kept, "a text longer than internMaxLen is not kept")

	for i := range 2 * internMax {
		v := "step_" + strconv.Itoa(i)
		require.Equal(t, v, intern([]byte(v)))
	}
	require.LessOrEqual(t, interned.Len(), internMax)

	var txt internedText
	require.NoError(t, txt.ScanBytes([]byte("complete")))
	require.Equal(t, internedText{String: "complete", Valid: true}, txt)
	require.NoError(t, txt.ScanBytes(nil))
	require.Equal(t, internedText{}, txt)
}
