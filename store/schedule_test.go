package store_test

import (
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// clock is a settable clock for the store.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func scheduleHarness(t *testing.T, start time.Time) (*harness, *clock) {
	t.Helper()
	c := &clock{t: start}
	return newHarness(t, store.Options{Now: c.now}), c
}

func everySecond(name string, catchUp workflow.CatchUpPolicy, overlap workflow.OverlapPolicy) workflow.Schedule {
	return workflow.Schedule{
		Name: name, Namespace: testsupport.LinearNamespace, Template: testsupport.LinearName,
		Cron: "* * * * * *", Context: []byte(`{"even_number": 2}`), CatchUp: catchUp, CatchUpLimit: 100, Overlap: overlap,
	}
}

// fired reads every request the schedules sent and accepts it; it returns
// the request ids.
func (h *harness) acceptFired() []uuid.UUID {
	h.t.Helper()
	var ids []uuid.UUID
	for _, m := range h.readAll(queue.TaskRequestsQueue) {
		req, err := queue.DecodeTaskRequest(m.Body)
		require.NoError(h.t, err)
		ids = append(ids, req.RequestID)
		out, err := h.st.RequestAccept(h.ctx, m)
		require.NoError(h.t, err)
		require.False(h.t, out.Rejected, out.Reason)
	}
	return ids
}

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func TestScheduleCreateListAndFire(t *testing.T) {
	h, c := scheduleHarness(t, t0.Add(100*time.Millisecond))
	info, err := h.st.ScheduleCreate(h.ctx, everySecond("tick", workflow.CatchUpNone, workflow.OverlapAllow))
	require.NoError(t, err)
	assert.Equal(t, store.ScheduleSourceAPI, info.Source)
	assert.Equal(t, t0.Add(time.Second), info.NextFireAt.UTC())
	require.Len(t, info.NextFires, store.ScheduleNextFires)
	assert.Equal(t, t0.Add(3*time.Second), info.NextFires[2].UTC())

	_, err = h.st.ScheduleCreate(h.ctx, everySecond("tick", workflow.CatchUpNone, workflow.OverlapAllow))
	requireRefused(t, err, `a schedule named "tick" exists`)

	rep, err := h.st.SchedulesFireDue(h.ctx)
	require.NoError(t, err)
	assert.Zero(t, rep.Sent, "nothing is due yet")
	assert.Equal(t, t0.Add(time.Second), rep.Next.UTC())

	c.set(t0.Add(1200 * time.Millisecond))
	rep, err = h.st.SchedulesFireDue(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, rep.Sent)
	ids := h.acceptFired()
	require.Len(t, ids, 1)
	assert.Equal(t, workflow.FireRequestID(info.ID, t0.Add(time.Second), workflow.FireOnTime), ids[0])

	// A second check at the same time sends nothing more.
	rep, err = h.st.SchedulesFireDue(h.ctx)
	require.NoError(t, err)
	assert.Zero(t, rep.Sent)

	got, err := h.st.ScheduleGet(h.ctx, "tick")
	require.NoError(t, err)
	assert.EqualValues(t, 1, got.Fired)
	require.NotNil(t, got.LastTask, "the last fire's task is shown")
	assert.Equal(t, ids[0], *got.LastRequestID)
	tk, err := h.st.TaskGet(h.ctx, got.LastTask.TaskUUID)
	require.NoError(t, err)
	assert.Equal(t, "schedule:tick", tk.RequestedBy)
	assert.Equal(t, ids[0], tk.RequestID)
}

// After 30 s with no node checking, a check sends what the catch-up
// policy says: none 1, one 2, all 31; the others are recorded as missed.
func TestScheduleCatchUpAfterDowntime(t *testing.T) {
	for _, c := range []struct {
		policy workflow.CatchUpPolicy
		sent   int
		missed int64
	}{{workflow.CatchUpNone, 1, 30}, {workflow.CatchUpOne, 2, 29}, {workflow.CatchUpAll, 31, 0}} {
		t.Run(string(c.policy), func(t *testing.T) {
			h, clk := scheduleHarness(t, t0.Add(100*time.Millisecond))
			_, err := h.st.ScheduleCreate(h.ctx, everySecond("tick", c.policy, workflow.OverlapAllow))
			require.NoError(t, err)
			clk.set(t0.Add(31*time.Second + 500*time.Millisecond))
			rep, err := h.st.SchedulesFireDue(h.ctx)
			require.NoError(t, err)
			assert.Equal(t, c.sent, rep.Sent)
			assert.EqualValues(t, c.missed, rep.Missed)
			ids := h.acceptFired()
			assert.Len(t, ids, c.sent)
			got, err := h.st.ScheduleGet(h.ctx, "tick")
			require.NoError(t, err)
			assert.EqualValues(t, c.sent, got.Fired)
			assert.EqualValues(t, c.missed, got.Missed)
			assert.Equal(t, t0.Add(32*time.Second), got.NextFireAt.UTC())
			fires, err := h.st.ScheduleFires(h.ctx, "tick", 100)
			require.NoError(t, err)
			var sent, missedRows int
			for _, f := range fires {
				switch f.Outcome {
				case store.FireMissed:
					missedRows++
					assert.EqualValues(t, c.missed, f.Count)
					assert.Contains(t, f.Reason, "catch_up = "+string(c.policy))
				default:
					sent++
					require.NotNil(t, f.Task, "fire %s has its task", f.FireAt)
				}
			}
			assert.Equal(t, c.sent, sent)
			assert.Equal(t, min(1, int(c.missed)), missedRows)
		})
	}
}

