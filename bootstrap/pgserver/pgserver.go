// Package pgserver runs a private PostgreSQL server from the machine's
// PostgreSQL binaries. The node uses it when no database URL is configured,
// and the tests use it when there is no server to connect to.
//
// The data folder is created with initdb on the first start (user postgres,
// UTF8, C locale) and reused on the next ones.
//
// The server is closed to other local users: it listens on no TCP address,
// only on a unix socket in a folder of its own that only its account can
// enter (the data folder, mode 0700, or a temporary folder of mode 0700 when
// the data folder's path is too long for a socket name). Its pg_hba.conf
// trusts that socket and rejects every TCP connection; a cluster made by an
// earlier version, which trusted TCP on 127.0.0.1, is rewritten to those
// rules on its next start or join (the old file is kept beside it).
//
// When a live server already owns the data folder (its postmaster.pid names a
// running postgres), Start does not fail: it joins that server, reading its
// socket from postmaster.pid, and Server.Attached reports it. Join does only
// that, and returns ErrNotRunning when there is none. Stop stops the server
// on the data folder either way.
//
// PostgreSQL refuses to run as root. When the caller is root, initdb, pg_ctl
// and so the server run as the postgres system user: the data folder (and a
// temporary socket folder) are given to that user. Every folder above the
// data folder must be searchable by it; folders are never opened up on the
// caller's behalf. When one is closed (such as /root, mode 0700), the data
// folder is placed under Options.FallbackRoot instead (/var/lib/tasker by
// default), at a name derived from the configured path, so every command run
// with the same configuration finds the same server; the log says where.
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
	"net/url"
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
	// PortDefault is the port number of the server's socket when none is
	// asked for. With no TCP listener it only names the socket file
	// (.s.PGSQL.5432), which lives in a folder of the server's own.
	PortDefault = 5432
	// FallbackRootDefault is where data folders go that the server's account
	// cannot reach where they were configured.
	FallbackRootDefault = "/var/lib/tasker"
	// LogFileName is the server log, kept in the data folder.
	LogFileName = "postgresql.log"
)

// ErrNotRunning is returned by Join when no server runs on the data folder.
var ErrNotRunning = errors.New("no PostgreSQL server is running on the data folder")

// Options configure Start and Join.
type Options struct {
	// DataDir is the PostgreSQL data folder; it is created when missing and
	// reused when it holds a cluster. Required; made absolute.
	DataDir string
	// Port numbers the server's unix socket (.s.PGSQL.<port>). Ignored when
	// joining a running server. Defaults to PortDefault.
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
	// FallbackRoot holds the data folder when the caller is root and the
	// postgres account cannot enter a folder above DataDir. Defaults to
	// FallbackRootDefault.
	FallbackRoot string
}

// Server is a PostgreSQL server on a data folder, started or joined by Start.
type Server struct {
	dataDir   string
	port      int
	bins      binaries
	acct      *account
	logger    *slog.Logger
	attached  bool
	socketDir string
	tempSock  bool // socketDir is a temporary folder to remove on Stop

	mu      sync.Mutex
	stopped bool
}

// Start starts a server on opts.DataDir, initialising the folder first when
// needed, or joins the server already running on it, and returns once the
// server accepts connections.
func Start(ctx context.Context, opts Options) (*Server, error) {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(opts.StartTimeout, StartTimeoutDefault))
	defer cancel()
	s, err := prepare(opts, true)
	if err != nil {
		return nil, err
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
	if _, err := s.secureHBAFile(); err != nil { // nothing runs yet: no reload
		return nil, err
	}
	if err := s.prepareSocketDir(); err != nil {
		return nil, err
	}
	if err := s.launch(ctx, cmp.Or(opts.Port, PortDefault), opts.NoSync); err != nil {
		s.removeTempSocketDir()
		return nil, err
	}
	return s, nil
}

// Join joins the server running on opts.DataDir, found where Start would
// put it, and returns ErrNotRunning (wrapped, naming the folder) when there
// is none. It creates nothing and starts nothing.
func Join(ctx context.Context, opts Options) (*Server, error) {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(opts.StartTimeout, StartTimeoutDefault))
	defer cancel()
	s, err := prepare(opts, false)
	if err != nil {
		return nil, err
	}
	joined, err := s.join(ctx)
	if err != nil {
		return nil, err
	}
	if !joined {
		return nil, fmt.Errorf("%w %s", ErrNotRunning, s.dataDir)
	}
	return s, nil
}

// DataDirFor is where Start and Join keep the data folder of opts: DataDir
// made absolute, or its place under FallbackRoot when the caller is root and
// the postgres account cannot reach DataDir. It creates nothing.
func DataDirFor(opts Options) (string, error) {
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return "", fmt.Errorf("resolving data folder %s: %w", opts.DataDir, err)
	}
	acct, err := serverAccount()
	if err != nil {
		return "", err
	}
	return acct.placeDataDir(dataDir, cmp.Or(opts.FallbackRoot, FallbackRootDefault), false)
}

