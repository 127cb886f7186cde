package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
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

// cliWait bounds the wait for a task to reach a state.
const cliWait = 30 * time.Second

// cliEnv is a node under test and a config file pointing the CLI at its
// database (a file rather than TASKER_DATABASE_URL, so tests run in
// parallel).
type cliEnv struct {
	t      *testing.T
	node   *bootstrap.Node
	config string
}

func startCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	url := testsupport.NewDatabaseURL(t)
	node := testsupport.StartNodeOn(t, url)
	path := filepath.Join(t.TempDir(), "tasker.toml")
	require.NoError(t, os.WriteFile(path, fmt.Appendf(nil, "[database]\nurl = %q\n", url), 0o600))
	return &cliEnv{t: t, node: node, config: path}
}

// run runs the CLI in-process with the env's config and returns its exit
// code, stdout and stderr.
func (e *cliEnv) run(args ...string) (int, string, string) {
	e.t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run("dev", append(args, "--config", e.config), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// ok runs the CLI and requires exit code 0.
func (e *cliEnv) ok(args ...string) string {
	e.t.Helper()
	code, out, errOut := e.run(args...)
	require.Equal(e.t, exitOK, code, "tasker %s: stdout %s, stderr %s", strings.Join(args, " "), out, errOut)
	return out
}

// fails runs the CLI, requires exit code want and returns stderr.
func (e *cliEnv) fails(want int, args ...string) string {
	e.t.Helper()
	code, out, errOut := e.run(args...)
	require.Equal(e.t, want, code, "tasker %s: stdout %s, stderr %s", strings.Join(args, " "), out, errOut)
	require.True(e.t, strings.HasPrefix(errOut, "tasker: "), "stderr: %s", errOut)
	return errOut
}

// okJSON runs the CLI with --json and decodes its output into v.
func (e *cliEnv) okJSON(v any, args ...string) {
	e.t.Helper()
	out := e.ok(append(args, "--json")...)
	require.NoError(e.t, json.Unmarshal([]byte(out), v), "tasker %s --json: %s", strings.Join(args, " "), out)
}

// submit sends a request with plain SQL and waits for its task to reach
// one of states; it returns the request id and the task.
func (e *cliEnv) submit(namespace, name, taskContext string, states ...workflow.TaskState) (uuid.UUID, store.TaskDetail) {
	e.t.Helper()
	reqID := uuid.Must(uuid.NewV7())
	body, err := json.Marshal(map[string]any{
		"request_id": reqID, "namespace": namespace, "name": name, "context": json.RawMessage(taskContext),
	})
	require.NoError(e.t, err)
	_, err = e.node.Pool().Exec(e.t.Context(), `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`, string(body))
	require.NoError(e.t, err)
	return reqID, e.wait(reqID, states...)
}

func (e *cliEnv) wait(id uuid.UUID, states ...workflow.TaskState) store.TaskDetail {
	e.t.Helper()
	testsupport.WaitFor(e.t, cliWait, fmt.Sprintf("task %s to be %v", id, states), func() (bool, error) {
		task, err := e.node.Store().TaskGet(e.t.Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return err == nil && slices.Contains(states, task.State), err
	})
	d, err := e.node.Store().TaskShow(e.t.Context(), id)
	require.NoError(e.t, err)
	return d
}

func cliStep(t *testing.T, d store.TaskDetail, name string) store.Step {
	t.Helper()
	i := slices.IndexFunc(d.Steps, func(s store.Step) bool { return s.Name == name })
	require.GreaterOrEqual(t, i, 0, "task %s has no step %s", d.TaskUUID, name)
	return d.Steps[i]
}

func TestCLITaskList(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	_, even := e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`, workflow.TaskStateComplete)
	_, odd := e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 5}`, workflow.TaskStateError)
	_, dia := e.submit(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 4}`, workflow.TaskStateComplete)

	out := e.ok("task", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	require.Regexp(t, `^TASK\s+STATE\s+NAMESPACE\s+NAME\s+VERSION\s+CREATED\s+AGE\s+TOOK$`, lines[0])
	require.Regexp(t, `^`+dia.TaskUUID.String()+`\s+complete\s+diamond_workflow\s+parallel_computation\s+1\.0\.0\s`, lines[1], "newest first")
	require.Regexp(t, `^`+odd.TaskUUID.String()+`\s+error\s+linear_workflow\s+mathematical_sequence\s`, lines[2])
	require.Regexp(t, `^`+even.TaskUUID.String()+`\s+complete\s`, lines[3])

	var page api.TaskPage
	e.okJSON(&page, "task", "list", "--state", "error")
	require.Len(t, page.Tasks, 1)
	require.Equal(t, odd.TaskUUID, page.Tasks[0].TaskUUID)

	page = api.TaskPage{}
	e.okJSON(&page, "task", "list", "--namespace", "linear_workflow", "--name", "mathematical_sequence", "--since", "1h", "--limit", "1")
	require.Len(t, page.Tasks, 1)
	require.Equal(t, odd.TaskUUID, page.Tasks[0].TaskUUID)

	page = api.TaskPage{}
	e.okJSON(&page, "task", "list", "--search", dia.RequestID.String()[:23])
	require.Len(t, page.Tasks, 1)
	require.Equal(t, dia.TaskUUID, page.Tasks[0].TaskUUID)
	require.Contains(t, e.fails(exitUsage, "task", "list", "--search", "12"), "at least 8 hex digits")

	require.Equal(t, "no tasks\n", e.ok("task", "list", "--namespace", "nope"))
	page = api.TaskPage{}
	e.okJSON(&page, "task", "list", "--state", "cancelled")
	require.NotNil(t, page.Tasks)
	require.Empty(t, page.Tasks)

	msg := e.fails(exitUsage, "task", "list", "--state", "bogus")
	require.Contains(t, msg, `state "bogus" is not a task state`)
	e.fails(exitUsage, "task", "list", "--since", "soon")
	e.fails(exitUsage, "task", "list", "extra")
}

func TestCLITaskShow(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	reqID, d := e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`, workflow.TaskStateComplete)

	out := e.ok("task", "show", d.TaskUUID.String())
	for _, re := range []string{
		`(?m)^task\s+` + d.TaskUUID.String() + `$`,
		`(?m)^request\s+` + reqID.String() + `$`,
		`(?m)^template\s+linear_workflow/mathematical_sequence 1\.0\.0$`,
		`(?m)^state\s+complete$`,
		`(?m)^context\s+\{"even_number":6\}$`,
		`(?m)^STEP\s+STATE\s+ATTEMPTS\s+ENQUEUED\s+LAST ATTEMPT\s+FINISHED\s+DURATION\s+RESULT / ERROR$`,
		`(?m)^linear_step_1\s+complete\s+1/\d+\s+\+\S+\s+\+\S+\s+\+\S+\s+\S+\s+\{"result":36\}$`,
		`(?m)^linear_step_4\s+complete\s+1/\d+\s+.*\{"result":69\}$`,
		// The DAG, in dependency order, each step with its parents.
		`(?m)^  0  linear_step_1\s+complete$`,
		`(?m)^  1  linear_step_2\s+complete\s+← linear_step_1$`,
		`(?m)^  2  linear_step_3\s+complete\s+← linear_step_2$`,
		`(?m)^  3  linear_step_4\s+complete\s+← linear_step_3$`,
		`(?m)^  \+\S+\s+task\s+in_progress → complete\s+`,
	} {
		require.Regexp(t, regexp.MustCompile(re), out)
	}
	// The request id shows the same task; --history adds step transitions.
	byRequest := e.ok("task", "show", "--history", reqID.String())
	require.Contains(t, byRequest, d.TaskUUID.String())
	require.Regexp(t, `(?m)^  \+\S+\s+linear_step_1\s+enqueued → in_progress\s+.*\(attempt 1\)$`, byRequest)

	var got store.TaskDetail
	e.okJSON(&got, "task", "show", d.TaskUUID.String())
	require.Equal(t, d.TaskUUID, got.TaskUUID)
	require.Len(t, got.Steps, 4)
	require.JSONEq(t, `{"result": 69}`, string(got.Steps[3].Result))
	require.NotEmpty(t, got.TaskTransitions)
	require.NotEmpty(t, got.StepTransitions)

	missing := uuid.NewString()
	msg := e.fails(exitFailed, "task", "show", missing)
	require.Contains(t, msg, missing)
	require.Contains(t, msg, "not found")
	msg = e.fails(exitUsage, "task", "show", "not-a-uuid")
	require.Contains(t, msg, `"not-a-uuid" is not a task uuid`)
	e.fails(exitUsage, "task", "show")
	e.fails(exitUsage, "task", "show", d.TaskUUID.String(), d.TaskUUID.String())
}

func TestCLITaskRetry(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	_, odd := e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 5}`, workflow.TaskStateError)

	out := e.ok("task", "retry", odd.TaskUUID.String())
	require.Equal(t, fmt.Sprintf("task %s retried (1 step(s) enqueued); it is in_progress\n", odd.TaskUUID), out)
	d := e.wait(odd.TaskUUID, workflow.TaskStateError)
	require.Equal(t, 2, cliStep(t, d, "linear_step_1").Attempts, "the retried step ran again and, still odd, failed again")

	var res api.ActionResult
	e.okJSON(&res, "task", "retry", odd.TaskUUID.String())
	require.Equal(t, "retry", res.Action)
	require.Equal(t, odd.TaskUUID, res.TaskUUID)
	require.Equal(t, workflow.TaskStateInProgress, res.State)
	e.wait(odd.TaskUUID, workflow.TaskStateError)

	_, done := e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 2}`, workflow.TaskStateComplete)
	msg := e.fails(exitFailed, "task", "retry", done.TaskUUID.String())
	require.Equal(t, `tasker: retry refused: task cannot "retry" from "complete"; the task is complete and can be retried only when it is error`+"\n", msg)
	e.fails(exitUsage, "task", "retry", "nope")
}

