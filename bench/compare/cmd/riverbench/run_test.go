package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// testServer is the server the burn-down test creates its database on:
// TASKER_COMPARE_TEST_URL, else the local server when it answers.
func testServer(t *testing.T) string {
	t.Helper()
	u := os.Getenv("TASKER_COMPARE_TEST_URL")
	if u == "" {
		u = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		if os.Getenv("TASKER_COMPARE_TEST_URL") != "" {
			t.Fatalf("TASKER_COMPARE_TEST_URL: %v", err)
		}
		t.Skipf("no PostgreSQL server on 127.0.0.1:5432 (set TASKER_COMPARE_TEST_URL): %v", err)
	}
	_ = conn.Close(ctx)
	return u
}

func TestRunBurnsDownEveryJobAndCountsTheDatabasesWrites(t *testing.T) {
	server := testServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last in first out: the drop, then the close.
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	name := fmt.Sprintf("riverbench_test_%d", os.Getpid())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	cfg, err := pgx.ParseConfig(server)
	if err != nil {
		t.Fatal(err)
	}
	dbURL := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
	if cfg.Password != "" {
		dbURL = fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Password, cfg.Host, cfg.Port, name)
	}

	const jobs = 1200 // more than one insert batch
	o := options{DatabaseURL: dbURL, Schema: "riverbench", Jobs: jobs, Workers: 50, Timeout: time.Minute}
	// A second run on the same database starts from an empty river_job.
	for i := range 2 {
		r, err := run(ctx, o)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if r.JobsCompleted != jobs {
			t.Errorf("run %d: %d jobs completed, want %d", i, r.JobsCompleted, jobs)
		}
		if r.WindowS <= 0 || r.JobsPerSec <= 0 {
			t.Errorf("run %d: window %vs, %v jobs/s", i, r.WindowS, r.JobsPerSec)
		}
		// Each job is inserted once and updated at least when it starts and
		// when it completes.
		if r.RowsInserted < jobs || r.RowsUpdated < 2*jobs {
			t.Errorf("run %d: %d rows inserted, %d updated for %d jobs", i, r.RowsInserted, r.RowsUpdated, jobs)
		}
		if r.Commits <= 0 || r.WALBytes <= 0 || r.SynchronousCommit == "" {
			t.Errorf("run %d: %d commits, %d WAL bytes, synchronous_commit %q", i, r.Commits, r.WALBytes, r.SynchronousCommit)
		}
	}
}
