package bootstrap_test

// Resilience: faults injected into a running node — crashing actors, a
// broken namespace queue, poison and stale messages, misbehaving handlers
// and downstream hosts, a configuration reload — and what the node does
// about them, observed through the database and the node's own endpoints.
// Top-level names carry an "rs" prefix: other files of this package define
// their own helpers.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
	"github.com/tasker-run/tasker/workflow/handlers"
)

// rsWait bounds every wait of these tests.
const rsWait = 20 * time.Second

// rsNode is a test node with the fault injectors installed.
type rsNode struct {
	t      *testing.T
	node   *bootstrap.Node
	faults *testsupport.Faults
	logs   *rsLogBuffer
}

// rsSetup describes a test node: its templates (file name → TOML), its
// extra handlers, and changes to the test configuration.
type rsSetup struct {
	templates  map[string]string
	handlers   map[string]workflow.Handler
	configure  func(cfg *config.Config)
	configPath string
}

// rsStart starts a node that runs only the given templates (no bundled
// ones), with three workers per namespace unless configured otherwise.
func rsStart(t *testing.T, s rsSetup) *rsNode {
	t.Helper()
	n := &rsNode{t: t, faults: testsupport.NewFaults(), logs: &rsLogBuffer{}}
	fsys := fstest.MapFS{}
	for name, text := range s.templates {
		fsys[name] = &fstest.MapFile{Data: []byte(text)}
	}
	n.node = testsupport.StartNode(t,
		testsupport.WithFaults(n.faults),
		testsupport.WithConfig(func(cfg *config.Config) {
			cfg.Templates.Bundled = false
			cfg.Namespaces = map[string]config.Namespace{}
			if s.configure != nil {
				s.configure(cfg)
			}
		}),
		testsupport.WithOptions(func(opts *bootstrap.Options) {
			opts.Templates = append(opts.Templates, fsys)
			opts.ConfigPath = s.configPath
			opts.LogOutput = io.MultiWriter(opts.LogOutput, n.logs)
			opts.Handlers = func(reg *workflow.Registry) error {
				for name, h := range s.handlers {
					if err := reg.Register(name, h); err != nil {
						return err
					}
				}
				return nil
			}
		}),
	)
	return n
}

// rsOneStep is a template of one step, "only", running handler; extra is
// appended to the step's table (keys, then a [steps.retry] table if any).
func rsOneStep(namespace, name, handler, extra string) string {
	return fmt.Sprintf(`namespace = %q
name = %q
version = "1.0.0"

[[steps]]
name = "only"
handler = %q
%s
`, namespace, name, handler, extra)
}

// with is n reporting to t (a subtest).
func (n *rsNode) with(t *testing.T) *rsNode {
	c := *n
	c.t = t
	return &c
}

func rsCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), rsWait)
}

// send puts a task request on the queue, as any pgmq client would, and
// returns its request id. It does not fail the test, so a feeder goroutine
// may call it.
func (n *rsNode) send(ctx context.Context, namespace, name string) (uuid.UUID, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.Nil, err
	}
	body, err := queue.TaskRequest{RequestID: id, Namespace: namespace, Name: name, Context: `{}`}.Encode()
	if err != nil {
		return uuid.Nil, err
	}
	_, err = n.node.Store().Queue().Send(ctx, queue.TaskRequestsQueue, body, 0)
	return id, err
}

func (n *rsNode) submit(namespace, name string) uuid.UUID {
	n.t.Helper()
	ctx, cancel := rsCtx()
	defer cancel()
	id, err := n.send(ctx, namespace, name)
	require.NoError(n.t, err)
	return id
}

// show returns the task of a request, ok false while it does not exist.
func (n *rsNode) show(requestID uuid.UUID) (store.TaskDetail, bool) {
	n.t.Helper()
	ctx, cancel := rsCtx()
	defer cancel()
	d, err := n.node.Store().TaskShow(ctx, requestID)
	if err != nil {
		require.ErrorIs(n.t, err, store.ErrNotFound)
		return d, false
	}
	return d, true
}

// waitTask waits for the task of a request to reach state.
func (n *rsNode) waitTask(requestID uuid.UUID, state workflow.TaskState) store.TaskDetail {
	n.t.Helper()
	var d store.TaskDetail
	testsupport.WaitFor(n.t, rsWait, fmt.Sprintf("task of request %s to be %s", requestID, state), func() (bool, error) {
		var ok bool
		d, ok = n.show(requestID)
		if ok && d.State.Terminal() && d.State != state {
			return false, fmt.Errorf("task ended %s: %s", d.State, rsSteps(d))
		}
		return ok && d.State == state, nil
	})
	return d
}

// rsSteps describes a task's steps for failure messages.
func rsSteps(d store.TaskDetail) string {
	var b strings.Builder
	for _, s := range d.Steps {
		fmt.Fprintf(&b, "[%s %s attempts=%d error=%s] ", s.Name, s.State, s.Attempts, s.Error)
	}
	return b.String()
}

// rsStepError is a step's stored error.
type rsStepError struct {
	Kind       string         `json:"kind"`
	Message    string         `json:"message"`
	Retryable  bool           `json:"retryable"`
	HTTPStatus int            `json:"http_status"`
	Metadata   map[string]any `json:"metadata"`
}

func rsErrorOf(t *testing.T, s store.Step) rsStepError {
	t.Helper()
	var e rsStepError
	require.NotEmpty(t, s.Error, "step %s has no error", s.Name)
	require.NoError(t, json.Unmarshal(s.Error, &e))
	return e
}