func TestCLITaskCancel(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	_, odd := e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 3}`, workflow.TaskStateError)

	out := e.ok("task", "cancel", odd.TaskUUID.String(), "--reason", "customer gave up")
	require.Equal(t, fmt.Sprintf("task %s cancelled; it is cancelled\n", odd.TaskUUID), out)
	d := e.wait(odd.TaskUUID, workflow.TaskStateCancelled)
	last := d.TaskTransitions[len(d.TaskTransitions)-1]
	require.Equal(t, "customer gave up", last.Reason)
	require.Equal(t, workflow.StepStateCancelled, cliStep(t, d, "linear_step_2").State)

	msg := e.fails(exitFailed, "task", "cancel", odd.TaskUUID.String())
	require.Contains(t, msg, `cancel refused: task cannot "cancel" from "cancelled"`)
	require.Contains(t, msg, "can be cancelled only when it is pending, in_progress or error")

	_, other := e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 7}`, workflow.TaskStateError)
	var res api.ActionResult
	e.okJSON(&res, "task", "cancel", "--reason", "json", other.TaskUUID.String())
	require.Equal(t, "cancel", res.Action)
	require.Equal(t, workflow.TaskStateCancelled, res.State)
}

func TestCLITaskResolve(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	reqID, odd := e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 5}`, workflow.TaskStateError)

	msg := e.fails(exitFailed, "task", "resolve", odd.TaskUUID.String(), "--step", "no_such_step")
	require.Contains(t, msg, `resolve refused: task `+odd.TaskUUID.String()+` has no step "no_such_step"`)
	require.Contains(t, msg, "its steps are linear_step_1, linear_step_2, linear_step_3, linear_step_4")
	msg = e.fails(exitFailed, "task", "resolve", odd.TaskUUID.String(), "--step", "linear_step_3")
	require.Contains(t, msg, "step linear_step_3 is pending and can be resolved only when it is error")
	msg = e.fails(exitUsage, "task", "resolve", odd.TaskUUID.String(), "--result", `{"result": 4}`)
	require.Contains(t, msg, "needs a step")
	e.fails(exitUsage, "task", "resolve", odd.TaskUUID.String(), "--step", "linear_step_1", "--result", `{"result":`)

	// The resolved value flows on: 4 + 10 = 14, × 3 = 42, ÷ 2 = 21.
	var res api.ActionResult
	e.okJSON(&res, "task", "resolve", reqID.String(), "--step", "linear_step_1", "--result", `{"result": 4}`)
	require.Equal(t, api.ActionResult{Action: "resolve", TaskUUID: odd.TaskUUID, Step: "linear_step_1", State: res.State}, res)
	d := e.wait(odd.TaskUUID, workflow.TaskStateComplete)
	require.Equal(t, workflow.StepStateResolvedManually, cliStep(t, d, "linear_step_1").State)
	require.JSONEq(t, `{"result": 14}`, string(cliStep(t, d, "linear_step_2").Result))
	require.JSONEq(t, `{"result": 21}`, string(cliStep(t, d, "linear_step_4").Result))
	show := e.ok("task", "show", odd.TaskUUID.String())
	require.Regexp(t, `(?m)^  0  linear_step_1\s+resolved_manually$`, show)

	_, other := e.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 1}`, workflow.TaskStateError)
	out := e.ok("task", "resolve", other.TaskUUID.String())
	require.Equal(t, fmt.Sprintf("task %s resolved; it is resolved_manually\n", other.TaskUUID), out)
	msg = e.fails(exitFailed, "task", "resolve", other.TaskUUID.String())
	require.Contains(t, msg, `"resolved_manually"`)
}

