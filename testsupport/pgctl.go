package testsupport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tasker-run/tasker/bootstrap/pgserver"
)

// PrivateServer starts a PostgreSQL server of the test's own, on a data
// folder the test owns, for tests that stop, restart or crash the server
// itself (PgCtl). It is stopped and its folder removed when the test ends.
// Unlike the shared test server it keeps PostgreSQL's durability settings:
// with synchronous_commit off, an immediate shutdown loses commits the
// node was already told of, which no node can recover from.
func PrivateServer(t testing.TB) *pgserver.Server {
	t.Helper()
	// Not t.TempDir: when the tests run as root the server runs as user
	// postgres, which must be able to enter every folder above its data.
	dir, err := os.MkdirTemp("", "tasker-private-pg-")
	if err != nil {
		t.Fatalf("creating a folder for a private PostgreSQL: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("opening %s to the server user: %v", dir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := pgserver.Start(ctx, pgserver.Options{DataDir: filepath.Join(dir, "data")})
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("starting a private PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("stopping the private PostgreSQL: %v", err)
		}
		_ = os.RemoveAll(dir)
	})
	return srv
}

// PgCtl runs pg_ctl with args on srv's data folder, as the account the
// server runs as, and waits for it: PgCtl(srv, "restart", "-m", "fast")
// returns once the restarted server accepts connections. The server keeps
// writing to its log file. Safe to call from any goroutine.
func PgCtl(srv *pgserver.Server, args ...string) error {
	bin, err := pgCtlPath()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append(append([]string{}, args...), "-D", srv.DataDir(), "-l", srv.LogFile(), "-w", "-t", "60")
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Dir = srv.DataDir()
	// The server pg_ctl starts must not hold our pipes, nor share our
	// process group.
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if os.Geteuid() == 0 {
		cred, err := postgresCredential()
		if err != nil {
			return err
		}
		cmd.SysProcAttr.Credential = cred
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// pgCtlPath finds pg_ctl as pgserver does: on PATH, else the newest
// /usr/lib/postgresql/<version>/bin or /usr/pgsql-<version>/bin.
func pgCtlPath() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return p, nil
	}
	var found []string
	for _, g := range []string{"/usr/lib/postgresql/*/bin/pg_ctl", "/usr/pgsql-*/bin/pg_ctl"} {
		m, _ := filepath.Glob(g)
		found = append(found, m...)
	}
	if len(found) == 0 {
		return "", errors.New("pg_ctl not found on PATH nor under /usr/lib/postgresql or /usr/pgsql-*")
	}
	version := func(p string) int {
		v := strings.TrimPrefix(filepath.Base(filepath.Dir(filepath.Dir(p))), "pgsql-")
		n, _ := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
		return n
	}
	sort.Slice(found, func(i, j int) bool { return version(found[i]) < version(found[j]) })
	return found[len(found)-1], nil
}

// postgresCredential is the postgres system user, whom pgserver runs the
// server as when the caller is root.
func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running pg_ctl as user postgres: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user postgres: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user postgres: gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
