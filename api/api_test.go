package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// apiToken is the token of the nodes that require one.
const apiToken = "0123456789abcdef-test"

// apiWait bounds the wait for a task to reach a state.
const apiWait = 30 * time.Second

// napTemplate has one step that sleeps far longer than any test, so its
// task stays in progress until it is cancelled.
const napTemplate = `
namespace = "napping"
name = "long_nap"
version = "1.0.0"
description = "One step that sleeps for a minute."

[[steps]]
name = "nap"
handler = "sleep"
timeout = "5m"
config = { duration = "1m" }

[[steps]]
name = "after_nap"
handler = "noop"
depends_on = ["nap"]
`

// apiNode is a node under test with its HTTP API.
type apiNode struct {
	t     *testing.T
	node  *bootstrap.Node
	base  string
	token string
}

func startAPINode(t *testing.T, options ...testsupport.NodeOption) *apiNode {
	t.Helper()
	node := testsupport.StartNode(t, options...)
	require.NotEmpty(t, node.HTTPAddr())
	return &apiNode{t: t, node: node, base: "http://" + node.HTTPAddr()}
}

func withToken() testsupport.NodeOption {
	return testsupport.WithConfig(func(c *config.Config) { c.HTTP.APIToken = apiToken })
}

// withNapTemplate adds napTemplate and cuts the shutdown short, so the
// sleeping handler is cancelled when the test ends.
func withNapTemplate() []testsupport.NodeOption {
	return []testsupport.NodeOption{
		testsupport.WithOptions(func(o *bootstrap.Options) {
			o.Templates = append(o.Templates, fstest.MapFS{"napping/long_nap.toml": {Data: []byte(napTemplate)}})
		}),
		testsupport.WithConfig(func(c *config.Config) { c.Shutdown.Timeout = config.Duration(200 * time.Millisecond) }),
	}
}

// call makes a request with the node's token (if any) and returns the
// status and body.
func (a *apiNode) call(method, path, body string) (int, []byte) {
	a.t.Helper()
	return a.callAs(a.token, method, path, body)
}

