package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/examples"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// readVT is the visibility timeout of every read the harness makes: long
// enough that nothing comes back by itself during a test.
const readVT = time.Minute

// harness plays the worker and orchestration roles against a Store on a
// database of its own, through the real queues.
type harness struct {
	t    testing.TB
	ctx  context.Context
	st   *store.Store
	pool *pgxpool.Pool
	q    *queue.Client
	reg  *workflow.Registry

	injected *injections
}

// injections are the handlers that replace demo handlers, by step name.
type injections struct {
	mu sync.Mutex
	by map[string]workflow.Handler
}

func newHarness(t testing.TB, opts store.Options) *harness {
	t.Helper()
	return newHarnessOn(t, opts, os.Getenv(envPgmq) == "other")
}

// envPgmq set to "other" runs every store test on a pgmq that Tasker did
// not install (see newHarnessOn); CI runs the suite both ways.
const envPgmq = "TASKER_TEST_PGMQ"

// newHarnessOn is newHarness; with otherPgmq the database's pgmq reads as
// one Tasker did not install (as the real pgmq does), so the queue clients
// go through pgmq's functions, while the store's statements write the
// queue tables as on any pgmq.
func newHarnessOn(t testing.TB, opts store.Options, otherPgmq bool) *harness {
	t.Helper()
	if opts.NodeID == "" {
		opts.NodeID = "test-node"
	}
	st, pool := testsupport.NewStore(t, opts)
	if otherPgmq {
		_, err := pool.Exec(t.Context(), "DROP TABLE pgmq.tasker_install")
		require.NoError(t, err)
		direct, err := st.Queue().Direct(t.Context())
		require.NoError(t, err)
		require.False(t, direct, "the store's queue client still sees Tasker's own pgmq")
	}
	return &harness{
		t:        t,
		ctx:      t.Context(),
		st:       st,
		pool:     pool,
		q:        queue.NewClient(pool),
		reg:      testsupport.Registry(t),
		injected: &injections{by: map[string]workflow.Handler{}},
	}
}

// inject makes the step named step run h instead of its demo handler; a nil
// h restores the demo handler.
func (h *harness) inject(step string, fn workflow.HandlerFunc) {
	h.injected.mu.Lock()
	defer h.injected.mu.Unlock()
	if fn == nil {
		delete(h.injected.by, step)
		return
	}
	h.injected.by[step] = fn
}

func (h *harness) handler(w store.StepWork) workflow.Handler {
	h.injected.mu.Lock()
	inj, ok := h.injected.by[w.StepName]
	h.injected.mu.Unlock()
	if ok {
		return inj
	}
	hd, ok := h.reg.Lookup(w.Handler)
	require.True(h.t, ok, "no handler %q for step %s", w.Handler, w.StepName)
	return hd
}

// request builds a task request for a reference workflow.
func request(namespace, name, taskContext string) queue.TaskRequest {
	return queue.TaskRequest{
		RequestID: uuid.Must(uuid.NewV7()),
		Namespace: namespace,
		Name:      name,
		Context:   taskContext,
	}
}

// sendRaw puts body on the task request queue and reads it back.
func (h *harness) sendRaw(body []byte) queue.Message {
	h.t.Helper()
	id, err := h.q.Send(h.ctx, queue.TaskRequestsQueue, body, 0)
	require.NoError(h.t, err)
	msgs, err := h.q.Read(h.ctx, queue.TaskRequestsQueue, readVT, 1)
	require.NoError(h.t, err)
	require.Len(h.t, msgs, 1)
	require.Equal(h.t, id, msgs[0].ID)
	return msgs[0]
}

// accept sends req through the task request queue and accepts it.
func (h *harness) accept(req queue.TaskRequest) store.RequestOutcome {
	h.t.Helper()
	body, err := req.Encode()
	require.NoError(h.t, err)
	out, err := h.st.RequestAccept(h.ctx, h.sendRaw(body))
	require.NoError(h.t, err)
	return out
}

// submit creates a task through the request queue and returns its uuid.
func (h *harness) submit(namespace, name, taskContext string) uuid.UUID {
	h.t.Helper()
	out := h.accept(request(namespace, name, taskContext))
	require.True(h.t, out.Created, "%+v", out)
	require.False(h.t, out.Rejected, "%+v", out)
	require.Positive(h.t, out.Enqueued+out.Throttled)
	return out.TaskUUID
}

