package pgserver

import (
	"context"
	"net/url"
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
	require.Contains(t, s.URL(), "host="+url.QueryEscape(dir))
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
	const port = 54329

	s := start(t, Options{DataDir: dir, Port: port})
	require.Equal(t, port, s.Port())
	require.True(t, s.tempSock)
	require.DirExists(t, s.socketDir)
	fi, err := os.Stat(s.socketDir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), "only the server's account enters the socket folder")
	require.FileExists(t, filepath.Join(s.socketDir, ".s.PGSQL."+strconv.Itoa(port)))
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

// TestDataFolderUnreachableByPostgresUser: as root in a folder the postgres
// account cannot enter (like /root), the data folder is placed under the
// fallback root, and Start and Join with the same configuration find it.
func TestDataFolderUnreachableByPostgresUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the server to the postgres user")
	}
	closed := t.TempDir()
	require.NoError(t, os.Chmod(filepath.Dir(closed), 0o755))
	require.NoError(t, os.Chmod(closed, 0o700)) // like /root
	root := filepath.Join(dataDir(t), "fallback")
	configured := filepath.Join(closed, "project", ".tasker", "pgdata")
	opts := Options{DataDir: configured, FallbackRoot: root}

	s := start(t, opts)
	require.False(t, s.Attached())
	require.Equal(t, filepath.Join(root, fallbackName(configured)), s.DataDir())
	require.Contains(t, s.DataDir(), "tasker-pgdata-", "the folder's name says whose it is")
	require.NoDirExists(t, configured, "nothing is created where the server cannot go")
	_, err := connect(t, s.URL()).Exec(t.Context(), "SELECT 1")
	require.NoError(t, err)

	joined, err := Join(t.Context(), opts)
	require.NoError(t, err)
	require.True(t, joined.Attached())
	require.Equal(t, s.DataDir(), joined.DataDir())

	require.NoError(t, s.Stop(t.Context()))
	_, err = Join(t.Context(), opts)
	require.ErrorIs(t, err, ErrNotRunning)
	require.ErrorContains(t, err, s.DataDir())
}

// TestJoinStartsNothing: Join on a folder with no server creates nothing.
func TestJoinStartsNothing(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	_, err := Join(t.Context(), Options{DataDir: dir})
	require.ErrorIs(t, err, ErrNotRunning)
	require.NoDirExists(t, dir)
}

// TestServerClosedToTCP: the server has no TCP listener and its rules
// refuse TCP, so another local user cannot reach it through 127.0.0.1.
func TestServerClosedToTCP(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	start(t, Options{DataDir: dir, Port: 54330})
	pm, ok, err := readPostmaster(dir)
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, pm.listen, "no TCP listen address")
	require.Equal(t, dir, pm.socketDir)

	_, err = pgx.Connect(t.Context(), "postgres://postgres@127.0.0.1:54330/postgres?sslmode=disable&connect_timeout=2")
	require.Error(t, err, "no TCP listener")
	hba, err := os.ReadFile(filepath.Join(dir, hbaFileName))
	require.NoError(t, err)
	require.False(t, trustsTCP(string(hba)), "pg_hba.conf:\n%s", hba)
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
}

// TestTrustingClusterClosedOnJoin: a server started the way earlier
// versions did (listening on 127.0.0.1 and trusting TCP) is closed when
// joined: its pg_hba.conf is rewritten and reloaded, so a TCP connection,
// as any local user could open, is refused at once.
func TestTrustingClusterClosedOnJoin(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	s := start(t, Options{DataDir: dir})
	require.NoError(t, s.Stop(t.Context()))
	oldRules := "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, hbaFileName), []byte(oldRules), 0o600))
	require.NoError(t, s.acct.chown(filepath.Join(dir, hbaFileName)))

	// Start it as an earlier version did: TCP on 127.0.0.1.
	const port = 54331
	out, err := s.acct.command(t.Context(), dir, s.bins.path("pg_ctl"), "start", "-w", "-D", dir, "-l", s.LogFile(),
		"-o", "-p "+strconv.Itoa(port)+" -c listen_addresses=127.0.0.1 -c unix_socket_directories="+shellQuote(dir)).CombinedOutput()
	require.NoError(t, err, "%s", out)
	tcp := "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/postgres?sslmode=disable&connect_timeout=5"
	conn, err := pgx.Connect(t.Context(), tcp)
	require.NoError(t, err, "the old rules let any local user in over TCP")
	require.NoError(t, conn.Close(t.Context()))

	joined, err := Start(t.Context(), Options{DataDir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = joined.Stop(context.Background()) })
	require.True(t, joined.Attached())

	_, err = pgx.Connect(t.Context(), tcp)
	require.Error(t, err, "TCP is refused once joined")
	require.Contains(t, err.Error(), "pg_hba.conf rejects connection")
	kept, err := os.ReadFile(filepath.Join(dir, hbaFileName+".trusted-tcp"))
	require.NoError(t, err)
	require.Equal(t, oldRules, string(kept))
	_, err = connect(t, joined.URL()).Exec(t.Context(), "SELECT 1")
	require.NoError(t, err, "the socket still works")

	// The next start listens on the socket only.
	require.NoError(t, joined.Stop(t.Context()))
	start(t, Options{DataDir: dir, Port: port})
	pm, _, err := readPostmaster(dir)
	require.NoError(t, err)
	require.Empty(t, pm.listen)
}

func TestStartRequiresDataDir(t *testing.T) {
	t.Parallel()
	_, err := Start(t.Context(), Options{})
	require.ErrorContains(t, err, "data folder is required")
}