func (a *apiNode) callAs(token, method, path, body string) (int, []byte) {
	a.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(a.t.Context(), method, a.base+path, r)
	require.NoError(a.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(a.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(a.t, err)
	return resp.StatusCode, b
}

// get decodes a 200 answer into v.
func (a *apiNode) get(path string, v any) {
	a.t.Helper()
	code, body := a.call(http.MethodGet, path, "")
	require.Equal(a.t, http.StatusOK, code, "GET %s: %s", path, body)
	require.NoError(a.t, json.Unmarshal(body, v), "GET %s: %s", path, body)
}

// post decodes a 200 answer into an ActionResult.
func (a *apiNode) post(path, body string) api.ActionResult {
	a.t.Helper()
	code, b := a.call(http.MethodPost, path, body)
	require.Equal(a.t, http.StatusOK, code, "POST %s: %s", path, b)
	var res api.ActionResult
	require.NoError(a.t, json.Unmarshal(b, &res))
	return res
}

// fail expects an error answer with status code and error code, and returns
// its message.
func (a *apiNode) fail(method, path, body string, status int, code string) string {
	a.t.Helper()
	got, b := a.call(method, path, body)
	require.Equal(a.t, status, got, "%s %s: %s", method, path, b)
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	require.NoError(a.t, json.Unmarshal(b, &e), "%s %s: %s", method, path, b)
	require.Equal(a.t, code, e.Code, "%s %s: %s", method, path, b)
	require.NotEmpty(a.t, e.Message)
	return e.Message
}

// submit sends a task request with plain SQL, as any pgmq client would,
// and waits until its task exists; it returns the request id and task uuid.
func (a *apiNode) submit(namespace, name, taskContext string) (uuid.UUID, uuid.UUID) {
	a.t.Helper()
	return opSubmit(a.t, a.node, namespace, name, taskContext)
}

func opSubmit(t *testing.T, node *bootstrap.Node, namespace, name, taskContext string) (uuid.UUID, uuid.UUID) {
	t.Helper()
	reqID := uuid.Must(uuid.NewV7())
	body, err := json.Marshal(map[string]any{
		"request_id": reqID, "namespace": namespace, "name": name, "context": json.RawMessage(taskContext),
	})
	require.NoError(t, err)
	_, err = node.Pool().Exec(t.Context(), `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`, string(body))
	require.NoError(t, err)
	var task store.Task
	testsupport.WaitFor(t, apiWait, "the task of request "+reqID.String(), func() (bool, error) {
		var err error
		task, err = node.Store().TaskGet(t.Context(), reqID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	})
	return reqID, task.TaskUUID
}

// opWaitState waits for a task to be in one of states.
func opWaitState(t *testing.T, node *bootstrap.Node, id uuid.UUID, states ...workflow.TaskState) store.TaskDetail {
	t.Helper()
	testsupport.WaitFor(t, apiWait, fmt.Sprintf("task %s to be %v", id, states), func() (bool, error) {
		task, err := node.Store().TaskGet(t.Context(), id)
		return err == nil && slices.Contains(states, task.State), err
	})
	d, err := node.Store().TaskShow(t.Context(), id)
	require.NoError(t, err)
	return d
}

// opWaitStep waits for a step of a task to be in state.
func opWaitStep(t *testing.T, node *bootstrap.Node, id uuid.UUID, step string, state workflow.StepState) {
	t.Helper()
	testsupport.WaitFor(t, apiWait, fmt.Sprintf("step %s of %s to be %s", step, id, state), func() (bool, error) {
		d, err := node.Store().TaskShow(t.Context(), id)
		if err != nil {
			return false, err
		}
		for _, st := range d.Steps {
			if st.Name == step {
				return st.State == state, nil
			}
		}
		return false, fmt.Errorf("task %s has no step %s", id, step)
	})
}

func stepByName(t *testing.T, d store.TaskDetail, name string) store.Step {
	t.Helper()
	for _, st := range d.Steps {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("task %s has no step %s", d.TaskUUID, name)
	return store.Step{}
}

func mathResult(t *testing.T, st store.Step) float64 {
	t.Helper()
	var r struct {
		Result float64 `json:"result"`
	}
	require.NoError(t, json.Unmarshal(st.Result, &r), "result of %s: %s", st.Name, st.Result)
	return r.Result
}

func taskUUIDs(tasks []store.Task) []uuid.UUID {
	out := make([]uuid.UUID, len(tasks))
	for i, t := range tasks {
		out[i] = t.TaskUUID
	}
	return out
}

func TestAPITaskList(t *testing.T) {
	t.Parallel()
	a := startAPINode(t)
	// Sent one after the other, so creation order is certain.
	_, lin2 := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 2}`)
	_, odd := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 5}`)
	_, dia := a.submit(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 4}`)
	_, old := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	for _, id := range []uuid.UUID{lin2, odd, dia, old} {
		opWaitState(t, a.node, id, workflow.TaskStateComplete, workflow.TaskStateError)
	}
	_, err := a.node.Pool().Exec(t.Context(), `UPDATE tasker.tasks SET created_at = now() - interval '3 hours' WHERE task_uuid = $1`, old)
	require.NoError(t, err)

	list := func(query string) []uuid.UUID {
		t.Helper()
		var page api.TaskPage
		a.get("/v1/tasks"+query, &page)
		return taskUUIDs(page.Tasks)
	}
	require.Equal(t, []uuid.UUID{dia, odd, lin2, old}, list(""), "newest first")
	require.Equal(t, []uuid.UUID{odd}, list("?state=error"))
	require.Equal(t, []uuid.UUID{dia, lin2}, list("?state=complete&since=1h"))
	require.Equal(t, []uuid.UUID{dia}, list("?namespace=diamond_workflow"))
	require.Equal(t, []uuid.UUID{odd, lin2, old}, list("?name=mathematical_sequence"))
	require.Equal(t, []uuid.UUID{odd, lin2}, list("?namespace=linear_workflow&name=mathematical_sequence&since=90m"))
	require.Equal(t, []uuid.UUID{dia, odd}, list("?limit=2"))
	require.Equal(t, []uuid.UUID{dia, odd, lin2, old}, list("?since=1d"))
	require.Empty(t, list("?namespace=nope"))

	var page api.TaskPage
	a.get("/v1/tasks?state=error", &page)
	require.Len(t, page.Tasks, 1)
	require.Equal(t, testsupport.LinearNamespace, page.Tasks[0].Namespace)
	require.Empty(t, page.Tasks[0].Context, "a list row carries no context")
	require.Empty(t, page.NextCursor, "one page holds them all")

	// Pages follow one another through next_cursor.
	var walked []uuid.UUID
	query := "/v1/tasks?limit=1"
	for range 10 {
		var p api.TaskPage
		a.get(query, &p)
		walked = append(walked, taskUUIDs(p.Tasks)...)
		if p.NextCursor == "" {
			break
		}
		query = "/v1/tasks?limit=1&before=" + p.NextCursor
	}
	require.Equal(t, []uuid.UUID{dia, odd, lin2, old}, walked)
	a.fail(http.MethodGet, "/v1/tasks?before=yesterday", "", http.StatusBadRequest, api.CodeBadRequest)

	msg := a.fail(http.MethodGet, "/v1/tasks?state=bogus", "", http.StatusBadRequest, api.CodeBadRequest)
	require.Contains(t, msg, `"bogus"`)
	require.Contains(t, msg, "in_progress")
	a.fail(http.MethodGet, "/v1/tasks?since=yesterday", "", http.StatusBadRequest, api.CodeBadRequest)
	a.fail(http.MethodGet, "/v1/tasks?since=-1h", "", http.StatusBadRequest, api.CodeBadRequest)
	a.fail(http.MethodGet, "/v1/tasks?limit=0", "", http.StatusBadRequest, api.CodeBadRequest)
	a.fail(http.MethodGet, "/v1/tasks?limit=ten", "", http.StatusBadRequest, api.CodeBadRequest)
	a.fail(http.MethodGet, "/v1/tasks?limit=100000", "", http.StatusBadRequest, api.CodeBadRequest)
	msg = a.fail(http.MethodGet, "/v1/tasks?stat=error", "", http.StatusBadRequest, api.CodeBadRequest)
	require.Contains(t, msg, `"stat"`)

	// A search by the beginning of a task uuid or a request id.
	req, _ := a.node.Store().TaskGet(t.Context(), dia)
	require.Equal(t, []uuid.UUID{dia}, list("?q="+dia.String()))
	require.Equal(t, []uuid.UUID{dia}, list("?q="+strings.ToUpper(req.RequestID.String())))
	require.Equal(t, []uuid.UUID{dia}, list("?q="+strings.ReplaceAll(dia.String(), "-", "")[:20]))
	require.Empty(t, list("?state=error&q="+dia.String()))
	msg = a.fail(http.MethodGet, "/v1/tasks?q=abc", "", http.StatusBadRequest, api.CodeBadRequest)
	require.Contains(t, msg, "at least 8 hex digits")
	a.fail(http.MethodGet, "/v1/tasks?q=not-a-uuid-at-all", "", http.StatusBadRequest, api.CodeBadRequest)
}

// TestOperatorBulk retries and cancels the tasks a filter matches that the
// action applies to, created up to the plan's time, and names the tasks it
// was refused for.
func TestOperatorBulk(t *testing.T) {
	t.Parallel()
	node := testsupport.StartNode(t, withNapTemplate()...)
	op := api.Operator{Store: node.Store()}
	_, ok := opSubmit(t, node, testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 2}`)
	var odd []uuid.UUID
	for _, n := range []int{3, 5, 7} {
		_, id := opSubmit(t, node, testsupport.LinearNamespace, testsupport.LinearName, fmt.Sprintf(`{"even_number": %d}`, n))
		odd = append(odd, id)
	}
	_, napping := opSubmit(t, node, "napping", "long_nap", `{}`)
	opWaitState(t, node, ok, workflow.TaskStateComplete)
	for _, id := range odd {
		opWaitState(t, node, id, workflow.TaskStateError)
	}
	opWaitStep(t, node, napping, "nap", workflow.StepStateInProgress)

	plan, err := op.PlanBulk(t.Context(), api.BulkRetry, api.BulkTarget{})
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{odd[2], odd[1], odd[0]}, plan.Tasks, "the tasks in error, newest first")
	require.False(t, plan.More)
	require.False(t, plan.AsOf.IsZero())

	limited, err := op.PlanBulk(t.Context(), api.BulkRetry, api.BulkTarget{Limit: 2})
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{odd[2], odd[1]}, limited.Tasks)
	require.True(t, limited.More)

	// A plan pinned before a task was made leaves it out.
	oddTask, err := node.Store().TaskGet(t.Context(), odd[1])
	require.NoError(t, err)
	pinned, err := op.PlanBulk(t.Context(), api.BulkRetry, api.BulkTarget{AsOf: oddTask.CreatedAt})
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{odd[1], odd[0]}, pinned.Tasks)

	cancels, err := op.PlanBulk(t.Context(), api.BulkCancel, api.BulkTarget{Filter: api.TaskFilter{Namespace: "napping"}})
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{napping}, cancels.Tasks, "cancel applies to the task in progress")

	// The selection: a complete task among them is refused, the others done.
	res, err := op.ApplyBulk(t.Context(), api.BulkPlan{Action: api.BulkRetry, Tasks: []uuid.UUID{odd[0], ok}})
	require.NoError(t, err)
	require.Len(t, res.Done, 1)
	require.Equal(t, odd[0], res.Done[0].TaskUUID)
	require.Len(t, res.Refused, 1)
	require.Equal(t, ok, res.Refused[0].TaskUUID)
	require.Contains(t, res.Refused[0].Reason, "complete")

	res, err = op.ApplyBulk(t.Context(), cancels)
	require.NoError(t, err)
	require.Len(t, res.Done, 1)
	require.Equal(t, workflow.TaskStateCancelled, res.Done[0].State)

	_, err = op.PlanBulk(t.Context(), "delete", api.BulkTarget{})
	var invalid *api.InvalidError
	require.ErrorAs(t, err, &invalid)
	_, err = op.PlanBulk(t.Context(), api.BulkRetry, api.BulkTarget{Limit: api.BulkLimit + 1})
	require.ErrorAs(t, err, &invalid)
	_, err = op.PlanBulk(t.Context(), api.BulkRetry, api.BulkTarget{Filter: api.TaskFilter{State: "bogus"}})
	require.ErrorAs(t, err, &invalid)
}

