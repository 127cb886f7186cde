package bootstrap_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/testsupport"
)

// TestHealthNamesTheHorizonHolder holds a REPEATABLE READ snapshot in a
// session of its own for longer than health.xmin_horizon_warn: /health turns
// degraded with a reason that names the backend's pid, application and
// age, and is ok again once the transaction ends.
func TestHealthNamesTheHorizonHolder(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testsupport.WithConfig(func(cfg *config.Config) {
		cfg.Health.XminHorizonWarn = config.Duration(time.Second)
	}))
	ctx := t.Context()
	require.Equal(t, api.HealthOK, e.node.Health(ctx, false).Status)

	cc, err := pgx.ParseConfig(e.url)
	require.NoError(t, err)
	cc.RuntimeParams["application_name"] = "report-export"
	conn, err := pgx.ConnectConfig(ctx, cc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(ctx) })
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	var pid int32
	require.NoError(t, tx.QueryRow(ctx, "SELECT pg_backend_pid() FROM (SELECT count(*) FROM tasker.tasks) AS c").Scan(&pid))

	var h api.Health
	testsupport.WaitFor(t, 30*time.Second, "/health to name the snapshot's backend", func() (bool, error) {
		h = e.node.Health(ctx, true)
		return h.Status == api.HealthDegraded && h.XminHorizon != nil && h.XminHorizon.Held, nil
	})
	require.Equal(t, pid, h.XminHorizon.PID, "reasons: %v", h.Reasons)
	require.Equal(t, "backend", h.XminHorizon.Kind)
	require.Equal(t, "report-export", h.XminHorizon.ApplicationName)
	require.GreaterOrEqual(t, h.XminHorizon.AgeSeconds, 1.0)
	reason := strings.Join(h.Reasons, "; ")
	require.Contains(t, reason, fmt.Sprintf("pid %d", pid))
	require.Contains(t, reason, `"report-export"`)

	require.NoError(t, tx.Commit(ctx))
	testsupport.WaitFor(t, 30*time.Second, "/health to be ok once the snapshot is released", func() (bool, error) {
		h = e.node.Health(ctx, false)
		return h.Status == api.HealthOK && (h.XminHorizon == nil || h.XminHorizon.PID != pid), nil
	})
}