func TestCLITemplates(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	out := e.ok("templates")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 6, out)
	require.Regexp(t, `^NAMESPACE\s+NAME\s+VERSION\s+STEPS\s+REGISTERED\s+DESCRIPTION$`, lines[0])
	require.Regexp(t, `(?m)^linear_workflow\s+mathematical_sequence\s+1\.0\.0\s+4\s`, out)
	require.Regexp(t, `(?m)^tree_workflow\s+hierarchical_computation\s+1\.0\.0\s+8\s`, out)

	var page api.TemplatePage
	e.okJSON(&page, "templates")
	require.Len(t, page.Templates, 5)
	for _, tm := range page.Templates {
		require.Equal(t, "1.0.0", tm.Version)
	}
}

func TestCLIRequestsRejected(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	require.Equal(t, "no rejected requests\n", e.ok("requests", "rejected"))

	bad := uuid.Must(uuid.NewV7())
	_, err := e.node.Pool().Exec(t.Context(), `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`,
		fmt.Sprintf(`{"request_id": %q, "namespace": "linear_workflow", "name": "no_such_template", "context": {}}`, bad))
	require.NoError(t, err)
	var page api.RejectedPage
	testsupport.WaitFor(t, cliWait, "the request to be rejected", func() (bool, error) {
		page = api.RejectedPage{}
		e.okJSON(&page, "requests", "rejected")
		return len(page.Rejected) == 1, nil
	})
	require.Equal(t, bad, *page.Rejected[0].RequestID)
	require.Contains(t, page.Rejected[0].Reason, `unknown template "no_such_template"`)

	out := e.ok("requests", "rejected", "--limit", "5")
	require.Regexp(t, `(?m)^ID\s+MSG\s+REJECTED\s+REQUEST\s+REPLAYED AS\s+REASON\s+PAYLOAD$`, out)
	require.Regexp(t, `(?m)^\d+\s+\d+\s+\S+ \S+\s+`+bad.String()+`\s+-\s+.*unknown template "no_such_template"`, out)
	e.fails(exitUsage, "requests", "rejected", "--limit", "-1")
}

