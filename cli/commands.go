package cli

import (
	"context"
	"errors"
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
	"github.com/tasker-run/tasker/cli/bench"
	"github.com/tasker-run/tasker/examples"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// commands is the command table, in the order of `tasker help`.
var commands = []command{
	{name: "node", summary: "run a node (embedded PostgreSQL when no database is configured)",
		about:   "The node runs until SIGINT or SIGTERM; SIGHUP reloads the log level, the circuit breakers and the backoff from the configuration file.",
		example: "tasker node --config tasker.toml", run: runNode},
	{name: "submit", summary: "send a task request through the queue; --wait follows it to its end", data: true,
		example: `tasker submit --namespace linear_workflow --name mathematical_sequence --context '{"even_number": 6}' --wait`,
		run:     runSubmit},
	{name: "tree", summary: "print the live actor tree of a running node", data: true,
		about:   "It reads GET /debug/actors of the node (TASKER_API_TOKEN is sent as the bearer token).",
		example: "tasker tree --addr 127.0.0.1:8080", run: runTree},
	{name: "task list", summary: "list tasks, newest first (--state, --namespace, --name, --since, --limit, --before)", data: true,
		example: "tasker task list --state error --since 24h", run: runTaskList},
	{name: "task show", args: "TASK", summary: "show a task (uuid or request id): steps, timing, results, DAG, history", data: true,
		example: "tasker task show 0193e7a0-0000-7000-8000-0000000000aa --history", run: runTaskAction},
	{name: "task retry", args: "TASK", summary: "put a task in error back to work", data: true,
		example: "tasker task retry 0193e7a0-0000-7000-8000-0000000000aa", run: runTaskAction},
	{name: "task cancel", args: "TASK", summary: "cancel a pending, running or failed task (--reason)", data: true,
		example: `tasker task cancel 0193e7a0-0000-7000-8000-0000000000aa --reason "duplicate order"`, run: runTaskAction},
	{name: "task resolve", args: "TASK", summary: "resolve a failed task, or one failed step (--step NAME [--result JSON])", data: true,
		example: `tasker task resolve 0193e7a0-0000-7000-8000-0000000000aa --step linear_step_1 --result '{"result": 36}'`,
		run:     runTaskAction},
	{name: "templates", summary: "list the registered templates and their versions", data: true,
		example: "tasker templates", run: runTemplates},
	{name: "requests rejected", summary: "list the task requests the node could not honour", data: true,
		example: "tasker requests rejected --limit 10", run: runRejected},
	{name: "requests replay", args: "MSG", summary: "send a rejected task request again (MSG: its message id, as listed), once", data: true,
		about:   "The request's archived body becomes a new message on the request queue; the rejection records it, and a second replay is refused.",
		example: "tasker requests replay 42", run: runReplay},
	{name: "messages archived", summary: "list the messages archived from a queue, with the reason (--queue, --limit, --before)", data: true,
		example: "tasker messages archived --queue linear_workflow_queue", run: runArchived},
	{name: "schedules list", summary: "list the schedules: next fire, last fire's task, counts", data: true,
		example: "tasker schedules list", run: runSchedulesList},
	{name: "schedules show", args: "NAME", summary: "show a schedule, its next fire times and its latest fires", data: true,
		example: "tasker schedules show nightly_report", run: runScheduleAction},
	{name: "schedules create", args: "NAME", summary: "create a schedule (--namespace, --template, --cron, --context, --overlap, --catch-up)", data: true,
		about:   "Schedules of the configuration ([[schedules]]) are written by the nodes themselves; this creates one at runtime.",
		example: `tasker schedules create nightly --namespace linear_workflow --template mathematical_sequence --cron "0 3 * * *" --context '{"even_number": 2}'`,
		run:     runScheduleCreate},
	{name: "schedules pause", args: "NAME", summary: "stop a schedule firing", data: true,
		example: "tasker schedules pause nightly_report", run: runScheduleAction},
	{name: "schedules resume", args: "NAME", summary: "let a paused schedule fire again, from its next fire time on", data: true,
		example: "tasker schedules resume nightly_report", run: runScheduleAction},
	{name: "schedules trigger", args: "NAME", summary: "fire a schedule once now, whatever its cron expression says", data: true,
		example: "tasker schedules trigger nightly_report", run: runScheduleAction},
	{name: "schedules delete", args: "NAME", summary: "delete a schedule and its fire history (its tasks stay)", data: true,
		example: "tasker schedules delete nightly_report", run: runScheduleAction},
	{name: "limits", summary: "show the flow limits and their use: slots in use, steps waiting, per namespace and group (--limit)", data: true,
		about:   "The configured limits are those of the configuration file read here ([namespaces.<ns>] and [flow]); the use is the database's, across every node.",
		example: "tasker limits --limit 20", run: runLimits},
	{name: "prune", summary: "delete what [retention] no longer keeps, now; --dry-run counts it", data: true,
		about:   "Nodes prune by themselves every retention.interval; this runs once, holding the same lease.",
		example: "tasker prune --dry-run", run: runPrune},
	{name: "migrate", summary: "install or upgrade the queue and task schemas", data: true,
		example: "tasker migrate --config tasker.toml", run: runMigrate},
	{name: "config check", summary: "print the effective configuration (TOML, secrets redacted), or its errors", data: true,
		about:   "TASKER_ENV picks the environment whose overlay and defaults apply.",
		example: "tasker config check --config tasker.toml", run: runConfigCheck},
	{name: "bench", summary: "measure an in-process node (burn-down or steady load): throughput, latency, commits per step", data: true,
		about:   "The report is text on stdout; --json prints it as JSON instead, --out FILE also writes the JSON to a file.",
		example: "tasker bench --mode burn-down --tasks 20000 --pattern linear --baseline", run: runBench},
	{name: "version", summary: "print the version", data: true, example: "tasker version", run: runVersion},
}

func runNode(in *invocation, args []string) error {
	cfg, err := in.parseConfig(args)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	node, err := bootstrap.Start(ctx, bootstrap.Options{Config: cfg, ConfigPath: *in.configPath, LogOutput: in.stderr, Bundled: examples.Bundle()})
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

func runMigrate(in *invocation, args []string) error {
	if _, err := in.parse(args); err != nil {
		return err
	}
	cfg, err := in.config()
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	log := slog.New(slog.NewTextHandler(in.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Open, unlike the other commands' Attach, installs and migrates (and
	// starts the embedded server for it when none runs).
	db, err := bootstrap.Open(ctx, cfg.Database, log)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close(context.WithoutCancel(ctx)) }()
	v, err := store.CurrentVersion(ctx, db.Pool)
	if err != nil {
		return err
	}
	return in.output(map[string]int{"schema_version": v}, func() error {
		_, err := fmt.Fprintf(in.stdout, "schema at version %d (queue schema installed)\n", v)
		return err
	})
}

func runConfigCheck(in *invocation, args []string) error {
	cfg, err := in.parseConfig(args)
	if err != nil {
		return err
	}
	if problems := cfg.ProductionProblems(); len(problems) > 0 {
		return fmt.Errorf("unsafe in production:\n  %s", strings.Join(problems, "\n  "))
	}
	redacted := cfg.Redacted()
	tree, err := redacted.Tree()
	if err != nil {
		return err
	}
	return in.output(map[string]any{"env": cfg.Env, "config": tree}, func() error {
		fmt.Fprintf(in.stdout, "# effective configuration (environment %q), secrets redacted\n", cfg.Env)
		return redacted.WriteTOML(in.stdout)
	})
}

func runVersion(in *invocation, args []string) error {
	if _, err := in.parse(args); err != nil {
		return err
	}
	return in.output(map[string]string{"version": in.version}, func() error {
		_, err := fmt.Fprintln(in.stdout, "tasker", in.version)
		return err
	})
}

func runSubmit(in *invocation, args []string) error {
	var (
		p         bootstrap.SubmitParams
		fs        = in.fs
		ctxArg    = fs.String("context", "{}", "task context: a JSON object, or @FILE to read it from a file")
		requestID = fs.String("request-id", "", "request id (UUID); generated when empty")
		wait      = fs.Bool("wait", false, "follow the task to its end and print each step's result")
		timeout   = fs.Duration("timeout", 5*time.Minute, "how long --wait waits")
		parent    = fs.String("traceparent", "", "W3C traceparent to continue a trace through the task's steps")
		state     = fs.String("tracestate", "", "W3C tracestate to go with --traceparent")
	)
	fs.StringVar(&p.Namespace, "namespace", "", "template namespace (required)")
	fs.StringVar(&p.Name, "name", "", "template name (required)")
	fs.StringVar(&p.Version, "version", "", "template version; newest when empty")
	fs.StringVar(&p.RequestedBy, "requested-by", "tasker-cli", "who asks")
	if _, err := in.parse(args); err != nil {
		return err
	}
	if p.Namespace == "" || p.Name == "" {
		return usagef("tasker submit needs --namespace NS --name NAME [--version V] [--context JSON|@FILE] [--request-id UUID] [--wait]")
	}
	p.Context = *ctxArg
	if strings.HasPrefix(p.Context, "@") {
		b, err := os.ReadFile(p.Context[1:])
		if err != nil {
			return fmt.Errorf("--context: %w", err)
		}
		p.Context = string(b)
	}
	trace, err := workflow.ParseTrace(*parent, *state)
	if err != nil {
		return usagef("--traceparent/--tracestate: %v", err)
	}
	p.Trace = trace
	if *requestID != "" {
		id, err := uuid.Parse(*requestID)
		if err != nil {
			return usagef("--request-id: %v", err)
		}
		p.RequestID = id
	}
	return in.withClient(func(ctx context.Context, c *bootstrap.Client) error {
		id, err := c.Submit(ctx, p)
		if err != nil {
			return err
		}
		if !*wait {
			return in.output(map[string]uuid.UUID{"request_id": id}, func() error {
				_, err := fmt.Fprintln(in.stdout, id)
				return err
			})
		}
		if in.json == nil || !*in.json {
			fmt.Fprintln(in.stdout, id)
		}
		wctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		d, err := c.Wait(wctx, id, 50*time.Millisecond)
		if errors.Is(err, bootstrap.ErrRejected) {
			return err
		}
		if d.TaskUUID != uuid.Nil {
			if werr := in.output(d, func() error { printTask(in.stdout, d); return nil }); werr != nil {
				return errors.Join(err, werr)
			}
		}
		return err
	})
}

func runTree(in *invocation, args []string) error {
	addr := in.fs.String("addr", "", "HTTP address of the node (default: http.listen of the config)")
	if _, err := in.parse(args); err != nil {
		return err
	}
	// The configuration gives the address unless --addr does, and the API
	// token either way (http.api_token, or TASKER_API_TOKEN over it).
	cfg, err := in.config()
	if err != nil {
		return err
	}
	if *addr == "" {
		*addr = cfg.HTTP.Listen
	}
	if *addr == "" {
		return usagef("the node has no HTTP endpoint (http.listen is empty); pass --addr")
	}
	url := *addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	url += "/debug/actors"
	if in.json == nil || !*in.json {
		url += "?format=text"
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if tok := cfg.HTTP.APIToken; tok != "" {
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
	_, err = io.Copy(in.stdout, resp.Body)
	return err
}

func runBench(in *invocation, args []string) error {
	var o bench.Options
	o.RegisterFlags(in.fs)
	out := in.fs.String("out", "", "also write the report as JSON to this file")
	cfg, err := in.parseConfig(args)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	o.Progress, o.ProgressTTY, o.LogOutput = in.stderr, bench.IsTerminal(in.stderr), in.stderr
	report, err := bench.Run(ctx, cfg, o)
	if errors.Is(err, bench.ErrInvalid) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if report != nil {
		if werr := report.Write(in.stdout, in.stderr, *in.json, *out); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}

// withClient opens a client on the database of the configuration
// (config, env, or the embedded data folder, as a node finds it) and runs fn
// with it and a context cancelled on SIGINT/SIGTERM. It starts no server and
// changes no schema (see bootstrap.Attach).
func (in *invocation) withClient(fn func(ctx context.Context, c *bootstrap.Client) error) error {
	cfg, err := in.config()
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	log := slog.New(slog.NewTextHandler(in.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := bootstrap.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}

// withOperator is withClient for the operator commands.
func (in *invocation) withOperator(fn func(ctx context.Context, op api.Operator) error) error {
	return in.withClient(func(ctx context.Context, c *bootstrap.Client) error {
		return fn(ctx, api.Operator{Store: c.Store})
	})
}