func TestAPITaskShow(t *testing.T) {
	t.Parallel()
	a := startAPINode(t)
	reqID, id := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	opWaitState(t, a.node, id, workflow.TaskStateComplete)

	var d store.TaskDetail
	a.get("/v1/tasks/"+id.String(), &d)
	require.Equal(t, id, d.TaskUUID)
	require.Equal(t, reqID, d.RequestID)
	require.Equal(t, workflow.TaskStateComplete, d.State)
	require.Len(t, d.Steps, 4)
	for i, want := range []float64{36, 46, 138, 69} {
		st := d.Steps[i]
		require.Equal(t, fmt.Sprintf("linear_step_%d", i+1), st.Name)
		require.Equal(t, workflow.StepStateComplete, st.State)
		require.Equal(t, 1, st.Attempts)
		require.Equal(t, want, mathResult(t, st))
		require.NotNil(t, st.EnqueuedAt)
		require.NotNil(t, st.LastAttemptedAt)
		require.NotNil(t, st.FinishedAt)
		if i > 0 {
			require.Equal(t, []string{d.Steps[i-1].Name}, st.DependsOn)
		}
	}
	require.NotEmpty(t, d.TaskTransitions)
	require.Equal(t, "complete", d.TaskTransitions[len(d.TaskTransitions)-1].To)
	require.NotEmpty(t, d.StepTransitions)

	// The request id finds the same task.
	var byRequest store.TaskDetail
	a.get("/v1/tasks/"+reqID.String(), &byRequest)
	require.Equal(t, id, byRequest.TaskUUID)

	msg := a.fail(http.MethodGet, "/v1/tasks/not-a-uuid", "", http.StatusBadRequest, api.CodeBadRequest)
	require.Contains(t, msg, "not-a-uuid")
	msg = a.fail(http.MethodGet, "/v1/tasks/"+uuid.NewString(), "", http.StatusNotFound, api.CodeNotFound)
	require.Contains(t, msg, "not found")
	a.fail(http.MethodGet, "/v1/nothing-here", "", http.StatusNotFound, api.CodeNotFound)
}

