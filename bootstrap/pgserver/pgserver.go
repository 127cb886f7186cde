// Package pgserver runs a private PostgreSQL server from the machine's
// PostgreSQL binaries. The node uses it when no database URL is configured,
// and the tests use it when there is no server to connect to.
//
// The data folder is created with initdb on the first start (user postgres,
// trust authentication, UTF8, C locale) and reused on the next ones. The
// server listens on 127.0.0.1 only, on the port asked for or on a free one,
// and keeps its unix socket in a folder of its own (the data folder, or a
// short temporary folder when the data folder's path is too long for a
// socket name), so it never collides with a system server.
//
// When a live server already owns the data folder (its postmaster.pid names a
// running postgres), Start does not fail: it joins that server, reading its
// port from postmaster.pid, and Server.Attached reports it. Stop stops the
// server on the data folder either way.
//
// PostgreSQL refuses to run as root. When the caller is root, initdb, pg_ctl
// and so the server run as the postgres system user: the data folder (and a
// temporary socket folder) are given to that user, and every folder above the
// data folder must be searchable by it. Start does not loosen permissions of
// existing folders; when one is closed (such as /root, mode 0700) it returns
// an error naming the folder and the two ways out.
//
// Start is not safe to call concurrently for one data folder from several
// processes; callers that share a folder serialise Start and Stop themselves
// (testsupport does so with a file lock).
package pgserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// StartTimeoutDefault bounds a start: initdb, server start-up and the
	// first connection.
	StartTimeoutDefault = 60 * time.Second
	// stopTimeout bounds pg_ctl stop.
	stopTimeout = 60 * time.Second
	// pollInterval is how often readiness is checked.
	pollInterval = 25 * time.Millisecond
	// maxConnections leaves room for a node's pools plus a few psql sessions,
	// and for many test databases used in parallel.
	maxConnections = 200
	// socketPathMax is the longest unix socket path (sun_path less its NUL).
	socketPathMax = 107
	// portAttempts is how often a start on a picked free port is retried when
	// the port was taken in between.
	portAttempts = 3
	// LogFileName is the server log, kept in the data folder.
	LogFileName = "postgresql.log"
)

// Options configure Start.
type Options struct {
	// DataDir is the PostgreSQL data folder; it is created when missing and
	// reused when it holds a cluster. Required; made absolute.
	DataDir string
	// Port is the TCP port on 127.0.0.1. Ignored when joining a running
	// server. Defaults to 0: a free port picked at each start.
	Port int
	// Logger receives progress messages. Defaults to discarding them.
	Logger *slog.Logger
	// BinDir is the folder of initdb, pg_ctl and postgres; when set it is the
	// only place looked at. Defaults to the folder of pg_ctl on PATH, then the
	// newest /usr/lib/postgresql/<version>/bin (or /usr/pgsql-<version>/bin).
	BinDir string
	// NoSync trades crash safety for speed: initdb --no-sync, and the server
	// runs with fsync, synchronous_commit and full_page_writes off. For tests
	// only. Defaults to false.
	NoSync bool
	// StartTimeout bounds the whole start. Defaults to StartTimeoutDefault.
	StartTimeout time.Duration
}

// Server is a PostgreSQL server on a data folder, started or joined by Start.
type Server struct {
	dataDir   string
	port      int
	bins      binaries
	acct      *account
	logger    *slog.Logger
	attached  bool
	socketDir string // empty when joined
	tempSock  bool   // socketDir is a temporary folder to remove on Stop

	mu      sync.Mutex
	stopped bool
}

// Start starts a server on opts.DataDir, initialising the folder first when
// needed, or joins the server already running on it, and returns once the
// server accepts connections.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.DataDir == "" {
		return nil, errors.New("starting PostgreSQL: a data folder is required")
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("resolving data folder %s: %w", opts.DataDir, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(opts.StartTimeout, StartTimeoutDefault))
	defer cancel()

	bins, err := findBinaries(opts.BinDir, exec.LookPath, defaultSearchGlobs)
	if err != nil {
		return nil, err
	}
	acct, err := serverAccount()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
		return nil, fmt.Errorf("creating the folder of %s: %w", dataDir, err)
	}
	if err := acct.checkTraversable(dataDir); err != nil {
		return nil, err
	}
	s := &Server{
		dataDir: dataDir,
		bins:    bins,
		acct:    acct,
		logger:  cmp.Or(opts.Logger, slog.New(slog.DiscardHandler)),
	}

	joined, err := s.join(ctx)
	if err != nil {
		return nil, err
	}
	if joined {
		return s, nil
	}
	if err := s.initialize(ctx, opts.NoSync); err != nil {
		return nil, err
	}
	if err := s.prepareSocketDir(); err != nil {
		return nil, err
	}
	if err := s.launch(ctx, opts.Port, opts.NoSync); err != nil {
		s.removeTempSocketDir()
		return nil, err
	}
	return s, nil
}

