package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// throttledByKey submits two tasks of one customer of the flow template
// and waits until the second one's step waits for the first one's slot; it
// returns the second task and the key group.
func throttledByKey(a *apiNode, customer string) (uuid.UUID, string) {
	a.t.Helper()
	_, first := a.submit(testsupport.FlowNamespace, testsupport.FlowName, `{"customer": "`+customer+`"}`)
	opWaitStep(a.t, a.node, first, "nap", workflow.StepStateInProgress)
	_, second := a.submit(testsupport.FlowNamespace, testsupport.FlowName, `{"customer": "`+customer+`"}`)
	group := "key:" + testsupport.FlowKeyScope + "=" + customer
	testsupport.WaitFor(a.t, apiWait, "the second task's step to wait for a slot", func() (bool, error) {
		d, err := a.node.Store().TaskShow(a.t.Context(), second)
		return err == nil && strings.HasPrefix(d.Steps[0].ThrottledReason, group+":"), err
	})
	return second, group
}

// GET /v1/limits shows the configured limits and the use of each group;
// a throttled step's reason is in its task's JSON.
func TestAPILimits(t *testing.T) {
	a := startAPINode(t, testsupport.WithFlowLimits())
	task, group := throttledByKey(a, "c1")

	var d store.TaskDetail
	a.get("/v1/tasks/"+task.String(), &d)
	require.Equal(t, workflow.StepStateThrottled, d.Steps[0].State)
	assert.Equal(t, group+": all 1 slots in use", d.Steps[0].ThrottledReason)
	assert.NotNil(t, d.Steps[0].ThrottledSince)

	var page api.LimitsPage
	a.get("/v1/limits", &page)
	assert.Equal(t, []api.ConfiguredLimit{{Name: testsupport.FlowNamespace, MaxInFlight: testsupport.FlowNamespaceMax}}, page.Namespaces)
	assert.Equal(t, []api.ConfiguredLimit{{Name: "sleep", Rate: testsupport.FlowHandlerRate}}, page.Handlers)
	assert.NotEmpty(t, page.AgingInterval)
	require.Len(t, page.Usage, 1)
	assert.Equal(t, testsupport.FlowNamespace, page.Usage[0].Namespace)
	assert.Equal(t, 1, page.Usage[0].InUse)
	assert.Equal(t, 1, page.Usage[0].Waiting)
	byName := map[string]store.FlowGroupUsage{}
	for _, g := range page.Groups {
		byName[g.Group] = g
	}
	key := byName[group]
	assert.Equal(t, 1, key.InUse)
	assert.Equal(t, 1, key.Waiting)
	assert.Equal(t, 1, key.MaxInFlight)
	assert.NotNil(t, key.OldestWait)
	assert.Equal(t, testsupport.FlowNamespaceMax, byName[workflow.GroupNamespace+testsupport.FlowNamespace].MaxInFlight)
	assert.Equal(t, testsupport.FlowHandlerRate, byName[workflow.GroupHandler+"sleep"].Rate)
	assert.Len(t, page.Groups, 3)
	assert.Equal(t, 3, page.GroupsTotal)

	// A second customer's task runs at once: its key group has a step in
	// use and none waiting, so it comes after the groups with one waiting.
	_, other := a.submit(testsupport.FlowNamespace, testsupport.FlowName, `{"customer": "c2"}`)
	opWaitStep(t, a.node, other, "nap", workflow.StepStateInProgress)
	a.get("/v1/limits", &page)
	require.Len(t, page.Groups, 4)
	assert.Equal(t, "key:"+testsupport.FlowKeyScope+"=c2", page.Groups[3].Group)
	assert.Zero(t, page.Groups[3].Waiting)
	a.get("/v1/limits?limit=2", &page)
	require.Len(t, page.Groups, 2)
	assert.Equal(t, 4, page.GroupsTotal)
	for _, g := range page.Groups {
		assert.Equal(t, 1, g.Waiting, g.Group)
	}

	msg := a.fail(http.MethodGet, "/v1/limits?limit=0", "", http.StatusBadRequest, api.CodeBadRequest)
	assert.Contains(t, msg, `limit "0"`)
	msg = a.fail(http.MethodGet, "/v1/limits?limit=5000", "", http.StatusBadRequest, api.CodeBadRequest)
	assert.Contains(t, msg, "out of range")
	msg = a.fail(http.MethodGet, "/v1/limits?group=x", "", http.StatusBadRequest, api.CodeBadRequest)
	assert.Contains(t, msg, `unknown query parameter "group"`)
}

// Without limits configured or steps under one, the lists are empty, not
// null.
func TestAPILimitsNone(t *testing.T) {
	a := startAPINode(t)
	code, body := a.call(http.MethodGet, "/v1/limits", "")
	require.Equal(t, http.StatusOK, code, "%s", body)
	for _, field := range []string{`"namespaces":[]`, `"handlers":[]`, `"usage":[]`, `"groups":[]`, `"groups_total":0`} {
		assert.Contains(t, string(body), field)
	}
}

// GET /v1/limits takes the API token like every /v1 route.
func TestAPILimitsToken(t *testing.T) {
	a := startAPINode(t, withToken())
	a.fail(http.MethodGet, "/v1/limits", "", http.StatusUnauthorized, api.CodeUnauthorized)
	a.token = apiToken
	var page api.LimitsPage
	a.get("/v1/limits", &page)
}
