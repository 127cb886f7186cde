// Package workers_test runs the example workers in other languages against a
// node whose linear and diamond namespaces are declared external.
package workers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

const (
	python = "/usr/bin/python3"
	// vt is the visibility timeout the Python workers read with (--vt): how
	// soon a killed worker's step comes back. An external namespace's
	// visibility_timeout is not used: its workers choose their own.
	vt   = "3"
	wait = 60 * time.Second
)

// need skips the test when a tool is missing, saying what to install; under
// CI (CI set) it fails instead.
func need(t *testing.T, ok bool, install string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("missing under CI: %s", install)
	}
	t.Skipf("skipped: %s", install)
}

func havePython() bool {
	return exec.Command(python, "-c", "import psycopg").Run() == nil
}

// nodeWorkerDir returns the Node example's folder with its packages
// installed (npm ci when they are missing and npm is there).
func nodeWorkerDir(t *testing.T) (string, bool) {
	dir, err := filepath.Abs("node")
	require.NoError(t, err)
	if _, err := exec.LookPath("node"); err != nil {
		return dir, false
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "pg")); err == nil {
		return dir, true
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return dir, false
	}
	out, err := exec.Command("npm", "ci", "--prefix", dir, "--no-audit", "--no-fund").CombinedOutput()
	if err != nil {
		t.Logf("npm ci: %v: %s", err, out)
		return dir, false
	}
	return dir, true
}

// worker is an example worker process whose output goes to the test log.
type worker struct {
	cmd *exec.Cmd
	// done is closed when the process has exited, err set to how.
	done chan struct{}
	err  error
}

// startWorker starts an example worker. At the end of the test it is sent
// SIGTERM (SIGKILL 15s later) and waited for.
func startWorker(t *testing.T, env []string, name string, args ...string) *worker {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	cmd.Env = append(os.Environ(), env...)
	w := &testWriter{t: t, prefix: filepath.Base(args[0]) + ": "}
	cmd.Stdout, cmd.Stderr = w, w
	require.NoError(t, cmd.Start())
	wk := &worker{cmd: cmd, done: make(chan struct{})}
	go func() { wk.err = cmd.Wait(); close(wk.done) }()
	t.Cleanup(func() { <-wk.done; w.close() })
	return wk
}

// stop sends the worker SIGTERM and requires a clean exit.
func (wk *worker) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, wk.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-wk.done:
		require.NoError(t, wk.err, "exit on SIGTERM")
	case <-time.After(wait):
		t.Fatalf("%s did not exit within %s of SIGTERM", wk.cmd.Path, wait)
	}
}

// testWriter logs what a worker writes, a line at a time.
type testWriter struct {
	mu     sync.Mutex
	t      *testing.T
	prefix string
	buf    []byte
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if !w.closed {
			w.t.Log(w.prefix + string(w.buf[:i]))
		}
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *testWriter) close() { w.mu.Lock(); w.closed = true; w.mu.Unlock() }

// startExternalNode starts a node on url whose linear and diamond namespaces
// are external.
func startExternalNode(t *testing.T, url string) *bootstrap.Node {
	return testsupport.StartNodeOn(t, url, testsupport.WithConfig(func(cfg *config.Config) {
		cfg.Namespaces = map[string]config.Namespace{
			testsupport.LinearNamespace:  {Workers: 1, External: true},
			testsupport.DiamondNamespace: {Workers: 1, External: true},
		}
	}))
}

func submit(t *testing.T, node *bootstrap.Node, namespace, name string, n int) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	body, err := json.Marshal(map[string]any{"request_id": id, "namespace": namespace, "name": name,
		"context": map[string]any{"even_number": n}})
	require.NoError(t, err)
	_, err = node.Pool().Exec(t.Context(), `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`, string(body))
	require.NoError(t, err)
	return id
}

