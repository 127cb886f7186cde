package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/bootstrap/pgserver"
	"github.com/tasker-run/tasker/testsupport"
)

// These tests run the tasker binary as a user would: built once per test
// binary, started as a subprocess, talked to through its CLI and HTTP.

// TestMain releases the test PostgreSQL of the package's database tests.
func TestMain(m *testing.M) { testsupport.Main(m) }

// cleanEnv is this process's environment without any TASKER_ variable, so a
// child sees only what a test gives it.
func cleanEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "TASKER_") })
	return append(env, extra...)
}

// tasker runs a short command to its end and returns its combined output and
// exit code.
func tasker(t *testing.T, dir string, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testsupport.BuildBinary(t), args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	require.NoError(t, err, "tasker %s", strings.Join(args, " "))
	return string(out), 0
}

func TestVersionCommand(t *testing.T) {
	t.Parallel()
	out, code := tasker(t, t.TempDir(), cleanEnv(), "version")
	require.Equal(t, 0, code, out)
	require.Regexp(t, `^tasker \S+\n$`, out)
}

func TestConfigCheckUnknownKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "tasker.toml")
	require.NoError(t, os.WriteFile(path, []byte("[queue]\npoll_interval = \"50ms\"\nbogus_key = 1\n"), 0o644))
	out, code := tasker(t, dir, cleanEnv(), "config", "check", "--config", path)
	require.NotEqual(t, 0, code, out)
	require.Contains(t, out, "queue.bogus_key")

	good := filepath.Join(dir, "good.toml")
	require.NoError(t, os.WriteFile(good, []byte("[queue]\npoll_interval = \"50ms\"\n"), 0o644))
	out, code = tasker(t, dir, cleanEnv(), "config", "check", "--config", good)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, `poll_interval = "50ms"`)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// postmasterPID reads the pid of the server owning dataDir; ok is false when
// there is no postmaster.pid.
func postmasterPID(t *testing.T, dataDir string) (int, bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false
	}
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	require.NoError(t, err)
	return pid, true
}

// processAlive reports whether pid is a live process (a zombie is not).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	i := strings.LastIndexByte(string(stat), ')')
	fields := strings.Fields(string(stat[i+1:]))
	return len(fields) == 0 || (fields[0] != "Z" && fields[0] != "X")
}

