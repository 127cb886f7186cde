package bootstrap_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/examples"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// sendSQL is how any pgmq client, psql included, asks for a task: the
// end-to-end tests never call Tasker's Go API to submit.
const sendSQL = `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`

// taskTimeout bounds the wait for one task on a node that is not loaded.
const taskTimeout = 30 * time.Second

// env is a node under test and an outside client of its database.
type env struct {
	t    *testing.T
	node *bootstrap.Node
	url  string
	// client is a pool of its own on the node's database, as an external
	// program would have; the node's pool is only used to read results.
	client *pgxpool.Pool
}

// startEnv starts an in-process node on a fresh database (see
// testsupport.StartNode) and connects an outside client to it.
func startEnv(t *testing.T, options ...testsupport.NodeOption) *env {
	t.Helper()
	url := testsupport.NewDatabaseURL(t)
	node := testsupport.StartNodeOn(t, url, options...)
	return &env{t: t, node: node, url: url, client: newClient(t, url)}
}

func newClient(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// request is a task request as an external client writes it.
type request struct {
	RequestID uuid.UUID       `json:"request_id"`
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Version   string          `json:"version,omitempty"`
	Context   json.RawMessage `json:"context"`
}

func newRequest(namespace, name, context string) request {
	return request{RequestID: uuid.Must(uuid.NewV7()), Namespace: namespace, Name: name, Context: json.RawMessage(context)}
}

func (r request) body(t testing.TB) string {
	b, err := json.Marshal(r)
	require.NoError(t, err)
	return string(b)
}

// send puts body on the task request queue with plain SQL and returns the
// message id.
func (e *env) send(body string) int64 {
	e.t.Helper()
	var id int64
	require.NoError(e.t, e.client.QueryRow(e.t.Context(), sendSQL, body).Scan(&id), "sending %s", body)
	return id
}

// submit sends a well-formed request and returns its request id.
func (e *env) submit(namespace, name, context string) uuid.UUID {
	e.t.Helper()
	r := newRequest(namespace, name, context)
	e.send(r.body(e.t))
	return r.RequestID
}

// waitTask waits for the task of a request to reach a terminal state and
// returns it with its steps and history. A rejection of the request ends the
// wait at once.
func (e *env) waitTask(requestID uuid.UUID, timeout time.Duration) store.TaskDetail {
	e.t.Helper()
	ctx := e.t.Context()
	testsupport.WaitFor(e.t, timeout, fmt.Sprintf("the task of request %s to finish", requestID), func() (bool, error) {
		task, err := e.node.Store().TaskGet(ctx, requestID)
		if errors.Is(err, store.ErrNotFound) {
			var reason string
			err := e.client.QueryRow(ctx, `SELECT reason FROM tasker.rejected_requests WHERE request_id = $1`, requestID).Scan(&reason)
			if err == nil {
				return false, fmt.Errorf("request rejected: %s", reason)
			}
			if errors.Is(err, pgx.ErrNoRows) {
				return false, nil
			}
			return false, err
		}
		if err != nil {
			return false, err
		}
		return task.State.Terminal(), nil
	})
	d, err := e.node.Store().TaskShow(ctx, requestID)
	require.NoError(e.t, err)
	return d
}

// workflowCase is one reference workflow run and what it must produce.
type workflowCase struct {
	label     string
	namespace string
	name      string
	context   string
	// want holds the result of every step by name (demo.math workflows);
	// check, when set, inspects the finished task instead (fulfillment).
	want  map[string]float64
	check func(t *testing.T, d store.TaskDetail)
}

func (c workflowCase) verify(t *testing.T, d store.TaskDetail) {
	t.Helper()
	requireCompleteInOrder(t, d)
	if c.want != nil {
		require.Equal(t, c.want, mathResults(t, d), "%s: step results", c.label)
	}
	if c.check != nil {
		c.check(t, d)
	}
}

// The expected results are computed with the same float64 operations, in the
// same order, as demo.math (joins take their parents sorted by name), so
// they compare exactly.

func linearCase(n int) workflowCase {
	x := float64(n)
	s1 := x * x
	s2 := s1 + 10
	s3 := s2 * 3
	s4 := s3 / 2
	return workflowCase{
		label: fmt.Sprintf("linear n=%d", n), namespace: testsupport.LinearNamespace, name: testsupport.LinearName,
		context: fmt.Sprintf(`{"even_number": %d}`, n),
		want:    map[string]float64{"linear_step_1": s1, "linear_step_2": s2, "linear_step_3": s3, "linear_step_4": s4},
	}
}

func diamondCase(n int) workflowCase {
	x := float64(n)
	start := x * x
	b := start + 25
	c := start * 2
	end := (0 + b + c) / 2
	return workflowCase{
		label: fmt.Sprintf("diamond n=%d", n), namespace: testsupport.DiamondNamespace, name: testsupport.DiamondName,
		context: fmt.Sprintf(`{"even_number": %d}`, n),
		want:    map[string]float64{"diamond_start": start, "diamond_branch_b": b, "diamond_branch_c": c, "diamond_end": end},
	}
}

func treeCase(n int) workflowCase {
	x := float64(n)
	root := x * x
	branch := root * root
	leaf := branch * branch
	final := 1.0
	for range 4 {
		final *= leaf
	}
	return workflowCase{
		label: fmt.Sprintf("tree n=%d", n), namespace: testsupport.TreeNamespace, name: testsupport.TreeName,
		context: fmt.Sprintf(`{"even_number": %d}`, n),
		want: map[string]float64{
			"tree_root": root, "tree_branch_left": branch, "tree_branch_right": branch,
			"tree_leaf_d": leaf, "tree_leaf_e": leaf, "tree_leaf_f": leaf, "tree_leaf_g": leaf,
			"tree_final_convergence": final,
		},
	}
}

func mixedCase(n int) workflowCase {
	x := float64(n)
	init := x * x
	left, right := init*init, init*init
	validate := 1 * left * right
	transform := left * left
	analyze := right * right
	finalize := 1 * analyze * transform * validate
	return workflowCase{
		label: fmt.Sprintf("mixed DAG n=%d", n), namespace: testsupport.MixedDAGNamespace, name: testsupport.MixedDAGName,
		context: fmt.Sprintf(`{"even_number": %d}`, n),
		want: map[string]float64{
			"dag_init": init, "dag_process_left": left, "dag_process_right": right,
			"dag_validate": validate, "dag_transform": transform, "dag_analyze": analyze, "dag_finalize": finalize,
		},
	}
}

func fulfillmentCase() workflowCase {
	return workflowCase{
		label: "fulfillment", namespace: testsupport.FulfillmentNamespace, name: testsupport.FulfillmentName,
		context: examples.SampleOrder,
		check: func(t *testing.T, d store.TaskDetail) {
			t.Helper()
			var names []string
			for _, st := range d.Steps {
				names = append(names, st.Name)
			}
			require.Equal(t, []string{"validate_order", "reserve_inventory", "process_payment", "ship_order"}, names)
			res := objectResults(t, d)
			require.Equal(t, true, res["validate_order"]["validated"])
			require.Equal(t, 25.0, res["validate_order"]["total"])
			require.Equal(t, true, res["reserve_inventory"]["reserved"])
			require.Equal(t, 25.0, res["process_payment"]["charged"])
			require.Equal(t, "captured", res["process_payment"]["status"])
			require.Equal(t, true, res["ship_order"]["shipped"])
			require.Equal(t, "TRK-ord_1001", res["ship_order"]["tracking_number"])
		},
	}
}

// mathResults maps each step of a demo.math task to its result.
func mathResults(t *testing.T, d store.TaskDetail) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, st := range d.Steps {
		var n examples.Number
		require.NoError(t, json.Unmarshal(st.Result, &n), "result of %s: %s", st.Name, st.Result)
		out[st.Name] = n.Result
	}
	return out
}

