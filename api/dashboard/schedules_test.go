package dashboard_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// TestDashboardSchedules: the schedules page lists a schedule with its
// last fire's task, and its buttons pause, resume and fire it.
func TestDashboardSchedules(t *testing.T) {
	t.Parallel()
	n := startDashNode(t)
	c := newClient(t, n.base)
	require.Contains(t, c.get("/schedules").body, "No schedule.")

	_, err := n.node.Store().ScheduleCreate(t.Context(), workflow.Schedule{
		Name: "hourly_report", Namespace: testsupport.LinearNamespace, Template: testsupport.LinearName,
		Cron: "@hourly", Context: []byte(`{"even_number": 2}`),
	})
	require.NoError(t, err)
	page := c.get("/schedules")
	require.Equal(t, http.StatusOK, page.code, page.body)
	require.Contains(t, page.body, `data-schedule="hourly_report"`)
	require.Contains(t, page.body, `action="/schedules/hourly_report/pause"`)
	tok := csrf(t, page.body)

	fire := c.post("/schedules/hourly_report/trigger", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, fire.code, fire.body)
	require.Contains(t, c.get("/schedules").body, "Schedule hourly_report fired.")
	testsupport.WaitFor(t, browserWait, "the fired task on the page", func() (bool, error) {
		page = c.get("/schedules")
		return strings.Contains(page.body, `data-state="complete"`), nil
	})

	require.Equal(t, http.StatusSeeOther, c.post("/schedules/hourly_report/pause", url.Values{"csrf": {tok}}).code)
	page = c.get("/schedules")
	require.Contains(t, page.body, `data-state="paused"`)
	require.Contains(t, page.body, `action="/schedules/hourly_report/resume"`)
	require.Equal(t, http.StatusSeeOther, c.post("/schedules/hourly_report/resume", url.Values{"csrf": {tok}}).code)
	require.NotContains(t, c.get("/schedules").body, `data-state="paused"`)

	require.Equal(t, http.StatusForbidden, c.post("/schedules/hourly_report/pause", url.Values{"csrf": {"nope"}}).code, "a form without its CSRF token")
	bad := c.post("/schedules/hourly_report/explode", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusBadRequest, bad.code)
	require.Contains(t, bad.body, "not an action on a schedule")
	missing := c.post("/schedules/nothing_here/pause", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, missing.code, missing.body)
	require.Contains(t, c.get("/schedules").body, `Refused: schedule &#34;nothing_here&#34;: not found`)
}