// get fetches a path of the node's HTTP endpoint.
func (n *rsNode) get(path string) (int, []byte) {
	n.t.Helper()
	ctx, cancel := rsCtx()
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.node.HTTPAddr()+path, nil)
	require.NoError(n.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(n.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(n.t, err)
	return resp.StatusCode, body
}

// ready is GET /health/ready.
func (n *rsNode) ready() (int, api.Health) {
	n.t.Helper()
	code, body := n.get("/health/ready")
	var h api.Health
	require.NoError(n.t, json.Unmarshal(body, &h), string(body))
	return code, h
}

// actors is GET /debug/actors, flattened by path.
func (n *rsNode) actors() map[string]actors.Node {
	n.t.Helper()
	code, body := n.get("/debug/actors")
	require.Equal(n.t, http.StatusOK, code, string(body))
	var doc struct {
		Actors []actors.Node `json:"actors"`
	}
	require.NoError(n.t, json.Unmarshal(body, &doc))
	out := map[string]actors.Node{}
	var walk func(ns []actors.Node)
	walk = func(ns []actors.Node) {
		for _, a := range ns {
			walk(a.Children)
			a.Children = nil
			out[a.PID] = a
		}
	}
	walk(doc.Actors)
	return out
}

// restarts lists the actors that restarted, as path → count.
func (n *rsNode) restarts() map[string]int {
	out := map[string]int{}
	for path, a := range n.actors() {
		if a.Restarts > 0 {
			out[path] = a.Restarts
		}
	}
	return out
}

// metric is the value of one sample of /metrics (name with its labels, as
// printed), and whether it is there.
func (n *rsNode) metric(sample string) (float64, bool) {
	n.t.Helper()
	code, body := n.get("/metrics")
	require.Equal(n.t, http.StatusOK, code)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(n.t, err, l)
			return f, true
		}
	}
	return 0, false
}

// count runs a counting query.
func (n *rsNode) count(sql string, args ...any) int {
	n.t.Helper()
	ctx, cancel := rsCtx()
	defer cancel()
	var c int
	require.NoError(n.t, n.node.Pool().QueryRow(ctx, sql, args...).Scan(&c))
	return c
}

// rsLogBuffer keeps the node's log for assertions.
type rsLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *rsLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *rsLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *rsLogBuffer) contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Contains(b.buf.String(), s)
}

// A panic in one actor restarts that actor alone — a namespace's poller,
// the task-request actor, the step-result actor — with the panic as its
// last failure, and the work it was doing still completes.
func TestCrashRestartsOnlyTheFailedActor(t *testing.T) {
	t.Parallel()
	n := rsStart(t, rsSetup{
		templates: map[string]string{
			"crash_a/job.toml": rsOneStep("crash_a", "job", "noop", ""),
			"crash_b/job.toml": rsOneStep("crash_b", "job", "noop", ""),
		},
		configure: func(cfg *config.Config) {
			// Redeliveries of the messages the crashes leave behind come
			// after one second instead of two.
			cfg.Queue.VisibilityTimeout = config.Duration(time.Second)
		},
	})
	want := map[string]int{}
	crash := func(t *testing.T, op, value, actor string) {
		t.Helper()
		n := n.with(t)
		n.faults.Panic(op, value, 1)
		id := n.submit("crash_a", "job")
		testsupport.WaitFor(t, rsWait, actor+" to be restarted", func() (bool, error) {
			a := n.actors()[actor]
			return a.Restarts == want[actor]+1 && a.Status == actors.StatusRunning, nil
		})
		want[actor]++
		require.Contains(t, n.actors()[actor].LastFailure, value)
		n.waitTask(id, workflow.TaskStateComplete)
		require.Equal(t, want, n.restarts(), "restart counts of the whole tree")
		n.waitTask(n.submit("crash_b", "job"), workflow.TaskStateComplete)
	}

	t.Run("namespace poller", func(t *testing.T) {
		crash(t, testsupport.OpRead(queue.NamespaceQueue("crash_a")), "injected poller panic", "root/ns-crash_a/poller")
	})
	t.Run("task-request actor", func(t *testing.T) {
		crash(t, testsupport.OpRequestAccept, "injected task-request panic", "root/task_requests")
	})
	t.Run("step-result actor", func(t *testing.T) {
		crash(t, testsupport.OpResultApply, "injected step-result panic", "root/step_results")
	})
	code, h := n.ready()
	require.Equal(t, http.StatusOK, code, "restarted actors leave the node ready: %v", h.Reasons)
}

