package dashboard_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// throttledTask submits two tasks of one customer of the flow template and
// returns the second, once its step waits for the first one's slot.
func (n *dashNode) throttledTask(customer string) uuid.UUID {
	n.t.Helper()
	n.submit(testsupport.FlowNamespace, testsupport.FlowName, `{"customer": "`+customer+`"}`)
	id := n.submit(testsupport.FlowNamespace, testsupport.FlowName, `{"customer": "`+customer+`"}`)
	testsupport.WaitFor(n.t, browserWait, "the second task's step to wait for a slot", func() (bool, error) {
		d, err := n.node.Store().TaskShow(n.t.Context(), id)
		return err == nil && strings.Contains(d.Steps[0].ThrottledReason, "slots in use"), err
	})
	return id
}

// TestDashboardThrottled: a throttled step's page shows its state, the
// reason it waits and its wait on the timeline; the actor tree shows the
// admission's last round.
func TestDashboardThrottled(t *testing.T) {
	t.Parallel()
	n := startDashNode(t, testsupport.WithFlowLimits())
	id := n.throttledTask("c1")
	c := newClient(t, n.base)

	page := c.get("/tasks/" + id.String())
	require.Equal(t, http.StatusOK, page.code, page.body)
	require.Contains(t, page.body, `<tr id="step-nap" data-step="nap" data-state="throttled">`)
	require.Contains(t, page.body, `<span class="badge st-throttled">throttled</span>`)
	reason := "key:" + testsupport.FlowKeyScope + "=c1: all 1 slots in use"
	body := htmlUnescape(page.body)
	require.Contains(t, body, `<strong>waiting for its admission</strong> `+reason)
	require.Contains(t, body, "nap · throttled · "+reason, "the graph node's title says why")
	require.Contains(t, page.body, `<g class="attempt st-throttled"><title>nap · throttled for `)
	require.Contains(t, page.body, `<rect class="held"`)

	actors := c.get("/actors")
	require.Equal(t, http.StatusOK, actors.code, actors.body)
	require.Contains(t, actors.body, `data-pid="root/admission" data-kind="admission" data-status="running"`)
	testsupport.WaitFor(t, browserWait, "the admission's last round on the tree page", func() (bool, error) {
		return strings.Contains(c.get("/actors").body, `<span class="muted small detail">last round flow_vis: 0 admitted, 1 waiting for slots, 0 for tokens</span>`), nil
	})
}

// TestBrowserThrottled: in a browser, a throttled step's node, badge and
// wait are in the throttled colour, not the pending one.
func TestBrowserThrottled(t *testing.T) {
	t.Parallel()
	chromium(t)
	n := startDashNode(t, testsupport.WithFlowLimits())
	id := n.throttledTask("c1")
	b := newTab(t, n.base, 1280, 900)
	require.Equal(t, http.StatusOK, b.open("/tasks/"+id.String()))
	b.do("the graph", chromedp.WaitVisible(chromedp.CSS("svg.dag")))
	colour := func(v string) string {
		return eval[string](b, fmt.Sprintf(`(() => { const p = document.createElement('span');
			p.style.color = 'var(%s)'; document.body.append(p);
			const c = getComputedStyle(p).color; p.remove(); return c; })()`, v))
	}
	throttled := colour("--st-throttled")
	require.NotEqual(t, colour("--st-pending"), throttled)
	require.Equal(t, throttled, eval[string](b, `getComputedStyle(document.querySelector('svg.dag a.node[data-step="nap"] rect')).fill`))
	require.Equal(t, throttled, eval[string](b, `getComputedStyle(document.querySelector('#step-nap .badge.st-throttled')).color`))
	require.Equal(t, throttled, eval[string](b, `getComputedStyle(document.querySelector('svg.gantt g.st-throttled rect.held')).fill`))
	require.Contains(t, eval[string](b, `document.querySelector('#step-nap .throttled-box').textContent`), "all 1 slots in use")
	b.screenshot("task-throttled")
	require.Equal(t, string(workflow.StepStateThrottled), eval[string](b, `document.querySelector('#step-nap').dataset.state`))
}