// readAll takes every visible message of a queue.
func (h *harness) readAll(q string) []queue.Message {
	h.t.Helper()
	var all []queue.Message
	for {
		msgs, err := h.q.Read(h.ctx, q, readVT, 100)
		require.NoError(h.t, err)
		if len(msgs) == 0 {
			return all
		}
		all = append(all, msgs...)
	}
}

// start is the worker taking a step message: StepStart must succeed.
func (h *harness) start(msg queue.Message) store.StepWork {
	h.t.Helper()
	sm, err := queue.DecodeStepMessage(msg.Body)
	require.NoError(h.t, err)
	w, err := h.st.StepStart(h.ctx, sm.StepUUID)
	require.NoError(h.t, err)
	require.Equal(h.t, sm.TaskUUID, w.TaskUUID)
	return w
}

// outcome runs the step's handler and returns what the worker records.
func (h *harness) outcome(msg queue.Message, w store.StepWork) store.Outcome {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, w.Timeout)
	defer cancel()
	began := time.Now()
	res, err := h.handler(w).Handle(ctx, w.Input())
	return store.Outcome{
		MsgID: msg.ID, Namespace: w.Namespace, TaskUUID: w.TaskUUID, StepUUID: w.StepUUID,
		CorrelationID: w.CorrelationID, Attempt: w.Attempt, Result: res,
		Err: workflow.AsStepError(err), Duration: time.Since(began),
	}
}

// runStep is one whole worker turn on a step message.
func (h *harness) runStep(msg queue.Message) store.StepWork {
	h.t.Helper()
	w := h.start(msg)
	require.NoError(h.t, h.st.StepOutcomeRecord(h.ctx, h.outcome(msg, w)))
	return w
}

// work takes every visible message of a namespace queue as a node's poller
// does (StepsTake, which starts their steps), runs each, and returns how
// many it ran.
func (h *harness) work(namespace string) int {
	h.t.Helper()
	n := 0
	for {
		taken, err := h.st.StepsTake(h.ctx, namespace, readVT, 100)
		require.NoError(h.t, err)
		if len(taken) == 0 {
			return n
		}
		for _, tk := range taken {
			w := h.startTaken(tk)
			require.NoError(h.t, h.st.StepOutcomeRecord(h.ctx, h.outcome(tk.Message, w)))
		}
		n += len(taken)
	}
}

// startTaken is the worker given a taken message: the take's attempt, or,
// when the take started none, StepStart's, which must succeed.
func (h *harness) startTaken(tk store.TakenStep) store.StepWork {
	h.t.Helper()
	if tk.Started.Attempt > 0 {
		sm, err := queue.DecodeStepMessage(tk.Message.Body)
		require.NoError(h.t, err)
		require.Equal(h.t, sm.StepUUID, tk.Started.StepUUID)
		require.Equal(h.t, sm.TaskUUID, tk.Started.TaskUUID)
		w, err := tk.Started.Work()
		require.NoError(h.t, err)
		return w
	}
	return h.start(tk.Message)
}

// apply applies one result message; it must not fail.
func (h *harness) apply(msg queue.Message) store.ResultOutcome {
	h.t.Helper()
	out, err := h.st.ResultApply(h.ctx, msg)
	require.NoError(h.t, err)
	return out
}

// applyResult is ResultApply in the harness's context.
func (h *harness) applyResult(msg queue.Message) (store.ResultOutcome, error) {
	return h.st.ResultApply(h.ctx, msg)
}

// applyAll applies every visible result message.
func (h *harness) applyAll() []store.ResultOutcome {
	h.t.Helper()
	var outs []store.ResultOutcome
	for _, m := range h.readAll(queue.StepResultsQueue) {
		out := h.apply(m)
		require.False(h.t, out.Ignored, "result ignored: %s", out.Reason)
		outs = append(outs, out)
	}
	return outs
}

// runToEnd plays both roles until the task is terminal and returns it.
func (h *harness) runToEnd(task uuid.UUID) store.TaskDetail {
	h.t.Helper()
	tk, err := h.st.TaskGet(h.ctx, task)
	require.NoError(h.t, err)
	for round := 0; !tk.State.Terminal(); round++ {
		require.Less(h.t, round, 50, "task %s does not finish", task)
		ran := h.work(tk.Namespace)
		applied := len(h.applyAll())
		tk, err = h.st.TaskGet(h.ctx, task)
		require.NoError(h.t, err)
		require.True(h.t, ran > 0 || applied > 0 || tk.State.Terminal(), "task %s is stuck in %s", task, tk.State)
	}
	return h.show(task)
}