func TestAPITemplates(t *testing.T) {
	t.Parallel()
	a := startAPINode(t)
	var page api.TemplatePage
	a.get("/v1/templates", &page)
	got := map[string]store.TemplateInfo{}
	for _, tm := range page.Templates {
		got[tm.Namespace+"/"+tm.Name] = tm
	}
	for _, want := range []struct {
		key   string
		steps int
	}{
		{testsupport.LinearNamespace + "/" + testsupport.LinearName, 4},
		{testsupport.DiamondNamespace + "/" + testsupport.DiamondName, 4},
		{testsupport.TreeNamespace + "/" + testsupport.TreeName, 8},
		{testsupport.MixedDAGNamespace + "/" + testsupport.MixedDAGName, 7},
		{testsupport.FulfillmentNamespace + "/" + testsupport.FulfillmentName, 4},
	} {
		tm, ok := got[want.key]
		require.True(t, ok, "template %s missing from %v", want.key, page.Templates)
		require.Equal(t, "1.0.0", tm.Version, want.key)
		require.Equal(t, want.steps, tm.Steps, want.key)
	}
	a.fail(http.MethodGet, "/v1/templates?all=1", "", http.StatusBadRequest, api.CodeBadRequest)

	// One template with its steps.
	dia := got[testsupport.DiamondNamespace+"/"+testsupport.DiamondName]
	var d store.TemplateDetail
	a.get(fmt.Sprintf("/v1/templates/%d", dia.ID), &d)
	require.Equal(t, dia, d.TemplateInfo)
	require.Len(t, d.StepList, 4)
	require.Empty(t, d.StepList[0].DependsOn)
	require.Equal(t, []string{d.StepList[0].Name}, d.StepList[1].DependsOn)
	msg := a.fail(http.MethodGet, "/v1/templates/x1", "", http.StatusBadRequest, api.CodeBadRequest)
	require.Contains(t, msg, `"x1"`)
	a.fail(http.MethodGet, fmt.Sprintf("/v1/templates/%d", dia.ID+1000), "", http.StatusNotFound, api.CodeNotFound)
}

