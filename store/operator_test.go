package store_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// TestCancelRunningTask cancels a diamond while one branch has run and the
// other is still queued: the unfinished steps are cancelled, the queued
// message is stale for a worker and the late result is ignored.
func TestCancelRunningTask(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	ns := queue.NamespaceQueue(testsupport.DiamondNamespace)
	task := h.submit(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 4}`)
	require.Equal(t, 1, h.work(testsupport.DiamondNamespace))
	h.applyAll()

	msgs := h.readAll(ns)
	require.Len(t, msgs, 2)
	b := h.runStep(msgs[0]) // its result waits in the result queue
	queued := msgs[1]       // never started

	require.NoError(t, h.st.TaskCancel(h.ctx, task, "customer withdrew"))

	d := h.show(task)
	require.Equal(t, workflow.TaskStateCancelled, d.State)
	require.NotNil(t, d.FinishedAt)
	require.Equal(t, []string{"→pending@0", "pending→in_progress@0", "in_progress→cancelled@0"}, taskMoves(d))
	require.Equal(t, "customer withdrew", d.TaskTransitions[2].Reason)
	require.Equal(t, workflow.StepStateComplete, step(t, d, "diamond_start").State)
	moves := stepMoves(d)
	other := "diamond_branch_c"
	if b.StepName == other {
		other = "diamond_branch_b"
	}
	require.Equal(t, []string{"→pending@0", "pending→enqueued@0", "enqueued→in_progress@1", "in_progress→cancelled@1"}, moves[b.StepName])
	require.Equal(t, []string{"→pending@0", "pending→enqueued@0", "enqueued→cancelled@0"}, moves[other])
	require.Equal(t, []string{"→pending@0", "pending→cancelled@0"}, moves["diamond_end"])
	for _, name := range []string{b.StepName, other, "diamond_end"} {
		s := step(t, d, name)
		require.Equal(t, workflow.StepStateCancelled, s.State, name)
		require.NotNil(t, s.FinishedAt, name)
	}

	// A worker taking the queued message runs nothing.
	sm, err := queue.DecodeStepMessage(queued.Body)
	require.NoError(t, err)
	_, err = h.st.StepStart(h.ctx, sm.StepUUID)
	require.ErrorIs(t, err, store.ErrStale)

	// The result of the branch that ran is acknowledged and ignored.
	results := h.readAll(queue.StepResultsQueue)
	require.Len(t, results, 1)
	out := h.apply(results[0])
	require.True(t, out.Ignored)
	require.Contains(t, out.Reason, "task is cancelled")
	require.Zero(t, h.queueLen(queue.StepResultsQueue))
	require.Len(t, h.show(task).StepTransitions, len(d.StepTransitions), "nothing moved after the cancel")

	// Cancelling twice is refused.
	requireRefused(t, h.st.TaskCancel(h.ctx, task, ""), "cancel", "cancelled")
}

// TestOperatorRefusals covers the actions the state machines do not allow.
func TestOperatorRefusals(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	done := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	requireCleanRun(t, h.runToEnd(done))
	running := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)

	requireRefused(t, h.st.TaskCancel(h.ctx, done, ""), "cancel refused", `"complete"`)
	_, err := h.st.TaskRetry(h.ctx, done)
	requireRefused(t, err, "retry refused", `"complete"`)
	requireRefused(t, h.st.TaskResolve(h.ctx, done), "resolve refused", `"complete"`)
	_, err = h.st.TaskRetry(h.ctx, running)
	requireRefused(t, err, "retry refused", `"in_progress"`)
	requireRefused(t, h.st.TaskResolve(h.ctx, running), "resolve refused", `"in_progress"`)

	requireRefused(t, h.st.StepResolve(h.ctx, running, "linear_step_9", nil), "resolve refused", `"linear_step_9"`)
	requireRefused(t, h.st.StepResolve(h.ctx, running, "linear_step_1", nil), "resolve refused", `"enqueued"`)
	requireRefused(t, h.st.StepResolve(h.ctx, done, "linear_step_1", nil), "resolve refused", `"complete"`)
	requireRefused(t, h.st.StepResolve(h.ctx, running, "linear_step_1", json.RawMessage(`{`)), "not valid JSON")

	unknown := uuid.Must(uuid.NewV7())
	require.ErrorIs(t, h.st.TaskCancel(h.ctx, unknown, ""), store.ErrNotFound)
	_, err = h.st.TaskRetry(h.ctx, unknown)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, h.st.TaskResolve(h.ctx, unknown), store.ErrNotFound)
	require.ErrorIs(t, h.st.StepResolve(h.ctx, unknown, "linear_step_1", nil), store.ErrNotFound)
	_, err = h.st.TaskShow(h.ctx, unknown)
	require.ErrorIs(t, err, store.ErrNotFound)

	// Nothing moved.
	requireCleanRun(t, h.show(done))
	require.Equal(t, workflow.TaskStateInProgress, h.show(running).State)
}

// TestStepResolveUnblocks fails a linear step permanently, resolves it with
// a result, and the steps after it run on that result to the end.
func TestStepResolveUnblocks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	h.inject("linear_step_2", func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		return nil, workflow.Permanent("broken", "step 2 is broken")
	})
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	require.Equal(t, workflow.TaskStateError, h.runToEnd(task).State)

	require.NoError(t, h.st.StepResolve(h.ctx, task, "linear_step_2", json.RawMessage(`{"result": 50}`)))
	d := h.show(task)
	require.Equal(t, workflow.TaskStateInProgress, d.State)
	require.Equal(t, workflow.StepStateResolvedManually, step(t, d, "linear_step_2").State)
	require.Equal(t, workflow.StepStateEnqueued, step(t, d, "linear_step_3").State)

	d = h.runToEnd(task)
	require.Equal(t, workflow.TaskStateComplete, d.State)
	for name, want := range map[string]float64{"linear_step_1": 36, "linear_step_2": 50, "linear_step_3": 150, "linear_step_4": 75} {
		require.Equal(t, want, number(t, step(t, d, name).Result), name)
	}
	moves := stepMoves(d)
	require.Equal(t, []string{
		"→pending@0", "pending→enqueued@0", "enqueued→in_progress@1", "in_progress→error@1", "error→resolved_manually@1",
	}, moves["linear_step_2"])
	require.Equal(t, cleanStepHistory, moves["linear_step_3"])
	require.Equal(t, cleanStepHistory, moves["linear_step_4"])
	require.Equal(t, []string{
		"→pending@0", "pending→in_progress@0", "in_progress→error@0", "error→in_progress@0", "in_progress→complete@0",
	}, taskMoves(d))
	require.Equal(t, "step linear_step_2 resolved by operator", d.TaskTransitions[3].Reason)
}

// TestStepResolveLastStep resolves the last step: nothing is left to run
// and the task completes at once.
func TestStepResolveLastStep(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	h.inject("linear_step_4", func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		return nil, workflow.Permanent("broken", "step 4 is broken")
	})
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	require.Equal(t, workflow.TaskStateError, h.runToEnd(task).State)
	require.NoError(t, h.st.StepResolve(h.ctx, task, "linear_step_4", nil))
	d := h.show(task)
	require.Equal(t, workflow.TaskStateComplete, d.State)
	require.JSONEq(t, `null`, string(step(t, d, "linear_step_4").Result))
	require.Equal(t, []string{
		"→pending@0", "pending→in_progress@0", "in_progress→error@0", "error→in_progress@0", "in_progress→complete@0",
	}, taskMoves(d))
}

// TestTaskResolve resolves a failed task: its failed step becomes
// resolved_manually and the steps that never ran are cancelled.
func TestTaskResolve(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 3}`)
	require.Equal(t, workflow.TaskStateError, h.runToEnd(task).State)

	require.NoError(t, h.st.TaskResolve(h.ctx, task))
	d := h.show(task)
	require.Equal(t, workflow.TaskStateResolvedManually, d.State)
	require.NotNil(t, d.FinishedAt)
	require.Equal(t, []string{
		"→pending@0", "pending→in_progress@0", "in_progress→error@0", "error→resolved_manually@0",
	}, taskMoves(d))
	moves := stepMoves(d)
	require.Equal(t, workflow.StepStateResolvedManually, step(t, d, "linear_step_1").State)
	require.Equal(t, "error→resolved_manually@1", moves["linear_step_1"][len(moves["linear_step_1"])-1])
	for _, name := range []string{"linear_step_2", "linear_step_3", "linear_step_4"} {
		require.Equal(t, workflow.StepStateCancelled, step(t, d, name).State, name)
		require.Equal(t, []string{"→pending@0", "pending→cancelled@0"}, moves[name], name)
	}
	requireRefused(t, h.st.TaskResolve(h.ctx, task), "resolve refused", `"resolved_manually"`)
	_, err := h.st.TaskRetry(h.ctx, task)
	requireRefused(t, err, "retry refused")
}