// prepare finds the binaries and the account and places the data folder;
// create says whether folders may be made on the way.
func prepare(opts Options, create bool) (*Server, error) {
	if opts.DataDir == "" {
		return nil, errors.New("starting PostgreSQL: a data folder is required")
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("resolving data folder %s: %w", opts.DataDir, err)
	}
	bins, err := findBinaries(opts.BinDir, exec.LookPath, defaultSearchGlobs)
	if err != nil {
		return nil, err
	}
	acct, err := serverAccount()
	if err != nil {
		return nil, err
	}
	logger := cmp.Or(opts.Logger, slog.New(slog.DiscardHandler))
	placed, err := acct.placeDataDir(dataDir, cmp.Or(opts.FallbackRoot, FallbackRootDefault), create)
	if err != nil {
		return nil, err
	}
	if placed != dataDir {
		logger.Info("the configured data folder cannot be reached by the server's account; using another",
			"configured", dataDir, "data_dir", placed, "account", acct.name)
		dataDir = placed
	}
	if create {
		if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
			return nil, fmt.Errorf("creating the folder of %s: %w", dataDir, err)
		}
	}
	return &Server{dataDir: dataDir, bins: bins, acct: acct, logger: logger}, nil
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
		if pm.port > 0 && pm.socketDir != "" {
			s.port, s.socketDir = pm.port, pm.socketDir
			err := ping(ctx, s.URL())
			if err == nil {
				s.attached = true
				s.logger.Info("joined running PostgreSQL", "data_dir", s.dataDir, "socket_dir", s.socketDir, "pid", pm.pid,
					"duration", time.Since(began))
				return true, s.closeJoined(ctx, pm)
			}
			// A server that says it is ready yet refuses us was started with
			// other settings: waiting will not help.
			if pm.status == "ready" {
				if readySince.IsZero() {
					readySince = time.Now()
				} else if time.Since(readySince) > 5*time.Second {
					return false, fmt.Errorf("a PostgreSQL server (pid %d) runs on data folder %s but does not answer on its socket in %s (%w): stop it (pg_ctl stop -D %s) or use another data folder",
						pm.pid, s.dataDir, pm.socketDir, err, s.dataDir)
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

// closeJoined applies the socket-only rules to a server started by an
// earlier version that still trusts TCP: the rewritten pg_hba.conf is
// reloaded at once, so TCP connections are refused from now on even though
// the listener stays until the server restarts.
func (s *Server) closeJoined(ctx context.Context, pm postmaster) error {
	rewritten, err := s.secureHBAFile()
	if err != nil {
		return err
	}
	if rewritten {
		conn, err := pgx.Connect(ctx, s.URL())
		if err != nil {
			return fmt.Errorf("reloading pg_hba.conf of %s: %w", s.dataDir, err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			return fmt.Errorf("reloading pg_hba.conf of %s: %w", s.dataDir, err)
		}
	}
	if pm.listen != "" {
		s.logger.Warn("the running PostgreSQL still listens on TCP (it refuses every TCP connection); it listens on its socket only after a restart",
			"data_dir", s.dataDir, "listen", pm.listen, "port", pm.port)
	}
	return nil
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
	args := []string{"-D", s.dataDir, "-U", "postgres", "--auth-local=trust", "--auth-host=reject", "-E", "UTF8", "--locale=C"}
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

// prepareSocketDir picks the folder of the server's unix socket: the data
// folder (0700, the server account's) when the socket's path fits, else a
// new temporary folder, also 0700 and the server account's.
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

// launch runs pg_ctl start and waits for the first connection.
func (s *Server) launch(ctx context.Context, port int, noSync bool) error {
	began := time.Now()
	s.port = port
	if err := s.pgCtlStart(ctx, noSync, fileSize(s.LogFile())); err != nil {
		return err
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
			return fmt.Errorf("waiting for PostgreSQL on its socket in %s: %w (last error: %v)", s.socketDir, ctx.Err(), err)
		case <-ticker.C:
		}
	}
	s.logger.Info("started PostgreSQL", "data_dir", s.dataDir, "socket_dir", s.socketDir, "duration", time.Since(began))
	return nil
}

// pgCtlStart runs pg_ctl start; logStart is the size of the server log
// before, so that an error quotes only what this start wrote.
func (s *Server) pgCtlStart(ctx context.Context, noSync bool, logStart int64) error {
	settings := []string{
		"-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=",
		"-c", "unix_socket_directories=" + s.socketDir,
		"-c", "unix_socket_permissions=0700",
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
		return fmt.Errorf("starting PostgreSQL on %s: %w\n%s\nserver log %s:\n%s",
			s.dataDir, err, strings.TrimSpace(string(out)), s.LogFile(), logTail(s.LogFile(), logStart))
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
// over its unix socket.
func (s *Server) URL() string {
	q := url.Values{"host": {s.socketDir}, "port": {strconv.Itoa(s.port)}, "sslmode": {"disable"}}
	return "postgres://postgres@/postgres?" + q.Encode()
}

// Port is the port number of the server's socket.
func (s *Server) Port() int { return s.port }

// SocketDir is the folder of the server's unix socket.
func (s *Server) SocketDir() string { return s.socketDir }

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
