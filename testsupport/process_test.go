package testsupport

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// envProcessHelper makes TestProcessHelper act as a long-running program.
const envProcessHelper = "TASKER_TEST_PROCESS_HELPER"

// TestProcessHelper, in a process started by TestProcess, says it is ready
// and runs until SIGTERM, on which it exits with status 3.
func TestProcessHelper(t *testing.T) {
	if os.Getenv(envProcessHelper) != "1" {
		t.Skip("runs in processes started by TestProcess")
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	fmt.Println("helper ready")
	<-term
	fmt.Fprintln(os.Stderr, "helper terminated")
	os.Exit(3)
}

func TestProcess(t *testing.T) {
	t.Parallel()
	start := func(t *testing.T) *Process {
		p := StartProcess(t, os.Args[0], []string{"-test.run=^TestProcessHelper$", "-test.count=1"},
			[]string{envProcessHelper + "=1"}, t.TempDir())
		line := p.WaitForOutput(t, 30*time.Second, "ready", func(l string) bool { return strings.HasPrefix(l, "helper ready") })
		require.Equal(t, "helper ready", line)
		return p
	}

	t.Run("signal", func(t *testing.T) {
		t.Parallel()
		p := start(t)
		require.False(t, p.Exited())
		_, err := p.Wait(50 * time.Millisecond)
		require.Error(t, err, "still running")
		p.Signal(syscall.SIGTERM)
		code, err := p.Wait(30 * time.Second)
		require.NoError(t, err)
		require.Equal(t, 3, code)
		require.Contains(t, p.Output(), "helper terminated")
		require.Equal(t, "exit status 3", p.State())
	})

	t.Run("kill", func(t *testing.T) {
		t.Parallel()
		p := start(t)
		p.Kill()
		code, err := p.Wait(30 * time.Second)
		require.NoError(t, err)
		require.Equal(t, -1, code)
		require.Equal(t, "signal: killed", p.State())
		p.Kill() // killing an ended process is harmless
	})
}

func TestBuildBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the tasker binary")
	}
	t.Parallel()
	bin := BuildBinary(t)
	require.Equal(t, bin, BuildBinary(t), "built once")
	p := StartProcess(t, bin, []string{"version"}, nil, "")
	code, err := p.Wait(30 * time.Second)
	require.NoError(t, err)
	require.Equal(t, 0, code, p.Output())
	require.True(t, strings.HasPrefix(p.Output(), "tasker "), p.Output())
}

func TestOutputBufferLines(t *testing.T) {
	t.Parallel()
	b := newOutputBuffer()
	_, _ = b.Write([]byte("one\ntw"))
	lines, next := b.linesFrom(0)
	require.Equal(t, []string{"one"}, lines)
	lines, next2 := b.linesFrom(next)
	require.Empty(t, lines)
	require.Equal(t, next, next2)
	_, _ = b.Write([]byte("o\nthree\n"))
	lines, _ = b.linesFrom(next)
	require.Equal(t, []string{"two", "three"}, lines)
}