func objectResults(t *testing.T, d store.TaskDetail) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, st := range d.Steps {
		var m map[string]any
		require.NoError(t, json.Unmarshal(st.Result, &m), "result of %s: %s", st.Name, st.Result)
		out[st.Name] = m
	}
	return out
}

// requireCompleteInOrder checks a task that ran without a failure: the task
// and every step complete after exactly one attempt each, every state change
// recorded in the canonical order, and no step enqueued or started before
// each of its parents completed — by the order of the transition rows and by
// their timestamps.
func requireCompleteInOrder(t *testing.T, d store.TaskDetail) {
	t.Helper()
	require.Equal(t, workflow.TaskStateComplete, d.State, "task %s/%s", d.Namespace, d.Name)
	require.NotNil(t, d.FinishedAt)
	require.Equal(t, []string{" → pending", "pending → in_progress", "in_progress → complete"}, moves(d.TaskTransitions, ""))

	byName := map[string]store.Step{}
	for _, st := range d.Steps {
		byName[st.Name] = st
		require.Equal(t, workflow.StepStateComplete, st.State, "step %s", st.Name)
		require.Equal(t, 1, st.Attempts, "step %s", st.Name)
		require.Equal(t, []string{" → pending", "pending → enqueued", "enqueued → in_progress", "in_progress → complete"},
			moves(d.StepTransitions, st.Name), "transitions of step %s", st.Name)
		require.NotNil(t, st.LastAttemptedAt, "step %s", st.Name)
		require.NotNil(t, st.FinishedAt, "step %s", st.Name)
		require.False(t, d.FinishedAt.Before(*st.FinishedAt), "task finished before its step %s", st.Name)
	}
	find := func(step, to string) (int, store.Transition) {
		i := slices.IndexFunc(d.StepTransitions, func(tr store.Transition) bool { return tr.StepName == step && tr.To == to })
		require.GreaterOrEqual(t, i, 0, "no transition of %s to %s", step, to)
		return i, d.StepTransitions[i]
	}
	for _, st := range d.Steps {
		enqueued, enqueuedTr := find(st.Name, "enqueued")
		started, startedTr := find(st.Name, "in_progress")
		for _, p := range st.DependsOn {
			parent, ok := byName[p]
			require.True(t, ok, "step %s depends on unknown %s", st.Name, p)
			completed, completedTr := find(p, "complete")
			require.Less(t, completed, enqueued, "%s was enqueued before its parent %s completed", st.Name, p)
			require.Less(t, completed, started, "%s started before its parent %s completed", st.Name, p)
			require.False(t, enqueuedTr.CreatedAt.Before(completedTr.CreatedAt), "%s enqueued at %s, before %s completed at %s",
				st.Name, enqueuedTr.CreatedAt, p, completedTr.CreatedAt)
			require.False(t, startedTr.CreatedAt.Before(completedTr.CreatedAt), "%s started at %s, before %s completed at %s",
				st.Name, startedTr.CreatedAt, p, completedTr.CreatedAt)
			require.False(t, st.LastAttemptedAt.Before(*parent.FinishedAt), "%s attempted at %s, before %s finished at %s",
				st.Name, *st.LastAttemptedAt, p, *parent.FinishedAt)
		}
	}
}

