package testsupport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
)

// A test database is a copy of a template database (CREATE DATABASE …
// TEMPLATE), made once per server for each content: the queue schema alone,
// or the queue schema and the store's migrations. Its name carries a digest
// of the SQL it was built from, so every test binary of a run — separate
// processes — agrees on it, builds it at most once (under an advisory lock),
// and a changed schema gets a new one. It is built under a temporary name
// and renamed when complete, so a binary that dies half-way leaves nothing
// that looks finished.

// templateKind is what a template database holds.
type templateKind int

const (
	templateQueue    templateKind = iota // the queue schema (Tasker's pgmq subset)
	templateMigrated                     // the queue schema and the store's migrations
)

func (k templateKind) String() string {
	if k == templateMigrated {
		return "migrated"
	}
	return "queue"
}

// templateVersion changes when the way templates are built changes.
const templateVersion = "1"

var templates [2]struct {
	once sync.Once
	name string
	err  error
}

// templateDatabase returns the name of the template database of kind on the
// test server, building it first if it does not exist.
func templateDatabase(ctx context.Context, base string, admin *pgxpool.Pool, kind templateKind) (string, error) {
	t := &templates[kind]
	t.once.Do(func() { t.name, t.err = buildTemplate(ctx, base, admin, kind) })
	return t.name, t.err
}

func buildTemplate(ctx context.Context, base string, admin *pgxpool.Pool, kind templateKind) (string, error) {
	digest, err := templateDigest(kind)
	if err != nil {
		return "", err
	}
	prefix := testDatabasePrefix + "tmpl_" + kind.String() + "_"
	name := prefix + digest
	conn, err := admin.Acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("building template %s: %w", name, err)
	}
	defer conn.Release()
	// A session lock: held while this binary builds, released on unlock or
	// when the connection goes.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1))", name); err != nil {
		return "", fmt.Errorf("locking template %s: %w", name, err)
	}
	defer func() { _, _ = conn.Exec(context.Background(), "SELECT pg_advisory_unlock(hashtext($1))", name) }()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", fmt.Errorf("looking for template %s: %w", name, err)
	}
	if exists {
		return name, nil
	}
	// Templates of an older schema are dropped, if no run still uses them;
	// not one that another binary is building (name_suffix), which it is
	// about to rename.
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE starts_with(datname, $1) AND length(datname) = $2",
		prefix, len(name))
	if err == nil {
		stale, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, s := range stale {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{s}.Sanitize())
		}
	}
	building := name + "_" + randomSuffix()[:6]
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()); err != nil {
		return "", fmt.Errorf("creating template %s: %w", name, err)
	}
	if err := fillTemplate(ctx, base, building, kind); err != nil {
		_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{building}.Sanitize()+" WITH (FORCE)")
		return "", fmt.Errorf("building template %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("naming template %s: %w", name, err)
	}
	return name, nil
}

// fillTemplate installs the template's content into database name, and
// closes every connection to it: a database is copied only while nobody is
// connected to it.
func fillTemplate(ctx context.Context, base, name string, kind templateKind) error {
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, databaseURL(cfg, name))
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := queue.Install(ctx, pool); err != nil {
		return fmt.Errorf("installing the queue schema: %w", err)
	}
	if kind == templateMigrated {
		if _, err := store.Migrate(ctx, pool); err != nil {
			return fmt.Errorf("migrating: %w", err)
		}
	}
	return nil
}

// templateDigest names the content of a template: the SQL it is built from.
func templateDigest(kind templateKind) (string, error) {
	h := sha256.New()
	h.Write([]byte(templateVersion))
	subset, err := queue.SubsetSQL()
	if err != nil {
		return "", err
	}
	for _, s := range subset {
		h.Write([]byte(s))
	}
	if kind == templateMigrated {
		ms, err := store.Migrations()
		if err != nil {
			return "", err
		}
		for _, m := range ms {
			h.Write([]byte(m.SQL))
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// missingDatabase reports whether err says a database does not exist.
func missingDatabase(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "3D000" // invalid_catalog_name
}

// createFrom creates database name as a copy of template. A copy fails
// while another session is connected to the template (only a moment, when
// another binary has just built it); it is tried again.
func createFrom(ctx context.Context, admin *pgxpool.Pool, name, template string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	for {
		_, err := admin.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" { // object_in_use
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (template %s in use)", ctx.Err(), template)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
