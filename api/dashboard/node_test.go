package dashboard_test

import (
	"errors"
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
	"github.com/tasker-run/tasker/workflow/handlers"
)

// browserWait bounds every wait of a test.
const browserWait = 30 * time.Second

// dashNode is a node under test.
type dashNode struct {
	t    *testing.T
	node *bootstrap.Node
	base string
}

func startDashNode(t *testing.T, options ...testsupport.NodeOption) *dashNode {
	t.Helper()
	node := testsupport.StartNode(t, options...)
	require.NotEmpty(t, node.HTTPAddr())
	return &dashNode{t: t, node: node, base: "http://" + node.HTTPAddr()}
}

// submit sends a task request through the queue with plain SQL, as any
// pgmq client would, and waits until its task exists.
func (n *dashNode) submit(namespace, name, taskContext string) uuid.UUID {
	n.t.Helper()
	reqID := uuid.Must(uuid.NewV7())
	body := fmt.Sprintf(`{"request_id": %q, "namespace": %q, "name": %q, "context": %s}`, reqID, namespace, name, taskContext)
	_, err := n.node.Pool().Exec(n.t.Context(), `SELECT pgmq.send('orchestration_task_requests', $1::jsonb)`, body)
	require.NoError(n.t, err)
	var task store.Task
	testsupport.WaitFor(n.t, browserWait, "the task of request "+reqID.String(), func() (bool, error) {
		var err error
		task, err = n.node.Store().TaskGet(n.t.Context(), reqID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	})
	return task.TaskUUID
}

// waitState waits for a task to be in state.
func (n *dashNode) waitState(id uuid.UUID, state workflow.TaskState) {
	n.t.Helper()
	testsupport.WaitFor(n.t, browserWait, fmt.Sprintf("task %s to be %s", id, state), func() (bool, error) {
		task, err := n.node.Store().TaskGet(n.t.Context(), id)
		return err == nil && task.State == state, err
	})
}

// flakyTemplate's middle step fails permanently on its first attempt and
// succeeds on any later one: a task in error that a retry completes.
const flakyTemplate = `
namespace = "flaky"
name = "fails_once"
version = "1.0.0"
description = "Two branches; one fails on its first attempt."

[[steps]]
name = "start"
handler = "noop"

[[steps]]
name = "shaky"
handler = "test.fails_first"
depends_on = ["start"]

[[steps]]
name = "steady"
handler = "noop"
depends_on = ["start"]

[[steps]]
name = "finish"
handler = "noop"
depends_on = ["shaky", "steady"]
`

func withFlaky() []testsupport.NodeOption {
	return []testsupport.NodeOption{
		testsupport.WithOptions(func(o *bootstrap.Options) {
			o.Templates = append(o.Templates, fstest.MapFS{"flaky/fails_once.toml": {Data: []byte(flakyTemplate)}})
			o.Handlers = func(reg *workflow.Registry) error {
				return reg.Register("test.fails_first", testsupport.ByAttempt(
					testsupport.ErrorHandler(workflow.Permanent("flaky", "fails on its first attempt")), handlers.Noop()))
			}
		}),
		testsupport.WithConfig(func(c *config.Config) { c.Namespaces["flaky"] = config.Namespace{Workers: 2} }),
	}
}
