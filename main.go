// Command tasker runs a Tasker node and talks to one.
//
//	tasker node            run a node (embedded PostgreSQL when no database is configured)
//	tasker submit          send a task request through the queue (--wait follows it)
//	tasker tree            print the live actor tree of a running node
//	tasker task …          list, show, retry, cancel or resolve tasks
//	tasker templates       list the registered templates
//	tasker requests rejected  list the rejected task requests
//	tasker migrate         install or upgrade the queue and task schemas
//	tasker config check    print the effective configuration, or its errors
//	tasker bench           measure an in-process node: throughput, latency, commits per step
//	tasker version         print the version
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/bootstrap/bench"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "node":
		err = cmdNode(rest, stderr)
	case "submit":
		err = cmdSubmit(rest, stdout, stderr)
	case "tree":
		err = cmdTree(rest, stdout)
	case "task":
		err = cmdTask(rest, stdout, stderr)
	case "templates":
		err = cmdTemplates(rest, stdout, stderr)
	case "requests":
		if len(rest) == 0 || rest[0] != "rejected" {
			fmt.Fprintln(stderr, "usage: tasker requests rejected [--limit N] [--json]")
			return exitUsage
		}
		err = cmdRejected(rest[1:], stdout, stderr)
	case "migrate":
		err = cmdMigrate(rest, stdout, stderr)
	case "config":
		if len(rest) == 0 || rest[0] != "check" {
			fmt.Fprintln(stderr, "usage: tasker config check [--config FILE]")
			return exitUsage
		}
		err = cmdConfigCheck(rest[1:], stdout)
	case "bench":
		err = cmdBench(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "tasker", version)
	case "help", "-h", "--help":
		usage(stdout)
	default:
		fmt.Fprintf(stderr, "tasker: unknown command %q\n", cmd)
		usage(stderr)
		return exitUsage
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "tasker:", err)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "tasker:", err)
		return exitFailed
	}
}

var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: tasker <command> [flags]

commands:
  node           run a node (embedded PostgreSQL when no database is configured)
  submit         send a task request through the queue; --wait follows it to its end
  tree           print the live actor tree of a running node
  task list      list tasks, newest first (--state, --namespace, --name, --since, --limit)
  task show      show a task (uuid or request id): steps, timing, results, DAG, history
  task retry     put a task in error back to work
  task cancel    cancel a pending, running or failed task (--reason)
  task resolve   resolve a failed task, or one failed step (--step NAME [--result JSON])
  templates      list the registered templates and their versions
  requests rejected
                 list the task requests the node could not honour
  migrate        install or upgrade the queue and task schemas
  config check   print the effective configuration, or its errors
  bench          measure an in-process node (burn-down or steady load): throughput, latency, commits per step
  version        print the version

