package store_test

import (
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

// age moves the times a row was finished, refused or archived back by d,
// standing in for the passing of days.
func (h *harness) age(sql string, arg any, d time.Duration) {
	h.t.Helper()
	_, err := h.pool.Exec(h.ctx, sql, arg, d)
	require.NoError(h.t, err)
}

func (h *harness) count(sql string, a ...any) int64 {
	h.t.Helper()
	var n int64
	require.NoError(h.t, h.pool.QueryRow(h.ctx, sql, a...).Scan(&n))
	return n
}

// Tasks older than their state is kept go with their steps, edges and
// transitions; younger ones, and unfinished ones, stay. The preview counts
// exactly what the run then deletes.
func TestPruneFinishedTasks(t *testing.T) {
	h := newHarness(t, store.Options{})
	old := h.runToEnd(h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 2}`))
	young := h.runToEnd(h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 4}`))
	running := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	cancelled := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 8}`)
	require.NoError(t, h.st.TaskCancel(h.ctx, cancelled, ""))
	require.Equal(t, workflow.TaskStateComplete, old.State)
	require.Equal(t, workflow.TaskStateComplete, young.State)
	h.age("UPDATE tasker.tasks SET finished_at = finished_at - $2::interval WHERE task_uuid = $1", old.TaskUUID, 8*24*time.Hour)
	h.age("UPDATE tasker.tasks SET finished_at = finished_at - $2::interval WHERE task_uuid = $1", cancelled, 8*24*time.Hour)
	// Old enough to go if it were finished: an unfinished task stays.
	h.age("UPDATE tasker.tasks SET created_at = created_at - $2::interval WHERE task_uuid = $1", running, 8*24*time.Hour)

	policy := store.RetentionPolicy{Complete: 7 * 24 * time.Hour, Failed: 30 * 24 * time.Hour}
	targets := policy.Targets(time.Now(), nil)
	require.Len(t, targets, 2, "cancelled tasks are kept forever by this policy")

	preview, err := h.st.PrunePreview(h.ctx, targets[0])
	require.NoError(t, err)
	assert.Equal(t, store.PruneCount{Rows: 1, Steps: 4, Transitions: preview.Transitions}, preview)
	assert.Positive(t, preview.Transitions)

	run, err := h.st.Prune(h.ctx, targets, 100, time.Minute, nil)
	require.NoError(t, err)
	assert.True(t, run.Done)
	assert.Equal(t, preview, run.Deleted[string(store.PruneComplete)])

	_, err = h.st.TaskGet(h.ctx, old.TaskUUID)
	require.ErrorIs(t, err, store.ErrNotFound)
	for _, table := range []string{"steps", "step_edges", "step_transitions", "task_transitions"} {
		assert.Zero(t, h.count("SELECT count(*) FROM tasker."+table+" WHERE task_uuid = $1", old.TaskUUID), table)
	}
	for _, keep := range []uuid.UUID{young.TaskUUID, running, cancelled} {
		_, err := h.st.TaskGet(h.ctx, keep)
		require.NoError(t, err, "task %s kept", keep)
	}
	assert.EqualValues(t, 4, h.count("SELECT count(*) FROM tasker.steps WHERE task_uuid = $1", young.TaskUUID))

	// Cancelled tasks kept 7 days go too, once the policy says so.
	policy.Cancelled = 7 * 24 * time.Hour
	run, err = h.st.Prune(h.ctx, policy.Targets(time.Now(), nil), 100, time.Minute, nil)
	require.NoError(t, err)
	assert.EqualValues(t, 1, run.Deleted[string(store.PruneCancelled)].Rows)
	_, err = h.st.TaskGet(h.ctx, cancelled)
	require.ErrorIs(t, err, store.ErrNotFound)
}

// Batches are small: a run stops after its time budget and the next one
// carries on.
func TestPruneInBatches(t *testing.T) {
	h := newHarness(t, store.Options{})
	for range 5 {
		h.runToEnd(h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 2}`))
	}
	_, err := h.pool.Exec(h.ctx, "UPDATE tasker.tasks SET finished_at = finished_at - interval '8 days'")
	require.NoError(t, err)
	targets := store.RetentionPolicy{Complete: 7 * 24 * time.Hour}.Targets(time.Now(), nil)
	var batches []int64
	run, err := h.st.Prune(h.ctx, targets, 2, time.Minute, func(_ store.PruneTarget, c store.PruneCount) { batches = append(batches, c.Rows) })
	require.NoError(t, err)
	assert.Equal(t, []int64{2, 2, 1}, batches)
	assert.Equal(t, 3, run.Batches)
	assert.EqualValues(t, 0, h.count("SELECT count(*) FROM tasker.tasks"))

	// A spent budget stops before the first batch.
	run, err = h.st.Prune(h.ctx, targets, 2, time.Nanosecond, nil)
	require.NoError(t, err)
	assert.False(t, run.Done)
}

