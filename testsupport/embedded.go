package testsupport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/bootstrap/pgserver"
)

// EnvEmbeddedDir names the variable that moves the folder of the private
// server shared by the test binaries: its data folder and lock files.
// Defaults to <temp folder>/tasker-test-pg-<uid>.
const EnvEmbeddedDir = "TASKER_TEST_POSTGRES_DIR"

// The private server is shared by all test binaries of one `go test ./...`
// run, which are separate processes running in parallel. Two lock files in
// its folder coordinate them (flock: released by the kernel when a process
// dies, so a crashed binary never wedges the others):
//
//   - control.lock, exclusive, is held only while the server is being
//     started, joined or stopped, so those never interleave;
//   - users.lock is held shared by every binary using the server, for as long
//     as it runs.
//
// A binary joining takes control.lock, starts the server unless it is
// running (the data folder is kept between runs, so that is a quick
// restart), takes users.lock shared and lets control.lock go. A binary
// leaving (Main, after the tests) lets its shared lock go, takes
// control.lock and tries users.lock exclusive without waiting: if it gets
// it, no binary uses the server any more and it stops it. The last binary
// of a run therefore stops the server, and the next run starts it again.
//
// A binary that dies without running Main leaves the server running; the
// next binary joins it. When a binary joins a server nobody else uses, any
// test databases on it are leftovers of such binaries and are dropped;
// databases of binaries still running are never touched.
const (
	controlLockName = "control.lock"
	usersLockName   = "users.lock"
	lockPollEvery   = 10 * time.Millisecond
)

// shared is this binary's use of the private server, nil when it does not
// use it.
var shared *sharedUse

type sharedUse struct {
	dir    string
	server *pgserver.Server
	users  *os.File // holds users.lock shared
}

// sharedEmbeddedServer starts (or joins) the private PostgreSQL shared by the
// test binaries of one run and returns its admin URL.
func sharedEmbeddedServer(ctx context.Context) (string, error) {
	if !underMain.Load() {
		return "", errors.New("the private PostgreSQL is stopped by testsupport.Main after the tests, but this package does not call it: " +
			"add func TestMain(m *testing.M) { testsupport.Main(m) }")
	}
	dir, err := embeddedDir()
	if err != nil {
		return "", err
	}
	control, err := lock(ctx, filepath.Join(dir, controlLockName), syscall.LOCK_EX)
	if err != nil {
		return "", err
	}
	defer func() { _ = control.Close() }() // closing releases the lock

	users, err := os.OpenFile(filepath.Join(dir, usersLockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", usersLockName, err)
	}
	// While we hold control.lock nobody else takes users.lock exclusive, so
	// getting it means no other binary uses the server.
	alone := syscall.Flock(int(users.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil

	dataDir := filepath.Join(dir, "data")
	srv, err := pgserver.Start(ctx, pgserver.Options{DataDir: dataDir, NoSync: true})
	if err != nil {
		_ = users.Close()
		return "", fmt.Errorf("starting the private PostgreSQL in %s (delete the folder to start afresh): %w", dataDir, err)
	}
	if alone {
		if err := dropLeftovers(ctx, srv.URL()); err != nil {
			_ = users.Close()
			return "", err
		}
	}
	// Shared from now on; this turns our exclusive lock into a shared one.
	if err := syscall.Flock(int(users.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		_ = users.Close()
		return "", fmt.Errorf("locking %s shared: %w", usersLockName, err)
	}
	shared = &sharedUse{dir: dir, server: srv, users: users}
	return srv.URL(), nil
}

// releaseShared lets go of the private server and stops it when no other
// binary uses it.
func releaseShared(ctx context.Context) error {
	if shared == nil {
		return nil
	}
	use := shared
	shared = nil
	if err := use.users.Close(); err != nil {
		return fmt.Errorf("releasing %s: %w", usersLockName, err)
	}
	control, err := lock(ctx, filepath.Join(use.dir, controlLockName), syscall.LOCK_EX)
	if err != nil {
		return err
	}
	defer func() { _ = control.Close() }() // closing releases the lock
	users, err := os.OpenFile(filepath.Join(use.dir, usersLockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s: %w", usersLockName, err)
	}
	defer func() { _ = users.Close() }() // closing releases the lock
	if syscall.Flock(int(users.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return nil // another binary still uses it and will stop it
	}
	if err := use.server.Stop(ctx); err != nil {
		return fmt.Errorf("stopping the private PostgreSQL: %w", err)
	}
	return nil
}

// embeddedDir returns the folder of the shared server, creating it. The
// default lives in a world-writable temp folder under a predictable name, so
// it must be a real folder owned by us. It is left searchable by others
// because, when the tests run as root, the server runs as user postgres.
func embeddedDir() (string, error) {
	dir := os.Getenv(EnvEmbeddedDir)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("tasker-test-pg-%d", os.Getuid()))
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("checking %s: %w", dir, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || (ok && int(st.Uid) != os.Getuid()) {
		return "", fmt.Errorf("%s is not a folder owned by this user: remove it or set %s", dir, EnvEmbeddedDir)
	}
	if fi.Mode().Perm() != 0o755 {
		if err := os.Chmod(dir, 0o755); err != nil {
			return "", fmt.Errorf("opening %s to the server user: %w", dir, err)
		}
	}
	return dir, nil
}

// lock opens path and locks it with how (syscall.LOCK_EX or LOCK_SH),
// waiting until it gets the lock or ctx ends. Closing the file releases it.
func lock(ctx context.Context, path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	ticker := time.NewTicker(lockPollEvery)
	defer ticker.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-ticker.C:
		}
	}
}

// dropLeftovers drops the test databases on the server at url. Call it only
// when no other binary uses the server.
func dropLeftovers(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connecting to the private PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", testDatabasePrefix)
	if err != nil {
		return fmt.Errorf("listing leftover test databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("listing leftover test databases: %w", err)
	}
	for _, name := range names {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("dropping leftover test database %s: %w", name, err)
		}
	}
	return nil
}
