// Command tasker runs a Tasker node and talks to one.
//
//	tasker node            run a node (embedded PostgreSQL when no database is configured)
//	tasker submit          send a task request through the queue (--wait follows it)
//	tasker tree            print the live actor tree of a running node
//	tasker migrate         install or upgrade the queue and task schemas
//	tasker config check    print the effective configuration, or its errors
//	tasker version         print the version
package main

import (
	"context"
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

	"github.com/tasker-run/tasker/bootstrap"
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
	case "migrate":
		err = cmdMigrate(rest, stdout, stderr)
	case "config":
		if len(rest) == 0 || rest[0] != "check" {
			fmt.Fprintln(stderr, "usage: tasker config check [--config FILE]")
			return exitUsage
		}
		err = cmdConfigCheck(rest[1:], stdout)
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
  migrate        install or upgrade the queue and task schemas
  config check   print the effective configuration, or its errors
  version        print the version

Every command takes --config FILE (or TASKER_CONFIG); TASKER_ENV picks the
environment overlay; TASKER_DATABASE_URL and friends override the file.
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
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := bootstrap.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer c.Close()
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
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := bootstrap.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer c.Close()
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
		bootstrap.PrintTask(stdout, d)
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