// TestCancelFailedTask cancels a task in error: the steps that never ran are
// cancelled, the failed step keeps its error.
func TestCancelFailedTask(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 3}`)
	require.Equal(t, workflow.TaskStateError, h.runToEnd(task).State)
	require.NoError(t, h.st.TaskCancel(h.ctx, task, ""))
	d := h.show(task)
	require.Equal(t, workflow.TaskStateCancelled, d.State)
	require.Equal(t, "cancelled by operator", d.TaskTransitions[len(d.TaskTransitions)-1].Reason)
	require.Equal(t, workflow.StepStateError, step(t, d, "linear_step_1").State)
	for _, name := range []string{"linear_step_2", "linear_step_3", "linear_step_4"} {
		require.Equal(t, workflow.StepStateCancelled, step(t, d, name).State, name)
	}
	_, err := h.st.TaskRetry(h.ctx, task)
	requireRefused(t, err, "retry refused", `"cancelled"`)
}

// TestTaskList filters by state and namespace, newest first.
func TestTaskList(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	var created []uuid.UUID
	for _, wf := range []struct{ namespace, name, ctx string }{
		{testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`},
		{testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 4}`},
		{testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 3}`},
		{testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 8}`},
		{testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 2}`},
	} {
		created = append(created, h.submit(wf.namespace, wf.name, wf.ctx))
	}
	// Running the linear queue finishes every linear task: 0 and 3
	// complete, 2 (odd) fails. The diamonds stay in progress.
	requireCleanRun(t, h.runToEnd(created[0]))
	require.Equal(t, workflow.TaskStateError, h.show(created[2]).State)
	requireCleanRun(t, h.show(created[3]))

	ids := func(p store.TaskListParams) []uuid.UUID {
		t.Helper()
		tasks, err := h.st.TaskList(h.ctx, p)
		require.NoError(t, err)
		var out []uuid.UUID
		for i, tk := range tasks {
			if i > 0 {
				require.False(t, tk.CreatedAt.After(tasks[i-1].CreatedAt), "newest first")
			}
			out = append(out, tk.TaskUUID)
		}
		return out
	}
	newestFirst := slices.Clone(created)
	slices.Reverse(newestFirst)
	require.Equal(t, newestFirst, ids(store.TaskListParams{}))
	require.Equal(t, newestFirst[:2], ids(store.TaskListParams{Limit: 2}))
	require.Equal(t, newestFirst[2:4], ids(store.TaskListParams{Limit: 2, Before: newestFirst[1]}), "the page after a cursor")
	tasks, err := h.st.TaskList(h.ctx, store.TaskListParams{})
	require.NoError(t, err)
	require.Empty(t, tasks[0].Context, "a list row carries no context")
	require.Equal(t, []uuid.UUID{created[3], created[0]}, ids(store.TaskListParams{State: workflow.TaskStateComplete}))
	require.Equal(t, []uuid.UUID{created[2]}, ids(store.TaskListParams{State: workflow.TaskStateError}))
	require.Equal(t, []uuid.UUID{created[4], created[1]}, ids(store.TaskListParams{State: workflow.TaskStateInProgress}))
	require.Equal(t, []uuid.UUID{created[4], created[1]}, ids(store.TaskListParams{Namespace: testsupport.DiamondNamespace}))
	require.Equal(t, []uuid.UUID{created[3], created[2], created[0]},
		ids(store.TaskListParams{Namespace: testsupport.LinearNamespace, Name: testsupport.LinearName}))
	require.Empty(t, ids(store.TaskListParams{Namespace: testsupport.LinearNamespace, State: workflow.TaskStateCancelled}))
	require.Equal(t, []uuid.UUID{created[4]},
		ids(store.TaskListParams{Namespace: testsupport.DiamondNamespace, State: workflow.TaskStateInProgress, CreatedAfter: h.show(created[0]).CreatedAt, Limit: 1}))
}