func TestAPIRejectedRequests(t *testing.T) {
	t.Parallel()
	a := startAPINode(t)
	var page api.RejectedPage
	a.get("/v1/requests/rejected", &page)
	require.Empty(t, page.Rejected)
	require.NotNil(t, page.Rejected, "an empty list is [], not null")

	// One after the other: requests read together are handled concurrently,
	// in no set order.
	bad := uuid.Must(uuid.NewV7())
	for i, body := range []string{
		fmt.Sprintf(`{"request_id": %q, "namespace": "no_such_namespace", "name": "x", "context": {}}`, bad),
		`{"namespace": "linear_workflow"}`,
	} {
		_, err := a.node.Pool().Exec(t.Context(), `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`, body)
		require.NoError(t, err)
		testsupport.WaitFor(t, apiWait, fmt.Sprintf("%d rejected requests", i+1), func() (bool, error) {
			page = api.RejectedPage{} // decoding into a used value keeps absent fields
			a.get("/v1/requests/rejected", &page)
			return len(page.Rejected) == i+1, nil
		})
	}
	// Newest first: the request without an id came second.
	require.Nil(t, page.Rejected[0].RequestID)
	require.NotNil(t, page.Rejected[1].RequestID)
	require.Equal(t, bad, *page.Rejected[1].RequestID)
	require.Contains(t, page.Rejected[1].Reason, "no_such_namespace")
	require.Contains(t, page.Rejected[1].Payload, "no_such_namespace")

	page = api.RejectedPage{}
	a.get("/v1/requests/rejected?limit=1", &page)
	require.Len(t, page.Rejected, 1)
	a.fail(http.MethodGet, "/v1/requests/rejected?limit=x", "", http.StatusBadRequest, api.CodeBadRequest)
}

func TestAPIRetry(t *testing.T) {
	t.Parallel()
	a := startAPINode(t)
	_, odd := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 5}`)
	d := opWaitState(t, a.node, odd, workflow.TaskStateError)
	require.Equal(t, 1, stepByName(t, d, "linear_step_1").Attempts)

	res := a.post("/v1/tasks/"+odd.String()+"/retry", "")
	require.Equal(t, "retry", res.Action)
	require.Equal(t, odd, res.TaskUUID)
	require.Equal(t, workflow.TaskStateInProgress, res.State)
	require.NotNil(t, res.Enqueued)
	require.Equal(t, 1, *res.Enqueued)

	// Still odd: the step fails again, after a second attempt.
	d = opWaitState(t, a.node, odd, workflow.TaskStateError)
	st := stepByName(t, d, "linear_step_1")
	require.Equal(t, workflow.StepStateError, st.State)
	require.Equal(t, 2, st.Attempts)
	require.Contains(t, string(st.Error), "must be even")
	require.Contains(t, moveList(d.TaskTransitions), "error → in_progress: retried by operator")

	// Retrying a complete task is refused, naming its state and the one
	// that allows a retry.
	_, done := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 2}`)
	opWaitState(t, a.node, done, workflow.TaskStateComplete)
	msg := a.fail(http.MethodPost, "/v1/tasks/"+done.String()+"/retry", "", http.StatusConflict, api.CodeRefused)
	require.Contains(t, msg, "retry refused")
	require.Contains(t, msg, `"complete"`)
	require.Contains(t, msg, "only when it is error")

	a.fail(http.MethodPost, "/v1/tasks/xyz/retry", "", http.StatusBadRequest, api.CodeBadRequest)
	a.fail(http.MethodPost, "/v1/tasks/"+uuid.NewString()+"/retry", "", http.StatusNotFound, api.CodeNotFound)
	a.fail(http.MethodPost, "/v1/tasks/"+odd.String()+"/retry", `{"force": true}`, http.StatusBadRequest, api.CodeBadRequest)
	a.fail(http.MethodGet, "/v1/tasks/"+odd.String()+"/retry", "", http.StatusNotFound, api.CodeNotFound)
}