func waitTask(t *testing.T, node *bootstrap.Node, id uuid.UUID, state workflow.TaskState) store.TaskDetail {
	t.Helper()
	testsupport.WaitFor(t, wait, fmt.Sprintf("task %s to be %s", id, state), func() (bool, error) {
		task, err := node.Store().TaskGet(t.Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return err == nil && task.State == state, err
	})
	d, err := node.Store().TaskShow(t.Context(), id)
	require.NoError(t, err)
	return d
}

func results(t *testing.T, d store.TaskDetail) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range d.Steps {
		var r struct{ Result float64 }
		require.NoError(t, json.Unmarshal(s.Result, &r), "step %s: %s", s.Name, s.Result)
		out[s.Name] = r.Result
	}
	return out
}

func nodeIDs(d store.TaskDetail) map[string]bool {
	ids := map[string]bool{}
	for _, tr := range d.StepTransitions {
		if tr.To == string(workflow.StepStateInProgress) {
			ids[tr.NodeID] = true
		}
	}
	return ids
}

// TestExampleWorkers: the Python worker runs the linear workflow and the Node
// worker the diamond, to DESIGN.md's values, through the SQL contract.
func TestExampleWorkers(t *testing.T) {
	t.Parallel()
	need(t, havePython(), "Python 3 with psycopg 3: apt-get install python3-psycopg")
	dir, ok := nodeWorkerDir(t)
	need(t, ok, "Node.js and npm for the pg package: apt-get install nodejs npm (the test runs npm ci)")

	url := testsupport.NewDatabaseURL(t)
	node := startExternalNode(t, url)
	require.ElementsMatch(t, []string{testsupport.LinearNamespace, testsupport.DiamondNamespace},
		node.Health(t.Context(), false).External, "health names the external namespaces")
	env := []string{"TASKER_DATABASE_URL=" + url}
	py := startWorker(t, env, python, "python/worker.py", "--poll", "1", testsupport.LinearNamespace)
	js := startWorker(t, env, "node", filepath.Join(dir, "worker.js"), "--poll", "1", testsupport.DiamondNamespace)

	linear := submit(t, node, testsupport.LinearNamespace, testsupport.LinearName, 6)
	diamond := submit(t, node, testsupport.DiamondNamespace, testsupport.DiamondName, 4)

	d := waitTask(t, node, linear, workflow.TaskStateComplete)
	require.Equal(t, map[string]float64{"linear_step_1": 36, "linear_step_2": 46, "linear_step_3": 138, "linear_step_4": 69}, results(t, d))
	require.Equal(t, map[string]bool{"external:python-worker": true}, nodeIDs(d))

	d = waitTask(t, node, diamond, workflow.TaskStateComplete)
	require.Equal(t, map[string]float64{"diamond_start": 16, "diamond_branch_b": 41, "diamond_branch_c": 32, "diamond_end": 36.5}, results(t, d))
	require.Equal(t, map[string]bool{"external:node-worker": true}, nodeIDs(d))

	// A worker given a bad even_number fails the task for good, saying why.
	bad := submit(t, node, testsupport.LinearNamespace, testsupport.LinearName, 7)
	d = waitTask(t, node, bad, workflow.TaskStateError)
	require.Contains(t, string(d.Steps[0].Error), "must be even")

	// Both stop cleanly on SIGTERM.
	py.stop(t)
	js.stop(t)
}

