package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrateLockKey serialises concurrent migrators (several nodes, parallel
// tests) with a transaction-scoped advisory lock.
const migrateLockKey = 7_290_417_001

// Migration is one embedded schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("reading embedded migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		if !ok {
			return nil, fmt.Errorf("migration file %s: want NNNN_name.sql", e.Name())
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration file %s: version: %w", e.Name(), err)
		}
		body, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// SchemaVersion is the newest embedded migration: the version a node needs.
func SchemaVersion() int {
	ms, err := Migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// Migrate applies the embedded migrations not yet applied, each in its own
// transaction, and returns the versions it applied. Applying twice is a
// no-op.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]int, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	var applied []int
	for _, m := range ms {
		did, err := applyMigration(ctx, pool, m)
		if err != nil {
			return applied, fmt.Errorf("applying migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if did {
			applied = append(applied, m.Version)
		}
	}
	return applied, nil
}

func applyMigration(ctx context.Context, pool *pgxpool.Pool, m Migration) (bool, error) {
	var did bool
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := stmt("migrate_lock").exec(ctx, tx, args{"key": int64(migrateLockKey)}); err != nil {
			return err
		}
		if _, err := stmt("migrate_prepare").exec(ctx, tx, nil); err != nil {
			return err
		}
		var exists bool
		if err := stmt("migrate_applied").queryRow(ctx, tx, args{"version": m.Version}).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return err
		}
		if _, err := stmt("migrate_record").exec(ctx, tx, args{"version": m.Version, "name": m.Name}); err != nil {
			return err
		}
		did = true
		return nil
	})
	return did, err
}

// ErrSchemaBehind is returned by CheckSchema when the task schema is missing
// or older than this build's; `tasker migrate` (or starting a node) applies
// the migrations.
var ErrSchemaBehind = errors.New("the task schema is not at this build's version")

// CheckSchema compares the database's task schema with SchemaVersion
// without changing anything: for clients that must not run DDL.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	v, err := CurrentVersion(ctx, pool)
	if err != nil {
		return err
	}
	switch need := SchemaVersion(); {
	case v < need:
		return fmt.Errorf("%w: the database is at version %d, this build needs %d", ErrSchemaBehind, v, need)
	case v > need:
		return fmt.Errorf("the task schema is at version %d, newer than this build knows (%d): use a newer tasker", v, need)
	}
	return nil
}

// CurrentVersion returns the newest applied migration, or 0 when the schema
// is not installed.
func CurrentVersion(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var v int
	err := stmt("migrate_current").queryRow(ctx, pool, nil).Scan(&v)
	if err != nil {
		var present bool
		if err2 := stmt("migrate_installed").queryRow(ctx, pool, nil).Scan(&present); err2 == nil && !present {
			return 0, nil
		}
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return v, nil
}
