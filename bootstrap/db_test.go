package bootstrap

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/config"
)

// TestPoolConfigLocalWithoutTLS: a connection to this machine skips TLS
// unless the URL chooses an sslmode; a remote one keeps the driver's
// default (prefer: TLS when offered).
func TestPoolConfigLocalWithoutTLS(t *testing.T) {
	t.Setenv("PGSSLMODE", "")
	db := config.Default("test").Database
	for url, wantTLS := range map[string]bool{
		"postgres://u@127.0.0.1:5432/db":                     false,
		"postgres://u@localhost/db":                          false,
		"postgres://u@[::1]:5432/db":                         false,
		"host=127.0.0.1 dbname=db":                           false,
		"postgres://u@/db?host=/run/postgresql":              false,
		"postgres://u@127.0.0.1:5432/db?sslmode=require":     true,
		"postgres://u@db.example:5432/db":                    true,
		"postgres://u@127.0.0.1:5432,db.example:5432/db":     true,
		"postgres://u@127.0.0.1:5432/db?sslmode=verify-full": true,
	} {
		pc, err := poolConfig(url, db)
		require.NoError(t, err, url)
		require.Equal(t, wantTLS, pc.ConnConfig.TLSConfig != nil, url)
		require.Equal(t, "off", pc.ConnConfig.RuntimeParams["enable_seqscan"], url)
	}
}
