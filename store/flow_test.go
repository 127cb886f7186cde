package store_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/backoff"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// flowNamespace is the namespace of the flow tests' templates.
const flowNamespace = "flow_test"

// flowTemplate registers a two-step linear template (demo.math: square,
// then add 1) in flowNamespace, with head added to its top level and step
// to its first step.
func (h *harness) flowTemplate(name, head, step string) {
	h.t.Helper()
	h.flowTemplateIn(flowNamespace, name, head, step)
}

// flowTemplateIn is flowTemplate in namespace.
func (h *harness) flowTemplateIn(namespace, name, head, step string) {
	h.t.Helper()
	src := fmt.Sprintf(`namespace = %q
name = %q
version = "1.0.0"
%s

[[steps]]
name = "first"
handler = "demo.math"
config = { op = "square" }
%s

[[steps]]
name = "second"
handler = "demo.math"
depends_on = ["first"]
config = { op = "add", operand = 1 }
`, namespace, name, head, step)
	tmpl, err := workflow.ParseTemplate(name+".toml", []byte(src), h.reg)
	require.NoError(h.t, err)
	require.NoError(h.t, h.st.EnsureQueues(h.ctx, []string{namespace}))
	_, err = h.st.TemplateRegister(h.ctx, tmpl)
	require.NoError(h.t, err)
}

// countsBy runs a query of (name, count) rows and returns them as a map.
func (h *harness) countsBy(sql string, args ...any) map[string]int {
	h.t.Helper()
	rows, err := h.pool.Query(h.ctx, sql, args...)
	require.NoError(h.t, err)
	out := map[string]int{}
	for rows.Next() {
		var (
			name string
			n    int
		)
		require.NoError(h.t, rows.Scan(&name, &n))
		out[name] = n
	}
	require.NoError(h.t, rows.Err())
	return out
}

