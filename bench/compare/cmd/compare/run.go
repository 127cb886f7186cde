package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Result is everything a comparison measured.
type Result struct {
	Server            string    `json:"server"`
	PostgresVersion   string    `json:"postgres_version"`
	SynchronousCommit string    `json:"synchronous_commit"`
	Autovacuum        string    `json:"autovacuum"`
	CPUs              int       `json:"cpus"`
	OtherClients      int       `json:"other_clients_at_start"`
	StartedAt         time.Time `json:"started_at"`
	Options           options   `json:"options"`
	Rounds            []Round   `json:"rounds"`
	Summary           Summary   `json:"summary"`
}

// Round is one run of each system, in the order pgbench, River, Tasker.
type Round struct {
	Round   int         `json:"round"`
	Pgbench Measurement `json:"pgbench"`
	River   Measurement `json:"river"`
	Tasker  Measurement `json:"tasker"`
	// The ratios of this round's rates.
	TaskerPerRiver   float64 `json:"tasker_per_river"`
	TaskerPerPgbench float64 `json:"tasker_per_pgbench"`
}

// Measurement is one system's run on its fresh database. Rate is the
// system's own figure (pgbench's tps without connection time, River's jobs/s
// from the first job started to the last completed, tasker bench's
// steps_per_sec); the per-unit figures are the database's, read before and
// after the run by this program, the same way for every system: xact_commit
// of the database, n_tup_ins+n_tup_upd+n_tup_del of its tables, and the
// server's WAL position (other databases' writes count too). They include
// the system's own set-up (River's migrations and inserts, Tasker's schema
// and submissions), not pgbench -i.
type Measurement struct {
	System         string          `json:"system"`
	Database       string          `json:"database"`
	Rate           float64         `json:"rate"`
	RateUnit       string          `json:"rate_unit"`
	Units          int64           `json:"units"`
	ElapsedS       float64         `json:"elapsed_s"`
	Commits        int64           `json:"pg_commits"`
	RowsWritten    int64           `json:"rows_written"`
	WALBytes       int64           `json:"wal_bytes"`
	CommitsPerUnit float64         `json:"pg_commits_per_unit"`
	RowsPerUnit    float64         `json:"rows_written_per_unit"`
	WALPerUnit     float64         `json:"wal_bytes_per_unit"`
	Report         json.RawMessage `json:"report,omitempty"`
}

// outcome is what a system's run returns before the database's figures are
// added.
type outcome struct {
	rate   float64
	units  int64
	report json.RawMessage
}

type runner struct {
	o       options
	log     io.Writer
	admin   *pgx.Conn
	pgbench string
	tasker  string
	river   string
	prefix  string
}