func moveList(trs []store.Transition) []string {
	out := make([]string, len(trs))
	for i, tr := range trs {
		out[i] = fmt.Sprintf("%s → %s: %s", tr.From, tr.To, tr.Reason)
	}
	return out
}

func TestAPICancel(t *testing.T) {
	t.Parallel()
	a := startAPINode(t, withNapTemplate()...)
	_, id := a.submit("napping", "long_nap", `{}`)
	opWaitStep(t, a.node, id, "nap", workflow.StepStateInProgress)

	res := a.post("/v1/tasks/"+id.String()+"/cancel", `{"reason": "too sleepy"}`)
	require.Equal(t, "cancel", res.Action)
	require.Equal(t, workflow.TaskStateCancelled, res.State)

	var d store.TaskDetail
	a.get("/v1/tasks/"+id.String(), &d)
	require.Equal(t, workflow.TaskStateCancelled, d.State)
	require.NotNil(t, d.FinishedAt)
	for _, st := range d.Steps {
		require.Equal(t, workflow.StepStateCancelled, st.State, st.Name)
	}
	require.Contains(t, moveList(d.TaskTransitions), "in_progress → cancelled: too sleepy")

	msg := a.fail(http.MethodPost, "/v1/tasks/"+id.String()+"/cancel", "", http.StatusConflict, api.CodeRefused)
	require.Contains(t, msg, `"cancelled"`)
	require.Contains(t, msg, "pending, in_progress or error")

	// A task in error can be cancelled too (without a body).
	_, odd := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 7}`)
	opWaitState(t, a.node, odd, workflow.TaskStateError)
	res = a.post("/v1/tasks/"+odd.String()+"/cancel", "")
	require.Equal(t, workflow.TaskStateCancelled, res.State)
	a.fail(http.MethodPost, "/v1/tasks/"+odd.String()+"/cancel", `{"reason": 3}`, http.StatusBadRequest, api.CodeBadRequest)
	// Its failed step stays in error, but a cancelled task is over: the
	// step cannot be resolved any more.
	msg = a.fail(http.MethodPost, "/v1/tasks/"+odd.String()+"/resolve", `{"step": "linear_step_1"}`, http.StatusConflict, api.CodeRefused)
	require.Contains(t, msg, `"cancelled"`)
}

func TestAPIResolve(t *testing.T) {
	t.Parallel()
	a := startAPINode(t)
	reqID, odd := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 5}`)
	opWaitState(t, a.node, odd, workflow.TaskStateError)

	msg := a.fail(http.MethodPost, "/v1/tasks/"+odd.String()+"/resolve", `{"step": "no_such_step"}`, http.StatusConflict, api.CodeRefused)
	require.Contains(t, msg, `"no_such_step"`)
	require.Contains(t, msg, "linear_step_1, linear_step_2")
	msg = a.fail(http.MethodPost, "/v1/tasks/"+odd.String()+"/resolve", `{"step": "linear_step_2"}`, http.StatusConflict, api.CodeRefused)
	require.Contains(t, msg, "linear_step_2 is pending")
	a.fail(http.MethodPost, "/v1/tasks/"+odd.String()+"/resolve", `{"result": 1}`, http.StatusBadRequest, api.CodeBadRequest)

	// The operator supplies what the failed step should have produced; it
	// flows on: 4 + 10 = 14, × 3 = 42, ÷ 2 = 21. The request id works too.
	res := a.post("/v1/tasks/"+reqID.String()+"/resolve", `{"step": "linear_step_1", "result": {"result": 4}}`)
	require.Equal(t, "resolve", res.Action)
	require.Equal(t, odd, res.TaskUUID)
	require.Equal(t, "linear_step_1", res.Step)
	d := opWaitState(t, a.node, odd, workflow.TaskStateComplete)
	require.Equal(t, workflow.StepStateResolvedManually, stepByName(t, d, "linear_step_1").State)
	require.JSONEq(t, `{"result": 4}`, string(stepByName(t, d, "linear_step_1").Result))
	require.Equal(t, 14.0, mathResult(t, stepByName(t, d, "linear_step_2")))
	require.Equal(t, 21.0, mathResult(t, stepByName(t, d, "linear_step_4")))

	// Resolving a step that is not in error is refused, naming its state.
	msg = a.fail(http.MethodPost, "/v1/tasks/"+odd.String()+"/resolve", `{"step": "linear_step_1"}`, http.StatusConflict, api.CodeRefused)
	require.Contains(t, msg, "resolved_manually")

	// Without a step the whole failed task is resolved.
	_, other := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 3}`)
	opWaitState(t, a.node, other, workflow.TaskStateError)
	res = a.post("/v1/tasks/"+other.String()+"/resolve", "")
	require.Equal(t, workflow.TaskStateResolvedManually, res.State)
	var od store.TaskDetail
	a.get("/v1/tasks/"+other.String(), &od)
	require.Equal(t, workflow.StepStateResolvedManually, stepByName(t, od, "linear_step_1").State)
	require.Equal(t, workflow.StepStateCancelled, stepByName(t, od, "linear_step_4").State)
	msg = a.fail(http.MethodPost, "/v1/tasks/"+other.String()+"/resolve", "", http.StatusConflict, api.CodeRefused)
	require.Contains(t, msg, `"resolved_manually"`)
}

func TestAPIToken(t *testing.T) {
	t.Parallel()
	a := startAPINode(t, withToken())
	_, odd := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 1}`)
	opWaitState(t, a.node, odd, workflow.TaskStateError)

	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/v1/tasks"},
		{http.MethodGet, "/v1/tasks/" + odd.String()},
		{http.MethodGet, "/v1/templates"},
		{http.MethodGet, "/v1/requests/rejected"},
		{http.MethodPost, "/v1/tasks/" + odd.String() + "/retry"},
		{http.MethodPost, "/v1/tasks/" + odd.String() + "/cancel"},
		{http.MethodPost, "/v1/tasks/" + odd.String() + "/resolve"},
	} {
		a.token = ""
		a.fail(r.method, r.path, "", http.StatusUnauthorized, api.CodeUnauthorized)
		a.token = "wrong-token-0123456789"
		a.fail(r.method, r.path, "", http.StatusUnauthorized, api.CodeUnauthorized)
	}
	// Nothing was done by the refused calls.
	opWaitState(t, a.node, odd, workflow.TaskStateError)

	a.token = apiToken
	var page api.TaskPage
	a.get("/v1/tasks", &page)
	require.Equal(t, []uuid.UUID{odd}, taskUUIDs(page.Tasks))
	res := a.post("/v1/tasks/"+odd.String()+"/cancel", `{"reason": "with the token"}`)
	require.Equal(t, workflow.TaskStateCancelled, res.State)

	code, _ := a.callAs("", http.MethodGet, "/health/live", "")
	require.Equal(t, http.StatusOK, code)
}

