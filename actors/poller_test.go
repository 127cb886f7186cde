package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// steps is a handler whose calls wait until the test releases them, one by
// one or all at once.
type steps struct {
	arrived chan chan struct{}
	all     chan struct{}
}

func newSteps() *steps {
	return &steps{arrived: make(chan chan struct{}, 100), all: make(chan struct{})}
}

func (s *steps) Handle(ctx context.Context, _ workflow.StepInput) (json.RawMessage, error) {
	done := make(chan struct{})
	s.arrived <- done
	select {
	case <-done:
	case <-s.all:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return json.RawMessage(`{}`), nil
}

// next waits for the next step to reach the handler.
func (s *steps) next(t *testing.T) chan struct{} {
	t.Helper()
	select {
	case done := <-s.arrived:
		return done
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for a step to reach its handler")
		return nil
	}
}

// A poller restarted while a worker is busy must not count that worker free
// twice — once when its job ends and once more for the announce queued
// behind that job — or it reads a message for a worker that already has one,
// and the message waits in the worker's mailbox with its visibility timeout
// running.
func TestRestartedPollerDoesNotOverbookWorkers(t *testing.T) {
	t.Parallel()
	h := newSteps()
	ft := startFakeTree(t, actors.Intensity{MaxRestarts: 10, Window: time.Minute}, h, namespace("alpha", 2))
	q := queue.NamespaceQueue("alpha")
	read := testsupport.OpRead(q)

	// One worker busy, the other idle: the idle one makes the poller read,
	// and that read panics.
	ft.q.pushSteps(t, "alpha", 1)
	first := h.next(t)
	ft.faults.Panic(read, "poller boom", 1)
	poller := actors.NamespacePath("alpha") + "/poller"
	testsupport.WaitFor(t, 5*time.Second, "the poller to restart", func() (bool, error) {
		n := ft.node(poller)
		return n.Restarts == 1 && n.Status == actors.StatusRunning, nil
	})

	// The restarted poller learns of the idle worker and gives it a job.
	ft.q.pushSteps(t, "alpha", 6)
	second := h.next(t)
	// The busy worker finishes: it is free once, takes a third job, and its
	// answer to the restarted poller's announce must not count again.
	close(first)
	third := h.next(t)
	close(second)
	close(third)
	close(h.all)
	testsupport.WaitFor(t, 5*time.Second, "every step to run", func() (bool, error) {
		return ft.q.length(q) == 0, nil
	})
	require.LessOrEqual(t, ft.q.peakInFlight(), 2, "messages taken at once by a pool of 2 workers")
}

// While its breaker is open a poller does not read: each time the breaker
// lets a trial through (half-open) it reads once, and the failed trial opens
// the breaker again for its full delay.
func TestOpenBreakerPausesPoller(t *testing.T) {
	t.Parallel()
	ns := namespace("alpha", 2)
	ns.PollInterval = time.Millisecond
	ns.Breaker = actors.BreakerSettings{FailureThreshold: 3, Window: time.Minute, Delay: 100 * time.Millisecond, SuccessThreshold: 1}
	ft := startFakeTree(t, actors.Intensity{MaxRestarts: 10, Window: time.Minute}, newSteps(), ns)
	read := testsupport.OpRead(queue.NamespaceQueue("alpha"))

	start := time.Now()
	before := ft.faults.Calls(read) // the reads since the tree started
	ft.faults.Fail(read, errors.New("queue broken"), 0)
	testsupport.WaitFor(t, 10*time.Second, "five half-open trials", func() (bool, error) {
		return ft.changesTo("alpha", "half-open") >= 5, nil
	})
	elapsed := time.Since(start)
	reads := ft.faults.Calls(read) - before
	trials := int64(ft.changesTo("alpha", "half-open"))
	t.Logf("%d reads in %s with the breaker open %d times and half-open %d times (a 1ms poll interval would read ~%d times)",
		reads, elapsed.Round(time.Millisecond), ft.changesTo("alpha", "open"), trials, elapsed/time.Millisecond)
	// Three failures open it; then one read per trial (one may be running).
	require.LessOrEqual(t, reads, 3+trials+1)
	require.GreaterOrEqual(t, elapsed, 4*ns.Breaker.Delay, "each reopening lasts the breaker's delay")

	// The fault clears: the next trial succeeds and closes the breaker.
	ft.faults.Clear(read)
	// The tree learns of the change from the breaker's listener, just after
	// the breaker itself.
	testsupport.WaitFor(t, 5*time.Second, "the breaker to close, in the tree too", func() (bool, error) {
		b, ok := ft.sys.Breaker("alpha")
		return ok && b.State() == "closed" && ft.node(actors.NamespacePath("alpha")+"/breaker").BreakerState == "closed", nil
	})
}
