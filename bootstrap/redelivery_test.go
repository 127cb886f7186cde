package bootstrap_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// lostWorkerTemplate has a step whose first attempt never ends by itself,
// followed by a step that must still run once the first is redelivered.
const lostWorkerTemplate = `
namespace = "redelivery"
name = "lost_worker"
version = "1.0.0"
description = "A first attempt whose worker is lost."

[[steps]]
name = "hang_once"
handler = "test.hang_first_attempt"
timeout = "1m"

[[steps]]
name = "after"
handler = "noop"
depends_on = ["hang_once"]
`

// TestLostWorkerRedelivery kills a worker mid-step and checks that its
// message comes back after the visibility timeout and runs as a new attempt
// on another node.
//
// Node A takes the step and its handler hangs. A is then stopped with a
// shutdown timeout far shorter than the handler, so the worker is abandoned
// the way a crashed process abandons it: nothing recorded, the message
// neither deleted nor archived. The message stays invisible until its
// visibility timeout and no longer; node B, started on the same database,
// takes it then, which counts as attempt 2.
func TestLostWorkerRedelivery(t *testing.T) {
	t.Parallel()
	const (
		namespace  = "redelivery"
		visibility = 3 * time.Second
	)
	ctx := t.Context()
	url := testsupport.NewDatabaseURL(t)
	client := newClient(t, url)

	hung := make(chan struct{}, 1)
	handler := workflow.HandlerFunc(func(ctx context.Context, in workflow.StepInput) (json.RawMessage, error) {
		if in.Attempt == 1 {
			hung <- struct{}{}
			<-ctx.Done() // released only when node A gives up on it
			return nil, ctx.Err()
		}
		return json.Marshal(map[string]int{"attempt": in.Attempt})
	})
	options := func(shutdown time.Duration) []testsupport.NodeOption {
		return []testsupport.NodeOption{
			testsupport.WithConfig(func(cfg *config.Config) {
				cfg.Shutdown.Timeout = config.Duration(shutdown)
				cfg.Namespaces[namespace] = config.Namespace{Workers: 2, VisibilityTimeout: config.Duration(visibility)}
			}),
			testsupport.WithOptions(func(o *bootstrap.Options) {
				o.Handlers = func(reg *workflow.Registry) error { return reg.Register("test.hang_first_attempt", handler) }
				o.Templates = append(o.Templates, fstest.MapFS{namespace + "/lost_worker.toml": {Data: []byte(lostWorkerTemplate)}})
			}),
		}
	}

	nodeA := testsupport.StartNodeOn(t, url, options(200*time.Millisecond)...)
	e := &env{t: t, node: nodeA, url: url, client: client}
	requestID := e.submit(namespace, "lost_worker", `{}`)
	select {
	case <-hung:
	case <-time.After(taskTimeout):
		t.Fatal("the first attempt never started")
	}

	stopped := time.Now()
	require.NoError(t, nodeA.Stop(ctx))
	t.Logf("node A stopped in %s with its handler still running", time.Since(stopped).Round(time.Millisecond))

	// What a dead worker leaves: the attempt started and nothing else.
	// Node A's pool is closed: read through a store on the client's pool.
	d, err := store.New(client, store.Options{NodeID: "test-client"}).TaskShow(ctx, requestID)
	require.NoError(t, err)
	require.Equal(t, workflow.StepStateInProgress, d.Steps[0].State)
	require.Equal(t, 1, d.Steps[0].Attempts)
	var (
		readCount int
		vt        time.Time
		now       time.Time
	)
	require.NoError(t, client.QueryRow(ctx, `SELECT read_ct, vt, clock_timestamp() FROM pgmq.q_redelivery_queue`).Scan(&readCount, &vt, &now))
	require.Equal(t, 1, readCount, "the message was read once")
	require.True(t, vt.After(now), "the message is still invisible (vt %s, now %s)", vt, now)
	require.False(t, vt.After(now.Add(visibility)), "invisible no longer than the visibility timeout (vt %s, now %s)", vt, now)

	nodeB := testsupport.StartNodeOn(t, url, options(5*time.Second)...)
	e.node = nodeB
	d = e.waitTask(requestID, taskTimeout)
	require.Equal(t, workflow.TaskStateComplete, d.State)

	hang := d.Steps[0]
	require.Equal(t, "hang_once", hang.Name)
	require.Equal(t, workflow.StepStateComplete, hang.State)
	require.Equal(t, 2, hang.Attempts, "the redelivery counts as a new attempt")
	require.JSONEq(t, `{"attempt": 2}`, string(hang.Result))
	require.Equal(t, []string{" → pending", "pending → enqueued", "enqueued → in_progress", "in_progress → in_progress", "in_progress → complete"},
		moves(d.StepTransitions, "hang_once"))
	var first, again store.Transition
	for _, tr := range d.StepTransitions {
		switch {
		case tr.StepName == "hang_once" && tr.From == "enqueued" && tr.To == "in_progress":
			first = tr
		case tr.StepName == "hang_once" && tr.From == "in_progress" && tr.To == "in_progress":
			again = tr
		}
	}
	require.Equal(t, 1, first.Attempt)
	require.Equal(t, nodeA.NodeID(), first.NodeID)
	require.Equal(t, 2, again.Attempt)
	require.Equal(t, nodeB.NodeID(), again.NodeID)
	require.Contains(t, again.Reason, "redelivered")
	require.False(t, again.CreatedAt.Before(vt), "redelivered at %s, before the visibility timeout ran out at %s", again.CreatedAt, vt)
	require.Less(t, again.CreatedAt.Sub(vt), 2*time.Second, "redelivered soon after the visibility timeout ran out")
	t.Logf("attempt 1 started %s; message visible again %s later; attempt 2 started %s after that",
		first.CreatedAt.Format(time.RFC3339Nano), vt.Sub(first.CreatedAt).Round(time.Millisecond), again.CreatedAt.Sub(vt).Round(time.Millisecond))

	after := d.Steps[1]
	require.Equal(t, workflow.StepStateComplete, after.State)
	require.Equal(t, 1, after.Attempts)

	var left int
	require.NoError(t, client.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_redelivery_queue`).Scan(&left))
	require.Zero(t, left, "the redelivered message was deleted")
}

// TestShutdownLetsInFlightStepFinish stops a node while a handler runs,
// within the shutdown timeout: the handler finishes and its outcome is
// recorded, so the next node goes on from there without running the step
// again.
func TestShutdownLetsInFlightStepFinish(t *testing.T) {
	t.Parallel()
	const namespace = "redelivery"
	ctx := t.Context()
	url := testsupport.NewDatabaseURL(t)
	client := newClient(t, url)

	started := make(chan struct{}, 1)
	var runs atomic.Int32
	handler := workflow.HandlerFunc(func(ctx context.Context, in workflow.StepInput) (json.RawMessage, error) {
		runs.Add(1)
		started <- struct{}{}
		select {
		case <-time.After(300 * time.Millisecond): // still running when the stop begins
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return json.Marshal(map[string]int{"attempt": in.Attempt})
	})
	options := []testsupport.NodeOption{
		testsupport.WithConfig(func(cfg *config.Config) { cfg.Shutdown.Timeout = config.Duration(10 * time.Second) }),
		testsupport.WithOptions(func(o *bootstrap.Options) {
			o.Handlers = func(reg *workflow.Registry) error { return reg.Register("test.hang_first_attempt", handler) }
			o.Templates = append(o.Templates, fstest.MapFS{namespace + "/lost_worker.toml": {Data: []byte(lostWorkerTemplate)}})
		}),
	}

	nodeA := testsupport.StartNodeOn(t, url, options...)
	e := &env{t: t, node: nodeA, url: url, client: client}
	requestID := e.submit(namespace, "lost_worker", `{}`)
	select {
	case <-started:
	case <-time.After(taskTimeout):
		t.Fatal("the step never started")
	}
	require.NoError(t, nodeA.Stop(ctx))

	// The outcome was recorded and the step message acknowledged.
	var inQueue int
	require.NoError(t, client.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_redelivery_queue`).Scan(&inQueue))
	require.Zero(t, inQueue, "the step message was deleted")

	nodeB := testsupport.StartNodeOn(t, url, options...)
	e.node = nodeB
	d := e.waitTask(requestID, taskTimeout)
	require.Equal(t, workflow.TaskStateComplete, d.State)
	require.Equal(t, 1, d.Steps[0].Attempts)
	require.JSONEq(t, `{"attempt": 1}`, string(d.Steps[0].Result))
	require.Equal(t, []string{" → pending", "pending → enqueued", "enqueued → in_progress", "in_progress → complete"},
		moves(d.StepTransitions, "hang_once"))
	require.Equal(t, int32(1), runs.Load(), "the handler ran once")
}
