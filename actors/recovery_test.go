package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// fakeDB is the database as the probe sees it: up or not, and how often it
// was pinged.
type fakeDB struct {
	up    atomic.Bool
	pings atomic.Int64
}

func (d *fakeDB) ping(context.Context) error {
	d.pings.Add(1)
	if !d.up.Load() {
		return errors.New("connection refused")
	}
	return nil
}

func (d *fakeDB) with(deps *actors.Deps) { deps.Ping = d.ping }

// slowBreaker opens after a few failures and, left to itself, stays open for
// an hour: whatever closes it within a test is the probe.
func slowBreaker() actors.BreakerSettings {
	return actors.BreakerSettings{FailureThreshold: 3, Window: time.Minute, Delay: time.Hour, SuccessThreshold: 1}
}

// An open breaker guarding the database is tried again as soon as the
// database answers a probe, not after its delay; while the probe fails it
// stays open.
func TestProbeEndsOpenBreakerWhenTheDatabaseAnswers(t *testing.T) {
	t.Parallel()
	db := &fakeDB{}
	ns := namespace("alpha", 2)
	ns.Breaker = slowBreaker()
	ft := startFakeTreeWith(t, db.with, actors.Intensity{MaxRestarts: 10, Window: time.Minute}, newSteps(), ns)
	read := testsupport.OpRead(queue.NamespaceQueue("alpha"))
	b, ok := ft.sys.Breaker("alpha")
	require.True(t, ok)

	ft.faults.Fail(read, errors.New("connection refused"), 0)
	testsupport.WaitFor(t, 10*time.Second, "the breaker to open", func() (bool, error) {
		return b.State() == "open", nil
	})
	pinged := db.pings.Load()
	testsupport.WaitFor(t, 10*time.Second, "three probes of the database that is away", func() (bool, error) {
		return db.pings.Load() >= pinged+3, nil
	})
	require.Equal(t, "open", b.State(), "a failed probe leaves the breaker open")
	require.Zero(t, ft.changesTo("alpha", "half-open"))

	ft.faults.Clear(read)
	db.up.Store(true)
	testsupport.WaitFor(t, 10*time.Second, "the breaker to close once the database answers", func() (bool, error) {
		return b.State() == "closed", nil
	})
	require.Equal(t, 1, ft.changesTo("alpha", "half-open"), "one trial, started by the probe")
}

// A database that answers probes while calls still fail (a broken queue
// table) gets one early trial; after it fails the breaker waits out its
// delay, so the probe does not turn the breaker into a loop of failures.
func TestProbeTriesEarlyOnceWhileTheDatabaseAnswers(t *testing.T) {
	t.Parallel()
	db := &fakeDB{}
	db.up.Store(true)
	ns := namespace("alpha", 2)
	ns.Breaker = slowBreaker()
	ft := startFakeTreeWith(t, db.with, actors.Intensity{MaxRestarts: 10, Window: time.Minute}, newSteps(), ns)
	read := testsupport.OpRead(queue.NamespaceQueue("alpha"))
	b, ok := ft.sys.Breaker("alpha")
	require.True(t, ok)

	ft.faults.Fail(read, errors.New("queue table broken"), 0)
	testsupport.WaitFor(t, 10*time.Second, "an early trial to fail and reopen the breaker", func() (bool, error) {
		return ft.changesTo("alpha", "half-open") == 1 && ft.changesTo("alpha", "open") == 2 && b.State() == "open", nil
	})
	pinged := db.pings.Load()
	testsupport.WaitFor(t, 10*time.Second, "three more probes", func() (bool, error) {
		return db.pings.Load() >= pinged+3, nil
	})
	require.Equal(t, 1, ft.changesTo("alpha", "half-open"), "no second early trial")
	require.Equal(t, "open", b.State())
	require.Greater(t, b.RemainingDelay(), 30*time.Minute, "the breaker waits out its delay")
}

// counted is a handler that counts its runs.
type counted struct{ runs atomic.Int64 }

func (c *counted) Handle(context.Context, workflow.StepInput) (json.RawMessage, error) {
	c.runs.Add(1)
	return json.RawMessage(`{}`), nil
}

// A worker whose handler ran while the database went away holds the
// outcome and records it once the database answers: the handler does not
// run again and the message does not wait out its visibility timeout.
func TestWorkerRecordsHeldOutcomeAfterOutage(t *testing.T) {
	t.Parallel()
	db := &fakeDB{}
	h := &counted{}
	ns := namespace("alpha", 3)
	ns.Breaker = slowBreaker()
	ft := startFakeTreeWith(t, db.with, actors.Intensity{MaxRestarts: 10, Window: time.Minute}, h, ns)
	b, ok := ft.sys.Breaker("alpha")
	require.True(t, ok)
	q := queue.NamespaceQueue("alpha")

	ft.faults.Fail(testsupport.OpStepOutcomeRecord, errors.New("connection refused"), 0)
	ft.q.pushSteps(t, "alpha", 3)
	ft.sys.Wake(q)
	testsupport.WaitFor(t, 10*time.Second, "three handlers to run and the breaker to open", func() (bool, error) {
		return h.runs.Load() == 3 && b.State() == "open", nil
	})
	require.Equal(t, 3, ft.q.length(q), "no outcome recorded while the database is away")

	ft.faults.Clear(testsupport.OpStepOutcomeRecord)
	db.up.Store(true)
	// The messages' visibility timeout is 30 s and the breaker's delay an
	// hour: only outcomes held in process are recorded within the wait.
	testsupport.WaitFor(t, 10*time.Second, "the held outcomes to be recorded", func() (bool, error) {
		return ft.q.length(q) == 0, nil
	})
	require.Equal(t, int64(3), h.runs.Load(), "no handler ran again")
	require.Equal(t, int64(3), ft.faults.Calls(testsupport.OpStepStart), "no step started again")
}

// held is a handler that runs until released, counting its runs.
type held struct {
	runs    atomic.Int64
	release chan struct{}
}

func (h *held) Handle(ctx context.Context, _ workflow.StepInput) (json.RawMessage, error) {
	h.runs.Add(1)
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return json.RawMessage(`{}`), nil
}

// A handler that runs for many visibility timeouts keeps its message
// invisible (the worker extends it every half timeout): no other read
// takes it, and the step runs once.
func TestLongHandlerKeepsItsMessage(t *testing.T) {
	t.Parallel()
	h := &held{release: make(chan struct{})}
	ns := namespace("alpha", 2)
	ns.VisibilityTimeout = 200 * time.Millisecond
	ft := startFakeTree(t, actors.Intensity{MaxRestarts: 10, Window: time.Minute}, h, ns)
	q := queue.NamespaceQueue("alpha")
	ft.q.pushSteps(t, "alpha", 1)
	ft.sys.Wake(q)
	// Ten extensions are ten half timeouts: the message would have come
	// back four times without them.
	testsupport.WaitFor(t, 10*time.Second, "the message's visibility to be extended ten times", func() (bool, error) {
		return ft.faults.Calls(testsupport.OpSetVisibility(q)) >= 10, nil
	})
	require.Equal(t, int64(1), h.runs.Load(), "the step ran once")
	require.Equal(t, int64(1), ft.faults.Calls(testsupport.OpStepStart), "the step started once")
	close(h.release)
	testsupport.WaitFor(t, 10*time.Second, "the outcome to be recorded", func() (bool, error) {
		return ft.q.length(q) == 0, nil
	})
	require.Equal(t, int64(1), h.runs.Load())
}