// moves lists the transitions of one step ("" for the task's own) as
// "from → to".
func moves(trs []store.Transition, step string) []string {
	var out []string
	for _, tr := range trs {
		if tr.StepName == step {
			out = append(out, tr.From+" → "+tr.To)
		}
	}
	return out
}

// TestReferenceWorkflows runs the five reference workflows of DESIGN.md end
// to end, each requested through the queue with plain SQL, and checks every
// value of the design's table.
func TestReferenceWorkflows(t *testing.T) {
	t.Parallel()
	e := startEnv(t)

	cases := []workflowCase{
		{label: "linear", namespace: testsupport.LinearNamespace, name: testsupport.LinearName, context: `{"even_number": 6}`,
			want: map[string]float64{"linear_step_1": 36, "linear_step_2": 46, "linear_step_3": 138, "linear_step_4": 69}},
		{label: "diamond", namespace: testsupport.DiamondNamespace, name: testsupport.DiamondName, context: `{"even_number": 4}`,
			want: map[string]float64{"diamond_start": 16, "diamond_branch_b": 41, "diamond_branch_c": 32, "diamond_end": 36.5}},
		{label: "tree", namespace: testsupport.TreeNamespace, name: testsupport.TreeName, context: `{"even_number": 2}`,
			want: map[string]float64{
				"tree_root": 4, "tree_branch_left": 16, "tree_branch_right": 16,
				"tree_leaf_d": 256, "tree_leaf_e": 256, "tree_leaf_f": 256, "tree_leaf_g": 256,
				"tree_final_convergence": 4294967296,
			}},
		{label: "mixed DAG", namespace: testsupport.MixedDAGNamespace, name: testsupport.MixedDAGName, context: `{"even_number": 2}`,
			want: map[string]float64{
				"dag_init": 4, "dag_process_left": 16, "dag_process_right": 16,
				"dag_validate": 256, "dag_transform": 256, "dag_analyze": 256, "dag_finalize": 16777216,
			}},
		fulfillmentCase(),
	}
	ids := make([]uuid.UUID, len(cases))
	for i, c := range cases {
		ids[i] = e.submit(c.namespace, c.name, c.context)
	}
	for i, c := range cases {
		d := e.waitTask(ids[i], taskTimeout)
		require.Equal(t, c.namespace, d.Namespace)
		require.Equal(t, c.name, d.Name)
		require.Equal(t, "1.0.0", d.Version, "the newest version is picked when the request names none")
		c.verify(t, d)
	}

	// The computed expectations used by the load test agree with the table.
	require.Equal(t, cases[0].want, linearCase(6).want)
	require.Equal(t, cases[1].want, diamondCase(4).want)
	require.Equal(t, cases[2].want, treeCase(2).want)
	require.Equal(t, cases[3].want, mixedCase(2).want)
}

