// Package bench measures a Tasker node end to end, like `river bench`: it
// starts an in-process node (bootstrap.Start) on the configured database,
// or on the embedded PostgreSQL when none is configured, feeds it tasks of
// its own templates (namespace "bench") through the task request queue, and
// reports throughput, latency percentiles, PostgreSQL commits per step and
// the node's CPU time, allocations and peak memory.
//
// Two modes: burn-down inserts every task request first (pgmq.send_batch,
// before the node starts), then starts the node and runs until all are
// finished; steady submits at a fixed rate for a fixed duration and then
// waits for the last task. Only the tasks of this run count: they are found
// by the request ids the run created, so the namespace may hold earlier runs
// (which are deleted afterwards unless Keep is set). History fills the
// tables with finished tasks first, which the run does not count either.
package bench

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"time"

	"github.com/tasker-run/tasker/config"
)

// Modes.
const (
	ModeBurnDown = "burn-down"
	ModeSteady   = "steady"
)

// Defaults of Options.
const (
	TasksDefault            = 1000
	RateDefault             = 100.0
	DurationDefault         = 10 * time.Second
	BaselineClientsDefault  = 4
	BaselineDurationDefault = 3 * time.Second
	TimeoutDefault          = 30 * time.Minute
	// WorkersDefault is the bench namespace's pool when the configuration
	// does not declare the namespace: enough that no-op steps measure the
	// orchestration rather than a small pool's round trips.
	WorkersDefault = 64
)

// Options configure a bench run.
type Options struct {
	// Mode is ModeBurnDown or ModeSteady. Defaults to ModeBurnDown.
	Mode string
	// Tasks is how many tasks a burn-down inserts. Defaults to 1000.
	Tasks int
	// Rate is how many tasks per second a steady run submits. Defaults to
	// 100.
	Rate float64
	// Duration is how long a steady run submits. Defaults to 10s.
	Duration time.Duration
	// Pattern is the DAG of every task: linear, diamond or mixed. Defaults to
	// linear.
	Pattern string
	// Workers is the number of workers of the bench namespace; 0 keeps
	// namespaces.bench.workers of the configuration, or WorkersDefault when
	// the configuration has no such namespace.
	Workers int
	// HandlerDuration is how long each step's handler works. Defaults to 0
	// (the noop handler).
	HandlerDuration time.Duration
	// FailureRate is the probability, from 0 to below 1, that an attempt
	// fails with a retryable error. Defaults to 0.
	FailureRate float64
	// Baseline first measures a raw pgmq cycle on the same database, to
	// compare the node's throughput with. Defaults to false.
	Baseline bool
	// BaselineClients and BaselineDuration shape the baseline. Default to 4
	// and 3s.
	BaselineClients  int
	BaselineDuration time.Duration
	// Timeout bounds the node's run, from its start to the last task.
	// Defaults to 30m.
	Timeout time.Duration
	// History, before the run, writes finished tasks (the rows a node
	// leaves for a completed linear task) until the bench namespace holds at
	// least History finished tasks, to measure the node on tables that have
	// been in use. The run does not count them; they are deleted after the
	// report unless Keep. Defaults to 0.
	History int
	// Keep leaves the run's tasks, and the history it wrote, in the
	// database; by default they are deleted after the report. Defaults to
	// false.
	Keep bool
	// Retention runs the node's pruning as [retention] configures it,
	// beside the load (to measure its cost); by default the bench node
	// prunes nothing, so a run measures its load alone. Defaults to false.
	Retention bool
	// CPUProfile, when set, receives a CPU profile of the process (which
	// hosts the node) while the node runs. Defaults to "".
	CPUProfile string
	// MemProfile, when set, receives the process's allocation profile
	// (pprof "allocs": every sampled allocation since the process began,
	// the run's setup included) when the node's run ends. Defaults to "".
	MemProfile string
	// Verbose logs the node at the configured level instead of warn.
	// Defaults to false.
	Verbose bool
	// Progress receives the live progress line; nil means none. Defaults to
	// nil.
	Progress io.Writer
	// ProgressTTY rewrites the progress line in place (carriage return)
	// about four times a second; otherwise a line is written every 5s.
	// Defaults to false.
	ProgressTTY bool
	// LogOutput receives the node's log. Defaults to os.Stderr.
	LogOutput io.Writer
}

