package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/bootstrap/pgserver"
	"github.com/tasker-run/tasker/config"
)

// database is the bench's own connection to the database the node uses.
type database struct {
	url    string
	client *bootstrap.Client
	pool   *pgxpool.Pool
	// embedded is the embedded server when the bench started it; close
	// stops it again. A server that was already running is left alone.
	embedded *pgserver.Server
	// kind is "embedded" or "url"; name and version describe the database.
	kind    string
	name    string
	version string
}

// openDatabase connects to cfg's database, starting (or joining) the
// embedded PostgreSQL of database.data_dir when no URL is configured, and
// installs the schemas.
func openDatabase(ctx context.Context, cfg *config.Config, log *slog.Logger) (*database, error) {
	db := &database{url: cfg.Database.URL, kind: "url"}
	if db.url == "" {
		srv, err := bootstrap.StartEmbedded(ctx, cfg.Database, log)
		if err != nil {
			return nil, err
		}
		if !srv.Attached() {
			db.embedded = srv
		}
		db.url, db.kind = srv.URL(), "embedded"
	}
	c := *cfg
	c.Database.URL = db.url
	client, err := bootstrap.Connect(ctx, &c, log)
	if err != nil {
		db.close()
		return nil, err
	}
	db.client, db.pool = client, client.Pool
	if err := db.pool.QueryRow(ctx, sqlDatabase).Scan(&db.name, &db.version); err != nil {
		db.close()
		return nil, fmt.Errorf("reading the database name: %w", err)
	}
	return db, nil
}

func (db *database) close() {
	if db.client != nil {
		db.client.Close()
	}
	if db.embedded != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = db.embedded.Stop(ctx)
	}
}

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