// ints runs a query of one int column and returns its rows.
func (h *harness) ints(sql string, args ...any) []int {
	h.t.Helper()
	rows, err := h.pool.Query(h.ctx, sql, args...)
	require.NoError(h.t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(h.t, err)
	return out
}

// stepStates counts the steps of flowNamespace by state.
func (h *harness) stepStates() map[string]int {
	h.t.Helper()
	return h.countsBy("SELECT state, count(*) FROM tasker.steps WHERE namespace = $1 GROUP BY state", flowNamespace)
}

// slotsByGroup returns the slots in use per group, from the flow counters,
// and checks every counter against the steps' own states.
func (h *harness) slotsByGroup() map[string]int {
	h.t.Helper()
	var drift int
	require.NoError(h.t, h.pool.QueryRow(h.ctx, `WITH truth AS (
			SELECT s.namespace, g AS name,
				count(*) FILTER (WHERE s.state IN ('enqueued', 'in_progress', 'waiting_for_retry')) AS in_use,
				count(*) FILTER (WHERE s.state = 'throttled') AS waiting
			FROM tasker.steps s, unnest(array_prepend('', s.flow_groups)) g
			WHERE s.flow_groups IS NOT NULL GROUP BY 1, 2)
		, counts AS (SELECT namespace, name, sum(in_use) AS in_use, sum(waiting) AS waiting
			FROM tasker.flow_counts GROUP BY 1, 2)
		SELECT count(*) FROM truth t FULL JOIN counts c ON c.namespace = t.namespace AND c.name = t.name
		WHERE coalesce(t.in_use, 0) <> coalesce(c.in_use, 0) OR coalesce(t.waiting, 0) <> coalesce(c.waiting, 0)`).Scan(&drift))
	require.Zero(h.t, drift, "flow counters disagree with the steps' states")
	return h.countsBy("SELECT name, sum(in_use) FROM tasker.flow_counts WHERE name <> '' GROUP BY name HAVING sum(in_use) > 0")
}

func (h *harness) admit() store.FlowRound {
	h.t.Helper()
	r, err := h.st.FlowAdmit(h.ctx, flowNamespace)
	require.NoError(h.t, err)
	return r
}

func TestFlowKeyLimitHoldsAndFrees(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("per_customer", `concurrency_key = "{{context.customer}}"
max_per_key = 2`, "")

	var tasks []uuid.UUID
	for i := range 3 {
		tasks = append(tasks, h.submit(flowNamespace, "per_customer", `{"even_number": 2, "customer": "acme"}`))
		_ = i
	}
	other := h.submit(flowNamespace, "per_customer", `{"even_number": 4, "customer": "globex"}`)
	// acme's first two and globex's are admitted as they are created;
	// acme's third waits.
	require.Equal(t, map[string]int{"enqueued": 3, "throttled": 1, "pending": 4}, h.stepStates())
	require.EqualValues(t, 3, h.queueLen(queue.NamespaceQueue(flowNamespace)))

	r := h.admit()
	require.Zero(t, r.Admitted)
	require.Equal(t, map[string]int{"slots": 1}, r.Held)
	acme, globex := "key:"+flowNamespace+"/per_customer=acme", "key:"+flowNamespace+"/per_customer=globex"
	require.Equal(t, map[string]int{acme: 2, globex: 1}, h.slotsByGroup())
	d := h.show(tasks[2])
	require.Equal(t, workflow.StepStateThrottled, step(t, d, "first").State)

	// The held step says why.
	usage, total, err := h.st.FlowUsage(h.ctx, 10)
	require.NoError(t, err)
	require.Equal(t, 2, total)
	require.Equal(t, acme, usage[0].Group, "the group with steps waiting first")
	require.Contains(t, usage, store.FlowGroupUsage{Namespace: flowNamespace, Group: acme, InUse: 2, Waiting: 1,
		OldestWait: usage[0].OldestWait, MaxInFlight: 2})

	// A step keeps its slot through its run; the next step of its task is
	// throttled in turn, and the completion gives the slot back.
	require.Equal(t, 3, h.work(flowNamespace))
	require.Equal(t, map[string]int{acme: 2, globex: 1}, h.slotsByGroup())
	h.applyAll()
	// acme's children wait behind acme's waiting step; globex's child,
	// alone in its key, is admitted by the move.
	require.Equal(t, map[string]int{globex: 1}, h.slotsByGroup())
	require.Equal(t, map[string]int{"throttled": 3, "enqueued": 1, "complete": 3, "pending": 1}, h.stepStates())

	// Every task completes, and the slots all come back.
	for range 10 {
		if h.admit().Admitted == 0 {
			break
		}
		h.work(flowNamespace)
		h.applyAll()
	}
	for _, task := range append(tasks, other) {
		d := h.show(task)
		require.Equal(t, workflow.TaskStateComplete, d.State)
		requireFlowMoves(t, d)
	}
	require.Empty(t, h.slotsByGroup())
	var waiting int
	require.NoError(t, h.pool.QueryRow(h.ctx, "SELECT count(*) FROM tasker.flow_waiting").Scan(&waiting))
	require.Zero(t, waiting)
}

// requireFlowMoves checks that each step of a task under a limit went
// pending → throttled → enqueued → in_progress → complete, or, admitted as
// it became ready, pending → enqueued → in_progress → complete.
func requireFlowMoves(t testing.TB, d store.TaskDetail) {
	t.Helper()
	waited := []string{"→pending@0", "pending→throttled@0", "throttled→enqueued@0", "enqueued→in_progress@1", "in_progress→complete@1"}
	direct := []string{"→pending@0", "pending→enqueued@0", "enqueued→in_progress@1", "in_progress→complete@1"}
	for name, moves := range stepMoves(d) {
		if len(moves) == len(direct) {
			require.Equal(t, direct, moves, "step %s", name)
			continue
		}
		require.Equal(t, waited, moves, "step %s", name)
	}
}

func TestFlowNamespaceLimitFromPolicy(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("plain", "", "")
	h.st.SetFlowPolicy(workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{flowNamespace: {MaxInFlight: 3}}})
	for range 5 {
		h.submit(flowNamespace, "plain", `{"even_number": 2}`)
	}
	require.Equal(t, map[string]int{"enqueued": 3, "throttled": 2, "pending": 5}, h.stepStates(), "three admitted as created")
	require.Zero(t, h.admit().Admitted, "the namespace is full")
	// A reload raises the limit for the steps already waiting.
	h.st.SetFlowPolicy(workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{flowNamespace: {MaxInFlight: 4}}})
	require.Equal(t, 1, h.admit().Admitted)
	// A cancelled task gives back its slots.
	var task uuid.UUID
	require.NoError(t, h.pool.QueryRow(h.ctx, "SELECT task_uuid FROM tasker.steps WHERE namespace = $1 AND state = 'enqueued' LIMIT 1", flowNamespace).Scan(&task))
	require.NoError(t, h.st.TaskCancel(h.ctx, task, ""))
	require.Equal(t, 1, h.admit().Admitted)
	require.Equal(t, map[string]int{"namespace:" + flowNamespace: 4}, h.slotsByGroup())
}