// A crash loop climbs the tree: past the poller's restart intensity the
// namespace supervisor escalates and the root restarts the namespace; past
// the root's intensity the namespace is given up and the node is not ready,
// while the other namespaces keep completing tasks.
func TestCrashLoopEscalatesThenGivesUpNamespace(t *testing.T) {
	t.Parallel()
	n := rsStart(t, rsSetup{
		templates: map[string]string{
			"crash_a/job.toml": rsOneStep("crash_a", "job", "noop", ""),
			"crash_b/job.toml": rsOneStep("crash_b", "job", "noop", ""),
		},
		configure: func(cfg *config.Config) {
			cfg.Supervision = config.Supervision{MaxRestarts: 2, Window: config.Duration(time.Minute)}
		},
	})
	read := testsupport.OpRead(queue.NamespaceQueue("crash_a"))
	const ns = "root/ns-crash_a"

	// Three failures, one past the poller's intensity: one escalation.
	n.faults.Panic(read, "injected crash loop", 3)
	testsupport.WaitFor(t, rsWait, "the root to restart namespace crash_a", func() (bool, error) {
		a := n.actors()[ns]
		return a.Restarts == 1 && a.Status == actors.StatusRunning && !n.faults.Active(read), nil
	})
	require.Contains(t, n.actors()[ns].LastFailure, "injected crash loop")
	n.waitTask(n.submit("crash_a", "job"), workflow.TaskStateComplete)

	// A loop that does not end: two more escalations exceed the root's
	// intensity (2 in a minute) and crash_a is given up.
	n.faults.Panic(read, "injected crash loop", 0)
	var h api.Health
	testsupport.WaitFor(t, rsWait, "/health/ready to report crash_a given up", func() (bool, error) {
		var code int
		code, h = n.ready()
		return code == http.StatusServiceUnavailable && len(h.GaveUp) > 0, nil
	})
	require.Equal(t, []string{ns}, h.GaveUp)
	require.Contains(t, h.Reasons, ns+" gave up after repeated failures")
	testsupport.WaitFor(t, rsWait, "crash_a's actors to stop", func() (bool, error) {
		return n.actors()[ns+"/poller"].Status == actors.StatusStopped, nil
	})
	a := n.actors()[ns]
	require.Equal(t, actors.StatusGaveUp, a.Status)
	require.Equal(t, 2, a.Restarts)

	// The rest of the node is untouched and working.
	for path, a := range n.actors() {
		if !strings.HasPrefix(path, ns) {
			require.Zero(t, a.Restarts, "%s restarted", path)
		}
	}
	for range 3 {
		n.waitTask(n.submit("crash_b", "job"), workflow.TaskStateComplete)
	}
}

