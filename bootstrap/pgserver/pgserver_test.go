package pgserver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// dataDir returns a data folder path in a fresh temporary folder. As root the
// server runs as user postgres, which must be able to enter the folders
// t.TempDir makes private (0700); they are the test's own, so open them.
func dataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		require.NoError(t, os.Chmod(dir, 0o755))
		require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	}
	return filepath.Join(dir, "data")
}

// start starts a server for a test and stops it when the test ends.
func start(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.NoSync = true
	began := time.Now()
	s, err := Start(t.Context(), opts)
	require.NoError(t, err)
	t.Logf("Start took %s (attached=%v, port %d)", time.Since(began), s.Attached(), s.Port())
	t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("stopping: %v", err)
		}
	})
	return s
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestStartStopRestart(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)

	s := start(t, Options{DataDir: dir})
	require.False(t, s.Attached())
	require.Equal(t, dir, s.DataDir())
	require.Contains(t, s.URL(), "@127.0.0.1:")
	conn := connect(t, s.URL())
	_, err := conn.Exec(t.Context(), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before stop')")
	require.NoError(t, err)
	var user string
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT current_user").Scan(&user))
	require.Equal(t, "postgres", user)
	require.NoError(t, conn.Close(t.Context()))

	require.NoError(t, s.Stop(t.Context()))
	require.NoError(t, s.Stop(t.Context()), "a second Stop is a no-op")
	require.NoFileExists(t, filepath.Join(dir, pidFileName))

	again := start(t, Options{DataDir: dir})
	require.False(t, again.Attached())
	var v string
	require.NoError(t, connect(t, again.URL()).QueryRow(t.Context(), "SELECT v FROM kept").Scan(&v))
	require.Equal(t, "before stop", v)
}

func TestStartJoinsRunningServer(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	first := start(t, Options{DataDir: dir})

	second := start(t, Options{DataDir: dir})
	require.True(t, second.Attached())
	require.Equal(t, first.Port(), second.Port())
	require.Equal(t, first.URL(), second.URL())

	require.NoError(t, second.Stop(t.Context()))
	require.NoFileExists(t, filepath.Join(dir, pidFileName))
	require.NoError(t, first.Stop(t.Context()), "stopping a server someone else stopped is fine")
}

func TestStartOnFixedPortAndLongPath(t *testing.T) {
	t.Parallel()
	// A data folder this deep cannot hold the socket: a temporary folder is
	// used instead.
	dir := filepath.Join(dataDir(t), strings.Repeat("deep/", 20), "data")
	require.Greater(t, len(dir), socketPathMax)
	port, err := freePort()
	require.NoError(t, err)

	s := start(t, Options{DataDir: dir, Port: port})
	require.Equal(t, port, s.Port())
	require.True(t, s.tempSock)
	require.DirExists(t, s.socketDir)
	_, err = connect(t, s.URL()).Exec(t.Context(), "SELECT 1")
	require.NoError(t, err)

	require.NoError(t, s.Stop(t.Context()))
	require.NoDirExists(t, s.socketDir)
}

func TestStartRemovesStalePidFile(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	s := start(t, Options{DataDir: dir})
	require.NoError(t, s.Stop(t.Context()))

	// A pid file left by a crash, naming a process that has exited.
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	stale := []byte(strings.Join([]string{strconv.Itoa(cmd.Process.Pid), dir, "0", "1", dir, "127.0.0.1", "0", "ready"}, "\n") + "\n")
	require.NoError(t, os.WriteFile(filepath.Join(dir, pidFileName), stale, 0o600))

	again := start(t, Options{DataDir: dir})
	require.False(t, again.Attached())
	_, err := connect(t, again.URL()).Exec(t.Context(), "SELECT 1")
	require.NoError(t, err)
}

func TestMissingBinaries(t *testing.T) {
	t.Parallel()
	_, err := Start(t.Context(), Options{DataDir: dataDir(t), BinDir: t.TempDir()})
	require.Error(t, err)
	require.Contains(t, err.Error(), "initdb, pg_ctl, postgres")
	require.Contains(t, err.Error(), "apt-get install postgresql")

	noPath := func(string) (string, error) { return "", exec.ErrNotFound }
	_, err = findBinaries("", noPath, []string{filepath.Join(t.TempDir(), "*", "bin")})
	require.ErrorIs(t, err, errNoBinaries)
	require.Contains(t, err.Error(), "not found in PATH or /usr/lib/postgresql/*/bin")
}

func TestFindBinariesPicksNewestVersion(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for _, v := range []string{"9.6", "16", "15", "17"} {
		bin := filepath.Join(root, v, "bin")
		require.NoError(t, os.MkdirAll(bin, 0o755))
		programs := serverPrograms
		if v == "17" {
			programs = programs[:2] // incomplete: no postgres
		}
		for _, p := range programs {
			require.NoError(t, os.WriteFile(filepath.Join(bin, p), []byte("#!/bin/sh\n"), 0o755))
		}
	}
	noPath := func(string) (string, error) { return "", exec.ErrNotFound }
	b, err := findBinaries("", noPath, []string{filepath.Join(root, "*", "bin")})
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "16", "bin"), b.dir)

	// PATH wins, following a symlink to the real folder.
	link := t.TempDir()
	require.NoError(t, os.Symlink(filepath.Join(root, "15", "bin", "pg_ctl"), filepath.Join(link, "pg_ctl")))
	onPath := func(string) (string, error) { return filepath.Join(link, "pg_ctl"), nil }
	b, err = findBinaries("", onPath, []string{filepath.Join(root, "*", "bin")})
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "15", "bin"), b.dir)
}

func TestDataFolderUnreachableByPostgresUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the server to the postgres user")
	}
	closed := t.TempDir()
	require.NoError(t, os.Chmod(filepath.Dir(closed), 0o755))
	require.NoError(t, os.Chmod(closed, 0o700)) // like /root
	s, err := Start(t.Context(), Options{DataDir: filepath.Join(closed, "data")})
	if err == nil {
		require.NoError(t, s.Stop(t.Context()))
	}
	require.Error(t, err)
	require.Contains(t, err.Error(), "cannot enter "+closed)
	require.Contains(t, err.Error(), "chmod o+x")
}

func TestStartRequiresDataDir(t *testing.T) {
	t.Parallel()
	_, err := Start(t.Context(), Options{})
	require.ErrorContains(t, err, "data folder is required")
}
