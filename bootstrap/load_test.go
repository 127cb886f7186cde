package bootstrap_test

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io/fs"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// The load workflow: a diamond of four steps, every one run by the flaky
// handler, three attempts each.
const (
	loadNamespace   = "load"
	loadName        = "flaky_diamond"
	loadMaxAttempts = 3
	loadTemplate    = `
namespace = "load"
name = "flaky_diamond"
version = "1.0.0"
description = "A diamond whose steps fail now and then."

[[steps]]
name = "a"
handler = "load.flaky"
retry = { max_attempts = 3 }

[[steps]]
name = "b"
handler = "load.flaky"
depends_on = ["a"]
retry = { max_attempts = 3 }

[[steps]]
name = "c"
handler = "load.flaky"
depends_on = ["a"]
retry = { max_attempts = 3 }

[[steps]]
name = "d"
handler = "load.flaky"
depends_on = ["b", "c"]
retry = { max_attempts = 3 }
`
)

// loadParents is the DAG of the load workflow, in template order.
var loadParents = []struct {
	step    string
	parents []string
}{{"a", nil}, {"b", []string{"a"}}, {"c", []string{"a"}}, {"d", []string{"b", "c"}}}

// loadVerdict is what the flaky handler does with one attempt, decided by a
// hash of (task key, step, attempt): 10% fail and may be retried, 0.3% fail
// for good, the rest succeed.
type loadVerdict int

const (
	loadOK loadVerdict = iota
	loadTransient
	loadPermanent
)

func loadDecide(key int, step string, attempt int) loadVerdict {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s/%d", key, step, attempt)
	switch v := h.Sum64() % 1000; {
	case v < 100:
		return loadTransient
	case v < 103:
		return loadPermanent
	}
	return loadOK
}

// loadExpect is the end state of one task as the verdicts make it.
type loadExpect struct {
	state    string
	steps    map[string]string
	attempts map[string]int
}

// loadSimulate runs task key through the DAG on paper: a step runs once its
// parents are complete, and retries a transient failure until its attempts
// are exhausted.
func loadSimulate(key int) loadExpect {
	e := loadExpect{state: "complete", steps: map[string]string{}, attempts: map[string]int{}}
	for _, s := range loadParents {
		runs := true
		for _, p := range s.parents {
			runs = runs && e.steps[p] == "complete"
		}
		if !runs {
			e.steps[s.step] = "pending"
			continue
		}
		for attempt := 1; ; attempt++ {
			e.attempts[s.step] = attempt
			v := loadDecide(key, s.step, attempt)
			if v == loadOK {
				e.steps[s.step] = "complete"
				break
			}
			if v == loadPermanent || attempt == loadMaxAttempts {
				e.steps[s.step] = "error"
				e.state = "error"
				break
			}
		}
	}
	return e
}

