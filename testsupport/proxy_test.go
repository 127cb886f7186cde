package testsupport

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestProxy(t *testing.T) {
	t.Parallel()
	proxy := NewProxy(t, NewDatabaseURL(t))
	connect := func(timeout time.Duration) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(proxy.URL())
		require.NoError(t, err)
		cfg.ConnectTimeout = timeout
		return pgx.ConnectConfig(t.Context(), cfg)
	}
	query := func(conn *pgx.Conn, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		var n int
		return conn.QueryRow(ctx, "SELECT 1").Scan(&n)
	}

	conn, err := connect(5 * time.Second)
	require.NoError(t, err, "connecting through %s", proxy.URL())
	require.NoError(t, query(conn, 5*time.Second))

	t.Run("cut closes open connections and refuses new ones", func(t *testing.T) {
		proxy.Cut()
		require.Error(t, query(conn, 5*time.Second))
		began := time.Now()
		_, err := connect(5 * time.Second)
		require.Error(t, err)
		require.Less(t, time.Since(began), time.Second, "refused at once, not timed out")

		proxy.Restore()
		conn, err = connect(5 * time.Second)
		require.NoError(t, err)
		require.NoError(t, query(conn, 5*time.Second))
	})

	t.Run("black hole stalls open connections until restored", func(t *testing.T) {
		proxy.BlackHole()
		_, err := connect(300 * time.Millisecond)
		require.Error(t, err, "a new connection is never answered")
		require.Positive(t, proxy.Stats().BlackHoled)

		answered := make(chan error, 1)
		go func() { answered <- query(conn, 30*time.Second) }()
		select {
		case err := <-answered:
			t.Fatalf("a query went through the black hole: %v", err)
		case <-time.After(300 * time.Millisecond): // the stall is what is tested
		}
		proxy.Restore()
		select {
		case err := <-answered:
			require.NoError(t, err, "the stalled query resumes")
		case <-time.After(10 * time.Second):
			t.Fatal("the stalled query did not resume after Restore")
		}
		fresh, err := connect(5 * time.Second)
		require.NoError(t, err)
		require.NoError(t, fresh.Close(t.Context()))
	})

	require.NoError(t, conn.Close(t.Context()))
	st := proxy.Stats()
	t.Logf("proxy stats: %+v", st)
	require.Positive(t, st.Refused)
	require.Positive(t, st.Cut)
	require.GreaterOrEqual(t, st.Forwarded, int64(3))
}

func TestProxyURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:p@127.0.0.1:5432/db?sslmode=disable":                "postgres://u:p@127.0.0.1:9/db?sslmode=disable",
		"postgres://u@/db?host=/run/postgresql&port=5433&sslmode=disable": "postgres://u@127.0.0.1:9/db?sslmode=disable",
	} {
		got, err := rewriteURL(in, "127.0.0.1:9")
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := rewriteURL("host=localhost dbname=x", "127.0.0.1:9")
	require.Error(t, err)

	network, addr, err := databaseAddr("postgres://u@/db?host=/run/postgresql&port=5433")
	require.NoError(t, err)
	require.Equal(t, "unix", network)
	require.Equal(t, "/run/postgresql/.s.PGSQL.5433", addr)
}
