package bootstrap

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// TestOrchestrationBreakerKey checks that the orchestration breaker is
// configured, and reconfigured on reload, by the key its component is
// called by.
func TestOrchestrationBreakerKey(t *testing.T) {
	t.Parallel()
	require.Equal(t, actors.OrchestrationComponent, config.ComponentOrchestration)
}

// TestHTTPServerLimits: every timeout of the node's listener is set, so a
// trickled body or an idle keep-alive connection is cut off.
func TestHTTPServerLimits(t *testing.T) {
	t.Parallel()
	srv := newHTTPServer(http.NotFoundHandler())
	require.Positive(t, srv.ReadHeaderTimeout)
	require.Positive(t, srv.ReadTimeout)
	require.Positive(t, srv.WriteTimeout)
	require.Positive(t, srv.IdleTimeout)
	require.Positive(t, srv.MaxHeaderBytes)
	require.Less(t, srv.IdleTimeout, 40*time.Second, "an idle connection is closed well before 40s")
}

// TestProductionRefusesUnsafeSettings: a production node does not start on
// the embedded server, nor listen beyond loopback without a token; the
// error names the key to set.
func TestProductionRefusesUnsafeSettings(t *testing.T) {
	t.Parallel()
	cfg := config.Default(config.EnvProduction)
	cfg.Env = config.EnvProduction
	_, err := Start(t.Context(), Options{Config: cfg, LogOutput: io.Discard})
	require.ErrorContains(t, err, "database.url")

	cfg.Database.URL = "postgres://127.0.0.1:1/none?sslmode=disable"
	cfg.HTTP.Listen = "0.0.0.0:0"
	_, err = Start(t.Context(), Options{Config: cfg, LogOutput: io.Discard})
	require.ErrorContains(t, err, "http.api_token")
}

// TestHostBreakerEvictionRemovesMetricSeries: circuit_breakers.max_hosts
// caps the host breakers; a dropped one leaves neither a tree node nor a
// tasker_circuit_breaker_state series.
func TestHostBreakerEvictionRemovesMetricSeries(t *testing.T) {
	t.Parallel()
	cfg := config.Default(config.EnvTest)
	cfg.Node.Mode = config.ModeWorkers
	cfg.CircuitBreakers.MaxHosts = 2
	m := NewMetrics()
	sys, err := actors.Start(actorSettings(cfg, "test", nil, func() *config.Config { return cfg }), actors.Deps{
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		BreakerChanged: m.breakerChanged,
		BreakerRemoved: m.breakerRemoved,
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sys.Stop(context.Background())) })
	var g hostGuard
	g.sys.Store(sys)

	series := func() []string {
		families, err := m.Registry.Gather()
		require.NoError(t, err)
		var out []string
		for _, f := range families {
			if f.GetName() != "tasker_circuit_breaker_state" {
				continue
			}
			for _, s := range f.GetMetric() {
				for _, l := range s.GetLabel() {
					out = append(out, l.GetValue())
				}
			}
		}
		slices.Sort(out)
		return out
	}
	for _, host := range []string{"a.test", "b.test"} {
		require.NoError(t, g.Run(host, func() error { return nil }))
	}
	require.Equal(t, []string{"http:a.test", "http:b.test"}, series())
	require.NoError(t, g.Run("c.test", func() error { return nil }))
	require.Equal(t, []string{"http:b.test", "http:c.test"}, series())
	_, ok := sys.Tree().Find("root/http:a.test")
	require.False(t, ok, "the dropped breaker's tree node is gone")
	_, ok = sys.Tree().Find("root/http:c.test")
	require.True(t, ok)
}

// TestExternalNamespaceRunsNoWorkers: a namespace declared external gets no
// namespace actors on any node, and is named as external.
func TestExternalNamespaceRunsNoWorkers(t *testing.T) {
	t.Parallel()
	cfg := config.Default(config.EnvTest)
	cfg.Namespaces = map[string]config.Namespace{"reports": {Workers: 2, External: true}}
	s := actorSettings(cfg, "test", []string{"payments", "reports"}, func() *config.Config { return cfg })
	require.Equal(t, []string{"payments"}, workerNamespaces(s))
	require.Equal(t, []string{"reports"}, externalNamespaces(cfg, []string{"payments", "reports"}))
}

// TestTracingOffByDefault: without tracing.otlp_endpoint no exporter is
// made; with one, the OTLP/HTTP exporter is built (sending nothing until a
// span ends).
func TestTracingOffByDefault(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tr, err := startTracing(config.Default(config.EnvTest).Tracing, "n", nil, nil, log)
	require.NoError(t, err)
	require.Nil(t, tr)
	tr.resultApplied(store.ResultOutcome{TaskState: workflow.TaskStateComplete})
	require.NoError(t, tr.stop(t.Context()))

	tr, err = startTracing(config.Tracing{OTLPEndpoint: "http://127.0.0.1:4318", ServiceName: "tasker"}, "n", nil, nil, log)
	require.NoError(t, err)
	require.NotNil(t, tr)
	require.NoError(t, tr.stop(t.Context()))
}