// TestLoadWithFailures runs 1,000 tasks at once on one node while one step
// execution in ten fails transiently and a few fail for good. Every task
// must end as the verdicts say (computed beforehand), the attempts must add
// up to the executions the handler saw, none twice, and the node's heap
// must stay bounded.
func TestLoadWithFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 tasks")
	}
	// Not parallel: wall time, throughput and heap are measured.
	const (
		tasks     = 1000
		heapBound = 300 << 20
	)
	var (
		executions atomic.Int64
		seen       sync.Map // "key/step/attempt" → *atomic.Int64
	)
	flaky := workflow.HandlerFunc(func(_ context.Context, in workflow.StepInput) (json.RawMessage, error) {
		var input struct{ Key int }
		if err := json.Unmarshal(in.Context, &input); err != nil {
			return nil, workflow.Permanent("bad_input", "%v", err)
		}
		executions.Add(1)
		n, _ := seen.LoadOrStore(fmt.Sprintf("%d/%s/%d", input.Key, in.StepName, in.Attempt), new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		switch loadDecide(input.Key, in.StepName, in.Attempt) {
		case loadTransient:
			return nil, workflow.Retryable("flaky", 0, "transient failure of %s, attempt %d", in.StepName, in.Attempt)
		case loadPermanent:
			return nil, workflow.Permanent("broken", "permanent failure of %s, attempt %d", in.StepName, in.Attempt)
		}
		return json.RawMessage(`{"ok": true}`), nil
	})

	node := testsupport.StartNode(t,
		testsupport.WithConfig(func(cfg *config.Config) {
			// Only the load namespace: idle reference pollers would only
			// add noise to the measurement.
			cfg.Templates.Bundled = false
			cfg.Namespaces = map[string]config.Namespace{loadNamespace: {Workers: 8}}
			cfg.Log.Level = config.LogLevelWarn
			// Notifications wake the pollers; the production poll interval
			// keeps idle reads from competing with the work for the
			// database (the test environment's 10ms is for latency).
			cfg.Queue.PollInterval = config.Duration(100 * time.Millisecond)
		}),
		testsupport.WithOptions(func(o *bootstrap.Options) {
			o.Templates = []fs.FS{fstest.MapFS{"load/flaky_diamond.toml": {Data: []byte(loadTemplate)}}}
			o.Handlers = func(reg *workflow.Registry) error { return reg.Register("load.flaky", flaky) }
		}))
	db := node.Pool()
	ctx := t.Context()

	expect := make(map[uuid.UUID]loadExpect, tasks)
	keys := make(map[uuid.UUID]int, tasks)
	var wantErrors, wantExecutions, wantRetries int
	bodies := make([][]byte, 0, tasks)
	for key := range tasks {
		id := uuid.Must(uuid.NewV7())
		e := loadSimulate(key)
		expect[id], keys[id] = e, key
		if e.state == "error" {
			wantErrors++
		}
		for _, n := range e.attempts {
			wantExecutions += n
			wantRetries += n - 1
		}
		body, err := queue.TaskRequest{RequestID: id, Namespace: loadNamespace, Name: loadName,
			Context: fmt.Sprintf(`{"key": %d}`, key)}.Encode()
		require.NoError(t, err)
		bodies = append(bodies, body)
	}
	require.Positive(t, wantErrors, "the verdicts fail some tasks for good")
	require.Positive(t, wantRetries, "the verdicts retry some steps")

	// Heap sampling, owned by the test and stopped before the checks.
	var (
		peak     atomic.Uint64
		sampling sync.WaitGroup
	)
	stop := make(chan struct{})
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	stopSampling := sync.OnceFunc(func() { close(stop); sampling.Wait() })
	defer stopSampling()

	began := time.Now()
	qc := queue.NewClient(db)
	for i := 0; i < len(bodies); i += 100 {
		_, err := qc.SendBatch(ctx, queue.TaskRequestsQueue, bodies[i:min(i+100, len(bodies))], 0)
		require.NoError(t, err)
	}
	testsupport.WaitFor(t, 2*time.Minute, "every task to end", func() (bool, error) {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks WHERE state IN ('complete', 'error')`).Scan(&n)
		return n == tasks, err
	})
	wall := time.Since(began)
	stopSampling()

	// Every task and step ended as the verdicts say.
	type stepRow struct {
		request  uuid.UUID
		task     string
		step     string
		state    string
		attempts int
	}
	rows, err := db.Query(ctx, `
		SELECT t.request_id, t.state, s.name, s.state, s.attempts
		FROM tasker.tasks t JOIN tasker.steps s USING (task_uuid)`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stepRow, error) {
		var s stepRow
		err := r.Scan(&s.request, &s.task, &s.step, &s.state, &s.attempts)
		return s, err
	})
	require.NoError(t, err)
	require.Len(t, got, tasks*len(loadParents), "every task has its steps, none lost")
	var sumAttempts, gotErrors int
	for _, s := range got {
		e, ok := expect[s.request]
		require.True(t, ok, "a task of an unknown request %s", s.request)
		require.Equal(t, e.state, s.task, "task of key %d", keys[s.request])
		require.Equal(t, e.steps[s.step], s.state, "step %s of key %d", s.step, keys[s.request])
		require.Equal(t, e.attempts[s.step], s.attempts, "attempts of step %s of key %d", s.step, keys[s.request])
		sumAttempts += s.attempts
		if s.step == "a" && s.task == "error" {
			gotErrors++
		}
	}
	require.Equal(t, wantErrors, gotErrors)
	require.Equal(t, wantExecutions, sumAttempts, "attempts as the verdicts make them")
	require.Equal(t, int64(sumAttempts), executions.Load(), "every attempt ran the handler once")
	seen.Range(func(k, v any) bool {
		require.Equal(t, int64(1), v.(*atomic.Int64).Load(), "attempt %s ran more than once", k)
		return true
	})
	fig := testsupport.AuditTransitions(t, db)
	require.Zero(t, fig.Redeliveries, "no attempt was lost on a node that did not crash")
	require.Equal(t, wantRetries, fig.Retries, "every retry is a recorded waiting_for_retry→in_progress")

	heap := peak.Load()
	t.Logf("load: %d tasks (%d expected in error) in %s: %.0f tasks/s, %.0f step executions/s; %d executions, %d retries; peak heap in use %.1f MiB",
		tasks, wantErrors, wall.Round(time.Millisecond), float64(tasks)/wall.Seconds(), float64(executions.Load())/wall.Seconds(),
		executions.Load(), fig.Retries, float64(heap)/(1<<20))
	require.Less(t, heap, uint64(heapBound), "heap in use stays bounded")
}
