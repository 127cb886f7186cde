package testsupport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binaryPrefix names the folders BuildBinary builds into, followed by the
// building process's pid, so a later run can recognise a dead process's
// leftovers and remove them.
const binaryPrefix = "tasker-test-bin-"

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// BuildBinary builds the tasker command once per test process, into a
// temporary folder, and returns the binary's path. The folder outlives the
// test that asked first (later tests use the binary too); folders left by
// test processes that have ended are removed by the next build.
func BuildBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		began := time.Now()
		buildPath, buildErr = buildBinary()
		if buildErr == nil {
			t.Logf("built %s in %s", buildPath, time.Since(began).Round(time.Millisecond))
		}
	})
	if buildErr != nil {
		t.Fatalf("building the tasker binary: %v", buildErr)
	}
	return buildPath
}

func buildBinary() (string, error) {
	removeStaleBinaries()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goroot := os.Getenv("GOROOT")
		if goroot == "" {
			return "", errors.New("no go command on PATH and GOROOT is not set")
		}
		goBin = filepath.Join(goroot, "bin", "go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("the tests do not run inside the tasker module")
	}
	dir, err := os.MkdirTemp("", binaryPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "tasker")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

// removeStaleBinaries removes the build folders of test processes that are
// no longer running.
func removeStaleBinaries() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binaryPrefix+"*"))
	for _, dir := range dirs {
		pidText, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(dir), binaryPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			_ = os.RemoveAll(dir)
		}
	}
}

// Process is a program started by a test: its output is captured (and
// shown when the test fails), and it is killed when the test ends if it is
// still running.
type Process struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	out  *outputBuffer
	done chan struct{}
	// Set before done is closed.
	state   *os.ProcessState
	waitErr error
	// cursor is how far WaitForOutput has read.
	cursor int64
}

// StartProcess starts bin with args in dir (the test's working folder when
// empty). Its environment is the test's plus env ("KEY=value"; later
// entries win).
func StartProcess(t testing.TB, bin string, args, env []string, dir string) *Process {
	t.Helper()
	p := &Process{t: t, name: filepath.Base(bin), out: newOutputBuffer(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// A group of its own, so the cleanup can kill whatever it started too.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Output copying ends at most this long after the process exits, even
	// if a child of it keeps the pipe open.
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.state = p.cmd.ProcessState
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			p.waitErr = err
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				t.Errorf("%s (pid %d) did not end after SIGKILL", p.name, p.Pid())
			}
		}
		if t.Failed() {
			t.Logf("output of %s (pid %d), last %d bytes:\n%s", p.name, p.Pid(), outputShown, p.Tail(outputShown))
		}
	})
	return p
}

// outputShown is how much of a process's output a failed test shows.
const outputShown = 64 << 10

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL to the process (not its children: a crash).
func (p *Process) Kill() { p.Signal(syscall.SIGKILL) }

// Signal sends sig to the process. Signalling a process that has ended is
// not an error.
func (p *Process) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("signalling %s (pid %d) with %v: %v", p.name, p.Pid(), sig, err)
	}
}

// Wait waits up to timeout for the process to end and returns its exit
// code: -1 when a signal ended it. The error says it did not end in time, or
// that waiting failed; a non-zero exit is not an error.
func (p *Process) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s (pid %d) still running after %s", p.name, p.Pid(), timeout)
	}
	if p.waitErr != nil {
		return 0, fmt.Errorf("waiting for %s (pid %d): %w", p.name, p.Pid(), p.waitErr)
	}
	return p.state.ExitCode(), nil
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// State is how the process ended ("signal: killed", "exit status 1"), or
// "running".
func (p *Process) State() string {
	if !p.Exited() || p.state == nil {
		return "running"
	}
	return p.state.String()
}

// Output is everything the process wrote to stdout and stderr so far (the
// oldest part dropped past a few MiB).
func (p *Process) Output() string { return p.out.String() }

// Tail is the last n bytes of Output.
func (p *Process) Tail(n int) string {
	s := p.out.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// WaitForOutput waits until the process writes a line that match accepts
// and returns that line. Lines already seen by an earlier WaitForOutput are
// not looked at again. The test fails if the process ends first or timeout
// passes.
func (p *Process) WaitForOutput(t testing.TB, timeout time.Duration, what string, match func(line string) bool) string {
	t.Helper()
	var found string
	WaitFor(t, timeout, fmt.Sprintf("%s (pid %d) to log %s", p.name, p.Pid(), what), func() (bool, error) {
		exited := p.Exited() // before reading, so the final output is seen
		lines, next := p.out.linesFrom(p.cursor)
		p.cursor = next
		for _, l := range lines {
			if match(l) {
				found = l
				return true, nil
			}
		}
		if exited {
			return false, fmt.Errorf("it ended first (%s); last output:\n%s", p.State(), p.Tail(4<<10))
		}
		return false, nil
	})
	return found
}

// outputBuffer collects a process's output, keeping the last maxOutput
// bytes.
type outputBuffer struct {
	mu      sync.Mutex
	buf     []byte
	dropped int64 // bytes dropped from the front
}

const maxOutput = 8 << 20

func newOutputBuffer() *outputBuffer { return &outputBuffer{} }

func (b *outputBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - maxOutput; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.dropped += int64(over)
	}
	return len(p), nil
}

func (b *outputBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// linesFrom returns the complete lines that start at or after offset (in
// bytes written since the start) and the offset after the last of them.
func (b *outputBuffer) linesFrom(offset int64) ([]string, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	start := max(offset-b.dropped, 0)
	rest := b.buf[start:]
	end := bytes.LastIndexByte(rest, '\n')
	if end < 0 {
		return nil, offset
	}
	lines := strings.Split(string(rest[:end]), "\n")
	return lines, b.dropped + start + int64(end) + 1
}