// A namespace whose queue breaks does not slow the others: its breaker
// opens (and says so on /health/ready, /debug/actors and /metrics), its
// poller pauses instead of hammering the queue, another namespace keeps
// its throughput, and once the queue is back every task completes.
func TestIsolationBrokenNamespaceQueue(t *testing.T) {
	t.Parallel()
	const (
		fault     = 10 * time.Second
		baseline  = 3 * time.Second
		feedEvery = 50 * time.Millisecond
	)
	n := rsStart(t, rsSetup{
		templates: map[string]string{
			"iso_a/job.toml": rsOneStep("iso_a", "job", "noop", ""),
			"iso_b/job.toml": rsOneStep("iso_b", "job", "noop", ""),
		},
		configure: func(cfg *config.Config) {
			cfg.Namespaces["iso_a"] = config.Namespace{Workers: 3}
			cfg.Namespaces["iso_b"] = config.Namespace{Workers: 3}
		},
	})
	cfg := config.Default(config.EnvTest)
	breaker := cfg.Breaker("iso_a")
	delay := breaker.Delay.Duration()
	qA := queue.NamespaceQueue("iso_a")
	readA := testsupport.OpRead(qA)
	sysBreaker := func(component string) string {
		b, ok := n.node.System().Breaker(component)
		require.True(t, ok)
		return b.State()
	}

	// Both namespaces get a task every 50ms for the whole test. The feeder
	// reports its errors to the test goroutine.
	feedCtx, stopFeed := context.WithCancel(context.Background())
	var (
		wg      sync.WaitGroup
		fedMu   sync.Mutex
		fedA    []uuid.UUID
		feedErr = make(chan error, 1)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(feedEvery)
		defer tick.Stop()
		for {
			select {
			case <-feedCtx.Done():
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(feedCtx, 5*time.Second)
			idA, err := n.send(ctx, "iso_a", "job")
			if err == nil {
				fedMu.Lock()
				fedA = append(fedA, idA)
				fedMu.Unlock()
				_, err = n.send(ctx, "iso_b", "job")
			}
			cancel()
			if err != nil {
				if feedCtx.Err() == nil {
					select {
					case feedErr <- err:
					default:
					}
				}
				return
			}
		}
	}()
	stopFeeder := func() {
		stopFeed()
		wg.Wait()
		select {
		case err := <-feedErr:
			t.Fatalf("feeding tasks: %v", err)
		default:
		}
	}
	t.Cleanup(stopFeeder)

	completedB := func(from, to time.Time) float64 {
		c := n.count(`SELECT count(*) FROM tasker.tasks WHERE namespace = 'iso_b' AND state = 'complete'
			AND finished_at >= $1 AND finished_at < $2`, from, to)
		return float64(c) / to.Sub(from).Seconds()
	}
	// measure waits out a measurement window: a rate needs one, so this is
	// not a wait for something to happen.
	measure := func(d time.Duration) {
		select {
		case <-time.After(d):
		case err := <-feedErr:
			t.Fatalf("feeding tasks: %v", err)
		}
	}

	testsupport.WaitFor(t, rsWait, "iso_b's first completions", func() (bool, error) {
		return n.count(`SELECT count(*) FROM tasker.tasks WHERE namespace = 'iso_b' AND state = 'complete'`) >= 5, nil
	})
	before := time.Now()
	measure(baseline)
	rateBefore := completedB(before, time.Now())

	// Break iso_a's queue for 10s.
	readsBefore := n.faults.Calls(readA)
	faultStart := time.Now()
	restore := testsupport.BreakQueue(t, n.node.Pool(), qA)
	testsupport.WaitFor(t, rsWait, "iso_a's breaker to open", func() (bool, error) {
		return sysBreaker("iso_a") == "open", nil
	})
	timeToOpen := time.Since(faultStart)
	// From here on the breaker is open: what iso_a's poller reads now is
	// one trial per delay, however fast it polls.
	readsAtOpen := n.faults.Calls(readA)
	testsupport.WaitFor(t, rsWait, "/health/ready to name the open breaker", func() (bool, error) {
		code, h := n.ready()
		return code == http.StatusServiceUnavailable && h.Breakers["iso_a"] == "open" &&
			strings.Contains(strings.Join(h.Reasons, "\n"), "circuit breaker iso_a is open"), nil
	})
	testsupport.WaitFor(t, rsWait, "/debug/actors to show the open breaker", func() (bool, error) {
		return n.actors()["root/ns-iso_a/breaker"].BreakerState == "open", nil
	})
	testsupport.WaitFor(t, rsWait, "/metrics to show the open breaker", func() (bool, error) {
		v, ok := n.metric(`tasker_circuit_breaker_state{component="iso_a"}`)
		return ok && v == 2, nil
	})
	measure(fault - time.Since(faultStart))
	faultEnd := time.Now()
	readsUntilOpen := readsAtOpen - readsBefore
	reads := n.faults.Calls(readA) - readsAtOpen
	rateDuring := completedB(faultStart, faultEnd)
	require.Equal(t, "closed", sysBreaker("iso_b"), "iso_b's breaker")

	restore()
	testsupport.WaitFor(t, rsWait, "iso_a's breaker to close", func() (bool, error) {
		return sysBreaker("iso_a") == "closed", nil
	})
	timeToClose := time.Since(faultEnd)
	stopFeeder()

	fedMu.Lock()
	ids := append([]uuid.UUID(nil), fedA...)
	fedMu.Unlock()
	testsupport.WaitFor(t, rsWait, "every task to complete", func() (bool, error) {
		return n.count(`SELECT count(*) FROM tasker.tasks WHERE state <> 'complete'`) == 0, nil
	})
	require.Equal(t, len(ids), n.count(`SELECT count(*) FROM tasker.tasks WHERE request_id = ANY($1) AND state = 'complete'`, ids),
		"every iso_a task fed during the test completed")
	code, h := n.ready()
	require.Equal(t, http.StatusOK, code, "ready again: %v", h.Reasons)
	require.Empty(t, n.restarts(), "a broken queue is a breaker's business, not a crash")

	ratio := rateDuring / rateBefore
	hotLoop := int64(fault / cfg.Queue.PollInterval.Duration())
	// Behind the open breaker: one trial read per delay (a trial fails and
	// reopens it; two per delay leaves room for timing), and one read that
	// was in flight when it opened.
	maxReads := 2*int64(fault/delay) + 2
	t.Logf("iso_b throughput: %.1f tasks/s before, %.1f during iso_a's %s fault: ratio %.2f", rateBefore, rateDuring, fault, ratio)
	t.Logf("reads of %s during the fault: %d until the breaker opened, %d behind it (bound %d; a poller ignoring its breaker would make ~%d)",
		qA, readsUntilOpen, reads, maxReads, hotLoop)
	t.Logf("iso_a's breaker opened %s after the fault began and closed %s after it ended; %d iso_a tasks completed",
		timeToOpen.Round(time.Millisecond), timeToClose.Round(time.Millisecond), len(ids))
	require.Greater(t, ratio, 0.5, "iso_b's throughput during iso_a's fault relative to before")
	require.LessOrEqual(t, reads, maxReads, "reads of a queue behind an open breaker")
	require.GreaterOrEqual(t, readsUntilOpen, int64(breaker.FailureThreshold), "the breaker opened on failed reads")
}

// A worker takes its next job while the step-result actor applies the
// outcome it handed over: with one worker and the first apply held, the
// second task's handler runs before the first task's outcome is recorded
// anywhere (the worker did not fall back to recording it), and both tasks
// complete, each step run once, when the apply goes on.
func TestWorkerTakesNextJobWhileItsOutcomeIsApplied(t *testing.T) {
	t.Parallel()
	var runs atomic.Int64
	count := workflow.HandlerFunc(func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		runs.Add(1)
		return json.RawMessage(`{}`), nil
	})
	n := rsStart(t, rsSetup{
		templates: map[string]string{"tail/job.toml": rsOneStep("tail", "job", "test.count", "")},
		handlers:  map[string]workflow.Handler{"test.count": count},
		configure: func(cfg *config.Config) {
			cfg.Namespaces["tail"] = config.Namespace{Workers: 1}
		},
	})
	// A carried outcome's application meets OpStepOutcomeRecord first.
	apply := n.faults.Hold(t, testsupport.OpStepOutcomeRecord)
	first := n.submit("tail", "job")
	apply.WaitEntered(t, rsWait, "the first outcome's application")
	second := n.submit("tail", "job")
	testsupport.WaitFor(t, rsWait, "the second task's handler to run", func() (bool, error) {
		return runs.Load() == 2, nil
	})
	require.Equal(t, int64(1), n.faults.Calls(testsupport.OpStepOutcomeRecord), "the first outcome is recorded nowhere yet")
	d, ok := n.show(first)
	require.True(t, ok)
	require.Equal(t, workflow.TaskStateInProgress, d.State)
	apply.Release()
	n.waitTask(first, workflow.TaskStateComplete)
	n.waitTask(second, workflow.TaskStateComplete)
	require.Equal(t, int64(2), runs.Load(), "each step ran once")
}