// RegisterFlags binds the options to command-line flags of fs.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Mode, "mode", ModeBurnDown, "burn-down (insert --tasks, then run them) or steady (--rate tasks/s for --duration)")
	fs.IntVar(&o.Tasks, "tasks", TasksDefault, "burn-down: number of tasks")
	fs.Float64Var(&o.Rate, "rate", RateDefault, "steady: tasks submitted per second")
	fs.DurationVar(&o.Duration, "duration", DurationDefault, "steady: how long to submit")
	fs.StringVar(&o.Pattern, "pattern", PatternLinear, "task DAG: linear (4 steps), diamond (4 steps) or mixed (7 steps)")
	fs.IntVar(&o.Workers, "workers", 0, "workers of the bench namespace (0: namespaces.bench.workers of the config, else 64)")
	fs.DurationVar(&o.HandlerDuration, "handler-duration", 0, "time each step's handler works (0: the noop handler)")
	fs.Float64Var(&o.FailureRate, "failure-rate", 0, "probability that an attempt fails with a retryable error")
	fs.BoolVar(&o.Baseline, "baseline", false, "first measure a raw pgmq send/read/delete cycle on the same database")
	fs.IntVar(&o.BaselineClients, "baseline-clients", BaselineClientsDefault, "baseline: concurrent clients")
	fs.DurationVar(&o.BaselineDuration, "baseline-duration", BaselineDurationDefault, "baseline: how long to measure")
	fs.DurationVar(&o.Timeout, "timeout", TimeoutDefault, "give up when the run takes longer")
	fs.IntVar(&o.History, "history", 0, "first fill the tables with finished tasks until the bench namespace holds this many (not counted; deleted afterwards unless --keep)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the run's tasks and history in the database (default: delete them after the report)")
	fs.BoolVar(&o.Retention, "retention", false, "run the node's pruning as [retention] configures it, beside the load (default: off)")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the node to this file")
	fs.StringVar(&o.MemProfile, "memprofile", "", "write the process's allocation profile to this file when the run ends (go tool pprof -sample_index=alloc_objects)")
	fs.BoolVar(&o.Verbose, "verbose", false, "log the node at the configured level (default: warnings only)")
}

func (o *Options) setDefaults() {
	o.Mode = cmp.Or(o.Mode, ModeBurnDown)
	o.Tasks = cmp.Or(o.Tasks, TasksDefault)
	o.Rate = cmp.Or(o.Rate, RateDefault)
	o.Duration = cmp.Or(o.Duration, DurationDefault)
	o.Pattern = cmp.Or(o.Pattern, PatternLinear)
	o.BaselineClients = cmp.Or(o.BaselineClients, BaselineClientsDefault)
	o.BaselineDuration = cmp.Or(o.BaselineDuration, BaselineDurationDefault)
	o.Timeout = cmp.Or(o.Timeout, TimeoutDefault)
	if o.LogOutput == nil {
		o.LogOutput = os.Stderr
	}
}

// ErrInvalid marks an option that cannot be used.
var ErrInvalid = errors.New("invalid bench option")

func (o *Options) validate() error {
	switch {
	case o.Mode != ModeBurnDown && o.Mode != ModeSteady:
		return fmt.Errorf("%w: --mode must be %s or %s, got %q", ErrInvalid, ModeBurnDown, ModeSteady, o.Mode)
	case patterns[o.Pattern] == nil:
		return fmt.Errorf("%w: --pattern must be linear, diamond or mixed, got %q", ErrInvalid, o.Pattern)
	case o.Tasks < 0:
		return fmt.Errorf("%w: --tasks must be positive", ErrInvalid)
	case o.Rate < 0:
		return fmt.Errorf("%w: --rate must be positive", ErrInvalid)
	case o.Duration < 0:
		return fmt.Errorf("%w: --duration must be positive", ErrInvalid)
	case o.History < 0:
		return fmt.Errorf("%w: --history must not be negative", ErrInvalid)
	case o.Workers < 0:
		return fmt.Errorf("%w: --workers must not be negative", ErrInvalid)
	case o.HandlerDuration < 0:
		return fmt.Errorf("%w: --handler-duration must not be negative", ErrInvalid)
	case o.FailureRate < 0 || o.FailureRate >= 1:
		return fmt.Errorf("%w: --failure-rate must be at least 0 and below 1", ErrInvalid)
	case o.BaselineClients < 0:
		return fmt.Errorf("%w: --baseline-clients must not be negative", ErrInvalid)
	}
	return nil
}