// TestOddNumberFailsTheStep checks that an odd number is a permanent step
// error with a clear message, not a crash: the task ends in error after one
// attempt and the node goes on.
func TestOddNumberFailsTheStep(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	d := e.waitTask(e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 7}`), taskTimeout)
	require.Equal(t, workflow.TaskStateError, d.State)
	first := d.Steps[0]
	require.Equal(t, workflow.StepStateError, first.State)
	require.Equal(t, 1, first.Attempts, "a permanent error is not retried")
	require.Contains(t, string(first.Error), "must be even, got 7")
	for _, st := range d.Steps[1:] {
		require.Equal(t, workflow.StepStatePending, st.State, "step %s never became ready", st.Name)
	}
	linearCase(8).verify(t, e.waitTask(e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 8}`), taskTimeout))
}

// TestFiftyMixedTasks sends 50 requests of all five patterns in one
// transaction, so they arrive together, and checks every value.
func TestFiftyMixedTasks(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	ctx := t.Context()

	var cases []workflowCase
	for i := range 50 {
		n := 2 * (i/5 + 1) // 2, 4, … 20
		switch i % 5 {
		case 0:
			cases = append(cases, linearCase(n))
		case 1:
			cases = append(cases, diamondCase(n))
		case 2:
			cases = append(cases, treeCase(n))
		case 3:
			cases = append(cases, mixedCase(n))
		default:
			cases = append(cases, fulfillmentCase())
		}
	}
	ids := make([]string, len(cases))
	batch := &pgx.Batch{}
	for i, c := range cases {
		r := newRequest(c.namespace, c.name, c.context)
		ids[i] = r.RequestID.String()
		batch.Queue(sendSQL, r.body(t))
	}

	began := time.Now()
	tx, err := e.client.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, tx.SendBatch(ctx, batch).Close())
	require.NoError(t, tx.Commit(ctx))

	testsupport.WaitFor(t, 60*time.Second, "50 tasks to finish", func() (bool, error) {
		var finished, failed int
		err := e.client.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE state IN ('complete', 'error', 'cancelled')),
				count(*) FILTER (WHERE state IN ('error', 'cancelled'))
			FROM tasker.tasks WHERE request_id = ANY($1::uuid[])`, ids).Scan(&finished, &failed)
		if err == nil && failed > 0 {
			err = fmt.Errorf("%d tasks did not complete", failed)
		}
		return finished == len(ids), err
	})
	wall := time.Since(began)

	var spanSeconds float64
	var steps int
	require.NoError(t, e.client.QueryRow(ctx, `
		SELECT EXTRACT(EPOCH FROM max(t.finished_at) - min(t.created_at))::float8, count(s.step_uuid)
		FROM tasker.tasks t JOIN tasker.steps s ON s.task_uuid = t.task_uuid
		WHERE t.request_id = ANY($1::uuid[])`, ids).Scan(&spanSeconds, &steps))
	span := time.Duration(spanSeconds * float64(time.Second))
	t.Logf("50 mixed tasks (%d steps) completed in %s wall time from the client's send; %s from the first task's creation to the last one's end",
		steps, wall.Round(time.Millisecond), span.Round(time.Millisecond))

	for i, c := range cases {
		d, err := e.node.Store().TaskShow(ctx, uuid.MustParse(ids[i]))
		require.NoError(t, err)
		require.Equal(t, c.namespace, d.Namespace, c.label)
		c.verify(t, d)
	}
}

// TestSingleTaskLatency measures submit → complete of one linear task on an
// idle node, from the database's timestamps and from the client's view. It
// does not run in parallel, so the node really is idle.
func TestSingleTaskLatency(t *testing.T) {
	e := startEnv(t)
	const runs = 5
	var fromDB, fromClient []time.Duration
	for range runs {
		began := time.Now()
		d := e.waitTask(e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`), taskTimeout)
		fromClient = append(fromClient, time.Since(began))
		linearCase(6).verify(t, d)
		fromDB = append(fromDB, d.FinishedAt.Sub(d.CreatedAt))
	}
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	round := func(ds []time.Duration) string {
		parts := make([]string, len(ds))
		for i, d := range ds {
			parts[i] = d.Round(100 * time.Microsecond).String()
		}
		return strings.Join(parts, " ")
	}
	t.Logf("linear task (4 steps) on an idle node, %d runs: created_at → finished_at median %s [%s]; client send → seen complete median %s [%s]",
		runs, median(fromDB).Round(100*time.Microsecond), round(fromDB), median(fromClient).Round(100*time.Microsecond), round(fromClient))
}