// join attaches to a live server owning the data folder. It reports false
// when there is none (removing a stale postmaster.pid), so the caller starts
// one.
func (s *Server) join(ctx context.Context) (bool, error) {
	pm, ok, err := readPostmaster(s.dataDir)
	if err != nil || !ok {
		return false, err
	}
	if !pm.alive() {
		// Left by a crash or a reboot; postgres would refuse to start if the
		// pid now belongs to another process.
		if err := os.Remove(filepath.Join(s.dataDir, pidFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("removing stale %s: %w", pidFileName, err)
		}
		s.logger.Info("removed stale postmaster.pid", "data_dir", s.dataDir, "pid", pm.pid)
		return false, nil
	}

	began := time.Now()
	var readySince time.Time
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		pm, ok, err := readPostmaster(s.dataDir)
		if err != nil {
			return false, err
		}
		if !ok || !pm.alive() {
			// It was stopping: start a fresh one instead.
			return false, nil
		}
		if pm.port > 0 {
			s.port = pm.port
			err := ping(ctx, s.URL())
			if err == nil {
				s.attached = true
				s.logger.Info("joined running PostgreSQL", "data_dir", s.dataDir, "port", s.port, "pid", pm.pid,
					"duration", time.Since(began))
				return true, nil
			}
			// A server that says it is ready yet refuses us was started with
			// other settings (no TCP, another address): waiting will not help.
			if pm.status == "ready" {
				if readySince.IsZero() {
					readySince = time.Now()
				} else if time.Since(readySince) > 5*time.Second {
					return false, fmt.Errorf("a PostgreSQL server (pid %d) runs on data folder %s but does not answer on 127.0.0.1:%d (%w): stop it (pg_ctl stop -D %s) or use another data folder",
						pm.pid, s.dataDir, pm.port, err, s.dataDir)
				}
			}
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("waiting for the running PostgreSQL (pid %d) on %s: %w", pm.pid, s.dataDir, ctx.Err())
		case <-ticker.C:
		}
	}
}

// initialize runs initdb unless the data folder already holds a cluster.
func (s *Server) initialize(ctx context.Context, noSync bool) error {
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
		return nil
	}
	began := time.Now()
	if err := os.Mkdir(s.dataDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating data folder %s: %w", s.dataDir, err)
	}
	if err := s.acct.chown(s.dataDir); err != nil {
		return err
	}
	args := []string{"-D", s.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"}
	if noSync {
		args = append(args, "--no-sync")
	}
	out, err := s.acct.command(ctx, s.dataDir, s.bins.path("initdb"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("initializing PostgreSQL data folder %s: %w\n%s", s.dataDir, err, strings.TrimSpace(string(out)))
	}
	s.logger.Info("initialized PostgreSQL data folder", "data_dir", s.dataDir, "bin_dir", s.bins.dir,
		"duration", time.Since(began))
	return nil
}

// prepareSocketDir picks the folder of the server's unix socket.
func (s *Server) prepareSocketDir() error {
	if len(s.dataDir)+len("/.s.PGSQL.65535") <= socketPathMax {
		s.socketDir = s.dataDir
		return nil
	}
	dir, err := os.MkdirTemp("", "tasker-pg-")
	if err != nil {
		return fmt.Errorf("creating socket folder: %w", err)
	}
	if err := s.acct.chown(dir); err != nil {
		_ = os.Remove(dir)
		return err
	}
	s.socketDir, s.tempSock = dir, true
	return nil
}

func (s *Server) removeTempSocketDir() {
	if s.tempSock {
		_ = os.RemoveAll(s.socketDir)
	}
}

// launch runs pg_ctl start and waits for the first connection. With no port
// asked for, a free one is picked; should another process take it before the
// server binds it, the start is retried on a new one.
func (s *Server) launch(ctx context.Context, port int, noSync bool) error {
	began := time.Now()
	for attempt := 1; ; attempt++ {
		p := port
		if p == 0 {
			var err error
			if p, err = freePort(); err != nil {
				return err
			}
		}
		logStart := fileSize(s.LogFile())
		err := s.pgCtlStart(ctx, p, noSync, logStart)
		if err == nil {
			s.port = p
			break
		}
		if port != 0 || attempt == portAttempts || !strings.Contains(logTail(s.LogFile(), logStart), "could not bind") {
			return err
		}
		s.logger.Warn("PostgreSQL port taken, trying another", "port", p)
	}

	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		err := ping(ctx, s.URL())
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for PostgreSQL on 127.0.0.1:%d: %w (last error: %v)", s.port, ctx.Err(), err)
		case <-ticker.C:
		}
	}
	s.logger.Info("started PostgreSQL", "data_dir", s.dataDir, "port", s.port, "duration", time.Since(began))
	return nil
}

