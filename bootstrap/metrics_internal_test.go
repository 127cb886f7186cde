package bootstrap

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/store"
)

// The admission's callbacks count rounds, newly held steps by kind, errors
// and repairs.
func TestFlowMetrics(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	m.flowAdmitted("a", store.FlowRound{Admitted: 3, NewlyHeld: map[string]int{store.HeldBySlots: 2, store.HeldByRate: 1}}, nil)
	m.flowAdmitted("a", store.FlowRound{Admitted: 1, NewlyHeld: map[string]int{store.HeldByRate: 4}}, nil)
	m.flowAdmitted("b", store.FlowRound{}, nil)
	m.flowAdmitted("b", store.FlowRound{Admitted: 9}, errors.New("connection refused"))
	m.flowRepaired(store.FlowDrift{Slots: 2, Waiting: 1}, nil)
	m.flowRepaired(store.FlowDrift{Slots: 5}, errors.New("connection refused"))

	require.InDelta(t, 4, counterValue(t, m.admitted.WithLabelValues("a")), 0)
	require.InDelta(t, 2, counterValue(t, m.throttled.WithLabelValues("a", store.HeldBySlots)), 0)
	require.InDelta(t, 5, counterValue(t, m.throttled.WithLabelValues("a", store.HeldByRate)), 0)
	require.InDelta(t, 1, counterValue(t, m.admitErrors), 0)
	require.InDelta(t, 2, counterValue(t, m.flowDrift.WithLabelValues("flow_counts")), 0)
	require.InDelta(t, 1, counterValue(t, m.flowDrift.WithLabelValues("flow_waiting")), 0)
	series := make(chan prometheus.Metric, 10)
	m.admitted.Collect(series)
	close(series)
	require.Len(t, series, 1, "a round admitting nothing and a failed one make no series")
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var out dto.Metric
	require.NoError(t, c.Write(&out))
	return out.GetCounter().GetValue()
}