// With overlap skip a fire while the previous task runs is recorded as
// skipped; with cancel_previous the previous task is cancelled.
func TestScheduleOverlap(t *testing.T) {
	t.Run("skip", func(t *testing.T) {
		h, clk := scheduleHarness(t, t0.Add(100*time.Millisecond))
		_, err := h.st.ScheduleCreate(h.ctx, everySecond("tick", workflow.CatchUpNone, workflow.OverlapSkip))
		require.NoError(t, err)
		clk.set(t0.Add(1100 * time.Millisecond))
		rep, err := h.st.SchedulesFireDue(h.ctx)
		require.NoError(t, err)
		require.Equal(t, 1, rep.Sent)

		// The request is not a task yet: it counts as running.
		clk.set(t0.Add(2100 * time.Millisecond))
		rep, err = h.st.SchedulesFireDue(h.ctx)
		require.NoError(t, err)
		assert.Equal(t, 0, rep.Sent)
		assert.Equal(t, 1, rep.Skipped)
		h.acceptFired()

		// Accepted, not finished: still running.
		clk.set(t0.Add(3100 * time.Millisecond))
		rep, err = h.st.SchedulesFireDue(h.ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, rep.Skipped)
		got, err := h.st.ScheduleGet(h.ctx, "tick")
		require.NoError(t, err)
		d := h.runToEnd(got.LastTask.TaskUUID)
		require.Equal(t, workflow.TaskStateComplete, d.State)

		clk.set(t0.Add(4100 * time.Millisecond))
		rep, err = h.st.SchedulesFireDue(h.ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, rep.Sent, "the previous task finished")

		fires, err := h.st.ScheduleFires(h.ctx, "tick", 10)
		require.NoError(t, err)
		var reasons []string
		for _, f := range fires {
			if f.Outcome == store.FireSkipped {
				reasons = append(reasons, f.Reason)
			}
		}
		require.Len(t, reasons, 2)
		assert.Contains(t, reasons[0], "is in_progress (overlap = skip)")
		assert.Contains(t, reasons[1], "has not become a task yet (overlap = skip)")
	})
	t.Run("cancel_previous", func(t *testing.T) {
		h, clk := scheduleHarness(t, t0.Add(100*time.Millisecond))
		_, err := h.st.ScheduleCreate(h.ctx, everySecond("tick", workflow.CatchUpNone, workflow.OverlapCancelPrevious))
		require.NoError(t, err)
		clk.set(t0.Add(1100 * time.Millisecond))
		_, err = h.st.SchedulesFireDue(h.ctx)
		require.NoError(t, err)
		h.acceptFired()
		first, err := h.st.ScheduleGet(h.ctx, "tick")
		require.NoError(t, err)

		clk.set(t0.Add(2100 * time.Millisecond))
		rep, err := h.st.SchedulesFireDue(h.ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, rep.Sent)
		tk, err := h.st.TaskGet(h.ctx, first.LastTask.TaskUUID)
		require.NoError(t, err)
		assert.Equal(t, workflow.TaskStateCancelled, tk.State)
		d := h.show(tk.TaskUUID)
		assert.Contains(t, d.TaskTransitions[len(d.TaskTransitions)-1].Reason, "overlap = cancel_previous")
	})
}

