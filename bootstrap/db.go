package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/bootstrap/pgserver"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
)

// DB is an open database with Tasker's schemas installed: the one of
// database.url, or the embedded PostgreSQL of database.data_dir. The node,
// `tasker migrate` and the bench open it with Open; the other commands with
// Attach, which changes nothing.
type DB struct {
	// Pool is the connection pool.
	Pool *pgxpool.Pool
	// URL is the connection string the pool was opened with.
	URL string
	// Embedded says the database is the embedded PostgreSQL.
	Embedded bool

	// server is the embedded server when Open started it; Close stops it
	// again. A server that was already running (a node in the same folder,
	// or one left by a node that was killed) is not this DB's to stop.
	server    *pgserver.Server
	closeOnce sync.Once
	closeErr  error
}

// Open connects to cfg's database, starting (or joining) the embedded
// PostgreSQL when no URL is configured, and installs or upgrades the queue
// and task schemas. On error, whatever it started is stopped again.
func Open(ctx context.Context, cfg config.Database, log *slog.Logger) (*DB, error) {
	return connect(ctx, cfg, func() (*pgserver.Server, error) { return startEmbedded(ctx, cfg, log) },
		func(db *DB) error {
			installed, err := queue.Install(ctx, db.Pool)
			if err != nil {
				return fmt.Errorf("installing the queue schema: %w", err)
			}
			applied, err := store.Migrate(ctx, db.Pool)
			if err != nil {
				return err
			}
			log.Info("schema ready", "queue_provider", installed.Provider, "migrations_applied", len(applied),
				"schema_version", store.SchemaVersion())
			return nil
		})
}

// Attach connects to cfg's database as it is, for clients: it joins the
// embedded PostgreSQL only when a server already runs on its data folder
// (never starting one, never creating a folder) and runs no DDL. It checks
// that the queue and task schemas are the ones this build needs and, when
// they are not, says what to do.
func Attach(ctx context.Context, cfg config.Database, log *slog.Logger) (*DB, error) {
	return connect(ctx, cfg, func() (*pgserver.Server, error) { return joinEmbedded(ctx, cfg, log) },
		func(db *DB) error {
			if _, err := queue.Check(ctx, db.Pool); err != nil {
				return schemaAdvice(err, queue.ErrSchemaBehind)
			}
			if err := store.CheckSchema(ctx, db.Pool); err != nil {
				return schemaAdvice(err, store.ErrSchemaBehind)
			}
			return nil
		})
}

// connect opens the pool on cfg.URL, or on the embedded server embedded
// returns when there is none, then runs schema on it. On error, whatever it
// started is stopped again.
func connect(ctx context.Context, cfg config.Database, embedded func() (*pgserver.Server, error), schema func(*DB) error) (db *DB, err error) {
	db = &DB{URL: cfg.URL}
	defer func() {
		if err != nil {
			err = errors.Join(err, db.Close(context.WithoutCancel(ctx)))
			db = nil
		}
	}()
	if db.URL == "" {
		srv, err := embedded()
		if err != nil {
			return db, err
		}
		if !srv.Attached() {
			db.server = srv
		}
		db.URL, db.Embedded = srv.URL(), true
	}
	if db.Pool, err = openPool(ctx, db.URL, cfg); err != nil {
		return db, err
	}
	return db, schema(db)
}

// joinEmbedded joins the embedded PostgreSQL of cfg.DataDir if it runs.
func joinEmbedded(ctx context.Context, cfg config.Database, log *slog.Logger) (*pgserver.Server, error) {
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("database.data_dir: %w", err)
	}
	srv, err := pgserver.Join(ctx, pgserver.Options{DataDir: dir, Logger: log})
	if errors.Is(err, pgserver.ErrNotRunning) {
		return nil, fmt.Errorf("no database: database.url is not set and %w; start a node here first (tasker node), or set database.url or TASKER_DATABASE_URL", err)
	}
	if err != nil {
		return nil, fmt.Errorf("joining the embedded PostgreSQL: %w", err)
	}
	return srv, nil
}

// schemaAdvice adds what to do to a schema check's error.
func schemaAdvice(err, behind error) error {
	if errors.Is(err, behind) {
		return fmt.Errorf("%w: run tasker migrate (or start a node of this version), which installs or upgrades it", err)
	}
	return err
}

// Close closes the pool and stops the embedded server if Open started it.
// It is idempotent.
func (db *DB) Close(ctx context.Context) error {
	db.closeOnce.Do(func() {
		if db.Pool != nil {
			db.Pool.Close()
		}
		if db.server != nil {
			db.closeErr = db.server.Stop(ctx)
		}
	})
	return db.closeErr
}

// poolConfig is the pool configuration of url: db's limits, the store's
// session settings, and no TLS to this machine unless the URL asks for it.
func poolConfig(url string, db config.Database) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	pc.MaxConns = int32(db.MaxConns)
	pc.ConnConfig.ConnectTimeout = db.ConnectTimeout.Duration()
	for k, v := range store.SessionSettings() {
		pc.ConnConfig.RuntimeParams[k] = v
	}
	localWithoutTLS(pc.ConnConfig, url)
	return pc, nil
}

// localWithoutTLS drops TLS from a connection that never leaves the machine
// (a loopback address or a unix socket) when neither the URL nor PGSSLMODE
// chooses an sslmode. The driver's default, prefer, negotiates TLS whenever
// the server offers it, as Debian's does on loopback, which costs a fifth of
// the steps per second and protects nothing the kernel does not already.
// A URL that names sslmode (anywhere, even in a password) is left alone.
func localWithoutTLS(cc *pgx.ConnConfig, url string) {
	if strings.Contains(url, "sslmode") || os.Getenv("PGSSLMODE") != "" || cc.TLSConfig == nil {
		return
	}
	local := func(host string) bool { return strings.HasPrefix(host, "/") || config.LoopbackHost(host) }
	if !local(cc.Host) {
		return
	}
	for _, f := range cc.Fallbacks {
		if f.Host != cc.Host || f.Port != cc.Port {
			return // several hosts: leave the driver's choice
		}
	}
	cc.TLSConfig, cc.Fallbacks = nil, nil
}

// startEmbedded starts (or joins) the embedded PostgreSQL of cfg.DataDir.
func startEmbedded(ctx context.Context, cfg config.Database, log *slog.Logger) (*pgserver.Server, error) {
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("database.data_dir: %w", err)
	}
	log.Info("no database.url configured; starting the embedded PostgreSQL", "data_dir", dir)
	srv, err := pgserver.Start(ctx, pgserver.Options{DataDir: dir, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("starting the embedded PostgreSQL: %w", err)
	}
	log.Info("embedded PostgreSQL running", "port", srv.Port(), "joined_running_server", srv.Attached())
	return srv, nil
}

func openPool(ctx context.Context, url string, db config.Database) (*pgxpool.Pool, error) {
	pc, err := poolConfig(url, db)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("opening the database pool: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, db.ConnectTimeout.Duration())
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	return pool, nil
}
