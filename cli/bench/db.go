package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
)

// Application names of the bench's sessions, by which pg_stat_activity
// tells them from other clients of the database.
const (
	appBench = "tasker-bench"
	appNode  = "tasker-bench-node"
)

// database is the bench's own connection to the database the node uses.
type database struct {
	// url reaches the database as the bench (appBench); nodeURL as the
	// bench's node (appNode).
	url     string
	nodeURL string
	client  *bootstrap.Client
	pool    *pgxpool.Pool
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
	// The bench's sessions carry its application name: a pool of its own,
	// configured as the one Open made.
	pc := opened.Pool.Config().Copy()
	pc.ConnConfig.RuntimeParams["application_name"] = appBench
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		_ = opened.Close(context.WithoutCancel(ctx)) // the pool's error is the one to report
		return nil, fmt.Errorf("opening the bench's pool: %w", err)
	}
	opened.Pool.Close()
	opened.Pool = pool
	client := bootstrap.NewClient(opened, cfg, log)
	db := &database{client: client, pool: client.Pool, kind: "url"}
	if client.Embedded {
		db.kind = "embedded"
	}
	if db.url, err = withApplicationName(client.URL, appBench); err == nil {
		db.nodeURL, err = withApplicationName(client.URL, appNode)
	}
	if err == nil {
		err = db.pool.QueryRow(ctx, sqlDatabase).Scan(&db.name, &db.version)
	}
	if err != nil {
		db.close()
		return nil, fmt.Errorf("reading the database name: %w", err)
	}
	return db, nil
}

// withApplicationName is the connection string s (a URL or keyword=value
// pairs) with application_name set to name.
func withApplicationName(s, name string) (string, error) {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", fmt.Errorf("database.url: %w", err)
		}
		q := u.Query()
		q.Set("application_name", name)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return s + " application_name=" + name, nil
}

func (db *database) close() { db.client.Close() }
