package bootstrap_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
)

// shortRetention keeps complete tasks one second and prunes every second.
func shortRetention() testsupport.NodeOption {
	return testsupport.WithConfig(func(c *config.Config) {
		c.Retention.CompleteTasks = config.Duration(time.Second)
		c.Retention.Interval = config.Duration(time.Second)
	})
}

// Two nodes on one database: the one holding the lease prunes finished
// tasks once they are older than kept, the other stands by; the tree and
// the metrics say so.
func TestRetentionPrunesOnOneNode(t *testing.T) {
	e := startEnv(t, shortRetention())
	other := testsupport.StartNodeOn(t, e.url, shortRetention())

	id := e.submit("linear_workflow", "mathematical_sequence", `{"even_number": 2}`)
	d := e.waitTask(id, taskTimeout)
	require.Equal(t, "complete", string(d.State))
	testsupport.WaitFor(t, 30*time.Second, "the complete task to be pruned", func() (bool, error) {
		_, err := e.node.Store().TaskGet(t.Context(), d.TaskUUID)
		if errors.Is(err, store.ErrNotFound) {
			return true, nil
		}
		return false, err
	})
	var steps int
	require.NoError(t, e.client.QueryRow(t.Context(), `SELECT count(*) FROM tasker.steps WHERE task_uuid = $1`, d.TaskUUID).Scan(&steps))
	assert.Zero(t, steps)

	lease, err := e.node.Store().LeaseGet(t.Context(), actors.RetentionLease)
	require.NoError(t, err)
	holder, standby := e.node, other
	if lease.Holder != e.node.NodeID() {
		holder, standby = other, e.node
	}
	require.Equal(t, holder.NodeID(), lease.Holder)
	testsupport.WaitFor(t, 10*time.Second, "the tree to show who prunes", func() (bool, error) {
		h, ok := holder.System().Tree().Find("root/retention")
		s, ok2 := standby.System().Tree().Find("root/retention")
		return ok && ok2 && strings.HasPrefix(h.Detail, "holds the lease") && strings.HasPrefix(s.Detail, "standing by"), nil
	})
	code, _, body := httpGet(t, "http://"+holder.HTTPAddr()+"/metrics", "")
	require.Equal(t, 200, code)
	assert.Contains(t, string(body), `tasker_pruned_rows_total{table="steps",target="tasks_complete"} 4`)
	assert.Contains(t, string(body), `tasker_prune_runs_total{result="done"}`)
	sched, ok := holder.System().Tree().Find("root/scheduler")
	require.True(t, ok, "the scheduler is in the tree")
	assert.Equal(t, actors.KindScheduler, sched.Kind)
}