// Messages that cannot be processed do not block their queue: a step
// message delivered too often is archived and its step failed as poison, a
// result that keeps failing to apply is quarantined, an undecodable step
// message is archived, and a result for a cancelled task is ignored.
func TestPoisonAndStaleMessages(t *testing.T) {
	t.Parallel()
	gate := testsupport.NewGate()
	t.Cleanup(gate.Release)
	n := rsStart(t, rsSetup{
		templates: map[string]string{
			"poison/job.toml":   rsOneStep("poison", "job", "noop", ""),
			"poison/gated.toml": rsOneStep("poison", "gated", "test.gate", ""),
		},
		handlers: map[string]workflow.Handler{"test.gate": gate.Handler()},
		configure: func(cfg *config.Config) {
			cfg.Queue.MaxDeliveries = 2
			cfg.Queue.VisibilityTimeout = config.Duration(time.Second)
		},
	})
	archived := func(table, stepUUID string) int {
		return n.count(`SELECT count(*) FROM pgmq.`+table+` WHERE message->>'step_uuid' = $1`, stepUUID)
	}

	t.Run("step message past max_deliveries", func(t *testing.T) {
		n := n.with(t)
		// StepStart fails through the first two deliveries (each is held
		// and tried again until its lease ends); the third is one more
		// than queue.max_deliveries allows.
		n.faults.Fail(testsupport.OpStepStart, nil, 0)
		defer n.faults.Clear(testsupport.OpStepStart) // the next subtests run without it if this one fails
		id := n.submit("poison", "job")
		testsupport.WaitFor(t, rsWait, "the step message's third delivery", func() (bool, error) {
			return n.count(`SELECT COALESCE(max(read_ct), 0) FROM pgmq.q_poison_queue`) >= 3, nil
		})
		n.faults.Clear(testsupport.OpStepStart)
		d := n.waitTask(id, workflow.TaskStateError)
		step := d.Steps[0]
		require.Equal(t, workflow.StepStateError, step.State)
		e := rsErrorOf(t, step)
		require.Equal(t, "poison", e.Kind)
		require.Contains(t, e.Message, "more than queue.max_deliveries (2)")
		require.False(t, e.Retryable)
		require.Equal(t, 1, archived("a_poison_queue", step.StepUUID.String()), "the message is archived")
		require.Zero(t, archived("q_poison_queue", step.StepUUID.String()))
	})

	t.Run("result that keeps failing to apply", func(t *testing.T) {
		n := n.with(t)
		n.faults.Fail(testsupport.OpResultApply, nil, 0)
		defer n.faults.Clear(testsupport.OpResultApply)
		d := n.waitTask(n.submit("poison", "job"), workflow.TaskStateError)
		step := d.Steps[0]
		require.Equal(t, workflow.StepStateError, step.State)
		e := rsErrorOf(t, step)
		require.Equal(t, "poison", e.Kind)
		require.Contains(t, e.Message, "result failed on 2 of 2 deliveries, queue.max_deliveries is 2; last: ")
		require.Contains(t, e.Message, testsupport.ErrInjected.Error())
		// The outcome was handed over in the node: its step message, which
		// came back with it, is what is archived.
		require.Equal(t, 1, archived("a_poison_queue", step.StepUUID.String()), "the step message is archived")
		require.Zero(t, archived("q_poison_queue", step.StepUUID.String()))
		require.Zero(t, archived("a_orchestration_step_results", step.StepUUID.String()), "no result message")
	})

	t.Run("result delivered again only through overload", func(t *testing.T) {
		n := n.with(t)
		// Timeouts are the database's fault, not the result's: past
		// queue.max_deliveries of them the result is still applied.
		failures := n.count(`SELECT count(*) FROM tasker.apply_failures`)
		n.faults.Fail(testsupport.OpResultApply, context.DeadlineExceeded, 0)
		defer n.faults.Clear(testsupport.OpResultApply)
		id := n.submit("poison", "job")
		testsupport.WaitFor(t, rsWait, "the step message's third delivery", func() (bool, error) {
			return n.count(`SELECT COALESCE(max(read_ct), 0) FROM pgmq.q_poison_queue`) >= 3, nil
		})
		n.faults.Clear(testsupport.OpResultApply)
		d := n.waitTask(id, workflow.TaskStateComplete)
		require.Equal(t, workflow.StepStateComplete, d.Steps[0].State)
		require.Equal(t, failures, n.count(`SELECT count(*) FROM tasker.apply_failures`), "no failure counted against it")
	})

	t.Run("undecodable step message", func(t *testing.T) {
		n := n.with(t)
		ctx, cancel := rsCtx()
		defer cancel()
		id, err := n.node.Store().Queue().Send(ctx, queue.NamespaceQueue("poison"), []byte(`{"hello": "world"}`), 0)
		require.NoError(t, err)
		testsupport.WaitFor(t, rsWait, "the message to be archived", func() (bool, error) {
			return n.count(`SELECT count(*) FROM pgmq.a_poison_queue WHERE msg_id = $1`, id) == 1, nil
		})
		require.Zero(t, n.count(`SELECT count(*) FROM pgmq.q_poison_queue WHERE msg_id = $1`, id))
	})

	t.Run("result of a cancelled task", func(t *testing.T) {
		n := n.with(t)
		// Hold the step-result actor at the result until the task is
		// cancelled.
		apply := n.faults.Hold(t, testsupport.OpResultApply)
		id := n.submit("poison", "job")
		apply.WaitEntered(t, rsWait, "the result")
		d, ok := n.show(id)
		require.True(t, ok)
		ctx, cancel := rsCtx()
		defer cancel()
		require.NoError(t, n.node.Store().TaskCancel(ctx, d.TaskUUID, "cancelled by the test"))
		apply.Release()
		step := d.Steps[0].StepUUID.String()
		testsupport.WaitFor(t, rsWait, "the step message to be acknowledged with the ignored outcome", func() (bool, error) {
			return archived("q_poison_queue", step) == 0, nil
		})
		testsupport.WaitFor(t, rsWait, "the ignored result to be counted", func() (bool, error) {
			v, ok := n.metric(`tasker_steps_total{state="ignored"}`)
			return ok && v >= 1, nil
		})
		require.Zero(t, archived("a_poison_queue", step), "ignored, not quarantined")
		d = n.waitTask(id, workflow.TaskStateCancelled)
		require.Equal(t, workflow.StepStateCancelled, d.Steps[0].State)
		for _, tr := range d.StepTransitions {
			require.NotEqual(t, string(workflow.StepStateComplete), tr.To, "a cancelled step never completes")
		}
	})

	t.Run("step in flight when its task is cancelled", func(t *testing.T) {
		n := n.with(t)
		id := n.submit("poison", "gated")
		var in workflow.StepInput
		select {
		case in = <-gate.Entered():
		case <-time.After(rsWait):
			t.Fatal("timed out waiting for the step to start")
		}
		ctx, cancel := rsCtx()
		defer cancel()
		require.NoError(t, n.node.Store().TaskCancel(ctx, in.TaskUUID, "cancelled by the test"))
		gate.Release()
		step := in.StepUUID.String()
		// The outcome is stale; the message is acknowledged when it comes
		// back, and nothing runs again.
		testsupport.WaitFor(t, rsWait, "the step message to be acknowledged", func() (bool, error) {
			return archived("q_poison_queue", step) == 0, nil
		})
		d := n.waitTask(id, workflow.TaskStateCancelled)
		require.Equal(t, workflow.StepStateCancelled, d.Steps[0].State)
		require.Equal(t, 1, d.Steps[0].Attempts)
		require.Zero(t, archived("q_orchestration_step_results", step), "no result for a cancelled step")
	})
	require.Empty(t, n.restarts())
}

