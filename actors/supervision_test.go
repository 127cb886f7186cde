package actors_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow/handlers"
)

// A poller that panics is restarted alone: its restart is counted with the
// panic as the reason, nothing else restarts, and it reads again.
func TestCrashedPollerIsRestartedAlone(t *testing.T) {
	t.Parallel()
	ft := startFakeTree(t, actors.Intensity{MaxRestarts: 10, Window: time.Minute}, handlers.Noop(),
		namespace("alpha", 2), namespace("beta", 2))
	read := testsupport.OpRead(queue.NamespaceQueue("alpha"))
	ft.faults.Panic(read, "poller boom", 1)

	poller := actors.NamespacePath("alpha") + "/poller"
	testsupport.WaitFor(t, 5*time.Second, "the alpha poller to be restarted", func() (bool, error) {
		n := ft.node(poller)
		return n.Restarts == 1 && n.Status == actors.StatusRunning, nil
	})
	require.Contains(t, ft.node(poller).LastFailure, "poller boom")
	require.Equal(t, []string{poller + "=1"}, ft.restarted(), "only the failed poller restarts")

	// It reads again, and its namespace runs steps.
	after := ft.faults.Calls(read)
	ft.q.pushSteps(t, "alpha", 3)
	testsupport.WaitFor(t, 5*time.Second, "alpha's steps to run after the restart", func() (bool, error) {
		return ft.faults.Calls(read) > after && ft.q.length(queue.NamespaceQueue("alpha")) == 0, nil
	})
}

// Past its restart intensity a namespace supervisor escalates: the root
// restarts the whole namespace; past the root's intensity the namespace is
// given up and shown so, while the other namespaces keep running.
func TestCrashLoopEscalatesThenGivesUp(t *testing.T) {
	t.Parallel()
	ft := startFakeTree(t, actors.Intensity{MaxRestarts: 2, Window: time.Minute}, handlers.Noop(),
		namespace("alpha", 2), namespace("beta", 2))
	read := testsupport.OpRead(queue.NamespaceQueue("alpha"))
	nsPath := actors.NamespacePath("alpha")

	// Three failures in the window, one more than the poller's supervisor
	// allows: it escalates once, and the root restarts the namespace.
	ft.faults.Panic(read, "poller crash loop", 3)
	testsupport.WaitFor(t, 5*time.Second, "the root to restart the alpha namespace", func() (bool, error) {
		n := ft.node(nsPath)
		return n.Restarts == 1 && n.Status == actors.StatusRunning && !ft.faults.Active(read), nil
	})
	require.Contains(t, ft.node(nsPath).LastFailure, "poller crash loop")
	ft.q.pushSteps(t, "alpha", 2)
	testsupport.WaitFor(t, 5*time.Second, "alpha to run steps after its restart", func() (bool, error) {
		return ft.q.length(queue.NamespaceQueue("alpha")) == 0, nil
	})
	require.Empty(t, ft.sys.GaveUp())

	// A crash loop that does not stop: two more escalations reach the root's
	// intensity and the namespace is given up.
	ft.faults.Panic(read, "poller crash loop", 0)
	testsupport.WaitFor(t, 10*time.Second, "the root to give up on alpha", func() (bool, error) {
		return slices.Equal(ft.sys.GaveUp(), []string{nsPath}), nil
	})
	testsupport.WaitFor(t, 5*time.Second, "alpha's actors to stop", func() (bool, error) {
		return ft.node(nsPath+"/poller").Status == actors.StatusStopped &&
			ft.node(nsPath+"/worker-0").Status == actors.StatusStopped, nil
	})
	ns := ft.node(nsPath)
	require.Equal(t, actors.StatusGaveUp, ns.Status, "a given-up namespace shows why it stopped")
	require.Equal(t, 2, ns.Restarts)
	require.True(t, ft.sys.Running(), "the rest of the tree runs on")

	// The other namespace was never touched and still runs steps.
	for _, n := range ft.sys.Tree().All() {
		if n.Namespace == "beta" {
			require.Zero(t, n.Restarts, "%s restarted", n.PID)
			require.Equal(t, actors.StatusRunning, n.Status, n.PID)
		}
	}
	ft.q.pushSteps(t, "beta", 3)
	testsupport.WaitFor(t, 5*time.Second, "beta to run its steps", func() (bool, error) {
		return ft.q.length(queue.NamespaceQueue("beta")) == 0, nil
	})
}
