// Command riverbench measures River's burn-down of no-op jobs on a database:
// it migrates River's tables into a schema of their own, inserts --jobs
// jobs, starts a client with --workers workers and reports, as JSON, the rate
// from the first job started to the last completed, with the database's
// commits, rows written and WAL per job. Commits stay durable: the session's
// synchronous_commit is left as the server has it, and reported.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// appName marks the client's connections, so the wait for their statistics
// can tell them from the bench's own.
const appName = "riverbench-client"

// insertBatch is the number of jobs one InsertManyFast call writes.
const insertBatch = 5000

type options struct {
	DatabaseURL string
	Schema      string
	Jobs        int
	Workers     int
	Timeout     time.Duration
}

// Report is what one burn-down measured. Rates are per second, times in
// seconds; the per-job figures include inserting the jobs.
type Report struct {
	System            string  `json:"system"`
	RiverVersion      string  `json:"river_version"`
	PostgresVersion   string  `json:"postgres_version"`
	SynchronousCommit string  `json:"synchronous_commit"`
	Database          string  `json:"database_name"`
	Schema            string  `json:"schema"`
	Jobs              int     `json:"jobs"`
	Workers           int     `json:"workers"`
	JobsCompleted     int64   `json:"jobs_completed"`
	InsertS           float64 `json:"insert_s"`
	// WindowS runs from the first job's attempt starting to the last job's
	// completion, both as the database recorded them; ElapsedS is the wall
	// time from starting the client to seeing every job completed.
	WindowS    float64 `json:"window_s"`
	ElapsedS   float64 `json:"elapsed_s"`
	JobsPerSec float64 `json:"jobs_per_sec"`
	// Commits is the database's xact_commit delta (every client of the
	// database counts); RowsWritten sums n_tup_ins, n_tup_upd and n_tup_del
	// of the tables in Schema; WALBytes is the server's WAL position delta
	// (every database of the server counts).
	Commits           int64   `json:"pg_commits"`
	CommitsPerJob     float64 `json:"pg_commits_per_job"`
	RowsInserted      int64   `json:"rows_inserted"`
	RowsUpdated       int64   `json:"rows_updated"`
	RowsDeleted       int64   `json:"rows_deleted"`
	RowsWrittenPerJob float64 `json:"rows_written_per_job"`
	WALBytes          int64   `json:"wal_bytes"`
	WALBytesPerJob    float64 `json:"wal_bytes_per_job"`
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "riverbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	r, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "riverbench:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "riverbench:", err)
		os.Exit(1)
	}
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("riverbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL (default: $DATABASE_URL)")
	fs.StringVar(&o.Schema, "schema", "riverbench", "schema for River's tables; its river_job table is emptied first")
	fs.IntVar(&o.Jobs, "jobs", 200000, "number of no-op jobs to insert, then burn down")
	fs.IntVar(&o.Workers, "workers", 2000, "River workers (MaxWorkers of the default queue)")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "give up when the run takes longer")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.DatabaseURL == "":
		return o, errors.New("--database-url is required (or set DATABASE_URL)")
	case o.Jobs < 1:
		return o, fmt.Errorf("--jobs must be at least 1, got %d", o.Jobs)
	case o.Workers < 1:
		return o, fmt.Errorf("--workers must be at least 1, got %d", o.Workers)
	case !schemaName.MatchString(o.Schema):
		return o, fmt.Errorf("--schema %q is not a plain lower-case identifier", o.Schema)
	case o.Schema == "tasker" || o.Schema == "pgmq" || o.Schema == "public":
		return o, fmt.Errorf("--schema %q is taken; River's tables need a schema of their own", o.Schema)
	}
	return o, nil
}

// NoopArgs are the arguments of a no-op job.
type NoopArgs struct {
	N int `json:"n"`
}

// Kind names the job kind.
func (NoopArgs) Kind() string { return "noop" }

// NoopWorker completes every job at once.
type NoopWorker struct {
	river.WorkerDefaults[NoopArgs]
}

// Work does nothing.
func (NoopWorker) Work(context.Context, *river.Job[NoopArgs]) error { return nil }

// counters are the database's figures run reads before and after.
type counters struct {
	commits, ins, upd, del int64
	lsn                    string
}

