package bootstrap_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// TestTraceSpans: with tracing on, a request carrying a traceparent yields a
// span per step attempt and one for the task, all in the request's trace and
// children of its span; the node exports them through its exporter.
func TestTraceSpans(t *testing.T) {
	t.Parallel()
	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		spanID  = "00f067aa0ba902b7"
	)
	exp := keptSpans{tracetest.NewInMemoryExporter()}
	node := testsupport.StartNode(t, testsupport.WithOptions(func(o *bootstrap.Options) { o.SpanExporter = exp }),
		testsupport.WithConfig(func(cfg *config.Config) { cfg.Tracing.ServiceName = "tasker-test" }))
	reqID := uuid.Must(uuid.NewV7())
	body, err := json.Marshal(map[string]any{"request_id": reqID, "namespace": testsupport.LinearNamespace,
		"name": testsupport.LinearName, "context": map[string]any{"even_number": 6}})
	require.NoError(t, err)
	headers := fmt.Sprintf(`{"traceparent": "00-%s-%s-01", "tracestate": "congo=t61rcWkgMzE"}`, traceID, spanID)
	_, err = node.Pool().Exec(t.Context(), `SELECT pgmq.send('orchestration_task_requests', $1::jsonb, $2::jsonb, 0)`, string(body), headers)
	require.NoError(t, err)
	testsupport.WaitFor(t, 30*time.Second, "the task to complete", func() (bool, error) {
		task, err := node.Store().TaskGet(t.Context(), reqID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return err == nil && task.State == workflow.TaskStateComplete, err
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, node.Stop(ctx), "stopping flushes the spans")

	var names []string
	for _, s := range exp.GetSpans() {
		names = append(names, s.Name)
		require.Equal(t, traceID, s.SpanContext.TraceID().String(), s.Name)
		require.Equal(t, spanID, s.Parent.SpanID().String(), "%s is a child of the request's span", s.Name)
		require.Equal(t, "congo=t61rcWkgMzE", s.SpanContext.TraceState().String(), s.Name)
	}
	slices.Sort(names)
	require.Equal(t, []string{"step linear_step_1", "step linear_step_2", "step linear_step_3", "step linear_step_4",
		"task " + testsupport.LinearName}, names)
}

// keptSpans keeps its spans through the node's shutdown of its exporter
// (the in-memory exporter forgets them on Shutdown).
type keptSpans struct{ *tracetest.InMemoryExporter }

func (keptSpans) Shutdown(context.Context) error { return nil }