// TestTaskListStatesAndSearch: a set of states, an upper bound on the
// creation time, and a search by a prefix of the task uuid, the request id
// or the correlation id.
func TestTaskListStatesAndSearch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	correlation := uuid.MustParse("7a5e0000-1111-7222-8333-444455556666")
	req := request(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 3}`)
	req.CorrelationID = correlation
	out := h.accept(req)
	require.True(t, out.Created)
	failed := out.TaskUUID
	requireCleanRun(t, h.runToEnd(h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)))
	h.runToEnd(failed)
	running := h.submit(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 4}`)
	require.Equal(t, workflow.TaskStateError, h.show(failed).State)

	ids := func(p store.TaskListParams) []uuid.UUID {
		t.Helper()
		tasks, err := h.st.TaskList(h.ctx, p)
		require.NoError(t, err)
		out := []uuid.UUID{}
		for _, tk := range tasks {
			out = append(out, tk.TaskUUID)
		}
		return out
	}
	prefix := func(id uuid.UUID, n int) *store.UUIDRange {
		lo, hi := id, id
		for i := n; i < 16; i++ {
			lo[i], hi[i] = 0, 0xff
		}
		return &store.UUIDRange{Low: lo, High: hi}
	}
	actionable := []workflow.TaskState{workflow.TaskStatePending, workflow.TaskStateInProgress, workflow.TaskStateError}
	require.Equal(t, []uuid.UUID{running, failed}, ids(store.TaskListParams{States: actionable}))
	require.Equal(t, []uuid.UUID{failed}, ids(store.TaskListParams{States: actionable, State: workflow.TaskStateError}))
	require.Empty(t, ids(store.TaskListParams{States: actionable, State: workflow.TaskStateComplete}), "a state outside the set matches nothing")
	require.Equal(t, []uuid.UUID{failed}, ids(store.TaskListParams{States: actionable, CreatedBefore: h.show(failed).CreatedAt}))

	require.Equal(t, []uuid.UUID{failed}, ids(store.TaskListParams{Search: prefix(failed, 16)}), "the whole task uuid")
	require.Equal(t, []uuid.UUID{failed}, ids(store.TaskListParams{Search: prefix(req.RequestID, 16)}), "the request id")
	require.Equal(t, []uuid.UUID{failed}, ids(store.TaskListParams{Search: prefix(correlation, 4)}), "a prefix of the correlation id")
	require.Equal(t, []uuid.UUID{running}, ids(store.TaskListParams{Search: prefix(running, 16), State: workflow.TaskStateInProgress}))
	require.Empty(t, ids(store.TaskListParams{Search: prefix(running, 16), State: workflow.TaskStateError}), "the filters apply to what the search found")
	require.Empty(t, ids(store.TaskListParams{Search: prefix(uuid.MustParse("00000000-0000-7000-8000-000000000000"), 16)}))
}