func run(ctx context.Context, o options) (*Report, error) {
	// The bench's own connection: migrations, statistics, the final count.
	conn, err := pgx.Connect(ctx, o.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()

	r := &Report{System: "river", RiverVersion: riverVersion, Schema: o.Schema, Jobs: o.Jobs, Workers: o.Workers}
	if err := conn.QueryRow(ctx,
		`SELECT current_database(), current_setting('server_version'), current_setting('synchronous_commit')`,
	).Scan(&r.Database, &r.PostgresVersion, &r.SynchronousCommit); err != nil {
		return nil, err
	}
	if err := migrate(ctx, o, conn); err != nil {
		return nil, err
	}

	cfg, err := pgxpool.ParseConfig(o.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = appName
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()

	workers := river.NewWorkers()
	river.AddWorker(workers, &NoopWorker{})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		// The fetch settings River's own benchmark uses.
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: o.Workers}},
		Schema:            o.Schema,
		Workers:           workers,
	})
	if err != nil {
		return nil, err
	}

	before, err := readCounters(ctx, conn, o.Schema)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := insertJobs(ctx, client, o.Jobs); err != nil {
		return nil, err
	}
	r.InsertS = time.Since(start).Seconds()

	// A channel that holds every job's event: the subscription drops what
	// does not fit.
	done, cancel := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: o.Jobs,
		Kinds:    []river.EventKind{river.EventKindJobCompleted},
	})
	defer cancel()
	start = time.Now()
	if err := client.Start(ctx); err != nil {
		return nil, fmt.Errorf("start client: %w", err)
	}
	waitErr := waitCompleted(ctx, conn, o, done)
	r.ElapsedS = time.Since(start).Seconds()
	stopCtx, stopCancel := context.WithTimeout(context.Background(), time.Minute)
	defer stopCancel()
	if err := client.Stop(stopCtx); err != nil {
		return nil, fmt.Errorf("stop client: %w", err)
	}
	pool.Close()
	if waitErr != nil {
		return nil, waitErr
	}

	// The window and the count, as the database recorded them.
	q := fmt.Sprintf(`SELECT count(*),
		coalesce(extract(epoch FROM max(finalized_at) - min(attempted_at)), 0)::float8
		FROM %s.river_job WHERE state = 'completed'`, o.Schema)
	if err := conn.QueryRow(ctx, q).Scan(&r.JobsCompleted, &r.WindowS); err != nil {
		return nil, err
	}
	if r.WindowS > 0 {
		r.JobsPerSec = float64(r.JobsCompleted) / r.WindowS
	}

	// A backend sends its statistics when it exits: wait for the client's
	// connections to be gone before reading them.
	if err := waitBackendsGone(ctx, conn); err != nil {
		return nil, err
	}
	after, err := readCounters(ctx, conn, o.Schema)
	if err != nil {
		return nil, err
	}
	jobs := float64(o.Jobs)
	r.Commits = after.commits - before.commits
	r.CommitsPerJob = float64(r.Commits) / jobs
	r.RowsInserted, r.RowsUpdated, r.RowsDeleted = after.ins-before.ins, after.upd-before.upd, after.del-before.del
	r.RowsWrittenPerJob = float64(r.RowsInserted+r.RowsUpdated+r.RowsDeleted) / jobs
	if err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::int8`, after.lsn, before.lsn).Scan(&r.WALBytes); err != nil {
		return nil, err
	}
	r.WALBytesPerJob = float64(r.WALBytes) / jobs
	return r, nil
}

// migrate creates the schema and River's tables in it, and empties
// river_job of an earlier run's jobs.
func migrate(ctx context.Context, o options, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+o.Schema); err != nil {
		return fmt.Errorf("create schema %s: %w", o.Schema, err)
	}
	pool, err := pgxpool.New(ctx, o.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{
		Schema: o.Schema,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	if _, err := conn.Exec(ctx, "TRUNCATE "+o.Schema+".river_job"); err != nil {
		return err
	}
	return nil
}

func insertJobs(ctx context.Context, client *river.Client[pgx.Tx], n int) error {
	batch := make([]river.InsertManyParams, 0, insertBatch)
	for i := 0; i < n; i += insertBatch {
		batch = batch[:0]
		for j := i; j < min(i+insertBatch, n); j++ {
			batch = append(batch, river.InsertManyParams{Args: NoopArgs{N: j}})
		}
		if _, err := client.InsertManyFast(ctx, batch); err != nil {
			return fmt.Errorf("insert jobs: %w", err)
		}
	}
	return nil
}

// waitCompleted returns when the database holds o.Jobs completed jobs. The
// client's completion events say when to look; a slow poll covers events the
// subscription dropped.
func waitCompleted(ctx context.Context, conn *pgx.Conn, o options, events <-chan *river.Event) error {
	q := fmt.Sprintf(`SELECT count(*) FROM %s.river_job WHERE state = 'completed'`, o.Schema)
	check := func() (bool, error) {
		var n int
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			return false, err
		}
		return n >= o.Jobs, nil
	}
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	seen := 0
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d completed jobs: %w", o.Jobs, ctx.Err())
		case e, ok := <-events:
			if !ok {
				return errors.New("the client's event subscription closed")
			}
			if e == nil {
				continue
			}
			seen++
			if seen < o.Jobs {
				continue
			}
		case <-poll.C:
		}
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
}

func waitBackendsGone(ctx context.Context, conn *pgx.Conn) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx,
			`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`, appName,
		).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connections of the River client are still open after 30s", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func readCounters(ctx context.Context, conn *pgx.Conn, schema string) (counters, error) {
	var c counters
	if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
		return c, err
	}
	err := conn.QueryRow(ctx, `SELECT
		(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
		coalesce(sum(n_tup_ins), 0)::int8, coalesce(sum(n_tup_upd), 0)::int8, coalesce(sum(n_tup_del), 0)::int8,
		pg_current_wal_lsn()::text
		FROM pg_stat_user_tables WHERE schemaname = $1`, schema,
	).Scan(&c.commits, &c.ins, &c.upd, &c.del, &c.lsn)
	return c, err
}