// TestNodeCommand runs `tasker node` on the embedded PostgreSQL (no database
// configured), submits through `tasker submit`, reads the actor tree, and
// stops the node with SIGTERM.
func TestNodeCommand(t *testing.T) {
	t.Parallel()
	// The embedded server runs as the postgres system user when we are root:
	// every folder above its data folder must be searchable by it, which
	// t.TempDir (0700) is not.
	dir, err := os.MkdirTemp("", "tasker-node-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	dataDir := filepath.Join(dir, ".tasker", "pgdata")
	runNodeCommand(t, dir, dataDir)
	_, err = os.Stat(filepath.Join(dataDir, "PG_VERSION"))
	require.NoError(t, err, "the embedded cluster lives under the working folder")
}

// TestNodeCommandAsRootInClosedFolder is the README's first command as root
// in a folder the postgres account cannot enter, like a clone in /root: the
// embedded cluster goes under /var/lib/tasker, where the CLI commands find
// it too.
func TestNodeCommandAsRootInClosedFolder(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the server to the postgres account")
	}
	home, err := os.MkdirTemp("", "tasker-home-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	require.NoError(t, os.Chmod(home, 0o700)) // as /root is
	dir := filepath.Join(home, "tasker")
	require.NoError(t, os.Mkdir(dir, 0o755))
	dataDir, err := pgserver.DataDirFor(pgserver.Options{DataDir: filepath.Join(dir, ".tasker", "pgdata")})
	require.NoError(t, err)
	require.Equal(t, pgserver.FallbackRootDefault, filepath.Dir(dataDir))
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	runNodeCommand(t, dir, dataDir)
	_, err = os.Stat(filepath.Join(dataDir, "PG_VERSION"))
	require.NoError(t, err, "the embedded cluster lives under %s", pgserver.FallbackRootDefault)
	require.NoDirExists(t, filepath.Join(dir, ".tasker", "pgdata"), "nothing is left where the server cannot go")
}

// runNodeCommand runs `tasker node` from dir on the embedded PostgreSQL of
// dataDir (no database configured), submits through `tasker submit`, reads
// the actor tree, and stops the node with SIGTERM.
func runNodeCommand(t *testing.T, dir, dataDir string) {
	began := time.Now()
	bin := testsupport.BuildBinary(t)
	built := time.Now()

	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	base := "http://" + addr
	env := cleanEnv("TASKER_ENV=test", "TASKER_HTTP_LISTEN="+addr, "TASKER_LOG_FORMAT=json")

	logPath := filepath.Join(dir, "node.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("node log:\n%s", b)
		}
	})
	node := exec.Command(bin, "node")
	node.Dir, node.Env, node.Stdout, node.Stderr = dir, env, logFile, logFile
	require.NoError(t, node.Start())
	require.NoError(t, logFile.Close())
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = node.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// Only when the test failed before its own SIGTERM: stop what we
		// started, by pid.
		select {
		case <-exited:
		default:
			_ = node.Process.Kill()
			<-exited
		}
		if pid, ok := postmasterPID(t, dataDir); ok && processAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGINT) // fast shutdown
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for deadline := time.Now().Add(30 * time.Second); processAlive(pid) && time.Now().Before(deadline); {
				<-tick.C
			}
		}
	})

	httpClient := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (int, []byte, error) {
		resp, err := httpClient.Get(base + path)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, body, err
	}
	testsupport.WaitFor(t, 90*time.Second, "the node to answer /health/ready with 200", func() (bool, error) {
		select {
		case <-exited:
			return false, fmt.Errorf("the node exited: %v", waitErr)
		default:
		}
		code, _, err := get("/health/ready")
		return err == nil && code == http.StatusOK, nil
	})
	ready := time.Since(built)

	submitted := time.Now()
	out, code := tasker(t, dir, env, "submit", "--namespace", "linear_workflow", "--name", "mathematical_sequence",
		"--context", `{"even_number": 6}`, "--wait")
	require.Equal(t, 0, code, out)
	require.Regexp(t, regexp.MustCompile(`(?m)^task \S+ linear_workflow/mathematical_sequence@1\.0\.0: complete$`), out)
	for step, value := range map[string]string{"linear_step_1": "36", "linear_step_2": "46", "linear_step_3": "138", "linear_step_4": "69"} {
		require.Regexp(t, regexp.MustCompile(`(?m)^\s+`+step+`\s+complete\s+attempts=1 result=\{"result": ?`+value+`\}$`), out)
	}
	submitTook := time.Since(submitted)

	out, code = tasker(t, dir, env, "submit", "--namespace", "linear_workflow", "--name", "mathematical_sequence",
		"--context", `{"even_number": 7}`, "--wait")
	require.NotEqual(t, 0, code, out)
	require.Contains(t, out, "task ended in error")
	require.Regexp(t, regexp.MustCompile(`(?m)^\s+linear_step_1\s+error\s+attempts=1 error=invalid_input: context\.even_number must be even, got 7$`), out)

	out, code = tasker(t, dir, env, "submit", "--namespace", "no_such_namespace", "--name", "mathematical_sequence", "--wait")
	require.NotEqual(t, 0, code, out)
	require.Contains(t, out, `task request rejected: unknown namespace "no_such_namespace"`)

	code, body, err := get("/debug/actors")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code, string(body))
	var tree struct {
		Actors []actors.Node `json:"actors"`
	}
	require.NoError(t, json.Unmarshal(body, &tree), string(body))
	require.Len(t, tree.Actors, 1)
	root := tree.Actors[0]
	require.Equal(t, actors.KindRoot, root.Kind)
	kinds := map[string]string{}
	var walk func(n actors.Node)
	walk = func(n actors.Node) {
		kinds[n.PID] = n.Kind
		require.Equal(t, actors.StatusRunning, n.Status, n.PID)
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(root)
	require.Equal(t, actors.KindTaskRequests, kinds["root/task_requests"])
	require.Equal(t, actors.KindStepResults, kinds["root/step_results"])
	namespaces := []string{"diamond_workflow", "fulfillment", "linear_workflow", "mixed_dag_workflow", "tree_workflow"}
	for _, ns := range namespaces {
		sup := "root/ns-" + ns
		require.Equal(t, actors.KindNamespace, kinds[sup], ns)
		require.Equal(t, actors.KindPoller, kinds[sup+"/poller"], ns)
		require.Equal(t, actors.KindBreaker, kinds[sup+"/breaker"], ns)
		require.Equal(t, actors.KindWorker, kinds[sup+"/worker-0"], ns)
	}

	out, code = tasker(t, dir, env, "tree", "--addr", addr)
	require.Equal(t, 0, code, out)
	require.True(t, strings.HasPrefix(out, "root [root_supervisor] running"), out)
	for _, want := range []string{
		"├── task_requests [task_request_actor] running queue=orchestration_task_requests",
		"├── step_results [step_result_actor] running queue=orchestration_step_results",
		"├── ns-linear_workflow [namespace_supervisor] running",
		"│   ├── breaker [circuit_breaker] running breaker=closed",
		"│   ├── poller [poller] running queue=linear_workflow_queue",
		"│   ├── worker-0 [worker] running",
	} {
		require.Contains(t, out, want)
	}

	// Without --addr, tree asks the node of the configuration (here
	// TASKER_HTTP_LISTEN).
	again, code := tasker(t, dir, env, "tree")
	require.Equal(t, 0, code, again)
	require.True(t, strings.HasPrefix(again, "root [root_supervisor] running"), again)

	pid, ok := postmasterPID(t, dataDir)
	require.True(t, ok, "the embedded server is running")
	require.True(t, processAlive(pid))

	stopAsked := time.Now()
	require.NoError(t, node.Process.Signal(syscall.SIGTERM))
	const shutdownTimeout = 5 * time.Second // shutdown.timeout of the test environment
	select {
	case <-exited:
	case <-time.After(shutdownTimeout):
		t.Fatalf("the node did not exit within %s of SIGTERM", shutdownTimeout)
	}
	stopTook := time.Since(stopAsked)
	require.NoError(t, waitErr, "exit code 0")
	require.False(t, processAlive(pid), "the embedded postmaster (pid %d) is gone", pid)
	_, ok = postmasterPID(t, dataDir)
	require.False(t, ok, "postmaster.pid is removed")
	logText, err := os.ReadFile(logPath)
	require.NoError(t, err)
	require.Contains(t, string(logText), `"msg":"stopped PostgreSQL"`)
	require.Contains(t, string(logText), `"msg":"node stopped"`)

	t.Logf("tasker node on the embedded PostgreSQL: ready %s after its start (initdb included), submit --wait %s, stop on SIGTERM %s, whole test %s",
		ready.Round(time.Millisecond), submitTook.Round(time.Millisecond), stopTook.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}
