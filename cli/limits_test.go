package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// startFlowCLIEnv is startCLIEnv with the flow template and its limits, in
// the node's configuration and in the CLI's.
func startFlowCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	url := testsupport.NewDatabaseURL(t)
	node := testsupport.StartNodeOn(t, url, testsupport.WithFlowLimits())
	path := filepath.Join(t.TempDir(), "tasker.toml")
	toml := fmt.Sprintf("[database]\nurl = %q\n\n[namespaces.%s]\nmax_in_flight = %d\n\n[flow.handlers.sleep]\nrate = %q\n",
		url, testsupport.FlowNamespace, testsupport.FlowNamespaceMax, testsupport.FlowHandlerRate)
	require.NoError(t, os.WriteFile(path, []byte(toml), 0o600))
	return &cliEnv{t: t, node: node, config: path}
}

// throttled submits a task of the flow template for customer and waits
// until its step is in state and, when throttled, held by its key's slot.
func (e *cliEnv) throttled(customer string, state workflow.StepState) string {
	e.t.Helper()
	reqID, _ := e.submit(testsupport.FlowNamespace, testsupport.FlowName, `{"customer": "`+customer+`"}`,
		workflow.TaskStatePending, workflow.TaskStateInProgress)
	testsupport.WaitFor(e.t, cliWait, "the nap of "+customer+"'s task to be "+string(state), func() (bool, error) {
		d, err := e.node.Store().TaskShow(e.t.Context(), reqID)
		if err != nil {
			return false, err
		}
		st := d.Steps[0]
		return st.State == state && (state != workflow.StepStateThrottled || strings.Contains(st.ThrottledReason, "slots in use")), nil
	})
	return reqID.String()
}

func TestCLILimits(t *testing.T) {
	t.Parallel()
	e := startFlowCLIEnv(t)
	e.throttled("c1", workflow.StepStateInProgress)
	waiting := e.throttled("c1", workflow.StepStateThrottled)
	group := "key:" + testsupport.FlowKeyScope + "=c1"

	out := e.ok("limits")
	assert.Regexp(t, `(?m)^namespaces\.flow_vis\s+10\s+-\s+-\s+-$`, out)
	assert.Regexp(t, `(?m)^flow\.handlers\.sleep\s+-\s+100/s\s+-\s+-$`, out)
	assert.Contains(t, out, "aging interval: ")
	assert.Regexp(t, `(?m)^flow_vis\s+1\s+1\s+\S+$`, out, "the namespace's slots in use and steps waiting")
	assert.Contains(t, out, "groups, most steps waiting first (3 of 3):")
	assert.Regexp(t, `(?m)^`+regexp.QuoteMeta(group)+`\s+flow_vis\s+1 / 1\s+1\s+\S+\s+-$`, out)
	assert.Regexp(t, `(?m)^handler:sleep\s+flow_vis\s+1 / -\s+1\s+\S+\s+100/s$`, out)

	var page api.LimitsPage
	e.okJSON(&page, "limits", "--limit", "1")
	require.Len(t, page.Groups, 1)
	assert.Equal(t, 3, page.GroupsTotal)
	assert.Equal(t, []api.ConfiguredLimit{{Name: testsupport.FlowNamespace, MaxInFlight: testsupport.FlowNamespaceMax}}, page.Namespaces)

	errOut := e.fails(exitUsage, "limits", "--limit", "5000")
	assert.Contains(t, errOut, "limit 5000 is out of range")

	out = e.ok("task", "show", waiting)
	assert.Regexp(t, `(?m)^nap\s+throttled\s+.*throttled \+\S+: `+regexp.QuoteMeta(group)+`: all 1 slots in use$`, out)
}

// With no limits configured and no step under one, tasker limits says so.
func TestCLILimitsNone(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	out := e.ok("limits")
	assert.Contains(t, out, "no namespace or handler limits configured")
	assert.Contains(t, out, "no step holds a slot or waits")
}

// The pauses of Retry-After answers are listed with how long they last.
func TestWriteLimitsPauses(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	var b strings.Builder
	require.NoError(t, writeLimits(&b, api.LimitsPage{
		Namespaces: []api.ConfiguredLimit{{Name: "payments", RetryAfterPauses: "host"}},
		Pauses: []store.FlowPause{{Group: "host:api.example.com", Until: now.Add(90 * time.Second),
			Reason: "a Retry-After answer of 90000 ms to step 0193"}},
		PausesTotal: 3,
	}, now))
	out := b.String()
	assert.Regexp(t, `(?m)^namespaces\.payments\s+-\s+-\s+-\s+host$`, out)
	assert.Contains(t, out, "paused by Retry-After answers (1 of 3):")
	assert.Regexp(t, `(?m)^host:api\.example\.com\s+1m30s\s+a Retry-After answer of 90000 ms to step 0193$`, out)
}