// TestFlowNamespaceShardsShareTheLimit fills one shard of a namespace
// limit large enough to split (256: 32 a shard): one store's creations
// admit 32 at once, the rest wait for a round, which admits them against
// the whole limit and spreads the slots over the shards, so that the next
// creations are admitted at once again; a limit below 32 a shard is not
// split (TestFlowNamespaceLimitFromPolicy).
func TestFlowNamespaceShardsShareTheLimit(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("plain", "", "")
	h.st.SetFlowPolicy(workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{flowNamespace: {MaxInFlight: 256}}})
	for range 40 {
		h.submit(flowNamespace, "plain", `{"even_number": 2}`)
	}
	require.Equal(t, map[string]int{"enqueued": 32, "throttled": 8, "pending": 40}, h.stepStates(), "one shard's share admitted at once")
	shards := func() []int {
		return h.ints(`SELECT in_use FROM tasker.flow_counts WHERE namespace = $1 AND name = $2 ORDER BY shard`,
			flowNamespace, "namespace:"+flowNamespace)
	}
	require.Equal(t, 8, h.admit().Admitted, "the round admits against the whole limit")
	require.Equal(t, []int{5, 5, 5, 5, 5, 5, 5, 5}, shards(), "and spreads the slots over the shards")
	for range 27 {
		h.submit(flowNamespace, "plain", `{"even_number": 2}`)
	}
	require.Equal(t, map[string]int{"enqueued": 67, "pending": 67}, h.stepStates(), "admitted at once again")
	require.Equal(t, map[string]int{"namespace:" + flowNamespace: 67}, h.slotsByGroup())
	require.Equal(t, 67, h.ints(`SELECT sum(in_use)::int FROM tasker.flow_counts WHERE namespace = $1 AND name = ''`, flowNamespace)[0])
}

func TestFlowRateDelaysTheMessage(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("rated", "", "")
	h.st.SetFlowPolicy(workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{
		flowNamespace: {Rate: workflow.Rate{Count: 4, Per: time.Second}, Burst: 2}}})
	for range 20 {
		h.submit(flowNamespace, "rated", `{"even_number": 2}`)
	}
	// A burst of 2 at once, then one every 250 ms up to the 3 s horizon.
	r := h.admit()
	require.Equal(t, 14, r.Admitted)
	require.Equal(t, 12, r.Delayed)
	require.Equal(t, map[string]int{"rate": 6}, r.Held)
	// The next token (3.25 s) comes within the horizon in 250 ms; the
	// round waits a sixth of the horizon to book a run of them.
	require.Equal(t, 500*time.Millisecond, r.RetryIn.Round(50*time.Millisecond), "when the next round can book tokens")
	require.Len(t, h.readAll(queue.NamespaceQueue(flowNamespace)), 2, "only the burst is visible now")
	var delays []float64
	table, err := queue.Table(queue.NamespaceQueue(flowNamespace))
	require.NoError(t, err)
	rows, err := h.pool.Query(h.ctx, "SELECT round(extract(epoch FROM vt - enqueued_at) * 1000) FROM "+table+" ORDER BY msg_id")
	require.NoError(t, err)
	for rows.Next() {
		var d float64
		require.NoError(t, rows.Scan(&d))
		delays = append(delays, d)
	}
	require.Len(t, delays, 14)
	for i, d := range delays[2:] {
		require.InDelta(t, float64(250*(i+1)), d, 60, "message %d's delay", i+2)
	}
}

