package store_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
)

// TestOldestHorizonHolder holds a REPEATABLE READ snapshot in a session of
// its own: OldestHorizonHolder names that backend, its application and
// state, until the transaction ends.
func TestOldestHorizonHolder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	cc := h.pool.Config().ConnConfig.Copy()
	cc.RuntimeParams["application_name"] = "horizon-test"
	conn, err := pgx.ConnectConfig(h.ctx, cc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(h.ctx) })

	tx, err := conn.BeginTx(h.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	var pid int32
	require.NoError(t, tx.QueryRow(h.ctx, "SELECT pg_backend_pid() FROM (SELECT count(*) FROM tasker.tasks) AS c").Scan(&pid))
	// A transaction that commits after the snapshot moves the horizon's age.
	_, err = h.pool.Exec(h.ctx, "SELECT pg_current_xact_id()")
	require.NoError(t, err)

	var got store.HorizonHolder
	testsupport.WaitFor(t, 10*time.Second, "the snapshot's backend to hold the horizon", func() (bool, error) {
		hh, ok, err := store.OldestHorizonHolder(h.ctx, h.pool)
		got = hh
		return ok && hh.PID == pid && hh.State == "idle in transaction", err
	})
	require.Equal(t, store.HolderBackend, got.Kind)
	require.Equal(t, "horizon-test", got.ApplicationName)
	require.Positive(t, got.XidAge, "a transaction committed after the snapshot")
	require.Positive(t, got.Age)
	require.Less(t, got.Age, time.Minute)
	require.False(t, got.Since.IsZero())
	require.Contains(t, got.String(), "horizon-test")

	require.NoError(t, tx.Commit(h.ctx))
	testsupport.WaitFor(t, 10*time.Second, "the horizon to be released", func() (bool, error) {
		hh, ok, err := store.OldestHorizonHolder(h.ctx, h.pool)
		return !ok || hh.PID != pid, err
	})
}