// Rejected requests, archived messages and fire history older than kept
// are deleted; the others stay.
func TestPruneRequestsArchivesAndFires(t *testing.T) {
	h, clk := scheduleHarness(t, time.Now())
	for range 3 {
		id := uuid.New()
		requireRejected(t, h, `{"request_id": "`+id.String()+`", "namespace": "nope", "name": "x", "context": {}}`, "", id)
	}
	_, err := h.st.ScheduleCreate(h.ctx, everySecond("tick", workflow.CatchUpNone, workflow.OverlapAllow))
	require.NoError(t, err)
	clk.set(time.Now().Add(2 * time.Second))
	_, err = h.st.SchedulesFireDue(h.ctx)
	require.NoError(t, err)
	h.acceptFired()

	_, err = h.pool.Exec(h.ctx, "UPDATE tasker.rejected_requests SET rejected_at = rejected_at - interval '31 days' WHERE id IN (SELECT id FROM tasker.rejected_requests ORDER BY id LIMIT 2)")
	require.NoError(t, err)
	archive, err := queue.ArchiveTable(queue.TaskRequestsQueue)
	require.NoError(t, err)
	_, err = h.pool.Exec(h.ctx, "UPDATE "+archive+" SET archived_at = archived_at - interval '8 days' WHERE msg_id IN (SELECT msg_id FROM "+archive+" ORDER BY msg_id LIMIT 1)")
	require.NoError(t, err)
	fires := h.count("SELECT count(*) FROM tasker.schedule_fires")
	require.Positive(t, fires)
	_, err = h.pool.Exec(h.ctx, "UPDATE tasker.schedule_fires SET created_at = created_at - interval '31 days'")
	require.NoError(t, err)

	policy := store.RetentionPolicy{Rejected: 30 * 24 * time.Hour, Archives: 7 * 24 * time.Hour, Fires: 30 * 24 * time.Hour}
	targets := policy.Targets(time.Now(), []string{queue.TaskRequestsQueue, queue.StepResultsQueue})
	run, err := h.st.Prune(h.ctx, targets, 100, time.Minute, nil)
	require.NoError(t, err)
	assert.EqualValues(t, 2, run.Deleted[string(store.PruneRejected)].Rows)
	assert.EqualValues(t, 1, run.Deleted["archive:"+queue.TaskRequestsQueue].Rows)
	assert.Equal(t, fires, run.Deleted[string(store.PruneFires)].Rows)
	assert.EqualValues(t, 1, h.count("SELECT count(*) FROM tasker.rejected_requests"))
	assert.EqualValues(t, 2, h.count("SELECT count(*) FROM "+archive))
	assert.EqualValues(t, 0, h.count("SELECT count(*) FROM tasker.schedule_fires"))
	got, err := h.st.ScheduleGet(h.ctx, "tick")
	require.NoError(t, err)
	assert.NotNil(t, got.LastTask, "the schedule still shows its last fire's task")
}

func TestLease(t *testing.T) {
	h := newHarness(t, store.Options{})
	ok, err := h.st.LeaseAcquire(h.ctx, "retention", "node-a", time.Minute)
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = h.st.LeaseAcquire(h.ctx, "retention", "node-b", time.Minute)
	require.NoError(t, err)
	assert.False(t, ok, "held by node-a")
	ok, err = h.st.LeaseAcquire(h.ctx, "retention", "node-a", time.Minute)
	require.NoError(t, err)
	assert.True(t, ok, "node-a extends its own lease")

	require.NoError(t, h.st.LeaseRelease(h.ctx, "retention", "node-b"), "not node-b's to release")
	l, err := h.st.LeaseGet(h.ctx, "retention")
	require.NoError(t, err)
	assert.Equal(t, "node-a", l.Holder)

	// An expired lease goes to the next node that asks.
	_, err = h.pool.Exec(h.ctx, "UPDATE tasker.leases SET expires_at = now() - interval '1 second'")
	require.NoError(t, err)
	ok, err = h.st.LeaseAcquire(h.ctx, "retention", "node-b", time.Minute)
	require.NoError(t, err)
	assert.True(t, ok)
	require.NoError(t, h.st.LeaseRelease(h.ctx, "retention", "node-b"))
	_, err = h.st.LeaseGet(h.ctx, "retention")
	assert.ErrorIs(t, err, store.ErrNotFound)
}

// Where the server's autovacuum is off, the tables that pruning left full
// of dead rows are vacuumed; with it on, nothing is.
func TestVacuumDead(t *testing.T) {
	h := newHarness(t, store.Options{})
	var on bool
	require.NoError(t, h.pool.QueryRow(h.ctx, "SELECT current_setting('autovacuum')::bool").Scan(&on))
	_, err := h.pool.Exec(h.ctx, `INSERT INTO tasker.rejected_requests (msg_id, payload, reason)
		SELECT g, '{}', 'test' FROM generate_series(1, 200) g`)
	require.NoError(t, err)
	_, err = h.pool.Exec(h.ctx, "DELETE FROM tasker.rejected_requests")
	require.NoError(t, err)
	queues := []string{queue.NamespaceQueue(testsupport.LinearNamespace)}
	// The statistics of the deletes reach pg_stat_user_tables at the
	// session's next report; wait for them.
	testsupport.WaitFor(t, 10*time.Second, "the dead rows to be counted", func() (bool, error) {
		return h.count("SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = 'tasker' AND relname = 'rejected_requests'") > 50, nil
	})
	done, err := h.st.VacuumDead(h.ctx, queues)
	require.NoError(t, err)
	if on {
		assert.Empty(t, done, "autovacuum does it")
		return
	}
	assert.Contains(t, done, "tasker.rejected_requests")
	assert.NotContains(t, done, "tasker.templates", "no dead rows there")
}