// pgCtlStart runs pg_ctl start; logStart is the size of the server log
// before, so that an error quotes only what this start wrote.
func (s *Server) pgCtlStart(ctx context.Context, port int, noSync bool, logStart int64) error {
	settings := []string{
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + s.socketDir,
		"-c", "max_connections=" + strconv.Itoa(maxConnections),
	}
	if noSync {
		settings = append(settings, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	quoted := make([]string, len(settings))
	for i, v := range settings {
		quoted[i] = shellQuote(v) // pg_ctl hands -o to /bin/sh
	}
	args := []string{"start", "-w", "-t", strconv.Itoa(secondsLeft(ctx)), "-D", s.dataDir, "-l", s.LogFile(),
		"-o", strings.Join(quoted, " ")}
	out, err := s.acct.command(ctx, s.dataDir, s.bins.path("pg_ctl"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("starting PostgreSQL on %s (port %d): %w\n%s\nserver log %s:\n%s",
			s.dataDir, port, err, strings.TrimSpace(string(out)), s.LogFile(), logTail(s.LogFile(), logStart))
	}
	return nil
}

// Stop shuts the server on the data folder down (fast mode: sessions are
// ended, work is not lost) and waits until it is gone. It stops a joined
// server too. Calling it again, or on a server already stopped, is a no-op.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	began := time.Now()
	cmd := s.acct.command(ctx, s.dataDir, s.bins.path("pg_ctl"), "stop", "-D", s.dataDir, "-m", "fast", "-w",
		"-t", strconv.Itoa(int(stopTimeout/time.Second)))
	if out, err := cmd.CombinedOutput(); err != nil {
		if pm, ok, _ := readPostmaster(s.dataDir); ok && pm.alive() {
			return fmt.Errorf("stopping PostgreSQL on %s: %w\n%s", s.dataDir, err, strings.TrimSpace(string(out)))
		}
		// Not running any more: stopped by someone else, which is fine.
	}
	s.stopped = true
	s.removeTempSocketDir()
	s.logger.Info("stopped PostgreSQL", "data_dir", s.dataDir, "port", s.port, "duration", time.Since(began))
	return nil
}

// URL is the connection URL of the server: user postgres, database postgres,
// over TCP on 127.0.0.1.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Port is the server's TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// DataDir is the absolute path of the data folder.
func (s *Server) DataDir() string { return s.dataDir }

// LogFile is the server log written by a server this package started.
func (s *Server) LogFile() string { return filepath.Join(s.dataDir, LogFileName) }

// Attached reports whether Start found the server already running and joined
// it rather than starting it.
func (s *Server) Attached() bool { return s.attached }

// ping connects to url once.
func ping(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parsing %s: %w", url, err)
	}
	cfg.ConnectTimeout = 2 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// freePort asks the kernel for a port free on 127.0.0.1 right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// secondsLeft is the time left before ctx's deadline in whole seconds, at
// least one.
func secondsLeft(ctx context.Context) int {
	d, ok := ctx.Deadline()
	if !ok {
		return int(StartTimeoutDefault / time.Second)
	}
	return max(1, int(time.Until(d)/time.Second))
}

// shellQuote quotes v for /bin/sh.
func shellQuote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// fileSize is the size of path, 0 when it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns the last lines written to the server log after offset, for
// error messages.
func logTail(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if offset <= int64(len(b)) {
		b = b[offset:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}
