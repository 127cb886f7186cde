package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
)

// database is the bench's own connection to the database the node uses.
type database struct {
	url    string
	client *bootstrap.Client
	pool   *pgxpool.Pool
	// kind is "embedded" or "url"; name and version describe the database.
	kind    string
	name    string
	version string
}

// openDatabase connects to cfg's database, starting (or joining) the
// embedded PostgreSQL of database.data_dir when no URL is configured, and
// installs the schemas. An embedded server it started is stopped by close.
func openDatabase(ctx context.Context, cfg *config.Config, log *slog.Logger) (*database, error) {
	opened, err := bootstrap.Open(ctx, cfg.Database, log)
	if err != nil {
		return nil, err
	}
	client := bootstrap.NewClient(opened, cfg, log)
	db := &database{url: client.URL, client: client, pool: client.Pool, kind: "url"}
	if client.Embedded {
		db.kind = "embedded"
	}
	if err := db.pool.QueryRow(ctx, sqlDatabase).Scan(&db.name, &db.version); err != nil {
		db.close()
		return nil, fmt.Errorf("reading the database name: %w", err)
	}
	return db, nil
}

func (db *database) close() { db.client.Close() }

// commits reads the database's committed transaction count from
// pg_stat_database on a connection of its own, so that the bench's pooled
// connections do not sit on stats they have not flushed yet.
func (db *database) commits(ctx context.Context) (int64, error) {
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return 0, fmt.Errorf("reading pg_stat_database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	if err := conn.QueryRow(ctx, sqlCommits).Scan(&n); err != nil {
		return 0, fmt.Errorf("reading pg_stat_database: %w", err)
	}
	return n, nil
}

// settledCommits reads the commit count until it stops moving: backends
// report their counts when they exit or at most once a second, so the
// count of a node that has just stopped arrives a moment later.
func (db *database) settledCommits(ctx context.Context) (int64, error) {
	last, err := db.commits(ctx)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		n, err := db.commits(ctx)
		if err != nil {
			return 0, err
		}
		// One commit is the previous read's own.
		if n-last <= 1 {
			return n, nil
		}
		last = n
	}
	return last, nil
}
