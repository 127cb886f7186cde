package dashboard

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

func TestLayoutDAG(t *testing.T) {
	t.Parallel()
	steps := []dagStep{
		{Name: "a", State: workflow.StepStateComplete},
		{Name: "b", DependsOn: []string{"a"}, State: workflow.StepStateError},
		{Name: "c", DependsOn: []string{"a"}, State: workflow.StepStateComplete},
		{Name: "d", DependsOn: []string{"b", "c"}, State: workflow.StepStatePending},
		{Name: "e", DependsOn: []string{"d"}, State: workflow.StepStatePending},
	}
	d := layoutDAG(steps)
	require.Len(t, d.Nodes, 5)
	require.Len(t, d.Edges, 5)
	at := map[string]dagNode{}
	for _, n := range d.Nodes {
		at[n.Name] = n
		require.LessOrEqual(t, n.X+n.W, d.Width, n.Name)
		require.LessOrEqual(t, n.Y+n.H, d.Height, n.Name)
	}
	require.Less(t, at["a"].X, at["b"].X, "parents left of children")
	require.Equal(t, at["b"].X, at["c"].X, "one column per depth")
	require.Less(t, at["c"].X, at["d"].X)
	require.NotEqual(t, at["b"].Y, at["c"].Y)
	require.Contains(t, at["b"].Class, "st-error")
	require.NotContains(t, at["b"].Class, "blocked", "the failed step is itself, not blocked")
	require.Contains(t, at["d"].Class, "blocked", "waits on the failure")
	require.Contains(t, at["e"].Class, "blocked", "waits on it through d")
	require.NotContains(t, at["c"].Class, "blocked")
	classes := map[string]string{}
	for _, e := range d.Edges {
		classes[e.From+">"+e.To] = e.Class
	}
	require.Equal(t, map[string]string{
		"a>b": "edge edge-done", "a>c": "edge edge-done", "b>d": "edge edge-failed",
		"c>d": "edge edge-done", "d>e": "edge edge-failed",
	}, classes)
	require.Empty(t, layoutDAG(nil).Nodes)
}

// TestLayoutDAGOrdersColumns: a child is drawn beside its parent rather
// than across the other branch.
func TestLayoutDAGOrdersColumns(t *testing.T) {
	t.Parallel()
	d := layoutDAG([]dagStep{
		{Name: "top"}, {Name: "bottom"},
		{Name: "under_bottom", DependsOn: []string{"bottom"}}, {Name: "under_top", DependsOn: []string{"top"}},
	})
	at := map[string]dagNode{}
	for _, n := range d.Nodes {
		at[n.Name] = n
	}
	require.Less(t, at["under_top"].Y, at["under_bottom"].Y, "no crossing")

	// A wide DAG stays within its drawing.
	var wide []dagStep
	wide = append(wide, dagStep{Name: "root"})
	for i := range 200 {
		wide = append(wide, dagStep{Name: fmt.Sprintf("s%03d_with_a_rather_long_name", i), DependsOn: []string{"root"}})
	}
	w := layoutDAG(wide)
	require.Len(t, w.Nodes, 201)
	for _, n := range w.Nodes {
		require.LessOrEqual(t, len([]rune(n.Label)), dagLabelCh)
		require.LessOrEqual(t, n.Y+n.H, w.Height)
	}
}