// TestCLIRequestsReplay replays a rejected request by its message id: the
// replay is rejected again (its template is still unknown) under a message
// of its own, the first rejection lists the replay, and a second replay of
// it is refused.
func TestCLIRequestsReplay(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	bad := uuid.Must(uuid.NewV7())
	_, err := e.node.Pool().Exec(t.Context(), `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`,
		fmt.Sprintf(`{"request_id": %q, "namespace": "linear_workflow", "name": "not_yet", "context": {}}`, bad))
	require.NoError(t, err)
	var page api.RejectedPage
	testsupport.WaitFor(t, cliWait, "the request to be rejected", func() (bool, error) {
		page = api.RejectedPage{}
		e.okJSON(&page, "requests", "rejected")
		return len(page.Rejected) == 1, nil
	})
	msg := page.Rejected[0].MsgID

	out := e.ok("requests", "replay", strconv.FormatInt(msg, 10))
	require.Regexp(t, fmt.Sprintf(`^message %d \(request %s\) replayed as message \d+\n$`, msg, bad), out)
	testsupport.WaitFor(t, cliWait, "the replay to be rejected", func() (bool, error) {
		page = api.RejectedPage{}
		e.okJSON(&page, "requests", "rejected")
		return len(page.Rejected) == 2, nil
	})
	require.NotNil(t, page.Rejected[1].ReplayedMsgID)
	require.Equal(t, *page.Rejected[1].ReplayedMsgID, page.Rejected[0].MsgID)
	table := e.ok("requests", "rejected")
	require.Regexp(t, fmt.Sprintf(`(?m)^\d+\s+%d\s+\S+ \S+\s+%s\s+%d\s+unknown template "not_yet"`, msg, bad, page.Rejected[0].MsgID), table)

	errOut := e.fails(exitFailed, "requests", "replay", strconv.FormatInt(msg, 10))
	require.Contains(t, errOut, fmt.Sprintf("already replayed, as message %d", page.Rejected[0].MsgID))
	e.fails(exitUsage, "requests", "replay", "x")
	e.fails(exitFailed, "requests", "replay", "999999")
}