func TestFlowKeyThatCannotRenderRejectsTheRequest(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("per_customer", `concurrency_key = "{{context.customer}}"
max_per_key = 2`, "")
	out := h.accept(request(flowNamespace, "per_customer", `{"even_number": 2}`))
	require.True(t, out.Rejected)
	require.Contains(t, out.Reason, `concurrency_key "{{context.customer}}": placeholder {{context.customer}}: context has no key "customer"`)
	rejected, err := h.st.RejectedList(h.ctx, 10)
	require.NoError(t, err)
	require.Len(t, rejected, 1)
	require.Contains(t, rejected[0].Reason, "concurrency_key")
}

// TestFlowSlotsFollowEveryState drives a step under a limit through every
// state that holds a slot and every one that does not, and checks the
// trigger's sets against workflow.StepState.HoldsSlot: a retry keeps the
// slot, a permanent failure gives it back, an operator retry throttles the
// step again.
func TestFlowSlotsFollowEveryState(t *testing.T) {
	h := newHarness(t, store.Options{Backoff: backoff.Policy{Base: time.Millisecond, Max: time.Millisecond, Multiplier: 1}})
	h.flowTemplate("one_at_a_time", "", "concurrency = 1\nretry = { max_attempts = 2 }")
	h.inject("first", h.failing(func(int) error { return workflow.Retryable("flaky", 0, "boom") }, 1, 2))
	task := h.submit(flowNamespace, "one_at_a_time", `{"even_number": 2}`)
	group := "step:" + flowNamespace + "/one_at_a_time/first"

	holds := func(state workflow.StepState) {
		t.Helper()
		d := h.show(task)
		require.Equal(t, state, step(t, d, "first").State)
		want := map[string]int{}
		if state.HoldsSlot() {
			want[group] = 1
		}
		require.Equal(t, want, h.slotsByGroup(), "in %s", state)
	}
	holds(workflow.StepStateEnqueued) // admitted as it was created
	msgs := h.readAll(queue.NamespaceQueue(flowNamespace))
	require.Len(t, msgs, 1)
	w := h.start(msgs[0])
	holds(workflow.StepStateInProgress)
	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, h.outcome(msgs[0], w)))
	h.applyAll()
	holds(workflow.StepStateWaitingForRetry)
	h.makeVisible(flowNamespace)
	require.Equal(t, 1, h.work(flowNamespace))
	h.applyAll()
	holds(workflow.StepStateError)
	n, err := h.st.TaskRetry(h.ctx, task)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	holds(workflow.StepStateThrottled)
	require.NoError(t, h.st.TaskCancel(h.ctx, task, ""))
	holds(workflow.StepStateCancelled)
	var waiting int
	require.NoError(t, h.pool.QueryRow(h.ctx, "SELECT count(*) FROM tasker.flow_waiting").Scan(&waiting))
	require.Zero(t, waiting)
	drift, err := h.st.FlowRepair(h.ctx)
	require.NoError(t, err)
	require.Equal(t, store.FlowDrift{}, drift, "nothing to repair")
}

