package bootstrap

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/config"
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