func run(ctx context.Context, o options, log io.Writer) (*Result, error) {
	admin, err := pgx.Connect(ctx, o.Server)
	if err != nil {
		return nil, fmt.Errorf("connect to --server: %w", err)
	}
	defer admin.Close(context.Background())

	res := &Result{Options: o, CPUs: runtime.NumCPU(), StartedAt: time.Now().UTC().Truncate(time.Second)}
	if u, err := url.Parse(o.Server); err == nil {
		res.Server = u.Redacted()
	}
	if err := admin.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('synchronous_commit'),
		current_setting('autovacuum'),
		(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())::int`,
	).Scan(&res.PostgresVersion, &res.SynchronousCommit, &res.Autovacuum, &res.OtherClients); err != nil {
		return nil, err
	}
	if res.OtherClients > 0 {
		fmt.Fprintf(log, "compare: warning: %d other client connections on the server at the start; the figures share it with them\n", res.OtherClients)
	}

	r := &runner{o: o, log: log, admin: admin, prefix: fmt.Sprintf("compare_%d", os.Getpid())}
	if err := r.build(ctx); err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(filepath.Dir(r.tasker)) }()

	for i := 1; i <= o.Rounds; i++ {
		round := Round{Round: i}
		for _, s := range []struct {
			name string
			m    *Measurement
			run  func(context.Context, string) (outcome, error)
			init func(context.Context, string) error
		}{
			{"pgbench", &round.Pgbench, r.runPgbench, r.initPgbench},
			{"river", &round.River, r.runRiver, nil},
			{"tasker", &round.Tasker, r.runTasker, nil},
		} {
			m, err := r.measure(ctx, s.name, i, s.init, s.run)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", i, s.name, err)
			}
			*s.m = m
			fmt.Fprintf(log, "compare: round %d/%d %-8s %10.1f %s  (%s commits, %.2f rows, %.0f B WAL per unit)\n",
				i, o.Rounds, s.name, m.Rate, m.RateUnit, perUnit(m.CommitsPerUnit), m.RowsPerUnit, m.WALPerUnit)
		}
		round.TaskerPerRiver = ratio(round.Tasker.Rate, round.River.Rate)
		round.TaskerPerPgbench = ratio(round.Tasker.Rate, round.Pgbench.Rate)
		res.Rounds = append(res.Rounds, round)
	}
	res.Summary = summarize(res.Rounds)
	return res, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// build compiles tasker from the repository's root module and riverbench
// from this module into a temporary folder.
func (r *runner) build(ctx context.Context) error {
	repo := r.o.Repo
	if repo == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if repo, err = findRepo(wd); err != nil {
			return err
		}
	}
	pgbench, err := findPgbench()
	if err != nil {
		return err
	}
	r.pgbench = pgbench
	goBin, err := exec.LookPath("go")
	if err != nil {
		return errors.New("go not found on PATH: it builds tasker and riverbench")
	}
	dir, err := os.MkdirTemp("", "tasker-compare-")
	if err != nil {
		return err
	}
	r.tasker, r.river = filepath.Join(dir, "tasker"), filepath.Join(dir, "riverbench")
	fmt.Fprintf(r.log, "compare: building tasker (%s) and riverbench into %s\n", repo, dir)
	for _, b := range []struct{ dir, out, pkg string }{
		{repo, r.tasker, "."},
		{filepath.Join(repo, "bench", "compare"), r.river, "./cmd/riverbench"},
	} {
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", b.out, b.pkg)
		cmd.Dir = b.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s in %s: %w\n%s", b.pkg, b.dir, err, out)
		}
	}
	return nil
}

// findRepo walks up from dir to the folder whose go.mod is Tasker's.
func findRepo(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			bytes.HasPrefix(b, []byte("module github.com/tasker-run/tasker\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no Tasker repository (a go.mod of module github.com/tasker-run/tasker) at or above %s; pass --repo", dir)
		}
	}
}

func findPgbench() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench"); len(m) > 0 {
		return m[len(m)-1], nil
	}
	return "", errors.New("pgbench not found on PATH nor in /usr/lib/postgresql/*/bin (install PostgreSQL's client programs)")
}

// counters are a database's figures before or after a run.
type counters struct {
	commits, rows int64
	lsn           string
}

// measure creates a fresh database, runs init (not measured) and run on it,
// adds the database's figures and drops it.
func (r *runner) measure(ctx context.Context, system string, round int,
	init func(context.Context, string) error, run func(context.Context, string) (outcome, error),
) (Measurement, error) {
	m := Measurement{System: system, Database: fmt.Sprintf("%s_%s_%d", r.prefix, system, round)}
	switch system {
	case "pgbench":
		m.RateUnit = "tps"
	case "river":
		m.RateUnit = "jobs/s"
	default:
		m.RateUnit = "steps/s"
	}
	dbURL, err := withDatabase(r.o.Server, m.Database)
	if err != nil {
		return m, err
	}
	ident := pgx.Identifier{m.Database}.Sanitize()
	if _, err := r.admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return m, fmt.Errorf("create database %s: %w", m.Database, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := r.admin.Exec(dctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(r.log, "compare: drop database %s: %v\n", m.Database, err)
		}
	}()
	if init != nil {
		if err := init(ctx, dbURL); err != nil {
			return m, err
		}
	}
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return m, err
	}
	cfg.RuntimeParams["application_name"] = "tasker-compare"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return m, err
	}
	defer conn.Close(context.Background())
	// A backend sends its statistics when it exits: wait for the earlier
	// clients to be gone before each read.
	if err := waitAlone(ctx, conn); err != nil {
		return m, err
	}
	before, err := readCounters(ctx, conn)
	if err != nil {
		return m, err
	}
	start := time.Now()
	out, err := run(ctx, dbURL)
	if err != nil {
		return m, err
	}
	m.ElapsedS = time.Since(start).Seconds()
	if err := waitAlone(ctx, conn); err != nil {
		return m, err
	}
	after, err := readCounters(ctx, conn)
	if err != nil {
		return m, err
	}
	if err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::int8`, after.lsn, before.lsn).Scan(&m.WALBytes); err != nil {
		return m, err
	}
	m.Rate, m.Units, m.Report = out.rate, out.units, out.report
	m.Commits, m.RowsWritten = after.commits-before.commits, after.rows-before.rows
	if m.Units > 0 {
		u := float64(m.Units)
		m.CommitsPerUnit, m.RowsPerUnit, m.WALPerUnit = float64(m.Commits)/u, float64(m.RowsWritten)/u, float64(m.WALBytes)/u
	}
	return m, nil
}