// TestFlowRepairGivesBackLeakedSlots makes the flow tables disagree with
// the steps, as only a change with the trigger disabled can, and repairs
// them.
func TestFlowRepairGivesBackLeakedSlots(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("one_at_a_time", "", "concurrency = 1")
	task := h.submit(flowNamespace, "one_at_a_time", `{"even_number": 2}`)
	require.Equal(t, map[string]int{"step:" + flowNamespace + "/one_at_a_time/first": 1}, h.slotsByGroup())
	_, err := h.pool.Exec(h.ctx, `ALTER TABLE tasker.steps DISABLE TRIGGER steps_flow_updated;
		UPDATE tasker.steps SET state = 'complete' WHERE task_uuid = '`+task.String()+`' AND name = 'first';
		ALTER TABLE tasker.steps ENABLE TRIGGER steps_flow_updated`)
	require.NoError(t, err)
	drift, err := h.st.FlowRepair(h.ctx)
	require.NoError(t, err)
	require.Equal(t, store.FlowDrift{Slots: 1}, drift)
	require.Empty(t, h.slotsByGroup())
}

// TestFlowAdmissionsRaceWithinLimits runs four stores' admissions at once
// over 200 tasks of 10 keys (max 2 each) under a namespace limit of 12,
// completing what they admit: no reading of the slots ever passes a limit,
// and every task completes.
func TestFlowAdmissionsRaceWithinLimits(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("per_customer", `concurrency_key = "{{context.customer}}"
max_per_key = 2`, "")
	policy := workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{flowNamespace: {MaxInFlight: 12}}}
	stores := []*store.Store{h.st}
	for i := range 3 {
		st := store.New(h.pool, store.Options{NodeID: fmt.Sprintf("node-%d", i)})
		stores = append(stores, st)
	}
	for _, st := range stores {
		st.SetFlowPolicy(policy)
	}
	var tasks []uuid.UUID
	for i := range 200 {
		tasks = append(tasks, h.submit(flowNamespace, "per_customer", fmt.Sprintf(`{"even_number": 2, "customer": "c%d"}`, i%10)))
	}
	for round := 0; ; round++ {
		require.Less(t, round, 500, "the tasks do not finish")
		_, errs := race(stores, func(st *store.Store) (store.FlowRound, error) { return st.FlowAdmit(h.ctx, flowNamespace) })
		for _, err := range errs {
			require.NoError(t, err)
		}
		slots := h.slotsByGroup()
		total := slots["namespace:"+flowNamespace]
		require.LessOrEqual(t, total, 12)
		for g, n := range slots {
			if strings.HasPrefix(g, "key:") {
				require.LessOrEqual(t, n, 2, g)
			}
		}
		ran := h.work(flowNamespace)
		h.applyAll()
		if ran == 0 && total == 0 {
			break
		}
	}
	for _, task := range tasks {
		require.Equal(t, workflow.TaskStateComplete, h.show(task).State)
	}
	require.Empty(t, h.slotsByGroup())
}

// TestFlowHandlerLimitSpansNamespaces puts the steps of two namespaces
// under one handler's concurrency limit and races the admissions of both
// from four stores: the handler's slots, counted across the namespaces,
// never pass the limit, and every task completes.
func TestFlowHandlerLimitSpansNamespaces(t *testing.T) {
	h := newHarness(t, store.Options{})
	const other = "flow_test_other"
	h.flowTemplate("plain", "", "")
	h.flowTemplateIn(other, "plain", "", "")
	policy := workflow.FlowPolicy{Handlers: map[string]workflow.Limit{"demo.math": {MaxInFlight: 3}}}
	stores := []*store.Store{h.st}
	for i := range 3 {
		stores = append(stores, store.New(h.pool, store.Options{NodeID: fmt.Sprintf("node-%d", i)}))
	}
	for _, st := range stores {
		st.SetFlowPolicy(policy)
	}
	var tasks []uuid.UUID
	for i := range 20 {
		ns := flowNamespace
		if i%2 == 1 {
			ns = other
		}
		tasks = append(tasks, h.submit(ns, "plain", `{"even_number": 2}`))
	}
	require.Equal(t, map[string]int{"throttled": 20, "pending": 20},
		h.countsBy("SELECT state, count(*) FROM tasker.steps GROUP BY state"),
		"a handler's slots are counted by a round, not at once")
	type turn struct {
		st    *store.Store
		order []string
	}
	var turns []turn
	for i, st := range stores {
		order := []string{flowNamespace, other}
		if i%2 == 1 {
			order = []string{other, flowNamespace}
		}
		turns = append(turns, turn{st, order})
	}
	peak := 0
	for round := 0; ; round++ {
		require.Less(t, round, 200, "the tasks do not finish")
		// Each store admits both namespaces, half of them the other first.
		_, errs := race(turns, func(tn turn) (int, error) {
			n := 0
			for _, ns := range tn.order {
				r, err := tn.st.FlowAdmit(h.ctx, ns)
				if err != nil {
					return n, err
				}
				n += r.Admitted
			}
			return n, nil
		})
		for _, err := range errs {
			require.NoError(t, err)
		}
		inUse := h.slotsByGroup()["handler:demo.math"]
		require.LessOrEqual(t, inUse, 3, "the handler's slots across both namespaces")
		peak = max(peak, inUse)
		ran := h.work(flowNamespace) + h.work(other)
		h.applyAll()
		if ran == 0 && inUse == 0 {
			break
		}
	}
	require.Equal(t, 3, peak, "the limit is used")
	for _, task := range tasks {
		require.Equal(t, workflow.TaskStateComplete, h.show(task).State)
	}
	require.Empty(t, h.slotsByGroup())
}