// TestBadRequests sends requests that cannot be honoured: each is archived
// with a stored reason naming the problem, no task is created, the node
// keeps running and the next valid request completes.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	const limit = 2048
	e := startEnv(t, testsupport.WithConfig(func(cfg *config.Config) { cfg.Queue.MaxRequestBytes = limit }))
	ctx := t.Context()

	valid := func(mutate func(m map[string]any)) string {
		m := map[string]any{
			"request_id": uuid.Must(uuid.NewV7()).String(),
			"namespace":  testsupport.LinearNamespace,
			"name":       testsupport.LinearName,
			"context":    map[string]any{"even_number": 6},
		}
		mutate(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return string(b)
	}
	cases := []struct {
		label string
		body  string
		// want are substrings the stored reason must contain.
		want []string
	}{
		{"a JSON string, not a request", `"just a string"`, []string{"must be a JSON object"}},
		{"a JSON array", `[1, 2, 3]`, []string{"must be a JSON object"}},
		{"request_id of the wrong type", `{"request_id": 5}`, []string{"request_id: must be a string", "namespace: missing", "name: missing"}},
		{"missing request id", valid(func(m map[string]any) { delete(m, "request_id") }), []string{"request_id: missing"}},
		{"request id not a UUID", valid(func(m map[string]any) { m["request_id"] = "req-1" }), []string{"request_id: must be a UUID"}},
		{"unknown namespace", valid(func(m map[string]any) { m["namespace"] = "no_such_namespace" }), []string{`unknown namespace "no_such_namespace"`}},
		{"invalid namespace", valid(func(m map[string]any) { m["namespace"] = "Bad-Namespace" }), []string{"namespace: must be lower-case"}},
		{"unknown template", valid(func(m map[string]any) { m["name"] = "no_such_template" }), []string{`unknown template "no_such_template" in namespace "linear_workflow"`}},
		{"unknown version", valid(func(m map[string]any) { m["version"] = "9.9.9" }), []string{`unknown version "9.9.9" of template linear_workflow/mathematical_sequence`}},
		{"version not semantic", valid(func(m map[string]any) { m["version"] = "latest" }), []string{"version: must be a semantic version"}},
		{"context an array", valid(func(m map[string]any) { m["context"] = []int{6} }), []string{"context: must be a JSON object"}},
		{"context a string", valid(func(m map[string]any) { m["context"] = `{"even_number": 6}` }), []string{"context: must be a JSON object"}},
		{"payload over the size limit", valid(func(m map[string]any) {
			m["context"] = map[string]any{"even_number": 6, "padding": strings.Repeat("x", limit)}
		}), []string{"exceeds the limit of 2048 bytes"}},
		// Stored payloads are cut at 4096 bytes; a cut inside a two-byte
		// character must not make the rejection itself fail.
		{"oversized, multibyte, even offset", valid(func(m map[string]any) {
			m["context"] = map[string]any{"padding": strings.Repeat("é", 3000)}
		}), []string{"exceeds the limit of 2048 bytes"}},
		{"oversized, multibyte, odd offset", valid(func(m map[string]any) {
			m["context"] = map[string]any{"paddingx": strings.Repeat("é", 3000)}
		}), []string{"exceeds the limit of 2048 bytes"}},
	}
	msgIDs := make([]int64, len(cases))
	for i, c := range cases {
		msgIDs[i] = e.send(c.body)
	}

	testsupport.WaitFor(t, taskTimeout, "every bad request to be rejected", func() (bool, error) {
		var n int
		err := e.client.QueryRow(ctx, `SELECT count(*) FROM tasker.rejected_requests WHERE msg_id = ANY($1)`, msgIDs).Scan(&n)
		return n == len(cases), err
	})

	rejected, err := e.node.Store().RejectedList(ctx, 100)
	require.NoError(t, err)
	byMsg := map[int64]store.RejectedRequest{}
	for _, r := range rejected {
		byMsg[r.MsgID] = r
	}
	for i, c := range cases {
		r, ok := byMsg[msgIDs[i]]
		require.True(t, ok, "%s: not in the rejected list", c.label)
		for _, w := range c.want {
			require.Contains(t, r.Reason, w, "%s: reason", c.label)
		}
		require.Equal(t, e.node.NodeID(), r.NodeID, c.label)
		require.NotEmpty(t, r.Payload, c.label)
		require.True(t, utf8.ValidString(r.Payload), c.label)
		require.LessOrEqual(t, len(r.Payload), 4096+len("…"), "%s: stored payload is bounded", c.label)
		if strings.Contains(c.label, "multibyte") {
			require.True(t, strings.HasSuffix(r.Payload, "…"), "%s: stored payload is cut", c.label)
		}

		var archived int
		require.NoError(t, e.client.QueryRow(ctx, `SELECT count(*) FROM pgmq.a_orchestration_task_requests WHERE msg_id = $1`, msgIDs[i]).Scan(&archived))
		require.Equal(t, 1, archived, "%s: message archived", c.label)
	}
	// A rejection found by request id too, where the payload had a usable one.
	missingVersion := cases[8]
	var rid struct {
		RequestID uuid.UUID `json:"request_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(missingVersion.body), &rid))
	require.Equal(t, &rid.RequestID, byMsg[msgIDs[8]].RequestID)

	var queued, tasks int
	require.NoError(t, e.client.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_orchestration_task_requests`).Scan(&queued))
	require.Zero(t, queued, "nothing is left on the request queue")
	require.NoError(t, e.client.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks`).Scan(&tasks))
	require.Zero(t, tasks, "no task was created")

	h := e.node.Health(ctx, false)
	require.Equal(t, api.HealthOK, h.Status, "reasons: %v", h.Reasons)
	linearCase(6).verify(t, e.waitTask(e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`), taskTimeout))
}