func waitAlone(ctx context.Context, conn *pgx.Conn) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d other connections to the database are still open after a minute", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func readCounters(ctx context.Context, conn *pgx.Conn) (counters, error) {
	var c counters
	if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
		return c, err
	}
	err := conn.QueryRow(ctx, `SELECT
		(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
		coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::int8,
		pg_current_wal_lsn()::text
		FROM pg_stat_user_tables`).Scan(&c.commits, &c.rows, &c.lsn)
	return c, err
}

// command runs a program and returns its standard output; the end of its
// standard error goes into the error when it fails.
func (r *runner) command(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = filepath.Dir(r.tasker)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		tail := stderr.String()
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return nil, fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, tail)
	}
	return stdout.Bytes(), nil
}

func (r *runner) initPgbench(ctx context.Context, dbURL string) error {
	_, err := r.command(ctx, nil, r.pgbench, "-i", "-q", dbURL)
	return err
}

func (r *runner) runPgbench(ctx context.Context, dbURL string) (outcome, error) {
	out, err := r.command(ctx, nil, r.pgbench, "-N", "-n",
		"-c", strconv.Itoa(r.o.PgbenchClients),
		"-T", strconv.Itoa(int(r.o.PgbenchDuration/time.Second)), dbURL)
	if err != nil {
		return outcome{}, err
	}
	tps, txs, err := parsePgbench(out)
	if err != nil {
		return outcome{}, err
	}
	report, _ := json.Marshal(map[string]any{"tps": tps, "transactions": txs})
	return outcome{rate: tps, units: txs, report: report}, nil
}

var (
	pgbenchTPS = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	pgbenchTxs = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
)

// parsePgbench reads the rate and the transaction count from pgbench's
// summary.
func parsePgbench(out []byte) (tps float64, txs int64, err error) {
	m := pgbenchTPS.FindSubmatch(out)
	n := pgbenchTxs.FindSubmatch(out)
	if m == nil || n == nil {
		return 0, 0, fmt.Errorf("pgbench printed no tps and transaction count:\n%s", out)
	}
	if tps, err = strconv.ParseFloat(string(m[1]), 64); err != nil {
		return 0, 0, err
	}
	txs, err = strconv.ParseInt(string(n[1]), 10, 64)
	return tps, txs, err
}

func (r *runner) runRiver(ctx context.Context, dbURL string) (outcome, error) {
	out, err := r.command(ctx, nil, r.river, "--database-url", dbURL,
		"--jobs", strconv.Itoa(r.o.RiverJobs), "--workers", strconv.Itoa(r.o.RiverWorkers))
	if err != nil {
		return outcome{}, err
	}
	var rep struct {
		JobsPerSec    float64 `json:"jobs_per_sec"`
		JobsCompleted int64   `json:"jobs_completed"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return outcome{}, fmt.Errorf("riverbench's report: %w", err)
	}
	if rep.JobsCompleted != int64(r.o.RiverJobs) {
		return outcome{}, fmt.Errorf("riverbench completed %d of %d jobs", rep.JobsCompleted, r.o.RiverJobs)
	}
	return outcome{rate: rep.JobsPerSec, units: rep.JobsCompleted, report: out}, nil
}

func (r *runner) runTasker(ctx context.Context, dbURL string) (outcome, error) {
	args := []string{"bench", "--mode", "burn-down", "--tasks", strconv.Itoa(r.o.TaskerTasks),
		"--pattern", r.o.TaskerPattern, "--json",
		// The database is dropped afterwards; deleting the run's rows would
		// only add writes to the figures.
		"--keep"}
	if r.o.TaskerWorkers > 0 {
		args = append(args, "--workers", strconv.Itoa(r.o.TaskerWorkers))
	}
	out, err := r.command(ctx, []string{"TASKER_DATABASE_URL=" + dbURL}, r.tasker, args...)
	if err != nil {
		return outcome{}, err
	}
	steps, rate, err := parseTasker(out)
	if err != nil {
		return outcome{}, err
	}
	return outcome{rate: rate, units: steps, report: out}, nil
}

// parseTasker reads the completed steps and their rate from tasker bench's
// JSON report; a run that stopped before every task finished is refused.
func parseTasker(out []byte) (steps int64, rate float64, err error) {
	var rep struct {
		Complete      bool    `json:"complete"`
		StepsComplete int64   `json:"steps_complete"`
		Steps         int64   `json:"steps"`
		StepsPerSec   float64 `json:"steps_per_sec"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return 0, 0, fmt.Errorf("tasker bench's report: %w", err)
	}
	if !rep.Complete {
		return 0, 0, fmt.Errorf("tasker bench stopped before every task finished (%d of %d steps complete)", rep.StepsComplete, rep.Steps)
	}
	return rep.StepsComplete, rep.StepsPerSec, nil
}
