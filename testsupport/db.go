package testsupport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/store"
)

// EnvDatabaseURL names the variable that points the tests at a server of the
// caller's choosing. The URL must allow CREATE DATABASE.
const EnvDatabaseURL = "TASKER_TEST_DATABASE_URL"

// localServerURL is the server this machine kind starts before a session.
const localServerURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// testDatabasePrefix marks databases created by tests so a crashed run's
// leftovers can be recognised.
const testDatabasePrefix = "tasker_test_"

var (
	serverOnce sync.Once
	serverURL  string
	serverKind string
	serverErr  error
	adminPool  *pgxpool.Pool
)

// server picks the PostgreSQL for this test binary, once.
func server() (string, *pgxpool.Pool, error) {
	serverOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		serverURL, serverKind, serverErr = chooseServer(ctx)
		if serverErr != nil {
			return
		}
		cfg, err := pgxpool.ParseConfig(serverURL)
		if err != nil {
			serverErr = fmt.Errorf("parsing test server URL: %w", err)
			return
		}
		cfg.MaxConns = 4
		adminPool, serverErr = pgxpool.NewWithConfig(ctx, cfg)
	})
	return serverURL, adminPool, serverErr
}

// chooseServer applies the order documented on the package.
func chooseServer(ctx context.Context) (url, kind string, err error) {
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		return u, "env", nil
	}
	if os.Getenv("TASKER_TEST_POSTGRES") != "embedded" && reachable(ctx, localServerURL) {
		return localServerURL, "local", nil
	}
	u, err := sharedEmbeddedServer(ctx)
	if err != nil {
		return "", "", fmt.Errorf("no %s, no server on 127.0.0.1:5432, and the private server failed: %w", EnvDatabaseURL, err)
	}
	return u, "embedded", nil
}

// reachable reports whether a server answers at url within a second.
func reachable(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return false
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx) == nil
}

// ServerKind says which server this test binary uses: "env", "local" or
// "embedded".
func ServerKind(t testing.TB) string {
	t.Helper()
	if _, _, err := server(); err != nil {
		t.Fatalf("test PostgreSQL: %v", err)
	}
	return serverKind
}

// NewDatabaseURL creates a fresh database for this test, with the queue
// schema installed, and returns its URL. The database is dropped when the
// test ends.
func NewDatabaseURL(t testing.TB) string {
	t.Helper()
	return newDatabase(t, templateQueue)
}

// newDatabase creates a fresh database for this test as a copy of the
// template of kind, and returns its URL. The database is dropped when the
// test ends.
func newDatabase(t testing.TB, kind templateKind) string {
	t.Helper()
	base, admin, err := server()
	if err != nil {
		t.Fatalf("test PostgreSQL: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	template, err := templateDatabase(ctx, base, admin, kind)
	if err != nil {
		t.Fatalf("test database template: %v", err)
	}
	name := testDatabasePrefix + randomSuffix()
	err = createFrom(ctx, admin, name, template)
	if missingDatabase(err) {
		// A run of another checkout, on another schema, dropped it as
		// stale between two copies: build it again.
		if template, err = buildTemplate(ctx, base, admin, kind); err == nil {
			err = createFrom(ctx, admin, name, template)
		}
	}
	if err != nil {
		t.Fatalf("creating test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
		}
	})
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatalf("parsing test server URL: %v", err)
	}
	return databaseURL(cfg, name)
}

// NewDB is NewDatabaseURL with a pool on the new database, closed when the
// test ends (before the database is dropped).
func NewDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	url := NewDatabaseURL(t)
	pool, err := OpenPool(context.Background(), url)
	if err != nil {
		t.Fatalf("opening pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// databaseURL returns a URL for database name on the server of cfg.
func databaseURL(cfg *pgx.ConnConfig, name string) string {
	host := cfg.Host
	if len(host) > 0 && host[0] == '/' {
		// Unix socket directory: pass it as a query parameter.
		return fmt.Sprintf("postgres://%s@/%s?host=%s&port=%d&sslmode=disable", cfg.User, name, host, cfg.Port)
	}
	userinfo := cfg.User
	if cfg.Password != "" {
		userinfo += ":" + cfg.Password
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", userinfo, host, cfg.Port, name)
}

func randomSuffix() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// OpenPool opens a pool on url with the sessions a node uses
// (store.SessionSettings), so tests plan the store's statements as
// production does.
func OpenPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	for k, v := range store.SessionSettings() {
		pc.ConnConfig.RuntimeParams[k] = v
	}
	return pgxpool.NewWithConfig(ctx, pc)
}
