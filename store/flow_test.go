package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

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
`, flowNamespace, name, head, step)
	tmpl, err := workflow.ParseTemplate(name+".toml", []byte(src), h.reg)
	require.NoError(h.t, err)
	require.NoError(h.t, h.st.EnsureQueues(h.ctx, []string{flowNamespace}))
	_, err = h.st.TemplateRegister(h.ctx, tmpl)
	require.NoError(h.t, err)
}

// stepStates counts the steps of flowNamespace by state.
func (h *harness) stepStates() map[string]int {
	h.t.Helper()
	rows, err := h.pool.Query(h.ctx, "SELECT state, count(*) FROM tasker.steps WHERE namespace = $1 GROUP BY state", flowNamespace)
	require.NoError(h.t, err)
	out := map[string]int{}
	for rows.Next() {
		var (
			state string
			n     int
		)
		require.NoError(h.t, rows.Scan(&state, &n))
		out[state] = n
	}
	require.NoError(h.t, rows.Err())
	return out
}

// slotsByGroup counts the slots held per group, from flow_slots, and checks
// them against the steps' own states.
func (h *harness) slotsByGroup() map[string]int {
	h.t.Helper()
	var drift int
	require.NoError(h.t, h.pool.QueryRow(h.ctx, `SELECT count(*) FROM tasker.steps s
		WHERE s.flow_groups IS NOT NULL AND (s.state IN ('enqueued', 'in_progress', 'waiting_for_retry'))
			<> EXISTS (SELECT FROM tasker.flow_slots f WHERE f.step_uuid = s.step_uuid)`).Scan(&drift))
	require.Zero(h.t, drift, "flow_slots disagree with the steps' states")
	rows, err := h.pool.Query(h.ctx, "SELECT g, count(*) FROM tasker.flow_slots, unnest(groups) g GROUP BY g")
	require.NoError(h.t, err)
	out := map[string]int{}
	for rows.Next() {
		var (
			g string
			n int
		)
		require.NoError(h.t, rows.Scan(&g, &n))
		out[g] = n
	}
	require.NoError(h.t, rows.Err())
	return out
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
	// Every root waits, throttled, with no message sent.
	require.Equal(t, map[string]int{"throttled": 4, "pending": 4}, h.stepStates())
	require.Zero(t, h.queueLen(queue.NamespaceQueue(flowNamespace)))

	r := h.admit()
	require.Equal(t, 3, r.Admitted, "two of acme's and globex's one")
	require.Equal(t, map[string]int{"slots": 1}, r.Held)
	acme, globex := "key:"+flowNamespace+"/per_customer=acme", "key:"+flowNamespace+"/per_customer=globex"
	require.Equal(t, map[string]int{acme: 2, globex: 1}, h.slotsByGroup())
	d := h.show(tasks[2])
	require.Equal(t, workflow.StepStateThrottled, step(t, d, "first").State)

	// The held step says why.
	usage, err := h.st.FlowUsage(h.ctx)
	require.NoError(t, err)
	require.Contains(t, usage, store.FlowGroupUsage{Namespace: flowNamespace, Group: acme, InUse: 2, Waiting: 1,
		OldestWait: usage[0].OldestWait, MaxInFlight: 2})

	// A step keeps its slot through its run; the next step of its task is
	// throttled in turn, and the completion gives the slot back.
	require.Equal(t, 3, h.work(flowNamespace))
	require.Equal(t, map[string]int{acme: 2, globex: 1}, h.slotsByGroup())
	h.applyAll()
	require.Equal(t, map[string]int{}, h.slotsByGroup())
	require.Equal(t, map[string]int{"throttled": 4, "complete": 3, "pending": 1}, h.stepStates())

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
// pending → throttled → enqueued → in_progress → complete.
func requireFlowMoves(t testing.TB, d store.TaskDetail) {
	t.Helper()
	for name, moves := range stepMoves(d) {
		require.Equal(t, []string{"→pending@0", "pending→throttled@0", "throttled→enqueued@0", "enqueued→in_progress@1", "in_progress→complete@1"},
			moves, "step %s", name)
	}
}

func TestFlowNamespaceLimitFromPolicy(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("plain", "", "")
	h.st.SetFlowPolicy(workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{flowNamespace: {MaxInFlight: 3}}})
	for range 5 {
		h.submit(flowNamespace, "plain", `{"even_number": 2}`)
	}
	require.Equal(t, 3, h.admit().Admitted)
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

func TestFlowRateDelaysTheMessage(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("rated", "", "")
	h.st.SetFlowPolicy(workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{
		flowNamespace: {Rate: workflow.Rate{Count: 4, Per: time.Second}, Burst: 2}}})
	for range 10 {
		h.submit(flowNamespace, "rated", `{"even_number": 2}`)
	}
	// A burst of 2 at once, then one every 250 ms up to the 1 s horizon.
	r := h.admit()
	require.Equal(t, 6, r.Admitted)
	require.Equal(t, 4, r.Delayed)
	require.Equal(t, map[string]int{"rate": 4}, r.Held)
	require.False(t, r.Retry.IsZero())
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
	require.Len(t, delays, 6)
	for i, d := range delays[2:] {
		require.InDelta(t, float64(250*(i+1)), d, 60, "message %d's delay", i+2)
	}
}