// nodeConfig is cfg adjusted for an in-process bench node on url: every
// role, the bench namespace's workers, an HTTP endpoint on a free port (a
// running node keeps its own) and, unless verbose, warnings only.
func nodeConfig(cfg *config.Config, url string, o Options) *config.Config {
	c := *cfg
	c.Database.URL = url
	c.Node.Mode = config.ModeAll
	c.Node.WorkerNamespaces = nil
	if c.HTTP.Listen != "" {
		c.HTTP.Listen = "127.0.0.1:0"
	}
	if !o.Verbose {
		c.Log.Level = config.LogLevelWarn
	}
	// The bench database is the bench's: the configuration's schedules do
	// not fire into it, and it prunes only when asked to.
	c.Schedules = nil
	c.Retention.Enabled = o.Retention
	c.Namespaces = make(map[string]config.Namespace, len(cfg.Namespaces)+1)
	for k, v := range cfg.Namespaces {
		c.Namespaces[k] = v
	}
	ns, ok := cfg.Namespaces[Namespace]
	if !ok {
		ns = config.Default(cfg.Env).Namespace(Namespace)
		ns.PollInterval, ns.VisibilityTimeout = 0, 0 // inherit from [queue]
		ns.Workers = WorkersDefault
	}
	if o.Workers > 0 {
		ns.Workers = o.Workers
	}
	c.Namespaces[Namespace] = ns
	return &c
}

// Run runs one bench on cfg's database and returns its report. When the run
// does not finish within Options.Timeout (or ctx ends), the report of what
// finished is returned with the error.
func Run(ctx context.Context, cfg *config.Config, o Options) (*Report, error) {
	o.setDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(o.LogOutput, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if o.Verbose {
		log = slog.New(slog.NewTextHandler(o.LogOutput, nil))
	}

	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	defer db.close()

	rep := newReport(o, db)
	if o.Baseline {
		b, err := runBaseline(ctx, db, o.BaselineClients, o.BaselineDuration)
		if err != nil {
			return nil, err
		}
		rep.Baseline = &b
	}

	run, err := newRun(db, o)
	if err != nil {
		return nil, err
	}
	defer run.cleanup()
	if err := run.prepare(ctx); err != nil {
		return nil, err
	}
	if err := run.measureBefore(ctx); err != nil {
		return nil, err
	}

	rctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	runErr := run.execute(rctx, nodeConfig(cfg, db.nodeURL, o))
	if runErr != nil && run.node == nil {
		return nil, runErr
	}
	if err := run.collect(context.WithoutCancel(ctx), rep); err != nil {
		return nil, errors.Join(runErr, err)
	}
	return rep, runErr
}

// profile starts a CPU profile into cpuPath ("" for none) and returns the
// function that stops it and writes the allocation profile into memPath
// ("" for none).
func profile(cpuPath, memPath string) (func() error, error) {
	writeAllocs := func() error {
		if memPath == "" {
			return nil
		}
		f, err := os.Create(memPath)
		if err != nil {
			return fmt.Errorf("--memprofile: %w", err)
		}
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			_ = f.Close() // the write's error is the one to report
			return fmt.Errorf("--memprofile: %w", err)
		}
		return f.Close()
	}
	if cpuPath == "" {
		return writeAllocs, nil
	}
	f, err := os.Create(cpuPath)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close() // nothing was written; the start's error is the one to report
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return errors.Join(f.Close(), writeAllocs())
	}, nil
}

// IsTerminal reports whether w is a terminal, where the progress line can be
// rewritten in place.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