// Handlers that misbehave and downstream hosts that fail are contained:
// panics, timeouts, Retry-After, permanent 4xx, and a failing host whose
// breaker stops the calls.
func TestHandlerFaults(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	srv429 := testsupport.NewScriptedServer(t, testsupport.Reply{Status: http.StatusTooManyRequests, RetryAfter: "2"}, testsupport.Reply{})
	srv404 := testsupport.NewScriptedServer(t, testsupport.Reply{Status: http.StatusNotFound, Body: `{"error": "no such order"}`})
	srv500 := testsupport.NewScriptedServer(t, testsupport.Reply{Status: http.StatusInternalServerError})
	srvLocal := testsupport.NewScriptedServer(t)
	httpStep := func(ns, name string, srv *testsupport.ScriptedServer, retry string) string {
		return rsOneStep(ns, name, "http", fmt.Sprintf("config = { url = %q }\n%s", srv.URL+"/orders", retry))
	}
	n := rsStart(t, rsSetup{
		templates: map[string]string{
			"h_panic/job.toml":    rsOneStep("h_panic", "job", "test.panic_once", "[steps.retry]\nmax_attempts = 3\nbackoff_base = \"1s\""),
			"h_hang/hang.toml":    rsOneStep("h_hang", "hang", "test.hang", "timeout = \"200ms\"\n[steps.retry]\nmax_attempts = 1"),
			"h_hang/after.toml":   rsOneStep("h_hang", "after", "noop", ""),
			"h_http/retry.toml":   httpStep("h_http", "retry_after", srv429, "[steps.retry]\nmax_attempts = 3"),
			"h_http/missing.toml": httpStep("h_http", "not_found", srv404, ""),
			"h_http/flaky.toml":   httpStep("h_http", "flaky", srv500, "[steps.retry]\nmax_attempts = 4\nbackoff_base = \"50ms\""),
			"h_local/denied.toml": httpStep("h_local", "denied", srvLocal, "[steps.retry]\nmax_attempts = 3"),
		},
		handlers: map[string]workflow.Handler{
			"test.panic_once": testsupport.ByAttempt(testsupport.PanicHandler("handler exploded"), handlers.Noop()),
			"test.hang":       testsupport.HangHandler(hang),
		},
		configure: func(cfg *config.Config) {
			cfg.Namespaces["h_hang"] = config.Namespace{Workers: 1}
			// The scripted servers listen on loopback, which the http
			// handler calls only when allowed_hosts lists it.
			cfg.Namespaces["h_http"] = config.Namespace{Workers: 4, AllowedHosts: []string{"127.0.0.1"}}
			threshold, delay := 3, config.Duration(time.Minute)
			cfg.CircuitBreakers.Components = map[string]config.BreakerOverride{
				config.HTTPComponent(srv500.Host()): {FailureThreshold: &threshold, Delay: &delay},
			}
		},
	})
	panicID := n.submit("h_panic", "job")
	hangID := n.submit("h_hang", "hang")
	retryID := n.submit("h_http", "retry_after")
	missingID := n.submit("h_http", "not_found")
	flakyID := n.submit("h_http", "flaky")
	deniedID := n.submit("h_local", "denied")

	t.Run("panic", func(t *testing.T) {
		n := n.with(t)
		// The first attempt panics: a retryable failure with the stack,
		// kept on the step until the retry (a second away) succeeds.
		var d store.TaskDetail
		testsupport.WaitFor(t, rsWait, "the step to wait for its retry", func() (bool, error) {
			var ok bool
			d, ok = n.show(panicID)
			return ok && d.Steps[0].State == workflow.StepStateWaitingForRetry, nil
		})
		e := rsErrorOf(t, d.Steps[0])
		require.Equal(t, workflow.KindPanic, e.Kind)
		require.True(t, e.Retryable)
		require.Contains(t, e.Message, "handler exploded")
		stack, _ := e.Metadata["stack"].(string)
		require.Contains(t, stack, "goroutine")
		require.Contains(t, stack, "PanicHandler", "the stack shows the panicking handler")

		d = n.waitTask(panicID, workflow.TaskStateComplete)
		require.Equal(t, 2, d.Steps[0].Attempts)
	})

	t.Run("timeout", func(t *testing.T) {
		n := n.with(t)
		d := n.waitTask(hangID, workflow.TaskStateError)
		e := rsErrorOf(t, d.Steps[0])
		require.Equal(t, workflow.KindTimeout, e.Kind)
		require.Contains(t, e.Message, "did not finish within 200ms")
		// The namespace's only worker left the hung handler behind.
		n.waitTask(n.submit("h_hang", "after"), workflow.TaskStateComplete)
		require.False(t, n.actors()["root/ns-h_hang/worker-0"].Busy)
	})

	t.Run("429 with Retry-After", func(t *testing.T) {
		n := n.with(t)
		d := n.waitTask(retryID, workflow.TaskStateComplete)
		require.Equal(t, 2, d.Steps[0].Attempts)
		// Retry-After counts from the 429, which came after the first
		// attempt started and before its failure was recorded (the record
		// can follow the answer by the apply's wait): the retry starts at
		// least 2s after the first start, and the server saw its two calls
		// at least 2s apart.
		var startedAt, failedAt, retriedAt time.Time
		for _, tr := range d.StepTransitions {
			switch {
			case tr.To == string(workflow.StepStateInProgress) && tr.Attempt == 1:
				startedAt = tr.CreatedAt
			case tr.To == string(workflow.StepStateWaitingForRetry):
				failedAt = tr.CreatedAt
				require.Contains(t, tr.Reason, handlers.KindHTTP429)
			case tr.From == string(workflow.StepStateWaitingForRetry) && tr.To == string(workflow.StepStateInProgress):
				retriedAt = tr.CreatedAt
			}
		}
		require.False(t, startedAt.IsZero() || failedAt.IsZero() || retriedAt.IsZero(), "transitions: %v", d.StepTransitions)
		t.Logf("retry %s after the failure was recorded, %s after the first start (Retry-After: 2)",
			retriedAt.Sub(failedAt).Round(time.Millisecond), retriedAt.Sub(startedAt).Round(time.Millisecond))
		require.GreaterOrEqual(t, retriedAt.Sub(startedAt), 2*time.Second)
		calls := srv429.RequestTimes()
		require.Len(t, calls, 2)
		require.GreaterOrEqual(t, calls[1].Sub(calls[0]), 2*time.Second)
	})

	t.Run("4xx is permanent", func(t *testing.T) {
		n := n.with(t)
		d := n.waitTask(missingID, workflow.TaskStateError)
		step := d.Steps[0]
		require.Equal(t, 1, step.Attempts)
		e := rsErrorOf(t, step)
		require.Equal(t, handlers.KindHTTP4xx, e.Kind)
		require.Equal(t, http.StatusNotFound, e.HTTPStatus)
		require.False(t, e.Retryable)
		var reason string
		for _, tr := range d.StepTransitions {
			if tr.To == string(workflow.StepStateError) {
				reason = tr.Reason
			}
		}
		require.Contains(t, reason, "404 Not Found")
		require.Equal(t, 1, srv404.Requests())
	})

	t.Run("loopback refused without allowed_hosts", func(t *testing.T) {
		n := n.with(t)
		d := n.waitTask(deniedID, workflow.TaskStateError)
		step := d.Steps[0]
		require.Equal(t, 1, step.Attempts, "a refused destination is not retried")
		e := rsErrorOf(t, step)
		require.Equal(t, handlers.KindDestinationRefused, e.Kind)
		require.False(t, e.Retryable)
		require.Contains(t, e.Message, "127.0.0.1 is a loopback address")
		require.Contains(t, e.Message, `list "127.0.0.1" in allowed_hosts of [namespaces.h_local]`)
		require.Zero(t, srvLocal.Requests())
	})

	t.Run("failing host opens its breaker", func(t *testing.T) {
		n := n.with(t)
		component := config.HTTPComponent(srv500.Host())
		d := n.waitTask(flakyID, workflow.TaskStateError)
		step := d.Steps[0]
		require.Equal(t, 4, step.Attempts)
		e := rsErrorOf(t, step)
		require.Equal(t, handlers.KindCircuitOpen, e.Kind, "the last attempt was refused by the breaker")
		require.Equal(t, 3, srv500.Requests(), "three failures open the breaker; the fourth attempt does not call")

		code, body := n.get("/health")
		require.Equal(t, http.StatusServiceUnavailable, code)
		var h api.Health
		require.NoError(t, json.Unmarshal(body, &h))
		require.Equal(t, "open", h.Breakers[component])
		require.Contains(t, h.Reasons, "circuit breaker "+component+" is open")
		require.Equal(t, "open", n.actors()["root/"+component].BreakerState)
		require.Equal(t, "closed", h.Breakers[config.HTTPComponent(srv429.Host())], "another host's breaker")
	})
	require.Empty(t, n.restarts(), "handler faults never crash an actor")
}

