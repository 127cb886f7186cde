package queue

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is what every queue operation runs on: *pgxpool.Pool, *pgxpool.Conn, *pgx.Conn or
// pgx.Tx. Passing a transaction makes the operation part of it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Providers reported by Install.
const (
	// ProviderPgmq means the database already had the real pgmq; Tasker left it alone.
	ProviderPgmq = "pgmq"
	// ProviderTasker means schema pgmq holds Tasker's own implementation of the subset.
	ProviderTasker = "tasker"
)

// InstallResult says which pgmq implementation the database uses.
type InstallResult struct {
	// Provider is ProviderPgmq or ProviderTasker.
	Provider string
	// Version is the version of Tasker's subset now installed; 0 for the real pgmq.
	Version int
	// Applied lists the versions this call installed; empty when nothing changed.
	Applied []int
}

// ErrForeignSchema is returned by Install when schema pgmq exists but is neither the real
// pgmq nor Tasker's subset. Tasker never alters a schema it does not own.
var ErrForeignSchema = errors.New("schema pgmq exists but has neither pgmq's functions nor Tasker's install record")

//go:embed sql/*.sql
var sqlFiles embed.FS

// installLockKey is the advisory lock every installer takes, so parallel tests and several
// nodes starting at once install exactly once. Advisory locks are per database.
const installLockKey int64 = 0x7461736b6572_01 // "tasker" + 1

// pgmqFunctions are the functions whose presence identifies a pgmq install.
var pgmqFunctions = []string{"archive", "create", "delete", "read", "send"}

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded SQL files in version order. Each file is named
// NNNN_description.sql; NNNN is its version.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(sqlFiles, "sql")
	if err != nil {
		return nil, fmt.Errorf("listing queue sql: %w", err)
	}
	var out []migration
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		if !ok || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("queue sql file %s: name must be NNNN_description.sql", e.Name())
		}
		v, err := strconv.Atoi(prefix)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("queue sql file %s: bad version prefix", e.Name())
		}
		body, err := fs.ReadFile(sqlFiles, path.Join("sql", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading queue sql %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("queue sql files %s and %s share version %d", out[i-1].name, out[i].name, out[i].version)
		}
	}
	return out, nil
}

// SubsetSQL returns the SQL of Tasker's pgmq subset, file by file in version order:
// what Install runs on a database without pgmq (for a test that builds its databases
// from a template and must know when the subset changed).
func SubsetSQL() ([]string, error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.sql
	}
	return out, nil
}

// LatestVersion is the newest version of Tasker's pgmq subset this build carries.
func LatestVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Install detects a real pgmq (schema pgmq with its functions) and leaves it untouched, or
// installs Tasker's subset: idempotent, versioned, with ownership recorded in
// pgmq.tasker_install. It runs in its own transaction (a savepoint when db is a pgx.Tx)
// under an advisory lock, so concurrent callers are safe.
func Install(ctx context.Context, db DB) (InstallResult, error) {
	b, ok := db.(beginner)
	if !ok {
		return InstallResult{}, fmt.Errorf("installing pgmq: %T cannot begin a transaction", db)
	}
	ms, err := migrations()
	if err != nil {
		return InstallResult{}, err
	}
	tx, err := b.Begin(ctx)
	if err != nil {
		return InstallResult{}, fmt.Errorf("installing pgmq: beginning transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()

	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", installLockKey); err != nil {
		return InstallResult{}, fmt.Errorf("installing pgmq: taking install lock: %w", err)
	}
	st, err := detect(ctx, tx)
	if err != nil {
		return InstallResult{}, err
	}
	switch {
	case st.schema && !st.ours && st.functions == len(pgmqFunctions):
		if err := tx.Commit(ctx); err != nil {
			return InstallResult{}, fmt.Errorf("detecting pgmq: committing: %w", err)
		}
		return InstallResult{Provider: ProviderPgmq}, nil
	case st.schema && !st.ours:
		return InstallResult{}, fmt.Errorf("installing pgmq: %w (found %d of the functions %s)",
			ErrForeignSchema, st.functions, strings.Join(pgmqFunctions, ", "))
	}

	res := InstallResult{Provider: ProviderTasker, Version: st.version}
	for _, m := range ms {
		if m.version <= st.version {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return InstallResult{}, fmt.Errorf("installing pgmq subset %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO pgmq.tasker_install (version) VALUES ($1)", m.version); err != nil {
			return InstallResult{}, fmt.Errorf("recording pgmq subset version %d: %w", m.version, err)
		}
		res.Version = m.version
		res.Applied = append(res.Applied, m.version)
	}
	if err := tx.Commit(ctx); err != nil {
		return InstallResult{}, fmt.Errorf("installing pgmq: committing: %w", err)
	}
	return res, nil
}

// ErrSchemaBehind is returned by Check when the queue schema is missing or
// older than this build's; `tasker migrate` (or starting a node) installs it.
var ErrSchemaBehind = errors.New("the queue schema is not installed at this build's version")

// Check reports which queue provider the database has, without changing
// anything: for clients that must not run DDL. Tasker's subset must be at
// LatestVersion; an older one (or none) is ErrSchemaBehind, a newer one is
// an error that says to use a newer build.
func Check(ctx context.Context, db DB) (InstallResult, error) {
	st, err := detect(ctx, db)
	if err != nil {
		return InstallResult{}, err
	}
	switch {
	case st.schema && !st.ours && st.functions == len(pgmqFunctions):
		return InstallResult{Provider: ProviderPgmq}, nil
	case st.schema && !st.ours:
		return InstallResult{}, fmt.Errorf("%w (found %d of the functions %s)", ErrForeignSchema, st.functions, strings.Join(pgmqFunctions, ", "))
	case !st.schema:
		return InstallResult{}, fmt.Errorf("%w: there is no schema pgmq", ErrSchemaBehind)
	case st.version < LatestVersion():
		return InstallResult{}, fmt.Errorf("%w: Tasker's pgmq subset is at version %d, this build needs %d", ErrSchemaBehind, st.version, LatestVersion())
	case st.version > LatestVersion():
		return InstallResult{}, fmt.Errorf("the queue schema (Tasker's pgmq subset) is at version %d, newer than this build knows (%d): use a newer tasker", st.version, LatestVersion())
	}
	return InstallResult{Provider: ProviderTasker, Version: st.version}, nil
}

type installState struct {
	schema    bool // schema pgmq exists
	ours      bool // pgmq.tasker_install exists
	version   int  // highest version recorded in pgmq.tasker_install
	functions int  // how many of pgmqFunctions exist in schema pgmq
}

func detect(ctx context.Context, db DB) (installState, error) {
	var st installState
	err := db.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgmq'),
		       to_regclass('pgmq.tasker_install') IS NOT NULL,
		       (SELECT count(DISTINCT p.proname)
		          FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
		         WHERE n.nspname = 'pgmq' AND p.proname = ANY($1::text[]))`,
		pgmqFunctions).Scan(&st.schema, &st.ours, &st.functions)
	if err != nil {
		return st, fmt.Errorf("detecting pgmq: %w", err)
	}
	if st.ours {
		if err := db.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM pgmq.tasker_install").Scan(&st.version); err != nil {
			return st, fmt.Errorf("reading pgmq subset version: %w", err)
		}
	}
	return st, nil
}
