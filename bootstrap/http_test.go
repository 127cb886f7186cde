package bootstrap_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/testsupport"
)

// referenceNamespaces are the namespaces of a test node.
var referenceNamespaces = []string{
	testsupport.DiamondNamespace, testsupport.FulfillmentNamespace, testsupport.LinearNamespace,
	testsupport.MixedDAGNamespace, testsupport.TreeNamespace,
}

// httpGet fetches url with the given Authorization header ("" for none).
func httpGet(t *testing.T, url, authorization string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, body
}

// actorTree is the JSON of /debug/actors.
type actorTree struct {
	NodeID string        `json:"node_id"`
	Actors []actors.Node `json:"actors"`
}

func child(t *testing.T, n actors.Node, name string) actors.Node {
	t.Helper()
	i := slices.IndexFunc(n.Children, func(c actors.Node) bool { return c.Name == name })
	require.GreaterOrEqual(t, i, 0, "%s has no child %s", n.PID, name)
	return n.Children[i]
}

// requireTree checks the shape of a node's actor tree: the root with the
// task-request and step-result actors, and for each namespace a supervisor
// with its poller, workers and breaker, all running.
func requireTree(t *testing.T, tree actorTree, namespaces []string, workers int) {
	t.Helper()
	require.Len(t, tree.Actors, 1, "one root")
	root := tree.Actors[0]
	require.Equal(t, "root", root.Name)
	require.Equal(t, actors.KindRoot, root.Kind)
	require.Equal(t, actors.StatusRunning, root.Status)

	requests := child(t, root, "task_requests")
	require.Equal(t, actors.KindTaskRequests, requests.Kind)
	require.Equal(t, "orchestration_task_requests", requests.Queue)
	require.Equal(t, actors.StatusRunning, requests.Status)
	results := child(t, root, "step_results")
	require.Equal(t, actors.KindStepResults, results.Kind)
	require.Equal(t, "orchestration_step_results", results.Queue)
	require.Equal(t, actors.StatusRunning, results.Status)
	admission := child(t, root, "admission")
	require.Equal(t, actors.KindAdmission, admission.Kind)
	require.Equal(t, actors.StatusRunning, admission.Status)

	for _, ns := range namespaces {
		sup := child(t, root, "ns-"+ns)
		require.Equal(t, actors.KindNamespace, sup.Kind)
		require.Equal(t, ns, sup.Namespace)
		require.Equal(t, actors.StatusRunning, sup.Status, ns)
		require.Equal(t, "root", sup.Parent)

		poller := child(t, sup, "poller")
		require.Equal(t, actors.KindPoller, poller.Kind)
		require.Equal(t, ns+"_queue", poller.Queue)
		require.Equal(t, actors.StatusRunning, poller.Status, ns)

		breaker := child(t, sup, "breaker")
		require.Equal(t, actors.KindBreaker, breaker.Kind)
		require.Equal(t, "closed", breaker.BreakerState, ns)

		var names []string
		for _, c := range sup.Children {
			if c.Kind == actors.KindWorker {
				require.Equal(t, actors.StatusRunning, c.Status, "%s/%s", ns, c.Name)
				names = append(names, c.Name)
			}
		}
		require.Len(t, names, workers, "%s: workers %v", ns, names)
		for i := range workers {
			require.Contains(t, names, "worker-"+string(rune('0'+i)), ns)
		}
	}
	var nsCount int
	for _, c := range root.Children {
		if c.Kind == actors.KindNamespace {
			nsCount++
		}
	}
	require.Equal(t, len(namespaces), nsCount, "one supervisor per namespace")
}

