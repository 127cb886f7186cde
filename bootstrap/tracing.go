package bootstrap

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// tracing is the node's span pipeline: nil when tracing is off, so that no
// exporter runs and nothing is sent anywhere.
type tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	store    *store.Store
	log      *slog.Logger
	// finished takes the tasks whose span is due; a full buffer drops
	// the span (counted in the log) rather than slow results down.
	finished chan uuid.UUID
	done     chan struct{}
}

// startTracing builds the pipeline of cfg, exporting to exporter when
// given (tests) or to cfg.OTLPEndpoint over OTLP/HTTP.
func startTracing(cfg config.Tracing, nodeID string, exporter sdktrace.SpanExporter, st *store.Store, log *slog.Logger) (*tracing, error) {
	if exporter == nil {
		if cfg.OTLPEndpoint == "" {
			return nil, nil
		}
		var err error
		exporter, err = otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(cfg.OTLPEndpoint))
		if err != nil {
			return nil, fmt.Errorf("tracing.otlp_endpoint: %w", err)
		}
	}
	res := resource.NewSchemaless(attribute.String("service.name", cfg.ServiceName),
		attribute.String("service.instance.id", nodeID))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	t := &tracing{provider: tp, tracer: tp.Tracer("github.com/tasker-run/tasker"), store: st, log: log,
		finished: make(chan uuid.UUID, 1024), done: make(chan struct{})}
	go t.taskSpans()
	log.Info("tracing on", "otlp_endpoint", cfg.OTLPEndpoint, "service_name", cfg.ServiceName)
	return t, nil
}

// resultApplied queues the span of a task the result finished.
func (t *tracing) resultApplied(out store.ResultOutcome) {
	if t == nil || out.Ignored || !out.TaskState.Terminal() {
		return
	}
	select {
	case t.finished <- out.TaskUUID:
	default:
		t.log.Warn("task span dropped: the tracing buffer is full", "task_uuid", out.TaskUUID)
	}
}

// taskSpans emits a span per finished task, from its creation to its end, a
// child of its request's trace context.
func (t *tracing) taskSpans() {
	defer close(t.done)
	for id := range t.finished {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		task, err := t.store.TaskGet(ctx, id)
		cancel()
		if err != nil {
			t.log.Warn("task span dropped: reading the task failed", "task_uuid", id, "error", err)
			continue
		}
		parent := context.Background()
		if tr, _ := queue.TraceFromHeaders(task.Trace); !tr.IsZero() {
			if sc, ok := actors.SpanParent(tr); ok {
				parent = trace.ContextWithRemoteSpanContext(parent, sc)
			}
		}
		end := task.UpdatedAt
		if task.FinishedAt != nil {
			end = *task.FinishedAt
		}
		_, span := t.tracer.Start(parent, "task "+task.Name, trace.WithTimestamp(task.CreatedAt),
			trace.WithAttributes(
				attribute.String("tasker.namespace", task.Namespace),
				attribute.String("tasker.task_uuid", task.TaskUUID.String()),
				attribute.String("tasker.request_id", task.RequestID.String()),
				attribute.String("tasker.correlation_id", task.CorrelationID.String()),
				attribute.String("tasker.task_name", task.Name),
				attribute.String("tasker.version", task.Version),
				attribute.String("tasker.state", string(task.State)),
			))
		if task.State != workflow.TaskStateComplete {
			span.SetStatus(codes.Error, "task "+string(task.State))
		}
		span.End(trace.WithTimestamp(end))
	}
}

// stop flushes what is queued and shuts the exporter down.
func (t *tracing) stop(ctx context.Context) error {
	if t == nil {
		return nil
	}
	close(t.finished)
	select {
	case <-t.done:
	case <-ctx.Done():
	}
	return t.provider.Shutdown(ctx)
}
