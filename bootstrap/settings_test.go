package bootstrap

import (
	"testing"

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