// TestRepeatedRequest sends one request twice, with every optional field:
// one task is created, carrying those fields, and the repeat is acknowledged
// without being rejected.
func TestRepeatedRequest(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	ctx := t.Context()
	requestID, correlationID := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	body := fmt.Sprintf(`{"request_id": %q, "namespace": "linear_workflow", "name": "mathematical_sequence",
		"version": "1.0.0", "context": {"even_number": 6}, "priority": 7, "requested_by": "billing-service",
		"correlation_id": %q}`, requestID, correlationID)
	first := e.send(body)
	d := e.waitTask(requestID, taskTimeout)
	linearCase(6).verify(t, d)
	require.Equal(t, requestID, d.RequestID)
	require.Equal(t, correlationID, d.CorrelationID)
	require.Equal(t, 7, d.Priority)
	require.Equal(t, "billing-service", d.RequestedBy)
	require.JSONEq(t, `{"even_number": 6}`, string(d.Context))

	second := e.send(body)
	testsupport.WaitFor(t, taskTimeout, "the repeated request to be consumed", func() (bool, error) {
		var left int
		err := e.client.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_orchestration_task_requests`).Scan(&left)
		return left == 0, err
	})
	var tasks, rejected, archived int
	require.NoError(t, e.client.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks`).Scan(&tasks))
	require.Equal(t, 1, tasks, "a repeated request creates nothing")
	require.NoError(t, e.client.QueryRow(ctx, `SELECT count(*) FROM tasker.rejected_requests`).Scan(&rejected))
	require.Zero(t, rejected, "a repeated request is not an error")
	require.NoError(t, e.client.QueryRow(ctx, `SELECT count(*) FROM pgmq.a_orchestration_task_requests WHERE msg_id = ANY($1)`,
		[]int64{first, second}).Scan(&archived))
	require.Zero(t, archived, "both messages were deleted, not archived")
	again, err := e.node.Store().TaskShow(ctx, requestID)
	require.NoError(t, err)
	require.Equal(t, d.TaskUUID, again.TaskUUID)
	require.Equal(t, d.StepTransitions, again.StepTransitions, "nothing ran twice")
}

