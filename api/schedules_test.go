package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

const tickSchedule = `{"name": "tick", "namespace": "linear_workflow", "template": "mathematical_sequence",
	"cron": "* * * * * *", "context": {"even_number": 2}, "overlap": "allow", "catch_up": "none"}`

// A schedule created through the API fires on the node: its tasks run to
// the end, and the schedule shows its last fire's task.
func TestAPISchedules(t *testing.T) {
	a := startAPINode(t)
	code, b := a.call(http.MethodPost, "/v1/schedules", tickSchedule)
	require.Equal(t, http.StatusOK, code, "%s", b)
	var created store.ScheduleInfo
	require.NoError(t, json.Unmarshal(b, &created))
	assert.Equal(t, store.ScheduleSourceAPI, created.Source)
	assert.Equal(t, "UTC", created.TimeZone)
	assert.Len(t, created.NextFires, store.ScheduleNextFires)

	msg := a.fail(http.MethodPost, "/v1/schedules", tickSchedule, http.StatusConflict, api.CodeRefused)
	assert.Contains(t, msg, `a schedule named "tick" exists`)
	msg = a.fail(http.MethodPost, "/v1/schedules", `{"name": "bad", "namespace": "linear_workflow", "template": "mathematical_sequence", "cron": "* * *"}`,
		http.StatusBadRequest, api.CodeBadRequest)
	assert.Contains(t, msg, "cron:")
	a.fail(http.MethodPost, "/v1/schedules", `{"name": "x", "every": "1s"}`, http.StatusBadRequest, api.CodeBadRequest)

	var detail api.ScheduleDetail
	testsupport.WaitFor(t, 15*time.Second, "a fire of schedule tick completes", func() (bool, error) {
		a.get("/v1/schedules/tick", &detail)
		return detail.LastTask != nil && detail.LastTask.State == workflow.TaskStateComplete, nil
	})
	require.NotEmpty(t, detail.Fires)
	assert.Positive(t, detail.Fired)

	var page api.SchedulePage
	a.get("/v1/schedules", &page)
	require.Len(t, page.Schedules, 1)

	code, b = a.call(http.MethodPost, "/v1/schedules/tick/pause", "")
	require.Equal(t, http.StatusOK, code, "%s", b)
	var paused store.ScheduleInfo
	require.NoError(t, json.Unmarshal(b, &paused))
	assert.True(t, paused.Paused)

	code, b = a.call(http.MethodPost, "/v1/schedules/tick/trigger", "")
	require.Equal(t, http.StatusOK, code, "%s", b)
	var fire store.ScheduleFire
	require.NoError(t, json.Unmarshal(b, &fire))
	assert.Equal(t, string(workflow.FireTriggered), fire.Outcome)
	testsupport.WaitFor(t, 15*time.Second, "the triggered fire's task completes", func() (bool, error) {
		a.get("/v1/schedules/tick", &detail)
		return detail.Fires[0].Task != nil && detail.Fires[0].Task.State == workflow.TaskStateComplete, nil
	})
	assert.Equal(t, *fire.RequestID, *detail.Fires[0].RequestID)

	code, b = a.call(http.MethodPost, "/v1/schedules/tick/resume", "")
	require.Equal(t, http.StatusOK, code, "%s", b)
	code, b = a.call(http.MethodDelete, "/v1/schedules/tick", "")
	require.Equal(t, http.StatusOK, code, "%s", b)
	a.fail(http.MethodGet, "/v1/schedules/tick", "", http.StatusNotFound, api.CodeNotFound)
	a.fail(http.MethodDelete, "/v1/schedules/tick", "", http.StatusNotFound, api.CodeNotFound)
	a.fail(http.MethodPost, "/v1/schedules/Tick!/pause", "", http.StatusBadRequest, api.CodeBadRequest)
}