// admittedOrder runs one step at a time (a namespace limit of 1), each to
// the end, admitting the next when none is enqueued, and returns the tasks
// in the order their first step was admitted.
func (h *harness) admittedOrder(n int) []uuid.UUID {
	h.t.Helper()
	var order []uuid.UUID
	for len(order) < n {
		msgs := h.readAll(queue.NamespaceQueue(flowNamespace))
		if len(msgs) == 0 {
			r := h.admit()
			require.Equal(h.t, 1, r.Admitted)
			msgs = h.readAll(queue.NamespaceQueue(flowNamespace))
		}
		require.Len(h.t, msgs, 1)
		if w := h.runStep(msgs[0]); w.StepName == "first" {
			order = append(order, w.TaskUUID)
		}
		h.applyAll()
	}
	return order
}

// TestFlowKeysTakeTurns puts 20 keys of 5 tasks behind one key of 5,000,
// with one slot: keys take turns, so every small key's task is admitted
// within the first 1 + 21 × 5 = 106 admissions (the first of the big key
// took the free slot as it was created), not after the big key drains.
// (The bound in general: a key's n-th waiting step is offered a slot after
// at most n turns of every key with steps waiting.)
func TestFlowKeysTakeTurns(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 5,100 tasks")
	}
	h := newHarness(t, store.Options{})
	h.flowTemplate("per_customer", `concurrency_key = "{{context.customer}}"
max_per_key = 100`, "")
	h.st.SetFlowPolicy(workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{flowNamespace: {MaxInFlight: 1}}})
	var reqs []queue.TaskRequest
	for range 5000 {
		reqs = append(reqs, request(flowNamespace, "per_customer", `{"even_number": 2, "customer": "big"}`))
	}
	var (
		mu        sync.Mutex
		small     = map[uuid.UUID]bool{}
		smallReqs []queue.TaskRequest
	)
	for k := range 20 {
		for range 5 {
			smallReqs = append(smallReqs, request(flowNamespace, "per_customer", fmt.Sprintf(`{"even_number": 2, "customer": "small-%d"}`, k)))
		}
	}
	for _, batch := range [][]queue.TaskRequest{reqs, smallReqs} {
		require.NoError(t, concurrentlyN(4, batch, func(r queue.TaskRequest) error {
			out, err := h.st.TaskCreate(h.ctx, r)
			if err == nil && batch[0].Context != reqs[0].Context {
				mu.Lock()
				small[out.TaskUUID] = true
				mu.Unlock()
			}
			return err
		}))
	}
	require.Len(t, small, 100)
	order := h.admittedOrder(106)
	seen := 0
	for _, task := range order {
		if small[task] {
			seen++
		}
	}
	t.Logf("of the first 106 admissions, %d went to the 100 small keys' tasks", seen)
	require.Equal(t, 100, seen, "every small key's task within 106 admissions")
}