// TestTwoNodesShareOneDatabase runs two nodes on one database: the work is
// shared between them, and every task still completes with each step run
// exactly once.
func TestTwoNodesShareOneDatabase(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	other := testsupport.StartNodeOn(t, e.url)
	ctx := t.Context()

	var cases []workflowCase
	for i := range 30 {
		cases = append(cases, []func(int) workflowCase{linearCase, diamondCase, treeCase, mixedCase}[i%4](2*(i%3+1)))
	}
	ids := make([]uuid.UUID, len(cases))
	for i, c := range cases {
		ids[i] = e.submit(c.namespace, c.name, c.context)
	}
	for i, c := range cases {
		c.verify(t, e.waitTask(ids[i], taskTimeout))
	}

	// Both nodes took part.
	rows, err := e.client.Query(ctx, `SELECT node_id, count(*) FROM tasker.step_transitions WHERE to_state = 'in_progress' GROUP BY node_id`)
	require.NoError(t, err)
	byNode := map[string]int{}
	var (
		node  string
		count int
	)
	_, err = pgx.ForEachRow(rows, []any{&node, &count}, func() error {
		byNode[node] = count
		return nil
	})
	require.NoError(t, err)
	t.Logf("attempts by node: %v", byNode)
	require.Len(t, byNode, 2, "both nodes ran steps")
	require.Contains(t, byNode, e.node.NodeID())
	require.Contains(t, byNode, other.NodeID())
}
