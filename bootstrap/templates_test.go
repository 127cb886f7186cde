package bootstrap_test

import (
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/testsupport"
)

// lateTemplate is a template of a namespace no other node knows.
const lateTemplate = `
namespace = "late_arrivals"
name = "registered_late"
version = "1.0.0"
description = "Registered by a node that starts after requests for it were sent."

[[steps]]
name = "only"
handler = "noop"
`

// withLateTemplate adds lateTemplate and workers for its namespace.
func withLateTemplate() []testsupport.NodeOption {
	return []testsupport.NodeOption{
		testsupport.WithOptions(func(o *bootstrap.Options) {
			o.Templates = append(o.Templates, fstest.MapFS{"late/registered_late.toml": {Data: []byte(lateTemplate)}})
		}),
		testsupport.WithConfig(func(c *config.Config) { c.Namespaces["late_arrivals"] = config.Namespace{Workers: 2} }),
	}
}

// TestQueuesExistBeforeTemplatesVisible starts a second node with a
// template of a new namespace: when the template row becomes visible, its
// namespace's queue already exists, so the first request for it does not
// fail on a missing queue and wait out the visibility timeout.
func TestQueuesExistBeforeTemplatesVisible(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	ctx := t.Context()
	_, err := e.client.Exec(ctx, `
		CREATE TABLE public.templates_seen (namespace text, name text, queue_exists bool);
		CREATE FUNCTION public.template_seen() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.templates_seen
			VALUES (NEW.namespace, NEW.name, to_regclass('pgmq.q_' || NEW.namespace || '_queue') IS NOT NULL);
			RETURN NEW;
		END $$;
		CREATE TRIGGER template_seen AFTER INSERT OR UPDATE ON tasker.templates
			FOR EACH ROW EXECUTE FUNCTION public.template_seen();`)
	require.NoError(t, err)

	testsupport.StartNodeOn(t, e.url, withLateTemplate()...)
	var seen, withQueue int
	require.NoError(t, e.client.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE queue_exists)
		FROM public.templates_seen WHERE namespace = 'late_arrivals'`).Scan(&seen, &withQueue))
	require.Equal(t, 1, seen, "the template was registered once")
	require.Equal(t, 1, withQueue, "the queue existed when the template became visible")
}

// TestTemplateRegisteredByAnotherNodeLaterIsAccepted sends requests for a
// template no running node knows, then starts the node that registers it:
// every request becomes a task, none is rejected — even with
// queue.max_deliveries at 1, since a wait is not a failed delivery.
func TestTemplateRegisteredByAnotherNodeLaterIsAccepted(t *testing.T) {
	t.Parallel()
	grace := testsupport.WithConfig(func(c *config.Config) {
		c.Queue.TemplateGrace = config.Duration(time.Minute)
		c.Queue.MaxDeliveries = 1
	})
	e := startEnv(t, grace)
	ctx := t.Context()
	const n = 100
	ids := make([]uuid.UUID, n)
	for i := range ids {
		r := newRequest("late_arrivals", "registered_late", `{}`)
		ids[i] = r.RequestID
		e.send(r.body(t))
	}
	testsupport.WaitFor(t, taskTimeout, "every request to wait for its template", func() (bool, error) {
		var waiting int
		err := e.client.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_orchestration_task_requests
			WHERE (headers->>'template_waits')::int >= 1`).Scan(&waiting)
		return waiting == n, err
	})

	testsupport.StartNodeOn(t, e.url, append(withLateTemplate(), grace)...)
	testsupport.WaitFor(t, taskTimeout, fmt.Sprintf("the %d tasks to complete", n), func() (bool, error) {
		var complete int
		err := e.client.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks WHERE request_id = ANY($1) AND state = 'complete'`, ids).
			Scan(&complete)
		return complete == n, err
	})
	var rejected int
	require.NoError(t, e.client.QueryRow(ctx, `SELECT count(*) FROM tasker.rejected_requests`).Scan(&rejected))
	require.Zero(t, rejected)
}