// TestPythonWorkerKilledMidStep: a Python worker SIGKILLed while it runs a
// step loses nothing: the message comes back after the visibility timeout,
// another worker runs the next attempt, and the task completes once; the
// killed worker's attempt, reported late, is refused with TK409 and changes
// nothing.
func TestPythonWorkerKilledMidStep(t *testing.T) {
	t.Parallel()
	need(t, havePython(), "Python 3 with psycopg 3: apt-get install python3-psycopg")
	url := testsupport.NewDatabaseURL(t)
	node := startExternalNode(t, url)
	env := []string{"TASKER_DATABASE_URL=" + url}
	slow := startWorker(t, append(env, "TASKER_EXAMPLE_SLOW_STEP=linear_step_2:600000"), python,
		"python/worker.py", "--name", "killed", "--poll", "1", "--vt", vt, testsupport.LinearNamespace)

	id := submit(t, node, testsupport.LinearNamespace, testsupport.LinearName, 6)
	var stepUUID uuid.UUID
	testsupport.WaitFor(t, wait, "linear_step_2 to be in progress", func() (bool, error) {
		d, err := node.Store().TaskShow(t.Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		for _, s := range d.Steps {
			if s.Name == "linear_step_2" && s.State == workflow.StepStateInProgress {
				stepUUID = s.StepUUID
				return true, nil
			}
		}
		return false, err
	})
	startWorker(t, env, python, "python/worker.py", "--name", "second", "--poll", "1", "--vt", vt, testsupport.LinearNamespace)

	// While the slow worker lives, its heartbeats keep the message from the
	// second worker: past the visibility time the message showed, it has
	// been extended and read once.
	pool := node.Pool()
	msg := `SELECT vt, read_ct, now() FROM pgmq.q_` + testsupport.LinearNamespace + `_queue WHERE message->>'step_uuid' = $1`
	var seen time.Time
	var reads int
	var now time.Time
	require.NoError(t, pool.QueryRow(t.Context(), msg, stepUUID.String()).Scan(&seen, &reads, &now))
	testsupport.WaitFor(t, wait, "the database clock to pass the message's visibility time", func() (bool, error) {
		err := pool.QueryRow(t.Context(), `SELECT now()`).Scan(&now)
		return now.After(seen.Add(time.Second)), err
	})
	var extended time.Time
	require.NoError(t, pool.QueryRow(t.Context(), msg, stepUUID.String()).Scan(&extended, &reads, &now),
		"the message is still in the queue, held by the slow worker's heartbeats")
	require.True(t, extended.After(now), "the heartbeat extended the message: vt %s, now %s", extended, now)
	require.Equal(t, 1, reads, "the message was read once")
	d, err := node.Store().TaskShow(t.Context(), id)
	require.NoError(t, err)
	for _, s := range d.Steps {
		if s.Name == "linear_step_2" {
			require.Equal(t, 1, s.Attempts, "no second attempt while the first worker lives")
		}
	}

	require.NoError(t, slow.cmd.Process.Kill())
	<-slow.done
	d = waitTask(t, node, id, workflow.TaskStateComplete)
	require.Equal(t, 69.0, results(t, d)["linear_step_4"])
	for _, s := range d.Steps {
		want := 1
		if s.Name == "linear_step_2" {
			want = 2
		}
		require.Equal(t, want, s.Attempts, s.Name)
	}
	// Attempt 1 of linear_step_2 was the killed worker's, attempt 2 the
	// second's, taken again from in_progress; each step started once else.
	type start struct {
		step, from, node string
		attempt          int
	}
	var starts []start
	for _, tr := range d.StepTransitions {
		if tr.To == string(workflow.StepStateInProgress) {
			starts = append(starts, start{tr.StepName, tr.From, tr.NodeID, tr.Attempt})
		}
	}
	require.Equal(t, []start{
		{"linear_step_1", "enqueued", "external:killed", 1},
		{"linear_step_2", "enqueued", "external:killed", 1},
		{"linear_step_2", "in_progress", "external:second", 2},
		{"linear_step_3", "enqueued", "external:second", 1},
		{"linear_step_4", "enqueued", "external:second", 1},
	}, starts)
	var completes int
	for _, tr := range d.TaskTransitions {
		if tr.To == string(workflow.TaskStateComplete) {
			completes++
		}
	}
	require.Equal(t, 1, completes, "the task completes once")

	// The killed worker's attempt 1, reported now.
	before, err := node.Store().TaskShow(t.Context(), id)
	require.NoError(t, err)
	_, err = node.Pool().Exec(context.Background(), `SELECT * FROM tasker.step_complete($1, 1, $2, 1, '{"result": 0}')`,
		testsupport.LinearNamespace+"_queue", stepUUID)
	var pe *pgconn.PgError
	require.True(t, errors.As(err, &pe), "a stale attempt is refused: %v", err)
	require.Equal(t, "TK409", pe.Code)
	require.Contains(t, pe.Message, "attempt 1 of step")
	after, err := node.Store().TaskShow(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, before, after, "the refusal changes nothing")
}
