package cli

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

func TestCLISchedules(t *testing.T) {
	e := startCLIEnv(t)
	out := e.ok("schedules", "create", "tick", "--namespace", "linear_workflow", "--template", "mathematical_sequence",
		"--cron", "* * * * * *", "--context", `{"even_number": 2}`, "--overlap", "allow", "--catch-up", "none")
	assert.Contains(t, out, "schedule tick (active, api)")

	errOut := e.fails(exitUsage, "schedules", "create", "bad", "--namespace", "linear_workflow", "--template", "mathematical_sequence", "--cron", "61 * * * *")
	assert.Contains(t, errOut, "cron:")
	e.fails(exitUsage, "schedules", "pause", "Not A Name")

	var d api.ScheduleDetail
	testsupport.WaitFor(t, 15*time.Second, "a fire of tick completes", func() (bool, error) {
		e.okJSON(&d, "schedules", "show", "tick")
		return d.LastTask != nil && d.LastTask.State == workflow.TaskStateComplete, nil
	})
	out = e.ok("schedules", "list")
	assert.Contains(t, out, "linear_workflow/mathematical_sequence")
	assert.Contains(t, out, "(complete)")
	out = e.ok("schedules", "show", "tick")
	assert.Contains(t, out, "fires, newest first:")
	assert.Contains(t, out, "on_time")

	var paused store.ScheduleInfo
	e.okJSON(&paused, "schedules", "pause", "tick")
	assert.True(t, paused.Paused)
	out = e.ok("schedules", "trigger", "tick")
	assert.Contains(t, out, "schedule tick fired at")
	e.ok("schedules", "resume", "tick")
	e.ok("schedules", "delete", "tick")
	errOut = e.fails(exitFailed, "schedules", "show", "tick")
	assert.Contains(t, errOut, `schedule "tick": not found`)
}

func TestCLIPrune(t *testing.T) {
	e := startCLIEnv(t)
	_, d := e.submit("linear_workflow", "mathematical_sequence", `{"even_number": 2}`, workflow.TaskStateComplete)
	_, err := e.node.Pool().Exec(t.Context(), "UPDATE tasker.tasks SET finished_at = finished_at - interval '8 days' WHERE task_uuid = $1", d.TaskUUID)
	require.NoError(t, err)

	var plan []api.PrunePreview
	e.okJSON(&plan, "prune", "--dry-run")
	require.NotEmpty(t, plan)
	assert.Equal(t, string(store.PruneComplete), plan[0].Target)
	assert.Equal(t, store.PruneCount{Rows: 1, Steps: 4, Transitions: plan[0].Count.Transitions}, plan[0].Count)
	out := e.ok("prune", "--dry-run")
	assert.Contains(t, out, "dry run: nothing was deleted")
	_, err = e.node.Store().TaskGet(t.Context(), d.TaskUUID)
	require.NoError(t, err, "a dry run deletes nothing")

	out = e.ok("prune")
	assert.Contains(t, out, string(store.PruneComplete))
	_, err = e.node.Store().TaskGet(t.Context(), d.TaskUUID)
	require.ErrorIs(t, err, store.ErrNotFound)
	assert.Contains(t, e.ok("prune"), "nothing to delete")
}