// Reload applies a changed breaker threshold and log level from the config
// file, and refuses an invalid file keeping what runs.
func TestReloadConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tasker.toml")
	write := func(text string) { require.NoError(t, os.WriteFile(path, []byte(text), 0o600)) }
	write("[log]\nlevel = \"info\"\n")
	n := rsStart(t, rsSetup{
		templates:  map[string]string{"rl/job.toml": rsOneStep("rl", "job", "noop", "")},
		configPath: path,
	})
	read := testsupport.OpRead(queue.NamespaceQueue("rl"))
	b := func() *actors.Breaker {
		b, ok := n.node.System().Breaker("rl")
		require.True(t, ok)
		return b
	}
	debug := func() bool { return n.node.Logger().Enabled(context.Background(), slog.LevelDebug) }
	// failReads makes the next two reads fail and waits for the read after
	// them, so both failures are recorded.
	failReads := func() {
		t.Helper()
		calls := n.faults.Calls(read)
		n.faults.Fail(read, nil, 2)
		testsupport.WaitFor(t, rsWait, "two failed reads and one more", func() (bool, error) {
			return n.faults.Calls(read) >= calls+3, nil
		})
	}

	require.False(t, debug())
	failReads()
	require.Equal(t, "closed", b().State(), "two failures are below the default threshold of 5")

	write(`[log]
level = "debug"

[circuit_breakers.components.rl]
failure_threshold = 2
`)
	n.node.Reload()
	require.True(t, debug(), "log.level reloaded")
	require.True(t, n.logs.contains("configuration reloaded"))
	opened := func() {
		t.Helper()
		n.faults.Fail(read, nil, 2)
		testsupport.WaitFor(t, rsWait, "the breaker to open after two failures", func() (bool, error) {
			return b().State() == "open", nil
		})
	}
	opened()

	write("[log]\nlevel = \"loud\"\n\n[circuit_breakers.components.rl]\nfailure_threshold = 50\n")
	n.node.Reload()
	require.True(t, n.logs.contains("configuration reload refused"))
	require.True(t, debug(), "the running log level is kept")
	testsupport.WaitFor(t, rsWait, "the breaker to close again", func() (bool, error) {
		return b().State() == "closed", nil
	})
	opened() // the running threshold of 2 is kept
	n.waitTask(n.submit("rl", "job"), workflow.TaskStateComplete)
}