// runRounds runs a task to its end by calling round with its namespace's
// queue until the task is terminal, at most 50 times.
func (h *harness) runRounds(task uuid.UUID, round func(q string, tk store.Task)) store.TaskDetail {
	h.t.Helper()
	tk, err := h.st.TaskGet(h.ctx, task)
	require.NoError(h.t, err)
	q := queue.NamespaceQueue(tk.Namespace)
	for n := 0; !tk.State.Terminal(); n++ {
		require.Less(h.t, n, 50, "task %s does not finish", task)
		round(q, tk)
		tk, err = h.st.TaskGet(h.ctx, task)
		require.NoError(h.t, err)
	}
	return h.show(task)
}

func (h *harness) show(task uuid.UUID) store.TaskDetail {
	h.t.Helper()
	d, err := h.st.TaskShow(h.ctx, task)
	require.NoError(h.t, err)
	return d
}

// makeVisible makes every delayed message of a namespace queue visible now,
// standing in for the passing of the backoff delay.
func (h *harness) makeVisible(namespace string) int {
	h.t.Helper()
	q := queue.NamespaceQueue(namespace)
	rows, err := h.pool.Query(h.ctx, "SELECT msg_id FROM "+pgx.Identifier{"pgmq", "q_" + q}.Sanitize()+" WHERE vt > clock_timestamp()")
	require.NoError(h.t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(h.t, err)
	for _, id := range ids {
		require.NoError(h.t, h.q.SetVisibility(h.ctx, q, id, 0))
	}
	return len(ids)
}

// queueLen counts the messages, visible or not, in a queue.
func (h *harness) queueLen(q string) int64 {
	h.t.Helper()
	m, err := h.q.Metrics(h.ctx, q)
	require.NoError(h.t, err)
	return m.Length
}

// inQueue reports whether message id is in queue q, and whether it is in
// its archive.
func (h *harness) inQueue(q string, id int64) (live, archived bool) {
	h.t.Helper()
	err := h.pool.QueryRow(h.ctx, fmt.Sprintf(
		"SELECT EXISTS (SELECT 1 FROM %s WHERE msg_id = $1), EXISTS (SELECT 1 FROM %s WHERE msg_id = $1)",
		pgx.Identifier{"pgmq", "q_" + q}.Sanitize(), pgx.Identifier{"pgmq", "a_" + q}.Sanitize()), id).Scan(&live, &archived)
	require.NoError(h.t, err)
	return live, archived
}

// with returns the harness reporting to t (a subtest or sub-benchmark).
func (h *harness) with(t testing.TB) *harness {
	return &harness{t: t, ctx: h.ctx, st: h.st, pool: h.pool, q: h.q, reg: h.reg, injected: h.injected}
}

// step returns the named step of a task detail.
func step(t testing.TB, d store.TaskDetail, name string) store.Step {
	t.Helper()
	for _, s := range d.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("task %s has no step %s", d.TaskUUID, name)
	return store.Step{}
}

// number decodes a demo.math result.
func number(t testing.TB, raw json.RawMessage) float64 {
	t.Helper()
	var n examples.Number
	require.NoError(t, json.Unmarshal(raw, &n), "result %s", raw)
	return n.Result
}

// move is a transition written as "from→to", with "" for the creating row.
type move struct {
	From, To string
	Attempt  int
}

func (m move) String() string { return fmt.Sprintf("%s→%s@%d", m.From, m.To, m.Attempt) }

// stepMoves returns each step's transitions in order.
func stepMoves(d store.TaskDetail) map[string][]string {
	out := map[string][]string{}
	for _, tr := range d.StepTransitions {
		out[tr.StepName] = append(out[tr.StepName], move{tr.From, tr.To, tr.Attempt}.String())
	}
	return out
}

// taskMoves returns the task's transitions in order.
func taskMoves(d store.TaskDetail) []string {
	var out []string
	for _, tr := range d.TaskTransitions {
		out = append(out, move{From: tr.From, To: tr.To}.String())
	}
	return out
}

// cleanStepHistory is the history of a step that ran once and succeeded.
var cleanStepHistory = []string{"→pending@0", "pending→enqueued@0", "enqueued→in_progress@1", "in_progress→complete@1"}

// cleanTaskHistory is the history of a task that ran to completion.
var cleanTaskHistory = []string{"→pending@0", "pending→in_progress@0", "in_progress→complete@0"}

// requireCleanRun checks a task that completed without a hitch: every step
// complete after exactly one attempt with exactly its four transitions, no
// step enqueued before all its parents completed, and the task's three
// transitions.
func requireCleanRun(t testing.TB, d store.TaskDetail) {
	t.Helper()
	require.Equal(t, workflow.TaskStateComplete, d.State)
	require.NotNil(t, d.FinishedAt)
	require.Equal(t, cleanTaskHistory, taskMoves(d))
	moves := stepMoves(d)
	require.Len(t, moves, len(d.Steps), "transitions of unknown steps")
	for _, s := range d.Steps {
		require.Equal(t, workflow.StepStateComplete, s.State, s.Name)
		require.Equal(t, 1, s.Attempts, s.Name)
		require.Nil(t, s.Error, s.Name)
		require.Equal(t, cleanStepHistory, moves[s.Name], s.Name)
	}
	// Position of each step's transitions in the task's history.
	enqueuedAt := map[string]int{}
	completedAt := map[string]int{}
	for i, tr := range d.StepTransitions {
		switch tr.To {
		case string(workflow.StepStateEnqueued):
			enqueuedAt[tr.StepName] = i
		case string(workflow.StepStateComplete):
			completedAt[tr.StepName] = i
		}
	}
	for _, s := range d.Steps {
		for _, p := range s.DependsOn {
			require.Greater(t, enqueuedAt[s.Name], completedAt[p], "%s enqueued before its parent %s completed", s.Name, p)
		}
	}
}

// completionOrder lists the steps in the order they completed.
func completionOrder(d store.TaskDetail) []string {
	var out []string
	for _, tr := range d.StepTransitions {
		if tr.To == string(workflow.StepStateComplete) {
			out = append(out, tr.StepName)
		}
	}
	return out
}

// requireRefused asserts err is a *store.RefusedError whose message holds
// every string of want.
func requireRefused(t testing.TB, err error, want ...string) {
	t.Helper()
	var re *store.RefusedError
	require.True(t, errors.As(err, &re), "want a *store.RefusedError, got %v", err)
	for _, w := range want {
		require.Contains(t, re.Error(), w)
	}
}

// failing returns a handler that fails with err on every attempt listed in
// attempts (all attempts when none is) and runs the demo handler otherwise.
func (h *harness) failing(err func(attempt int) error, attempts ...int) workflow.HandlerFunc {
	return func(ctx context.Context, in workflow.StepInput) (json.RawMessage, error) {
		if len(attempts) == 0 || slices.Contains(attempts, in.Attempt) {
			return nil, err(in.Attempt)
		}
		return examples.Math(ctx, in)
	}
}

// tryRunStep is runStep for goroutines other than the test's: it reports
// failures instead of ending the test.
func (h *harness) tryRunStep(msg queue.Message) error {
	sm, err := queue.DecodeStepMessage(msg.Body)
	if err != nil {
		return err
	}
	w, err := h.st.StepStart(h.ctx, sm.StepUUID)
	if err != nil {
		return fmt.Errorf("starting step %s: %w", sm.StepUUID, err)
	}
	hd, ok := h.reg.Lookup(w.Handler)
	if !ok {
		return fmt.Errorf("no handler %q", w.Handler)
	}
	res, herr := hd.Handle(h.ctx, w.Input())
	return h.st.StepOutcomeRecord(h.ctx, store.Outcome{
		MsgID: msg.ID, Namespace: w.Namespace, TaskUUID: w.TaskUUID, StepUUID: w.StepUUID,
		CorrelationID: w.CorrelationID, Attempt: w.Attempt, Result: res, Err: workflow.AsStepError(herr),
	})
}

// race calls fn on every item at the same moment, one goroutine each, and
// returns the results and errors by item.
func race[T, R any](items []T, fn func(T) (R, error)) ([]R, []error) {
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		outs  = make([]R, len(items))
		errs  = make([]error, len(items))
	)
	for i := range items {
		wg.Go(func() {
			<-start
			outs[i], errs[i] = fn(items[i])
		})
	}
	close(start)
	wg.Wait()
	return outs, errs
}

// concurrently calls fn on every item from four goroutines and returns the
// first error.
func concurrently[T any](items []T, fn func(T) error) error {
	return concurrentlyN(4, items, fn)
}

// concurrentlyN calls fn on every item from lanes goroutines and returns
// the first error.
func concurrentlyN[T any](lanes int, items []T, fn func(T) error) error {
	var (
		wg   sync.WaitGroup
		next = make(chan T)
		errs = make(chan error, lanes)
	)
	for range lanes {
		wg.Go(func() {
			for it := range next {
				if err := fn(it); err != nil {
					errs <- err
					for range next {
					}
					return
				}
			}
		})
	}
	for _, it := range items {
		next <- it
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}