func TestStepAttempts(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tr := func(step, from, to string, attempt, ms int) store.Transition {
		return store.Transition{StepName: step, From: from, To: to, Attempt: attempt, CreatedAt: at(ms)}
	}
	d := store.TaskDetail{
		Task: store.Task{TaskUUID: uuid.New(), CreatedAt: t0},
		Steps: []store.Step{
			{Name: "flaky", State: workflow.StepStateComplete},
			{Name: "lost", State: workflow.StepStateInProgress},
			{Name: "never", State: workflow.StepStateCancelled},
			{Name: "row_only", State: workflow.StepStateComplete, Attempts: 1, EnqueuedAt: ptr(at(5)), LastAttemptedAt: ptr(at(8)), FinishedAt: ptr(at(20))},
		},
		StepTransitions: []store.Transition{
			tr("flaky", "", "pending", 0, 0),
			tr("flaky", "pending", "enqueued", 0, 1),
			tr("flaky", "enqueued", "in_progress", 1, 3),
			tr("flaky", "in_progress", "waiting_for_retry", 1, 10),
			tr("flaky", "waiting_for_retry", "in_progress", 2, 50),
			tr("flaky", "in_progress", "error", 2, 60),
			tr("flaky", "error", "pending", 2, 100),
			tr("flaky", "pending", "enqueued", 0, 101),
			tr("flaky", "enqueued", "in_progress", 3, 105),
			tr("flaky", "in_progress", "complete", 3, 110),
			tr("lost", "pending", "enqueued", 0, 1),
			tr("lost", "enqueued", "in_progress", 1, 2),
			tr("lost", "in_progress", "in_progress", 2, 40),
			tr("never", "pending", "enqueued", 0, 1),
			tr("never", "enqueued", "cancelled", 0, 30),
		},
	}
	got := stepAttempts(d)
	require.Equal(t, []attempt{
		{Step: "flaky", Number: 1, Queued: at(1), Start: at(3), End: at(10), Outcome: "waiting_for_retry"},
		{Step: "flaky", Number: 2, Queued: at(10), Start: at(50), End: at(60), Outcome: "error"},
		{Step: "flaky", Number: 3, Queued: at(101), Start: at(105), End: at(110), Outcome: "complete"},
	}, got["flaky"])
	require.Equal(t, []attempt{
		{Step: "lost", Number: 1, Queued: at(1), Start: at(2), End: at(40), Outcome: "redelivered"},
		{Step: "lost", Number: 2, Queued: at(40), Start: at(40)},
	}, got["lost"], "a redelivery ends the lost attempt; the new one runs")
	require.Empty(t, got["never"], "cancelled while queued: no attempt")
	require.Equal(t, []attempt{{Step: "row_only", Number: 1, Queued: at(5), Start: at(8), End: at(20), Outcome: "complete"}}, got["row_only"],
		"a step without transitions is drawn from its row")

	tl := layoutTimeline(d, at(200))
	require.Equal(t, 6, tl.Attempts)
	require.Len(t, tl.Rows, 4)
	require.Len(t, tl.Rows[0].Bars, 3)
	for _, r := range tl.Rows {
		for _, b := range r.Bars {
			require.GreaterOrEqual(t, b.QueueX, float64(tlLabelW))
			require.LessOrEqual(t, b.RunX+b.RunW, float64(tl.Width)+tlMinBar)
			require.GreaterOrEqual(t, b.RunW, tlMinBar)
		}
	}
	require.Contains(t, tl.Rows[1].Bars[1].Title, "(running)")
	require.Equal(t, "attempt st-in_progress", tl.Rows[1].Bars[1].Class)
	require.NotEmpty(t, tl.Ticks)
}

// A step's wait for its admission is drawn before its attempt; a step
// throttled now has that wait alone, up to now.
func TestTimelineThrottled(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tr := func(step, from, to string, attempt, ms int) store.Transition {
		return store.Transition{StepName: step, From: from, To: to, Attempt: attempt, CreatedAt: at(ms)}
	}
	d := store.TaskDetail{
		Task: store.Task{TaskUUID: uuid.New(), CreatedAt: t0},
		Steps: []store.Step{
			{Name: "admitted", State: workflow.StepStateComplete},
			{Name: "held", State: workflow.StepStateThrottled, ThrottledSince: ptr(at(20)), ThrottledReason: "key:a/b=c: all 1 slots in use"},
		},
		StepTransitions: []store.Transition{
			tr("admitted", "", "pending", 0, 0),
			tr("admitted", "pending", "throttled", 0, 10),
			tr("admitted", "throttled", "enqueued", 0, 30),
			tr("admitted", "enqueued", "in_progress", 1, 35),
			tr("admitted", "in_progress", "complete", 1, 50),
			tr("held", "", "pending", 0, 0),
			tr("held", "pending", "throttled", 0, 20),
		},
	}
	got := stepAttempts(d)
	require.Equal(t, []attempt{{Step: "admitted", Number: 1, Throttled: at(10), Queued: at(30), Start: at(35), End: at(50), Outcome: "complete"}}, got["admitted"])
	require.Empty(t, got["held"], "not run yet")

	tl := layoutTimeline(d, at(100))
	require.Equal(t, 1, tl.Attempts, "a wait for a slot is no attempt")
	a := tl.Rows[0].Bars[0]
	require.Greater(t, a.HoldW, 0.0)
	require.InDelta(t, a.QueueX, a.HoldX+a.HoldW, 1e-9, "the wait for a slot ends where the wait for a worker begins")
	require.Contains(t, a.Title, "throttled 20ms")
	require.Len(t, tl.Rows[1].Bars, 1)
	h := tl.Rows[1].Bars[0]
	require.Equal(t, "attempt st-throttled", h.Class)
	require.Zero(t, h.RunW)
	require.InDelta(t, float64(tl.Width-10), h.HoldX+h.HoldW, 1e-9, "it waits up to now, the chart's end")
	require.Contains(t, h.Title, "held · throttled for 80ms · key:a/b=c: all 1 slots in use")
}

