// Command compare runs pgbench -N, River's burn-down of no-op jobs and
// tasker bench's burn-down in alternating rounds on one PostgreSQL server,
// each on a fresh database it creates and drops, and prints each system's
// median rate with the ratios Tasker/River and Tasker/pgbench of each round.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const defaultServer = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

type options struct {
	Server          string
	Rounds          int
	PgbenchClients  int
	PgbenchDuration time.Duration
	RiverJobs       int
	RiverWorkers    int
	TaskerTasks     int
	TaskerPattern   string
	TaskerWorkers   int
	Repo            string
	JSON            bool
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
	if o.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, "compare:", err)
			os.Exit(1)
		}
		return
	}
	printTable(os.Stdout, res)
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: compare [flags]\n\n"+
			"pgbench -N, River's burn-down and tasker bench's burn-down in alternating rounds,\n"+
			"each on a fresh database of the server; prints medians (min-max) and per-round ratios.\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.Server, "server", defaultServer, "PostgreSQL URL of the server; its database is where the fresh ones are created from (needs CREATEDB)")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds; each runs the three systems in turn")
	fs.IntVar(&o.PgbenchClients, "pgbench-clients", 4, "pgbench -c")
	fs.DurationVar(&o.PgbenchDuration, "pgbench-duration", 10*time.Second, "pgbench -T (whole seconds)")
	fs.IntVar(&o.RiverJobs, "river-jobs", 200000, "River: no-op jobs to burn down")
	fs.IntVar(&o.RiverWorkers, "river-workers", 2000, "River: workers of the default queue")
	fs.IntVar(&o.TaskerTasks, "tasker-tasks", 20000, "tasker bench --tasks")
	fs.StringVar(&o.TaskerPattern, "tasker-pattern", "linear", "tasker bench --pattern")
	fs.IntVar(&o.TaskerWorkers, "tasker-workers", 0, "tasker bench --workers (0: its default)")
	fs.StringVar(&o.Repo, "repo", "", "root of the Tasker repository to build tasker from (default: found from the working directory)")
	fs.BoolVar(&o.JSON, "json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return o, o.validate()
}

func (o options) validate() error {
	u, err := url.Parse(o.Server)
	switch {
	case err != nil:
		return fmt.Errorf("--server: %w", err)
	case u.Scheme != "postgres" && u.Scheme != "postgresql":
		return fmt.Errorf("--server %q: not a postgres:// URL", o.Server)
	case o.Rounds < 1:
		return fmt.Errorf("--rounds must be at least 1, got %d", o.Rounds)
	case o.PgbenchClients < 1:
		return fmt.Errorf("--pgbench-clients must be at least 1, got %d", o.PgbenchClients)
	case o.PgbenchDuration < time.Second || o.PgbenchDuration%time.Second != 0:
		return fmt.Errorf("--pgbench-duration must be whole seconds, at least 1s, got %s", o.PgbenchDuration)
	case o.RiverJobs < 1:
		return fmt.Errorf("--river-jobs must be at least 1, got %d", o.RiverJobs)
	case o.RiverWorkers < 1:
		return fmt.Errorf("--river-workers must be at least 1, got %d", o.RiverWorkers)
	case o.TaskerTasks < 1:
		return fmt.Errorf("--tasker-tasks must be at least 1, got %d", o.TaskerTasks)
	case o.TaskerWorkers < 0:
		return fmt.Errorf("--tasker-workers must not be negative, got %d", o.TaskerWorkers)
	}
	return nil
}

// withDatabase returns the server URL with its database replaced by name.
func withDatabase(server, name string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}
