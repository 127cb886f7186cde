package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/testsupport"
)

// runIn runs the CLI in-process from dir (with a clean TASKER_ environment
// and no config file unless args name one).
func runIn(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	t.Chdir(dir)
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "TASKER_") {
			t.Setenv(k, "")
			require.NoError(t, os.Unsetenv(k))
		}
	}
	var stdout, stderr bytes.Buffer
	code := Run("dev", args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestReadCommandStartsNoServer: a read command in a folder with no
// configuration and no running node says there is no database, instead of
// creating a cluster there and answering "not found".
func TestReadCommandStartsNoServer(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"task", "show", uuid.NewString()},
		{"task", "list"},
		{"requests", "rejected"},
		{"submit", "--namespace", "ns", "--name", "t", "--version", "1.0.0"},
	} {
		code, out, errOut := runIn(t, dir, args...)
		require.Equal(t, exitFailed, code, "tasker %v: stdout %s stderr %s", args, out, errOut)
		require.Contains(t, errOut, "no database: database.url is not set and no PostgreSQL server is running on the data folder", "tasker %v", args)
		require.Contains(t, errOut, "tasker node")
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Empty(t, entries, "tasker %v created nothing in the folder", args)
	}
}

// TestReadCommandRunsNoDDL: against a database without the task schema, a
// read command changes nothing and says to migrate; after `tasker migrate`,
// a role that may only read lists tasks.
func TestReadCommandRunsNoDDL(t *testing.T) {
	url := testsupport.NewDatabaseURL(t) // the queue schema only
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tasker.toml")
	writeURL := func(u string) {
		require.NoError(t, os.WriteFile(cfgPath, fmt.Appendf(nil, "[database]\nurl = %q\n", u), 0o600))
	}
	writeURL(url)

	code, _, errOut := runIn(t, dir, "task", "list", "--config", cfgPath)
	require.Equal(t, exitFailed, code, errOut)
	require.Contains(t, errOut, "the task schema is not at this build's version: the database is at version 0")
	require.Contains(t, errOut, "run tasker migrate")
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var present bool
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT to_regnamespace('tasker') IS NOT NULL").Scan(&present))
	require.False(t, present, "the read command created no schema")

	code, out, errOut := runIn(t, dir, "migrate", "--config", cfgPath)
	require.Equal(t, exitOK, code, "stdout %s stderr %s", out, errOut)

	reader := "tasker_reader_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	for _, q := range []string{
		"CREATE ROLE " + reader + " LOGIN",
		"GRANT CONNECT ON DATABASE " + pgx.Identifier{conn.Config().Database}.Sanitize() + " TO " + reader,
		"GRANT USAGE ON SCHEMA tasker, pgmq TO " + reader,
		"GRANT SELECT ON ALL TABLES IN SCHEMA tasker, pgmq TO " + reader,
	} {
		_, err := conn.Exec(t.Context(), q)
		require.NoError(t, err, q)
	}
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "DROP OWNED BY "+reader)
		_, _ = conn.Exec(context.Background(), "DROP ROLE "+reader)
	})
	writeURL(strings.Replace(url, "postgres@", reader+"@", 1))
	code, out, errOut = runIn(t, dir, "task", "list", "--config", cfgPath)
	require.Equal(t, exitOK, code, "a read-only role lists tasks: stdout %s stderr %s", out, errOut)
}