// TestFlowPriorityJumpsTheQueue queues 5,000 tasks of priority 0 behind
// one slot: a task of priority 10 sent after them is admitted at the next
// free slot.
func TestFlowPriorityJumpsTheQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 5,000 tasks")
	}
	h := newHarness(t, store.Options{})
	h.flowTemplate("plain", "", "")
	// Aging slow enough that the 5,000 do not age while they are created.
	h.st.SetFlowPolicy(workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{flowNamespace: {MaxInFlight: 1}}, Aging: time.Hour})
	var low []queue.TaskRequest
	for range 5000 {
		low = append(low, withPriority(0))
	}
	require.NoError(t, concurrentlyN(4, low, func(r queue.TaskRequest) error {
		_, err := h.st.TaskCreate(h.ctx, r)
		return err
	}))
	urgent, err := h.st.TaskCreate(h.ctx, withPriority(10))
	require.NoError(t, err)
	// The first of the 5,000 took the free slot as it was created.
	require.Equal(t, urgent.TaskUUID, h.admittedOrder(2)[1], "the urgent task takes the next slot")
}

func withPriority(p int) queue.TaskRequest {
	r := request(flowNamespace, "plain", `{"even_number": 2}`)
	r.Priority = p
	return r
}

// TestFlowAgingEndsStarvation: under a continuous stream of priority-5
// tasks, a priority-0 task waits no longer than its aging allows. Its
// effective priority rises one level per aging interval (1 s here), so
// once it has waited 6 s it passes the stream: in general a step waits at
// most (P - p + 1) aging intervals behind steps of priority up to P. The
// wait is stood in for by moving back the time it became ready.
func TestFlowAgingEndsStarvation(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("plain", "", "")
	h.st.SetFlowPolicy(workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{flowNamespace: {MaxInFlight: 1}}, Aging: time.Second})
	blocker, err := h.st.TaskCreate(h.ctx, withPriority(0)) // takes the free slot
	require.NoError(t, err)
	waiting, err := h.st.TaskCreate(h.ctx, withPriority(0))
	require.NoError(t, err)
	require.Equal(t, 1, waiting.Throttled)
	require.Equal(t, []uuid.UUID{blocker.TaskUUID}, h.admittedOrder(1))
	for range 3 {
		stream, err := h.st.TaskCreate(h.ctx, withPriority(5))
		require.NoError(t, err)
		require.Equal(t, []uuid.UUID{stream.TaskUUID}, h.admittedOrder(1))
	}
	_, err = h.pool.Exec(h.ctx, `UPDATE tasker.flow_waiting SET since = since - interval '6 seconds'
		WHERE task_uuid = $1`, waiting.TaskUUID)
	require.NoError(t, err)
	stream, err := h.st.TaskCreate(h.ctx, withPriority(5))
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{waiting.TaskUUID}, h.admittedOrder(1), "after 6 s its priority 0 + 6 passes the stream's 5")
	require.Equal(t, []uuid.UUID{stream.TaskUUID}, h.admittedOrder(1))
	require.Equal(t, 6, workflow.EffectivePriority(0, 6*time.Second, time.Second), "the statement ages as workflow does")
}