// TestCLIMessagesArchived lists a queue's archive with the reasons.
func TestCLIMessagesArchived(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	require.Equal(t, "no archived messages\n", e.ok("messages", "archived", "--queue", "linear_workflow_queue"))
	_, err := e.node.Pool().Exec(t.Context(), `SELECT pgmq.send('orchestration_step_results', '{"step_uuid": 5}'::jsonb)`)
	require.NoError(t, err)
	var page api.ArchivedPage
	testsupport.WaitFor(t, cliWait, "the bad result to be archived", func() (bool, error) {
		page = api.ArchivedPage{}
		e.okJSON(&page, "messages", "archived", "--queue", "orchestration_step_results")
		return len(page.Messages) == 1, nil
	})
	require.Contains(t, page.Messages[0].Reason, "step_uuid")
	require.Equal(t, e.node.NodeID(), page.Messages[0].ArchivedBy)
	out := e.ok("messages", "archived", "--queue", "orchestration_step_results")
	require.Regexp(t, `(?m)^MSG\s+ARCHIVED\s+READS\s+REASON\s+MESSAGE$`, out)
	require.Regexp(t, `(?m)^\d+\s+\S+ \S+\s+1\s+.*step_uuid.*\{"step_uuid":5\}$`, out)
	errOut := e.fails(exitUsage, "messages", "archived")
	require.Contains(t, errOut, "a queue is required")
}

func TestCLIUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"task"},
		{"task", "frob"},
		{"requests"},
		{"requests", "accepted"},
	} {
		var stdout, stderr bytes.Buffer
		code := Run("dev", args, &stdout, &stderr)
		require.Equal(t, exitUsage, code, "tasker %v: %s", args, stderr.String())
		require.NotEmpty(t, stderr.String())
	}
	var stdout, stderr bytes.Buffer
	require.Equal(t, exitOK, Run("dev", []string{"help"}, &stdout, &stderr))
	for _, cmd := range []string{"task list", "task show", "task retry", "task cancel", "task resolve", "templates", "requests rejected"} {
		require.Contains(t, stdout.String(), cmd)
	}
}

// TestCLIHelp checks that every command and group answers --help on
// stdout with exit code 0, and that a usage error is printed once.
func TestCLIHelp(t *testing.T) {
	t.Parallel()
	for _, c := range commands {
		var stdout, stderr bytes.Buffer
		args := append(strings.Fields(c.name), "--help")
		require.Equal(t, exitOK, Run("dev", args, &stdout, &stderr), "tasker %s: %s", strings.Join(args, " "), stderr.String())
		require.Contains(t, stdout.String(), "usage: tasker "+c.name, c.name)
		require.Contains(t, stdout.String(), "example:\n  tasker ", c.name)
		require.Contains(t, stdout.String(), "-config", c.name)
		if c.data {
			require.Contains(t, stdout.String(), "-json", c.name)
		}
		require.Empty(t, stderr.String(), c.name)
	}
	for _, g := range []string{"task", "requests", "config"} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, exitOK, Run("dev", []string{g, "--help"}, &stdout, &stderr), g)
		require.Contains(t, stdout.String(), "usage: tasker "+g+" <command>")
	}

	var stdout, stderr bytes.Buffer
	require.Equal(t, exitUsage, Run("dev", []string{"task", "list", "--bogus"}, &stdout, &stderr))
	require.Equal(t, 1, strings.Count(stderr.String(), "-bogus"), "printed once: %s", stderr.String())
	require.True(t, strings.HasPrefix(stderr.String(), "tasker: "), stderr.String())
	require.Empty(t, stdout.String())
}