// TestTaskStateCounts counts tasks by state, in lifecycle order.
func TestTaskStateCounts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	requireCleanRun(t, h.runToEnd(h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)))
	h.submit(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 4}`)
	h.submit(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 2}`)
	counts, err := h.st.TaskStateCounts(h.ctx)
	require.NoError(t, err)
	got := map[workflow.TaskState]int64{}
	var order []workflow.TaskState
	for _, c := range counts {
		got[c.State] = c.Count
		order = append(order, c.State)
		require.False(t, c.AtLeast)
	}
	require.Equal(t, workflow.AllTaskStates(), order)
	require.Equal(t, int64(1), got[workflow.TaskStateComplete])
	require.Equal(t, int64(2), got[workflow.TaskStateInProgress])
	require.Zero(t, got[workflow.TaskStateError])
}

// TestTemplateShow reads a registered template back with its steps.
func TestTemplateShow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	list, err := h.st.TemplateList(h.ctx)
	require.NoError(t, err)
	var diamond store.TemplateInfo
	for _, ti := range list {
		if ti.Namespace == testsupport.DiamondNamespace {
			diamond = ti
		}
	}
	require.NotZero(t, diamond.ID)
	d, err := h.st.TemplateShow(h.ctx, diamond.ID)
	require.NoError(t, err)
	require.Equal(t, diamond, d.TemplateInfo)
	require.Len(t, d.StepList, 4)
	last := d.StepList[3]
	require.ElementsMatch(t, []string{d.StepList[1].Name, d.StepList[2].Name}, last.DependsOn)
	require.Positive(t, last.TimeoutMS)
	require.Positive(t, last.MaxAttempts)
	_, err = h.st.TemplateShow(h.ctx, diamond.ID+1000)
	require.ErrorIs(t, err, store.ErrNotFound)
}

// TestMigrate applies the migrations once; applying again does nothing,
// also when two nodes migrate at once.
func TestMigrate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testsupport.NewDB(t)
	v, err := store.CurrentVersion(ctx, pool)
	require.NoError(t, err)
	require.Zero(t, v)

	var (
		wg      sync.WaitGroup
		applied [2][]int
		errs    [2]error
	)
	for i := range 2 {
		wg.Go(func() { applied[i], errs[i] = store.Migrate(ctx, pool) })
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	all := append(slices.Clone(applied[0]), applied[1]...)
	want := make([]int, 0, store.SchemaVersion())
	ms, err := store.Migrations()
	require.NoError(t, err)
	for _, m := range ms {
		want = append(want, m.Version)
	}
	slices.Sort(all)
	require.Equal(t, want, all, "each migration applied exactly once")

	again, err := store.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Empty(t, again)
	v, err = store.CurrentVersion(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, store.SchemaVersion(), v)
}