// TestAPIConcurrentActions sends one cancel many times at once: exactly one
// wins, the others are refused, and the task moves once.
func TestAPIConcurrentActions(t *testing.T) {
	t.Parallel()
	a := startAPINode(t)
	_, odd := a.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 9}`)
	opWaitState(t, a.node, odd, workflow.TaskStateError)

	const n = 8
	codes := make(chan int, n)
	ctx, cancel := context.WithTimeout(t.Context(), apiWait)
	defer cancel()
	for range n {
		go func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/v1/tasks/"+odd.String()+"/cancel", nil)
			if err != nil {
				codes <- 0
				return
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			_ = resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	counts := map[int]int{}
	for range n {
		counts[<-codes]++
	}
	require.Equal(t, map[int]int{http.StatusOK: 1, http.StatusConflict: n - 1}, counts)
	d := opWaitState(t, a.node, odd, workflow.TaskStateCancelled)
	var cancels int
	for _, tr := range d.TaskTransitions {
		if tr.To == string(workflow.TaskStateCancelled) {
			cancels++
		}
	}
	require.Equal(t, 1, cancels)
}

// TestAPIRequestsReplay replays a rejected request through the API: a new
// message with the same body, rejected again here (its template is still
// unknown) and listed with its own id; the first rejection records the
// replay and a second replay of it is refused.
func TestAPIRequestsReplay(t *testing.T) {
	t.Parallel()
	a := startAPINode(t, testsupport.WithConfig(func(c *config.Config) { c.Queue.TemplateGrace = 0 }))
	rid := uuid.Must(uuid.NewV7())
	body := fmt.Sprintf(`{"request_id": %q, "namespace": "linear_workflow", "name": "mathematical_sequence", "version": "2.0.0", "context": {}}`, rid)
	_, err := a.node.Pool().Exec(t.Context(), `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`, body)
	require.NoError(t, err)
	var page api.RejectedPage
	testsupport.WaitFor(t, apiWait, "the request to be rejected", func() (bool, error) {
		page = api.RejectedPage{}
		a.get("/v1/requests/rejected", &page)
		return len(page.Rejected) == 1, nil
	})
	first := page.Rejected[0]

	code, b := a.call(http.MethodPost, fmt.Sprintf("/v1/requests/rejected/%d/replay", first.MsgID), "")
	require.Equal(t, http.StatusOK, code, string(b))
	var rr store.RejectedRequest
	require.NoError(t, json.Unmarshal(b, &rr))
	require.Equal(t, first.MsgID, rr.MsgID)
	require.NotNil(t, rr.ReplayedMsgID)

	testsupport.WaitFor(t, apiWait, "the replay to be rejected too", func() (bool, error) {
		page = api.RejectedPage{}
		a.get("/v1/requests/rejected", &page)
		return len(page.Rejected) == 2, nil
	})
	require.Equal(t, *rr.ReplayedMsgID, page.Rejected[0].MsgID, "the replay is a message of its own")
	require.Equal(t, rid, *page.Rejected[0].RequestID)
	require.Nil(t, page.Rejected[0].ReplayedMsgID)
	require.Equal(t, rr.ReplayedMsgID, page.Rejected[1].ReplayedMsgID, "the first rejection records its replay")

	msg := a.fail(http.MethodPost, fmt.Sprintf("/v1/requests/rejected/%d/replay", first.MsgID), "", http.StatusConflict, api.CodeRefused)
	require.Contains(t, msg, fmt.Sprintf("already replayed, as message %d", *rr.ReplayedMsgID))
	a.fail(http.MethodPost, "/v1/requests/rejected/999999/replay", "", http.StatusNotFound, api.CodeNotFound)
	a.fail(http.MethodPost, "/v1/requests/rejected/abc/replay", "", http.StatusBadRequest, api.CodeBadRequest)
}

// TestAPIArchivedMessages lists a queue's archive with the reasons, a page
// at a time, and refuses a missing or unknown queue naming the queues.
func TestAPIArchivedMessages(t *testing.T) {
	t.Parallel()
	a := startAPINode(t, testsupport.WithConfig(func(c *config.Config) { c.Queue.TemplateGrace = 0 }))
	for _, name := range []string{"first_missing", "second_missing"} {
		_, err := a.node.Pool().Exec(t.Context(), `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`,
			fmt.Sprintf(`{"request_id": %q, "namespace": "linear_workflow", "name": %q, "context": {}}`, uuid.Must(uuid.NewV7()), name))
		require.NoError(t, err)
		testsupport.WaitFor(t, apiWait, name+" to be rejected", func() (bool, error) {
			var page api.RejectedPage
			a.get("/v1/requests/rejected", &page)
			return len(page.Rejected) > 0 && strings.Contains(page.Rejected[0].Reason, name), nil
		})
	}
	var page api.ArchivedPage
	a.get("/v1/messages/archived?queue=orchestration_task_requests&limit=1", &page)
	require.Len(t, page.Messages, 1)
	require.Equal(t, "orchestration_task_requests", page.Messages[0].Queue)
	require.Contains(t, page.Messages[0].Reason, `unknown template "second_missing"`)
	require.NotEmpty(t, page.NextCursor)

	next := api.ArchivedPage{}
	a.get("/v1/messages/archived?queue=orchestration_task_requests&before="+page.NextCursor, &next)
	require.Len(t, next.Messages, 1)
	require.Contains(t, next.Messages[0].Reason, `unknown template "first_missing"`)
	require.Empty(t, next.NextCursor)

	code, body := a.call(http.MethodGet, "/v1/messages/archived?queue=orchestration_task_requests", "")
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, string(body), "\n  ", "compact JSON")

	msg := a.fail(http.MethodGet, "/v1/messages/archived", "", http.StatusBadRequest, api.CodeBadRequest)
	require.Contains(t, msg, "a queue is required")
	require.Contains(t, msg, "linear_workflow_queue")
	msg = a.fail(http.MethodGet, "/v1/messages/archived?queue=nowhere", "", http.StatusBadRequest, api.CodeBadRequest)
	require.Contains(t, msg, `queue "nowhere" does not exist`)
	a.fail(http.MethodGet, "/v1/messages/archived?queue=orchestration_task_requests&before=x", "", http.StatusBadRequest, api.CodeBadRequest)
}