func ptr[T any](v T) *T { return &v }

func TestActivity(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 30, 0, time.UTC)
	a := NewActivity(func() time.Time { return now })
	created := func(ago time.Duration) uuid.UUID {
		id, err := uuid.NewV7()
		require.NoError(t, err)
		// A UUIDv7 carries its milliseconds in the first 48 bits.
		ms := uint64(now.Add(-ago).UnixMilli())
		for i := range 6 {
			id[i] = byte(ms >> (40 - 8*i))
		}
		return id
	}
	for i := range 100 {
		a.ResultApplied(store.ResultOutcome{TaskUUID: created(time.Duration(i+1) * 10 * time.Millisecond), Namespace: "ns",
			StepState: workflow.StepStateComplete, TaskState: workflow.TaskStateComplete})
	}
	a.ResultApplied(store.ResultOutcome{Namespace: "ns", StepState: workflow.StepStateComplete, TaskState: workflow.TaskStateInProgress})
	a.ResultApplied(store.ResultOutcome{Namespace: "ns", StepState: workflow.StepStateError, TaskState: workflow.TaskStateError})
	a.ResultApplied(store.ResultOutcome{Namespace: "ns", Ignored: true, StepState: workflow.StepStateComplete})
	a.BreakerChanged("ns", "open")

	s := a.Snapshot()
	require.Len(t, s.Minutes, activityMinutes)
	last := s.Minutes[activityMinutes-1]
	require.Equal(t, int64(100), last.Completed)
	require.InDelta(t, 101.0/30, last.StepsPerSecond, 0.001, "101 steps in the 30 s of the current minute")
	require.InDelta(t, float64(500*time.Millisecond), float64(last.P50), float64(55*time.Millisecond), "p50 within a tenth")
	require.InDelta(t, float64(990*time.Millisecond), float64(last.P99), float64(100*time.Millisecond), "p99 within a tenth")
	require.Equal(t, int64(100), s.Namespaces["ns"].Completed[sparkMinutes-1])
	require.Equal(t, int64(1), s.Namespaces["ns"].Failed[sparkMinutes-1])
	require.Equal(t, BreakerChange{State: "open", At: now}, s.Breakers["ns"])

	// An hour later the minute is gone.
	now = now.Add(time.Hour)
	s = a.Snapshot()
	require.Zero(t, s.Minutes[activityMinutes-1].Completed)
	for _, m := range s.Minutes {
		require.Zero(t, m.Completed)
	}
	require.Empty(t, s.Namespaces)
	a.BreakerRemoved("ns")
	require.Empty(t, a.Snapshot().Breakers)
}

func TestLocalPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/tasks?state=error":   "/tasks?state=error",
		"":                     "/",
		"//evil.example/x":     "/",
		`/\evil.example`:       "/",
		"https://evil.example": "/",
		"tasks":                "/",
		"/tasks/x#step-a":      "/tasks/x#step-a",
	} {
		require.Equal(t, want, localPath(in), in)
	}
}

func TestThousands(t *testing.T) {
	t.Parallel()
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -45000: "-45,000"} {
		require.Equal(t, want, thousands(in))
	}
}
