package bootstrap_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// waitNap waits until the step of the flow template's task of requestID is
// in state and, when throttled, held by its key's slot.
func (e *env) waitNap(requestID uuid.UUID, state workflow.StepState) {
	e.t.Helper()
	testsupport.WaitFor(e.t, taskTimeout, "the nap of request "+requestID.String()+" to be "+string(state), func() (bool, error) {
		d, err := e.node.Store().TaskShow(e.t.Context(), requestID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		st := d.Steps[0]
		return st.State == state && (state != workflow.StepStateThrottled || strings.Contains(st.ThrottledReason, "slots in use")), nil
	})
}

// A step held by its key's slot shows in the admission's counters, the
// gauges read at scrape, /health's flow section (the node stays ok) and
// the admission's node of the actor tree.
func TestFlowVisible(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testsupport.WithFlowLimits())
	base := "http://" + e.node.HTTPAddr()
	first := e.submit(testsupport.FlowNamespace, testsupport.FlowName, `{"customer": "c1"}`)
	e.waitNap(first, workflow.StepStateInProgress)
	second := e.submit(testsupport.FlowNamespace, testsupport.FlowName, `{"customer": "c1"}`)
	e.waitNap(second, workflow.StepStateThrottled)

	want := []string{
		`tasker_steps_admitted_total{namespace="flow_vis"} 1`,
		`tasker_steps_throttled_total{namespace="flow_vis",reason="slots"} 1`,
		`tasker_flow_admission_errors_total 0`,
		`tasker_flow_check_errors_total 0`,
		`tasker_flow_drift_repaired_total{table="flow_counts"} 0`,
		`tasker_flow_drift_repaired_total{table="flow_waiting"} 0`,
		// One series for every key of the scope.
		`tasker_slots_in_use{group="key:flow_vis/per_customer",namespace="flow_vis"} 1`,
		`tasker_slots_in_use{group="namespace:flow_vis",namespace="flow_vis"} 1`,
		`tasker_slots_in_use{group="handler:sleep",namespace="flow_vis"} 1`,
		`tasker_steps_waiting{namespace="flow_vis"} 1`,
		`tasker_steps_waiting{namespace="linear_workflow"} 0`,
	}
	var metrics string
	testsupport.WaitFor(t, 5*time.Second, "the flow metrics", func() (bool, error) {
		code, _, body := httpGet(t, base+"/metrics", "")
		metrics = string(body)
		if code != http.StatusOK {
			return false, nil
		}
		for _, w := range want {
			if !hasLine(metrics, w) {
				return false, nil
			}
		}
		return true, nil
	})
	require.NotContains(t, metrics, "per_customer=c1", "no series per key")

	code, _, body := httpGet(t, base+"/health", "")
	require.Equal(t, http.StatusOK, code, string(body))
	var h api.Health
	require.NoError(t, json.Unmarshal(body, &h))
	require.Equal(t, api.HealthOK, h.Status, "steps waiting do not degrade the node: %v", h.Reasons)
	require.Len(t, h.Flow, 1, "%+v", h.Flow)
	f := h.Flow[0]
	require.Positive(t, f.OldestWaitSecs)
	require.Equal(t, api.FlowHealth{Namespace: testsupport.FlowNamespace, MaxInFlight: testsupport.FlowNamespaceMax,
		InUse: 1, Waiting: 1, OldestWaitSecs: f.OldestWaitSecs}, f)
	code, _, body = httpGet(t, base+"/health/ready", "")
	require.Equal(t, http.StatusOK, code, string(body))
	require.NotContains(t, string(body), `"flow"`, "the readiness probe reads no flow counts")

	code, _, body = httpGet(t, base+"/debug/actors", "")
	require.Equal(t, http.StatusOK, code, string(body))
	var tree actorTree
	require.NoError(t, json.Unmarshal(body, &tree))
	adm := child(t, tree.Actors[0], "admission")
	require.Equal(t, actors.KindAdmission, adm.Kind)
	require.Equal(t, actors.StatusRunning, adm.Status)
	testsupport.WaitFor(t, 5*time.Second, "the admission's detail to name the step waiting", func() (bool, error) {
		_, _, body := httpGet(t, base+"/debug/actors?format=text", "")
		return strings.Contains(string(body), `admission [admission] running detail="last round flow_vis: 0 admitted, 1 waiting for slots, 0 for tokens"`), nil
	})
}

// TestRetryAfterPausesTheHost: in a namespace with retry_after_pauses =
// "host", a real 429 with Retry-After from a local server pauses the host:
// the next task's step to it waits, throttled, with the pause as its
// reason, and /v1/limits' page lists the pause.
func TestRetryAfterPausesTheHost(t *testing.T) {
	t.Parallel()
	srv := testsupport.NewScriptedServer(t, testsupport.Reply{Status: http.StatusTooManyRequests, RetryAfter: "60"}, testsupport.Reply{})
	n := rsStart(t, rsSetup{
		templates: map[string]string{
			"h_pause/call.toml": rsOneStep("h_pause", "call", "http",
				fmt.Sprintf("config = { url = %q }\n[steps.retry]\nmax_attempts = 3", srv.URL+"/orders")),
		},
		configure: func(cfg *config.Config) {
			cfg.Namespaces["h_pause"] = config.Namespace{Workers: 2, AllowedHosts: []string{"127.0.0.1"}, RetryAfterPauses: "host"}
		},
	})
	first := n.submit("h_pause", "call")
	testsupport.WaitFor(t, rsWait, "the first call to wait for its retry", func() (bool, error) {
		d, ok := n.show(first)
		return ok && d.Steps[0].State == workflow.StepStateWaitingForRetry, nil
	})
	second := n.submit("h_pause", "call")
	var d store.TaskDetail
	testsupport.WaitFor(t, rsWait, "the second call to be held by the pause", func() (bool, error) {
		var ok bool
		d, ok = n.show(second)
		return ok && d.Steps[0].State == workflow.StepStateThrottled &&
			strings.Contains(d.Steps[0].ThrottledReason, "paused by a Retry-After answer"), nil
	})
	require.Contains(t, d.Steps[0].ThrottledReason, "host:127.0.0.1: paused by a Retry-After answer until ")
	require.Equal(t, 1, srv.Requests(), "the paused host was not called again")

	ctx, cancel := rsCtx()
	defer cancel()
	page, err := api.Operator{Store: n.node.Store()}.Limits(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, []api.ConfiguredLimit{{Name: "h_pause", RetryAfterPauses: "host"}}, page.Namespaces)
	require.Len(t, page.Pauses, 1)
	require.Equal(t, "host:127.0.0.1", page.Pauses[0].Group)
	require.WithinDuration(t, time.Now().Add(time.Minute), page.Pauses[0].Until, 10*time.Second)
	require.Equal(t, 1, page.PausesTotal)
}