// TestFlowDirectAdmission: a ready step whose groups have room for it and
// for the steps of those groups already waiting is admitted by the move
// that makes it ready, without waiting for an admission; otherwise it
// waits its turn.
func TestFlowDirectAdmission(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("per_customer", `concurrency_key = "{{context.customer}}"
max_per_key = 1`, "")
	first := h.submit(flowNamespace, "per_customer", `{"even_number": 2, "customer": "acme"}`)
	require.Equal(t, workflow.StepStateEnqueued, step(t, h.show(first), "first").State, "admitted as created")
	require.Equal(t, 1, h.work(flowNamespace))
	h.applyAll()
	// The slot the first step gives back is free for its child.
	d := h.show(first)
	require.Equal(t, workflow.StepStateEnqueued, step(t, d, "second").State, "admitted by the move")
	require.Equal(t, []string{"→pending@0", "pending→enqueued@0"}, stepMoves(d)["second"])

	// acme's slot is taken: its next step waits. globex's has room for it
	// and for every globex step waiting (none): admitted at once.
	second := h.submit(flowNamespace, "per_customer", `{"even_number": 2, "customer": "acme"}`)
	require.Equal(t, workflow.StepStateThrottled, step(t, h.show(second), "first").State)
	third := h.submit(flowNamespace, "per_customer", `{"even_number": 2, "customer": "globex"}`)
	require.Equal(t, workflow.StepStateEnqueued, step(t, h.show(third), "first").State)

	// When acme's slot comes back, the waiting step gets it.
	require.Equal(t, 2, h.work(flowNamespace))
	h.applyAll()
	require.Equal(t, workflow.TaskStateComplete, h.show(first).State)
	require.Equal(t, 1, h.admit().Admitted)
	require.Equal(t, workflow.StepStateEnqueued, step(t, h.show(second), "first").State)
}

// TestFlowRetryAfterPausesTheKey: in a namespace whose Retry-After answers
// pause the key, a 429 to one customer's step holds that customer's next
// step (not admitted at once, then held by the round with the reason)
// while another customer's goes through.
func TestFlowRetryAfterPausesTheKey(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("keyed", `concurrency_key = "{{context.customer}}"
max_per_key = 100`, "")
	h.st.SetFlowPolicy(workflow.FlowPolicy{Pauses: map[string]workflow.PauseScope{flowNamespace: workflow.PauseKey}})
	h.inject("first", h.failing(func(int) error { return workflow.Retryable("http_429", 30*time.Second, "too many requests") }, 1))
	first := h.submit(flowNamespace, "keyed", `{"even_number": 2, "customer": "c1"}`)
	require.Equal(t, 1, h.work(flowNamespace))
	h.applyAll()
	require.Equal(t, workflow.StepStateWaitingForRetry, h.show(first).Steps[0].State)
	var (
		until  time.Time
		reason string
	)
	require.NoError(t, h.pool.QueryRow(h.ctx, `SELECT until, reason FROM tasker.flow_pauses WHERE name = $1`,
		"key:"+flowNamespace+"/keyed=c1").Scan(&until, &reason))
	require.WithinDuration(t, time.Now().Add(30*time.Second), until, 5*time.Second)
	require.Contains(t, reason, "a Retry-After answer of 30000 ms to step")

	h.inject("first", nil)
	second := h.submit(flowNamespace, "keyed", `{"even_number": 2, "customer": "c1"}`)
	other := h.submit(flowNamespace, "keyed", `{"even_number": 2, "customer": "c2"}`)
	require.Equal(t, workflow.StepStateThrottled, h.show(second).Steps[0].State, "the paused key's step is left to a round")
	require.Equal(t, workflow.StepStateEnqueued, h.show(other).Steps[0].State, "another key's is admitted at once")
	r := h.admit()
	require.Zero(t, r.Admitted)
	require.Equal(t, map[string]int{"pause": 1}, r.Held)
	require.Equal(t, map[string]int{"pause": 1}, r.NewlyHeld)
	require.InDelta(t, 27*time.Second, r.RetryIn, float64(5*time.Second), "the round is due when the pause comes within the horizon")
	d := h.show(second)
	require.Contains(t, d.Steps[0].ThrottledReason, "key:"+flowNamespace+"/keyed=c1: paused by a Retry-After answer until ")

	// A namespace that does not say so pauses nothing.
	h.st.SetFlowPolicy(workflow.FlowPolicy{})
	h.inject("first", h.failing(func(int) error { return workflow.Retryable("http_429", 30*time.Second, "too many requests") }, 1))
	h.submit(flowNamespace, "keyed", `{"even_number": 2, "customer": "c3"}`)
	h.work(flowNamespace)
	h.applyAll()
	require.Equal(t, int64(1), h.count("SELECT count(*) FROM tasker.flow_pauses"))
}