// TestResultsAreChecked: a handler's result that is not JSON, or is over
// queue.max_result_bytes, fails the step for good with the cause, after one
// run: the handler's side effects are not repeated by redelivery.
func TestResultsAreChecked(t *testing.T) {
	t.Parallel()
	var notJSON, huge atomic.Int64
	n := rsStart(t, rsSetup{
		templates: map[string]string{
			"results/garbage.toml": rsOneStep("results", "garbage", "test.not_json", ""),
			"results/huge.toml":    rsOneStep("results", "huge", "test.huge", ""),
		},
		handlers: map[string]workflow.Handler{
			"test.not_json": workflow.HandlerFunc(func(context.Context, workflow.StepInput) (json.RawMessage, error) {
				notJSON.Add(1)
				return json.RawMessage("not json at all"), nil
			}),
			"test.huge": workflow.HandlerFunc(func(context.Context, workflow.StepInput) (json.RawMessage, error) {
				huge.Add(1)
				return json.RawMessage(`"` + strings.Repeat("x", 4096) + `"`), nil
			}),
		},
		configure: func(cfg *config.Config) { cfg.Queue.MaxResultBytes = 2048 },
	})
	d := n.waitTask(n.submit("results", "garbage"), workflow.TaskStateError)
	e := rsErrorOf(t, d.Steps[0])
	require.Equal(t, workflow.KindInvalidResult, e.Kind)
	require.False(t, e.Retryable)
	require.Contains(t, e.Message, "not JSON")
	require.EqualValues(t, 1, notJSON.Load(), "the handler ran once")

	d = n.waitTask(n.submit("results", "huge"), workflow.TaskStateError)
	e = rsErrorOf(t, d.Steps[0])
	require.Equal(t, workflow.KindResultTooLarge, e.Kind)
	require.Contains(t, e.Message, "queue.max_result_bytes")
	require.EqualValues(t, 1, huge.Load(), "the handler ran once")
}

// TestArchivedMessagesSayWhy: what is archived from an internal queue, and
// a task that fails, is logged at WARN with the message id and the reason.
func TestArchivedMessagesSayWhy(t *testing.T) {
	t.Parallel()
	n := rsStart(t, rsSetup{
		templates: map[string]string{"why/fails.toml": rsOneStep("why", "fails", "test.fail", "")},
		handlers: map[string]workflow.Handler{"test.fail": workflow.HandlerFunc(func(context.Context, workflow.StepInput) (json.RawMessage, error) {
			return nil, workflow.Permanent("validation", "no such order")
		})},
	})
	ctx, cancel := rsCtx()
	defer cancel()
	q := n.node.Store().Queue()
	stepMsg, err := q.Send(ctx, queue.NamespaceQueue("why"), []byte(`{"hello": "world"}`), 0)
	require.NoError(t, err)
	resultMsg, err := q.Send(ctx, queue.StepResultsQueue, []byte(`{"task_uuid": "nope"}`), 0)
	require.NoError(t, err)
	d := n.waitTask(n.submit("why", "fails"), workflow.TaskStateError)

	warned := func(msg string, parts ...string) bool {
		for _, line := range strings.Split(n.logs.String(), "\n") {
			if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, msg) {
				continue
			}
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return true
			}
		}
		return false
	}
	testsupport.WaitFor(t, rsWait, "the WARN lines", func() (bool, error) {
		return warned("archiving a step message that does not decode", fmt.Sprintf(`"msg_id":%d`, stepMsg), "task_uuid: missing") &&
			warned("step result archived", fmt.Sprintf(`"msg_id":%d`, resultMsg), "task_uuid") &&
			warned("task failed", d.TaskUUID.String()), nil
	})
	archived, err := n.node.Store().ArchivedList(ctx, store.ArchivedParams{Queue: queue.NamespaceQueue("why")})
	require.NoError(t, err)
	require.NotEmpty(t, archived)
	require.Equal(t, stepMsg, archived[len(archived)-1].MsgID)
	require.False(t, archived[len(archived)-1].Inferred, "the worker kept the reason")
	require.Contains(t, archived[len(archived)-1].Reason, "undecodable step message: ")
}