func TestCLIVersionJSON(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	require.Equal(t, exitOK, Run("1.2.3", []string{"version", "--json"}, &stdout, &stderr), stderr.String())
	var v struct {
		Version string `json:"version"`
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &v))
	require.Equal(t, "1.2.3", v.Version)
}

func TestCLIConfigCheckJSON(t *testing.T) {
	t.Setenv("TASKER_DATABASE_URL", "postgres://tasker:s3cret@db.example:5432/tasker")
	var stdout, stderr bytes.Buffer
	require.Equal(t, exitOK, Run("dev", []string{"config", "check", "--json"}, &stdout, &stderr), stderr.String())
	var v struct {
		Env    string `json:"env"`
		Config struct {
			Database struct {
				URL string `json:"url"`
			} `json:"database"`
			Queue map[string]any `json:"queue"`
		} `json:"config"`
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &v), stdout.String())
	require.NotEmpty(t, v.Env)
	require.NotContains(t, v.Config.Database.URL, "s3cret", "secrets are redacted")
	require.Contains(t, v.Config.Database.URL, "db.example")
	require.NotEmpty(t, v.Config.Queue, "the keys are the file's")
}

// TestCLITreeUsesConfigToken: tree sends the API token of the configuration
// file, not only the one of the environment.
func TestCLITreeUsesConfigToken(t *testing.T) {
	t.Parallel()
	url := testsupport.NewDatabaseURL(t)
	node := testsupport.StartNodeOn(t, url, testsupport.WithConfig(func(c *config.Config) { c.HTTP.APIToken = "s3cret-s3cret-s3cret" }))
	path := filepath.Join(t.TempDir(), "tasker.toml")
	require.NoError(t, os.WriteFile(path, fmt.Appendf(nil, "[database]\nurl = %q\n[http]\nlisten = %q\napi_token = \"s3cret-s3cret-s3cret\"\n",
		url, node.HTTPAddr()), 0o600))
	var stdout, stderr bytes.Buffer
	require.Equal(t, exitOK, Run("dev", []string{"tree", "--config", path}, &stdout, &stderr), stderr.String())
	require.Contains(t, stdout.String(), "root")
}

// TestCLISubmitTooLarge: submit refuses a request over the node's size limit
// before sending it, instead of leaving it to be rejected.
func TestCLISubmitTooLarge(t *testing.T) {
	t.Parallel()
	url := testsupport.NewDatabaseURL(t)
	testsupport.StartNodeOn(t, url)
	path := filepath.Join(t.TempDir(), "tasker.toml")
	require.NoError(t, os.WriteFile(path, fmt.Appendf(nil, "[database]\nurl = %q\n[queue]\nmax_request_bytes = 1024\n", url), 0o600))
	var stdout, stderr bytes.Buffer
	code := Run("dev", []string{"submit", "--config", path, "--namespace", testsupport.LinearNamespace, "--name", testsupport.LinearName,
		"--context", `{"even_number": 6, "note": "` + strings.Repeat("x", 2000) + `"}`}, &stdout, &stderr)
	require.NotEqual(t, exitOK, code)
	require.Contains(t, stderr.String(), "more than queue.max_request_bytes (1024)")
	require.Equal(t, 1, strings.Count(stderr.String(), "max_request_bytes"), "printed once")
}

// TestCLISubmitTraceContext: submit --traceparent continues a trace through
// the task, which shows it; a malformed one is refused naming the flag.
func TestCLISubmitTraceContext(t *testing.T) {
	t.Parallel()
	e := startCLIEnv(t)
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	out := e.ok("submit", "--namespace", testsupport.LinearNamespace, "--name", testsupport.LinearName,
		"--context", `{"even_number": 6}`, "--traceparent", parent, "--tracestate", "congo=t61rcWkgMzE")
	id, err := uuid.Parse(strings.TrimSpace(out))
	require.NoError(t, err, out)
	d := e.wait(id, workflow.TaskStateComplete)
	require.Equal(t, parent, d.TraceParent())
	require.Regexp(t, `traceparent +`+parent, e.ok("task", "show", id.String()))

	errOut := e.fails(exitUsage, "submit", "--namespace", testsupport.LinearNamespace, "--name", testsupport.LinearName,
		"--traceparent", "00-abc-01")
	require.Contains(t, errOut, "--traceparent")
	require.Contains(t, errOut, "2-32-16-2")
}
