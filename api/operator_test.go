package api_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/api"
)

func TestOperatorParseSince(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"90m", 90 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"24h", 24 * time.Hour},
		{"7d", 7 * 24 * time.Hour},
		{"0.5d", 12 * time.Hour},
		{"", 0},
		{"0s", 0},
		{"-1h", 0},
		{"-2d", 0},
		{"d", 0},
		{"yesterday", 0},
	} {
		got, err := api.ParseSince(c.in)
		if c.want == 0 {
			var invalid *api.InvalidError
			require.True(t, errors.As(err, &invalid), "ParseSince(%q) = %v, %v; want an InvalidError", c.in, got, err)
			require.Contains(t, err.Error(), `"7d"`, "the message shows what is accepted")
			continue
		}
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got, c.in)
	}
}

func TestOperatorParseTaskID(t *testing.T) {
	t.Parallel()
	id := uuid.Must(uuid.NewV7())
	got, err := api.ParseTaskID(" " + id.String() + " ")
	require.NoError(t, err)
	require.Equal(t, id, got)
	_, err = api.ParseTaskID("42")
	var invalid *api.InvalidError
	require.ErrorAs(t, err, &invalid)
	require.Contains(t, err.Error(), `"42"`)
}

// TestOperatorRefusesBadFilters checks the filters before any database
// access: the operator has no store here.
func TestOperatorRefusesBadFilters(t *testing.T) {
	t.Parallel()
	op := api.Operator{}
	for _, c := range []struct {
		f    api.TaskFilter
		want string
	}{
		{api.TaskFilter{State: "running"}, `state "running" is not a task state (one of pending, in_progress, complete, error, cancelled or resolved_manually)`},
		{api.TaskFilter{Since: "soon"}, `since "soon"`},
		{api.TaskFilter{Limit: -1}, "limit -1 is out of range (1 to 1000)"},
		{api.TaskFilter{Limit: api.ListLimitMax + 1}, "out of range"},
	} {
		_, err := op.Tasks(t.Context(), c.f)
		var invalid *api.InvalidError
		require.ErrorAs(t, err, &invalid, "%+v", c.f)
		require.Contains(t, err.Error(), c.want)
	}
	_, err := op.Rejected(t.Context(), -5)
	var invalid *api.InvalidError
	require.ErrorAs(t, err, &invalid)
	_, err = op.Resolve(t.Context(), uuid.New(), "", json.RawMessage(`{"result": 1}`))
	require.ErrorAs(t, err, &invalid)
	require.Contains(t, err.Error(), "needs a step")
	_, err = op.Resolve(t.Context(), uuid.New(), "some_step", json.RawMessage(`{not json`))
	require.ErrorAs(t, err, &invalid)
}