// Nodes checking at once send each fire once: the schedule's row is held
// by one check, the others skip it.
func TestScheduleChecksRacingSendOnce(t *testing.T) {
	h, clk := scheduleHarness(t, t0.Add(100*time.Millisecond))
	_, err := h.st.ScheduleCreate(h.ctx, everySecond("tick", workflow.CatchUpAll, workflow.OverlapAllow))
	require.NoError(t, err)
	nodes := make([]*store.Store, 4)
	for i := range nodes {
		nodes[i] = store.New(h.pool, store.Options{NodeID: "racer", Now: clk.now})
	}
	for step := 1; step <= 20; step++ {
		clk.set(t0.Add(time.Duration(step)*time.Second + 100*time.Millisecond))
		_, errs := race(nodes, func(s *store.Store) (store.FireReport, error) { return s.SchedulesFireDue(h.ctx) })
		for _, err := range errs {
			require.NoError(t, err)
		}
	}
	ids := h.acceptFired()
	assert.Len(t, ids, 20)
	seen := map[uuid.UUID]bool{}
	for _, id := range ids {
		assert.False(t, seen[id], "request %s sent twice", id)
		seen[id] = true
	}
}

func TestSchedulePauseResumeTriggerDelete(t *testing.T) {
	h, clk := scheduleHarness(t, t0.Add(100*time.Millisecond))
	_, err := h.st.ScheduleCreate(h.ctx, everySecond("tick", workflow.CatchUpAll, workflow.OverlapAllow))
	require.NoError(t, err)
	info, err := h.st.SchedulePause(h.ctx, "tick", true)
	require.NoError(t, err)
	assert.True(t, info.Paused)
	assert.Empty(t, info.NextFires)

	clk.set(t0.Add(10 * time.Second))
	rep, err := h.st.SchedulesFireDue(h.ctx)
	require.NoError(t, err)
	assert.Zero(t, rep.Sent, "a paused schedule does not fire")

	f, err := h.st.ScheduleTrigger(h.ctx, "tick")
	require.NoError(t, err, "a paused schedule can be triggered")
	assert.Equal(t, string(workflow.FireTriggered), f.Outcome)
	require.Len(t, h.acceptFired(), 1)

	info, err = h.st.SchedulePause(h.ctx, "tick", false)
	require.NoError(t, err)
	assert.Equal(t, t0.Add(11*time.Second), info.NextFireAt.UTC(), "what fell due while paused is not sent")

	require.NoError(t, h.st.ScheduleDelete(h.ctx, "tick"))
	_, err = h.st.ScheduleGet(h.ctx, "tick")
	assert.ErrorIs(t, err, store.ErrNotFound)
	assert.ErrorIs(t, h.st.ScheduleDelete(h.ctx, "tick"), store.ErrNotFound)
	_, err = h.st.ScheduleTrigger(h.ctx, "tick")
	assert.ErrorIs(t, err, store.ErrNotFound)
}

func TestSchedulesDeclare(t *testing.T) {
	h, _ := scheduleHarness(t, t0.Add(100*time.Millisecond))
	a := everySecond("a", workflow.CatchUpOne, workflow.OverlapSkip)
	b := everySecond("b", workflow.CatchUpOne, workflow.OverlapSkip)
	rep, err := h.st.SchedulesDeclare(h.ctx, []workflow.Schedule{a, b})
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, rep.Created)

	_, err = h.st.SchedulePause(h.ctx, "a", true)
	require.NoError(t, err)
	_, err = h.st.ScheduleCreate(h.ctx, everySecond("c", workflow.CatchUpOne, workflow.OverlapSkip))
	require.NoError(t, err)

	a.Cron = "0 * * * * *"
	rep, err = h.st.SchedulesDeclare(h.ctx, []workflow.Schedule{a, everySecond("c", workflow.CatchUpOne, workflow.OverlapSkip)})
	require.NoError(t, err)
	assert.Equal(t, []string{"a"}, rep.Changed)
	assert.Empty(t, rep.Created)
	assert.Equal(t, []string{"c"}, rep.Taken, "a schedule created through the API is not overwritten")
	assert.Equal(t, []string{"b"}, rep.Undeclared)
	got, err := h.st.ScheduleGet(h.ctx, "a")
	require.NoError(t, err)
	assert.True(t, got.Paused, "a declared schedule stays paused")
	assert.Equal(t, "0 * * * * *", got.Cron)
	assert.Equal(t, t0.Add(time.Minute), got.NextFireAt.UTC())

	rep, err = h.st.SchedulesDeclare(h.ctx, []workflow.Schedule{a})
	require.NoError(t, err)
	assert.Empty(t, rep.Changed, "unchanged")

	bad := a
	bad.Cron = "every day"
	_, err = h.st.SchedulesDeclare(h.ctx, []workflow.Schedule{bad})
	requireRefused(t, err, `schedule "a": cron`)
}