Every command takes --config FILE (or TASKER_CONFIG); TASKER_ENV picks the
environment overlay; TASKER_DATABASE_URL and friends override the file.
The task, templates and requests commands take --json for machine output.
`)
}

// flags returns a flag set with the --config flag every command takes.
func flags(name string, out io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("tasker "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	path := fs.String("config", os.Getenv("TASKER_CONFIG"), "configuration file (TOML)")
	return fs, path
}

func loadConfig(path string) (*config.Config, error) {
	return config.Load(config.LoadOptions{Path: path, Getenv: os.Getenv})
}

// signalContext is cancelled on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func cmdNode(args []string, stderr io.Writer) error {
	fs, path := flags("node", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	node, err := bootstrap.Start(ctx, bootstrap.Options{Config: cfg, ConfigPath: *path, LogOutput: stderr})
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			node.Reload()
			continue
		case <-ctx.Done():
		}
		break
	}
	node.Logger().Info("stop requested; shutting down")
	// A second signal during shutdown is not fatal: Stop is bounded by
	// shutdown.timeout.
	return node.Stop(context.Background())
}

func cmdMigrate(args []string, stdout, stderr io.Writer) error {
	fs, path := flags("migrate", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, c, release, err := connect(*path, stderr)
	if err != nil {
		return err
	}
	defer release()
	v, err := store.CurrentVersion(ctx, c.Pool)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema at version %d (queue schema installed)\n", v)
	return nil
}

func cmdConfigCheck(args []string, stdout io.Writer) error {
	fs, path := flags("config check", stdout)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# effective configuration (environment %q), secrets redacted\n", cfg.Env)
	return cfg.Redacted().WriteTOML(stdout)
}

func cmdSubmit(args []string, stdout, stderr io.Writer) error {
	fs, path := flags("submit", stderr)
	var (
		p         bootstrap.SubmitParams
		ctxArg    = fs.String("context", "{}", "task context: a JSON object, or @FILE to read it from a file")
		requestID = fs.String("request-id", "", "request id (UUID); generated when empty")
		wait      = fs.Bool("wait", false, "follow the task to its end and print each step's result")
		timeout   = fs.Duration("timeout", 5*time.Minute, "how long --wait waits")
	)
	fs.StringVar(&p.Namespace, "namespace", "", "template namespace (required)")
	fs.StringVar(&p.Name, "name", "", "template name (required)")
	fs.StringVar(&p.Version, "version", "", "template version; newest when empty")
	fs.StringVar(&p.RequestedBy, "requested-by", "tasker-cli", "who asks")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if p.Namespace == "" || p.Name == "" {
		return fmt.Errorf("%w: tasker submit --namespace NS --name NAME [--version V] [--context JSON|@FILE] [--request-id UUID] [--wait]", errUsage)
	}
	p.Context = *ctxArg
	if strings.HasPrefix(p.Context, "@") {
		b, err := os.ReadFile(p.Context[1:])
		if err != nil {
			return fmt.Errorf("--context: %w", err)
		}
		p.Context = string(b)
	}
	if *requestID != "" {
		id, err := uuid.Parse(*requestID)
		if err != nil {
			return fmt.Errorf("%w: --request-id: %v", errUsage, err)
		}
		p.RequestID = id
	}
	ctx, c, release, err := connect(*path, stderr)
	if err != nil {
		return err
	}
	defer release()
	id, err := c.Submit(ctx, p)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, id)
	if !*wait {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	d, err := c.Wait(wctx, id, 50*time.Millisecond)
	if errors.Is(err, bootstrap.ErrRejected) {
		return err
	}
	if d.TaskUUID != uuid.Nil {
		printTask(stdout, d)
	}
	return err
}

func cmdTree(args []string, stdout io.Writer) error {
	fs, path := flags("tree", stdout)
	addr := fs.String("addr", "", "HTTP address of the node (default: http.listen of the config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		cfg, err := loadConfig(*path)
		if err != nil {
			return err
		}
		*addr = cfg.HTTP.Listen
	}
	if *addr == "" {
		return fmt.Errorf("%w: the node has no HTTP endpoint (http.listen is empty); pass --addr", errUsage)
	}
	url := *addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	req, err := http.NewRequest(http.MethodGet, url+"/debug/actors?format=text", nil)
	if err != nil {
		return err
	}
	if tok := os.Getenv("TASKER_API_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("reading the actor tree from %s: %w", *addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("reading the actor tree from %s: %s: %s", *addr, resp.Status, strings.TrimSpace(string(b)))
	}
	_, err = io.Copy(stdout, resp.Body)
	return err
}

// connect opens a client on the database of the config at path (config,
// env, or the embedded data folder, as a node finds it) and returns it with
// a context cancelled on SIGINT/SIGTERM and a function that releases both.
func connect(path string, stderr io.Writer) (context.Context, *bootstrap.Client, func(), error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, stop := signalContext()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := bootstrap.Connect(ctx, cfg, log)
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	return ctx, c, func() { c.Close(); stop() }, nil
}

// operator is connect for the operator commands.
func operator(path string, stderr io.Writer) (context.Context, api.Operator, func(), error) {
	ctx, c, release, err := connect(path, stderr)
	if err != nil {
		return nil, api.Operator{}, nil, err
	}
	return ctx, api.Operator{Store: c.Store}, release, nil
}

// parseWithArg parses flags placed before or after one positional argument
// and returns that argument.
func parseWithArg(fs *flag.FlagSet, args []string, what string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() == 0 {
		return "", fmt.Errorf("%w: %s needs %s", errUsage, fs.Name(), what)
	}
	arg := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("%w: %s takes one argument, got also %q", errUsage, fs.Name(), fs.Arg(0))
	}
	return arg, nil
}

// usageError turns the operator's refusal of malformed input into a usage
// error (exit code 2); refusals by the state machine stay failures (1).
func usageError(err error) error {
	var invalid *api.InvalidError
	if errors.As(err, &invalid) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return err
}

// output writes v as JSON when asJSON, else calls text.
func output(stdout io.Writer, asJSON bool, v any, text func() error) error {
	if asJSON {
		return writeJSON(stdout, v)
	}
	return text()
}

func cmdTask(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: tasker task list|show|retry|cancel|resolve", errUsage)
	}
	sub, args := args[0], args[1:]
	fs, path := flags("task "+sub, stderr)
	asJSON := fs.Bool("json", false, "print JSON (the HTTP API's body)")
	switch sub {
	case "list":
		var f api.TaskFilter
		fs.StringVar(&f.State, "state", "", "keep tasks in this state")
		fs.StringVar(&f.Namespace, "namespace", "", "keep tasks of this namespace")
		fs.StringVar(&f.Name, "name", "", "keep tasks of this template name")
		fs.StringVar(&f.Since, "since", "", `keep tasks created within this age ("90m", "24h", "7d")`)
		fs.IntVar(&f.Limit, "limit", api.ListLimitDefault, "at most this many tasks")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("%w: tasker task list takes flags only, got %q", errUsage, fs.Arg(0))
		}
		ctx, op, done, err := operator(*path, stderr)
		if err != nil {
			return err
		}
		defer done()
		page, err := op.Tasks(ctx, f)
		if err != nil {
			return usageError(err)
		}
		return output(stdout, *asJSON, page, func() error { return writeTaskList(stdout, page.Tasks, time.Now()) })
	case "show", "retry", "cancel", "resolve":
	default:
		return fmt.Errorf("%w: unknown command tasker task %s (list, show, retry, cancel, resolve)", errUsage, sub)
	}

	// Each action declares only its own flags.
	var (
		history              bool
		reason, step, result string
	)
	switch sub {
	case "show":
		fs.BoolVar(&history, "history", false, "add every step transition to the history")
	case "cancel":
		fs.StringVar(&reason, "reason", "", "why, recorded with the transitions")
	case "resolve":
		fs.StringVar(&step, "step", "", "the failed step to resolve; without it the whole task is resolved")
		fs.StringVar(&result, "result", "", "with --step: the step's result (JSON), passed to the steps that depend on it")
	}
	arg, err := parseWithArg(fs, args, "a task uuid or request id")
	if err != nil {
		return err
	}
	id, err := api.ParseTaskID(arg)
	if err != nil {
		return usageError(err)
	}
	ctx, op, done, err := operator(*path, stderr)
	if err != nil {
		return err
	}
	defer done()
	var res api.ActionResult
	switch sub {
	case "show":
		d, err := op.Task(ctx, id)
		if err != nil {
			return err
		}
		return output(stdout, *asJSON, d, func() error {
			return writeTaskDetail(stdout, d, detailOptions{StepHistory: history})
		})
	case "retry":
		res, err = op.Retry(ctx, id)
	case "cancel":
		res, err = op.Cancel(ctx, id, reason)
	case "resolve":
		res, err = op.Resolve(ctx, id, step, json.RawMessage(result))
	}
	if err != nil {
		return usageError(err)
	}
	return output(stdout, *asJSON, res, func() error { return writeAction(stdout, res) })
}

func cmdTemplates(args []string, stdout, stderr io.Writer) error {
	fs, path := flags("templates", stderr)
	asJSON := fs.Bool("json", false, "print JSON (the HTTP API's body)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, op, done, err := operator(*path, stderr)
	if err != nil {
		return err
	}
	defer done()
	page, err := op.Templates(ctx)
	if err != nil {
		return err
	}
	return output(stdout, *asJSON, page, func() error { return writeTemplates(stdout, page.Templates) })
}

func cmdRejected(args []string, stdout, stderr io.Writer) error {
	fs, path := flags("requests rejected", stderr)
	asJSON := fs.Bool("json", false, "print JSON (the HTTP API's body)")
	limit := fs.Int("limit", api.ListLimitDefault, "at most this many requests")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, op, done, err := operator(*path, stderr)
	if err != nil {
		return err
	}
	defer done()
	page, err := op.Rejected(ctx, *limit)
	if err != nil {
		return usageError(err)
	}
	return output(stdout, *asJSON, page, func() error { return writeRejected(stdout, page.Rejected) })
}

func cmdBench(args []string, stdout, stderr io.Writer) error {
	fs, path := flags("bench", stderr)
	var o bench.Options
	o.RegisterFlags(fs)
	jsonPath := fs.String("json", "", "also write the report as JSON to this file (- for stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	o.Progress, o.ProgressTTY, o.LogOutput = stderr, bench.IsTerminal(stderr), stderr
	report, err := bench.Run(ctx, cfg, o)
	if errors.Is(err, bench.ErrInvalid) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if report != nil {
		if werr := report.Write(stdout, stderr, *jsonPath); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}