// TestHTTPEndpoints checks the operator endpoints of a running node without
// an API token.
func TestHTTPEndpoints(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	base := "http://" + e.node.HTTPAddr()

	code, _, body := httpGet(t, base+"/health/live", "")
	require.Equal(t, http.StatusOK, code, string(body))

	code, _, body = httpGet(t, base+"/health/ready", "")
	require.Equal(t, http.StatusOK, code, string(body))
	var ready api.Health
	require.NoError(t, json.Unmarshal(body, &ready))
	require.Equal(t, api.HealthOK, ready.Status, "reasons: %v", ready.Reasons)
	require.True(t, ready.Database.Reachable)
	require.Equal(t, ready.Database.SchemaWanted, ready.Database.SchemaVersion)
	require.Equal(t, "closed", ready.Breakers[testsupport.LinearNamespace])

	// Some work, so the counters have something to say.
	linearCase(6).verify(t, e.waitTask(e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`), taskTimeout))

	code, _, body = httpGet(t, base+"/health", "")
	require.Equal(t, http.StatusOK, code, string(body))
	var detail api.Health
	require.NoError(t, json.Unmarshal(body, &detail))
	require.NotNil(t, detail.Pool)
	require.True(t, slices.ContainsFunc(detail.Queues, func(q api.QueueDepth) bool { return q.Queue == "linear_workflow_queue" }), "queues: %+v", detail.Queues)

	code, header, body := httpGet(t, base+"/debug/actors", "")
	require.Equal(t, http.StatusOK, code, string(body))
	require.Contains(t, header.Get("Content-Type"), "application/json")
	var tree actorTree
	require.NoError(t, json.Unmarshal(body, &tree), string(body))
	require.Equal(t, e.node.NodeID(), tree.NodeID)
	requireTree(t, tree, referenceNamespaces, 3)
	poller := child(t, child(t, tree.Actors[0], "ns-"+testsupport.LinearNamespace), "poller")
	require.NotNil(t, poller.LastPollAt, "the poller has polled")

	code, header, body = httpGet(t, base+"/debug/actors?format=text", "")
	require.Equal(t, http.StatusOK, code, string(body))
	require.Contains(t, header.Get("Content-Type"), "text/plain")
	requireTextTree(t, string(body), referenceNamespaces, 3)

	// Counters are bumped just after the transaction they count commits.
	want := []string{
		`tasker_step_attempts_total{namespace="linear_workflow",outcome="success"} 4`,
		`tasker_steps_total{state="complete"} 4`,
		`tasker_tasks_finished_total{namespace="linear_workflow",state="complete"} 1`,
		`tasker_task_requests_total{outcome="created"} 1`,
		`tasker_step_duration_seconds_count{namespace="linear_workflow"} 4`,
		`tasker_circuit_breaker_state{component="linear_workflow"} 0`,
		`tasker_queue_depth{queue="orchestration_task_requests"} 0`,
		`tasker_queue_visible{queue="linear_workflow_queue"} 0`,
		`tasker_actor_restarts_total{actor="root/ns-linear_workflow/poller",kind="poller"} 0`,
	}
	var metrics string
	testsupport.WaitFor(t, 5*time.Second, "the metrics of the finished task", func() (bool, error) {
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
}

// hasLine reports whether text has line, whole.
func hasLine(text, line string) bool {
	return slices.Contains(strings.Split(text, "\n"), line)
}

// requireTextTree checks the indented text form of the tree.
func requireTextTree(t *testing.T, text string, namespaces []string, workers int) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	require.True(t, strings.HasPrefix(lines[0], "root [root_supervisor] running"), "first line: %q", lines[0])
	has := func(prefix string) {
		t.Helper()
		require.True(t, slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, prefix) }),
			"no line starting %q in\n%s", prefix, text)
	}
	has("├── task_requests [task_request_actor] running")
	has("├── step_results [step_result_actor] running")
	has("├── admission [admission] running")
	// Children are sorted by kind, then name: the orchestration breaker
	// comes last.
	has("└── orchestration-breaker [circuit_breaker] running breaker=closed")
	for _, ns := range namespaces {
		indent := "│   "
		has("├── ns-" + ns + " [namespace_supervisor] running")
		has(indent + "├── breaker [circuit_breaker] running breaker=closed")
		has(indent + "├── poller [poller] running queue=" + ns + "_queue")
		for w := range workers - 1 {
			has(indent + "├── worker-" + string(rune('0'+w)) + " [worker] running")
		}
		has(indent + "└── worker-" + string(rune('0'+workers-1)) + " [worker] running")
	}
}

// TestHTTPAPIToken checks that a configured token guards every route but
// /health/*.
func TestHTTPAPIToken(t *testing.T) {
	t.Parallel()
	const token = "0123456789abcdef-test-token"
	e := startEnv(t, testsupport.WithConfig(func(cfg *config.Config) { cfg.HTTP.APIToken = token }))
	base := "http://" + e.node.HTTPAddr()

	for _, path := range []string{"/debug/actors", "/debug/actors?format=text", "/metrics"} {
		for _, auth := range []string{"", "Bearer wrong-token-0123456789", token, "Basic " + token} {
			code, header, body := httpGet(t, base+path, auth)
			require.Equal(t, http.StatusUnauthorized, code, "%s with %q", path, auth)
			require.Contains(t, header.Get("Content-Type"), "application/json")
			var apiErr struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			}
			require.NoError(t, json.Unmarshal(body, &apiErr), string(body))
			require.Equal(t, "unauthorized", apiErr.Code)
			require.Contains(t, apiErr.Message, "Bearer")
		}
		code, _, body := httpGet(t, base+path, "Bearer "+token)
		require.Equal(t, http.StatusOK, code, "%s with the token: %s", path, body)
	}
	for _, path := range []string{"/health/live", "/health/ready", "/health"} {
		code, _, body := httpGet(t, base+path, "")
		require.Equal(t, http.StatusOK, code, "%s without the token: %s", path, body)
	}

	code, _, body := httpGet(t, base+"/debug/actors", "Bearer "+token)
	require.Equal(t, http.StatusOK, code)
	var tree actorTree
	require.NoError(t, json.Unmarshal(body, &tree))
	requireTree(t, tree, referenceNamespaces, 3)
}
