package testsupport

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/bootstrap/pgserver"
)

func TestMain(m *testing.M) { Main(m) }

const (
	// envHelper makes TestHelperProcess do its work; the tests below set it
	// in the processes they start.
	envHelper = "TASKER_TEST_HELPER_PROCESS"
	// envRendezvous names a folder where helpers wait for each other, so
	// that they overlap in time.
	envRendezvous = "TASKER_TEST_HELPER_RENDEZVOUS"
	// envHelpers is how many helpers meet in the rendezvous folder.
	envHelpers = "TASKER_TEST_HELPER_COUNT"
	// envAwait names a file a helper waits for before it uses its database
	// once more and exits.
	envAwait = "TASKER_TEST_HELPER_AWAIT"
	// urlLine prefixes the line on which a helper reports its server URL.
	urlLine = "helper-server-url="
)

// TestHelperProcess is a test binary of its own when started by
// runHelpers: it uses the private server (the server on 127.0.0.1:5432 is
// skipped), creates a database and queries it.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		t.Skip("runs in processes started by the embedded server tests")
	}
	require.Equal(t, "embedded", ServerKind(t))
	db := NewDB(t)
	var n int
	require.NoError(t, db.QueryRow(t.Context(), "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgmq'").Scan(&n))
	require.Equal(t, 1, n, "queue schema installed")

	if dir := os.Getenv(envRendezvous); dir != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprint(os.Getpid())), nil, 0o600))
		want := os.Getenv(envHelpers)
		WaitFor(t, time.Minute, want+" helpers using the server at once", func() (bool, error) {
			entries, err := os.ReadDir(dir)
			return fmt.Sprint(len(entries)) == want, err
		})
	}
	if path := os.Getenv(envAwait); path != "" {
		WaitFor(t, time.Minute, path+" to appear", func() (bool, error) {
			_, err := os.Stat(path)
			return err == nil, nil
		})
		// A fresh connection: the server is still up.
		conn, err := pgx.Connect(t.Context(), db.Config().ConnString())
		require.NoError(t, err)
		require.NoError(t, conn.Close(t.Context()))
	}
	url, _, err := server()
	require.NoError(t, err)
	fmt.Println(urlLine + url)
}

// TestEmbeddedServer runs the tests' server selection with the private
// server forced, in processes of their own, against a private server folder
// of this test's own (so other test binaries using the shared one do not
// interfere): the machine's server on 5432 stays up and untouched.
func TestEmbeddedServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		// The server runs as user postgres, which must be able to enter.
		require.NoError(t, os.Chmod(dir, 0o755))
		require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	}
	dir = filepath.Join(dir, "pg")
	dataDir := filepath.Join(dir, "data")
	t.Cleanup(func() { stopIfRunning(t, dataDir) })

	t.Run("one binary starts and stops it", func(t *testing.T) {
		began := time.Now()
		url := startHelper(t, dir).wait(t)
		t.Logf("helper with a fresh server took %s", time.Since(began))
		require.Contains(t, url, "host="+neturl.QueryEscape(dataDir), "the private server is reached on its socket")
		requireStopped(t, dataDir, url)
	})

	t.Run("concurrent binaries share one server", func(t *testing.T) {
		began := time.Now()
		rendezvous, release := t.TempDir(), filepath.Join(t.TempDir(), "release")
		first := startHelper(t, dir, envRendezvous+"="+rendezvous, envHelpers+"=2")
		second := startHelper(t, dir, envRendezvous+"="+rendezvous, envHelpers+"=2", envAwait+"="+release)
		// The first leaves while the second still uses the server: it must
		// not stop it under the second.
		firstURL := first.wait(t)
		require.NoError(t, os.WriteFile(release, nil, 0o600))
		secondURL := second.wait(t)
		t.Logf("two helpers with a restarted server took %s", time.Since(began))
		require.Equal(t, firstURL, secondURL, "both used the same server")
		requireStopped(t, dataDir, secondURL)
	})

	t.Run("leftover test databases of dead binaries are dropped", func(t *testing.T) {
		// A server left running with a test database, as after a crash.
		srv, err := pgserver.Start(t.Context(), pgserver.Options{DataDir: dataDir, NoSync: true})
		require.NoError(t, err)
		leftover := testDatabasePrefix + "leftover"
		exec1(t, srv.URL(), "CREATE DATABASE "+leftover)

		url := startHelper(t, dir).wait(t)
		require.Equal(t, srv.URL(), url, "the helper joined the running server")
		requireStopped(t, dataDir, url)

		srv, err = pgserver.Start(t.Context(), pgserver.Options{DataDir: dataDir, NoSync: true})
		require.NoError(t, err)
		defer func() { require.NoError(t, srv.Stop(context.Background())) }()
		conn, err := pgx.Connect(t.Context(), srv.URL())
		require.NoError(t, err)
		defer conn.Close(context.Background())
		var n int
		require.NoError(t, conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_database WHERE datname = $1", leftover).Scan(&n))
		require.Zero(t, n)
	})
}

// helper is a test binary started to run TestHelperProcess.
type helper struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// startHelper starts a helper process on the private server folder dir, with
// env added to its environment.
func startHelper(t *testing.T, dir string, env ...string) *helper {
	t.Helper()
	h := &helper{cmd: exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")}
	h.cmd.Env = append(os.Environ(),
		envHelper+"=1",
		EnvDatabaseURL+"=",
		"TASKER_TEST_POSTGRES=embedded",
		EnvEmbeddedDir+"="+dir,
	)
	h.cmd.Env = append(h.cmd.Env, env...)
	h.cmd.Stdout, h.cmd.Stderr = &h.out, &h.out
	require.NoError(t, h.cmd.Start())
	t.Cleanup(func() {
		if h.cmd.ProcessState == nil { // the test failed before waiting
			_ = h.cmd.Process.Kill()
			_ = h.cmd.Wait()
		}
	})
	return h
}

// wait waits for the helper to pass and returns the server URL it reported.
func (h *helper) wait(t *testing.T) string {
	t.Helper()
	err := h.cmd.Wait()
	require.NoError(t, err, "helper:\n%s", h.out.String())
	sc := bufio.NewScanner(bytes.NewReader(h.out.Bytes()))
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), urlLine); ok {
			return u
		}
	}
	require.Fail(t, "helper reported no URL", h.out.String())
	return ""
}

// requireStopped checks that no server runs on dataDir any more.
func requireStopped(t *testing.T, dataDir, url string) {
	t.Helper()
	require.NoFileExists(t, filepath.Join(dataDir, "postmaster.pid"))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err == nil {
		conn.Close(context.Background())
	}
	require.Error(t, err, "nothing answers at %s", url)
}

// stopIfRunning stops a server a failed test left on dataDir.
func stopIfRunning(t *testing.T, dataDir string) {
	if _, err := os.Stat(filepath.Join(dataDir, "postmaster.pid")); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := pgserver.Start(ctx, pgserver.Options{DataDir: dataDir})
	if err == nil {
		err = srv.Stop(ctx)
	}
	if err != nil {
		t.Errorf("stopping the server left on %s: %v", dataDir, err)
	}
}

func exec1(t *testing.T, url, sql string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(t.Context(), sql)
	require.NoError(t, err)
}
