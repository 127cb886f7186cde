package bootstrap

import (
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
