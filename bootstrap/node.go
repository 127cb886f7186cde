// Package bootstrap is the one configuration-driven entry point for every
// way Tasker runs — all-in-one, orchestration only, workers only, tests. It
// builds, in order, the logger, the database (a configured URL or the
// embedded PostgreSQL), the schemas, the handler registry and templates, the
// actor tree and the HTTP endpoint, and stops them in the reverse order.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/api/dashboard"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
	"github.com/tasker-run/tasker/workflow/handlers"
)

// Options configure a node beyond its Config.
type Options struct {
	// Config is the node's configuration. Required.
	Config *config.Config
	// ConfigPath is the file Config came from, re-read on Reload. Optional.
	ConfigPath string
	// Handlers registers an embedder's own handlers next to the built-in
	// ones. Optional.
	Handlers func(reg *workflow.Registry) error
	// Templates are extra template folders (as file systems) beside those
	// named in the config. Optional.
	Templates []fs.FS
	// Bundled are the example handlers and templates, loaded first when
	// templates.bundled is set. Optional: without them the setting loads
	// nothing. The CLI passes examples.Bundle().
	Bundled Bundle
	// Logger replaces the logger built from the config. Optional.
	Logger *slog.Logger
	// LogOutput is where the built logger writes. Defaults to os.Stderr.
	LogOutput io.Writer
	// WrapStore and WrapQueue, when set, wrap what the actors use of the
	// store and the queue: the seam for fault injection in tests.
	WrapStore func(actors.Store) actors.Store
	WrapQueue func(actors.Queue) actors.Queue
	// SpanExporter, when set, receives the node's spans instead of the
	// OTLP endpoint of tracing.otlp_endpoint (tests). Optional.
	SpanExporter sdktrace.SpanExporter
}

// Bundle is a set of handlers and the templates that run on them.
type Bundle struct {
	// Register adds the handlers to a registry.
	Register func(reg *workflow.Registry) error
	// Templates is the template folder.
	Templates fs.FS
}

// Node is a running Tasker node.
type Node struct {
	// cfg is the configuration the node started with; live is the one in
	// force, replaced by Reload.
	cfg      *config.Config
	live     atomic.Pointer[config.Config]
	opts     Options
	log      *slog.Logger
	level    *slog.LevelVar
	nodeID   string
	started  time.Time
	db       *DB
	pool     *pgxpool.Pool
	store    *store.Store
	registry *workflow.Registry
	tmpls    []*workflow.Template
	system   *actors.System
	metrics  *Metrics
	activity *dashboard.Activity
	http     *http.Server
	httpAddr string
	listener *listener
	guard    hostGuard
	tracing  *tracing

	stopOnce sync.Once
	stopErr  error
}

// Start builds and starts a node. On error, whatever was started is stopped
// again.
func Start(ctx context.Context, opts Options) (n *Node, err error) {
	if opts.Config == nil {
		return nil, errors.New("bootstrap: Options.Config is required")
	}
	cfg := opts.Config
	n = &Node{cfg: cfg, opts: opts, started: time.Now()}
	n.live.Store(cfg)
	defer func() {
		if err != nil {
			_ = n.Stop(context.Background())
			n = nil
		}
	}()

	if opts.Logger != nil {
		n.log, n.level = opts.Logger, new(slog.LevelVar)
	} else {
		out := opts.LogOutput
		if out == nil {
			out = os.Stderr
		}
		n.log, n.level = NewLogger(cfg.Log, cfg.Env, out)
	}
	n.nodeID = cfg.Node.ID
	if n.nodeID == "" {
		n.nodeID = generateNodeID()
	}
	n.log = n.log.With("node_id", n.nodeID)

	if problems := cfg.ProductionProblems(); len(problems) > 0 {
		return n, fmt.Errorf("refusing to start in production: %s", strings.Join(problems, "; "))
	}
	if n.db, err = Open(ctx, cfg.Database, n.log); err != nil {
		return n, err
	}
	n.pool = n.db.Pool

	n.metrics = NewMetrics()
	n.activity = dashboard.NewActivity(nil)
	n.store = store.New(n.pool, storeOptions(cfg, n.nodeID, n.log))
	if n.registry, err = n.buildRegistry(); err != nil {
		return n, err
	}
	if n.tmpls, err = n.loadTemplates(); err != nil {
		return n, err
	}
	if err := flowHandlersKnown(cfg, n.registry, n.tmpls); err != nil {
		return n, err
	}
	n.store.SetFlowPolicy(cfg.Policy())
	// The queues come first: a request is accepted as soon as its template
	// is visible, to any node, and its steps go to the namespace's queue.
	namespaces := n.namespaces()
	if err := n.store.EnsureQueues(ctx, namespaces); err != nil {
		return n, err
	}
	if err := n.registerTemplates(ctx); err != nil {
		return n, err
	}
	if err := n.store.WorkerContractPublish(ctx, store.WorkerLimits{
		MaxResultBytes: cfg.Queue.MaxResultBytes, MaxDeliveries: cfg.Queue.MaxDeliveries,
	}); err != nil {
		return n, err
	}

	if cfg.Node.RunsOrchestration() {
		if err := n.declareSchedules(ctx); err != nil {
			return n, err
		}
	}

	if n.tracing, err = startTracing(cfg.Tracing, n.nodeID, opts.SpanExporter, n.store, n.log); err != nil {
		return n, err
	}
	var tracer trace.Tracer
	if n.tracing != nil {
		tracer = n.tracing.tracer
	}
	settings := actorSettings(cfg, n.nodeID, namespaces, n.live.Load)
	var (
		actorStore actors.Store = n.store
		actorQueue actors.Queue = n.store.Queue()
	)
	if opts.WrapStore != nil {
		actorStore = opts.WrapStore(actorStore)
	}
	if opts.WrapQueue != nil {
		actorQueue = opts.WrapQueue(actorQueue)
	}
	n.system, err = actors.Start(settings, actors.Deps{
		Store:    actorStore,
		Queue:    actorQueue,
		Handlers: n.registry,
		Logger:   n.log,
		BreakerChanged: func(component, state string) {
			n.metrics.breakerChanged(component, state)
			n.activity.BreakerChanged(component, state)
		},
		BreakerRemoved: func(component string) {
			n.metrics.breakerRemoved(component)
			n.activity.BreakerRemoved(component)
		},
		StepFinished:   n.metrics.stepFinished,
		RequestHandled: n.metrics.requestHandled,
		ResultApplied: func(out store.ResultOutcome) {
			n.metrics.resultApplied(out)
			n.activity.ResultApplied(out)
			n.tracing.resultApplied(out)
		},
		Tracer:           tracer,
		MessageHeld:      n.metrics.messageHeld,
		Ping:             pingPool(n.pool),
		Maintenance:      n.store,
		Flow:             n.store,
		FlowAdmitted:     n.metrics.flowAdmitted,
		FlowRepaired:     n.metrics.flowRepaired,
		SchedulesChecked: n.metrics.schedulesChecked,
		Pruned:           n.metrics.prunedBatch,
		PruneRan:         n.metrics.pruneRan,
	})
	if err != nil {
		return n, err
	}
	n.guard.sys.Store(n.system)
	if cfg.Queue.ListenNotify {
		n.listener = startListener(n.pool, n.system, n.log)
	}
	if err := n.serveHTTP(); err != nil {
		return n, err
	}
	n.log.Info("node ready", "mode", cfg.Node.Mode, "namespaces", namespaces,
		"worker_namespaces", workerNamespaces(settings), "external_namespaces", externalNamespaces(cfg, namespaces),
		"http", n.httpAddr, "env", cfg.Env)
	if n.httpAddr != "" {
		n.log.Info("dashboard", "url", n.DashboardURL())
	}
	return n, nil
}

// declareSchedules writes the configuration's [[schedules]] to the
// database and says what it did.
func (n *Node) declareSchedules(ctx context.Context) error {
	rep, err := n.store.SchedulesDeclare(ctx, n.cfg.ScheduleDefinitions())
	if err != nil {
		return fmt.Errorf("declaring the configuration's schedules: %w", err)
	}
	if len(rep.Created)+len(rep.Changed) > 0 {
		n.log.Info("schedules declared", "created", rep.Created, "changed", rep.Changed)
	}
	for _, name := range rep.Taken {
		n.log.Warn("a schedule of the configuration is not declared: a schedule of that name was created through the API; delete one of them",
			"schedule", name)
	}
	for _, name := range rep.Undeclared {
		n.log.Warn("a schedule declared by an earlier configuration is not in this one; it keeps firing until deleted (tasker schedules delete NAME)",
			"schedule", name)
	}
	return nil
}

func (n *Node) buildRegistry() (*workflow.Registry, error) {
	reg := workflow.NewRegistry()
	opts := handlers.HTTPOptions{
		Guard: &n.guard,
		// The configuration in force, so a reload applies.
		AllowedHosts: func(namespace string) []string { return n.live.Load().Namespace(namespace).AllowedHosts },
	}
	if err := handlers.Register(reg, opts); err != nil {
		return nil, fmt.Errorf("registering built-in handlers: %w", err)
	}
	if n.cfg.Templates.Bundled && n.opts.Bundled.Register != nil {
		if err := n.opts.Bundled.Register(reg); err != nil {
			return nil, fmt.Errorf("registering bundled handlers: %w", err)
		}
	}
	if n.opts.Handlers != nil {
		if err := n.opts.Handlers(reg); err != nil {
			return nil, fmt.Errorf("registering handlers: %w", err)
		}
	}
	return reg, nil
}

// loadTemplates loads and validates every template.
func (n *Node) loadTemplates() ([]*workflow.Template, error) {
	var sources []fs.FS
	if n.cfg.Templates.Bundled && n.opts.Bundled.Templates != nil {
		sources = append(sources, n.opts.Bundled.Templates)
	}
	for _, dir := range n.cfg.Templates.Dirs {
		sources = append(sources, os.DirFS(dir))
	}
	sources = append(sources, n.opts.Templates...)
	var all []*workflow.Template
	for _, src := range sources {
		ts, err := workflow.LoadDir(src, n.registry)
		if err != nil {
			return nil, fmt.Errorf("loading templates: %w", err)
		}
		all = append(all, ts...)
	}
	return all, nil
}

// registerTemplates records the loaded templates, which makes them visible
// to every node.
func (n *Node) registerTemplates(ctx context.Context) error {
	for _, t := range n.tmpls {
		changed, err := n.store.TemplateRegister(ctx, t)
		if err != nil {
			return err
		}
		if changed {
			n.log.Info("template registered", "namespace", t.Namespace, "name", t.Name, "version", t.Version, "source", t.Source)
		}
	}
	return nil
}

// namespaces are those of the loaded templates and of the config.
func (n *Node) namespaces() []string {
	set := map[string]bool{}
	for _, t := range n.tmpls {
		set[t.Namespace] = true
	}
	for ns := range n.cfg.Namespaces {
		set[ns] = true
	}
	return slices.Sorted(maps.Keys(set))
}

func generateNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	return fmt.Sprintf("%s-%s", host, uuid.NewString()[:8])
}

func (n *Node) serveHTTP() error {
	if n.cfg.HTTP.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", n.cfg.HTTP.Listen, err)
	}
	n.httpAddr = ln.Addr().String()
	n.metrics.Registry.MustRegister(&scrapeCollector{n: n})
	handler := api.Handler(api.Deps{
		NodeID:  n.nodeID,
		Store:   n.store,
		Health:  n.Health,
		Actors:  n.treeNodes,
		Metrics: n.metrics.Registry,
		Token:   n.cfg.HTTP.APIToken,
		Logger:  n.log,
		Dashboard: dashboard.New(dashboard.Deps{
			NodeID:     n.nodeID,
			Mode:       n.cfg.Node.Mode,
			Namespaces: n.namespaces(),
			Operator:   api.Operator{Store: n.store},
			Health:     n.Health,
			Actors:     n.treeNodes,
			Activity:   n.activity,
			Token:      n.cfg.HTTP.APIToken,
			Logger:     n.log,
		}),
	})
	n.http = newHTTPServer(handler)
	go func() {
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "error", err)
		}
	}()
	return nil
}

// DashboardURL is the address of the node's dashboard ("" without HTTP):
// the listener's, with a wildcard address shown as the loopback one.
func (n *Node) DashboardURL() string {
	if n.httpAddr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(n.httpAddr)
	if err != nil {
		return "http://" + n.httpAddr + "/"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// NodeID is the node's id.
func (n *Node) NodeID() string { return n.nodeID }

// HTTPAddr is the address the HTTP endpoint listens on ("" when disabled).
func (n *Node) HTTPAddr() string { return n.httpAddr }

// Store is the node's store.
func (n *Node) Store() *store.Store { return n.store }

// Pool is the node's database pool.
func (n *Node) Pool() *pgxpool.Pool { return n.pool }

// System is the node's actor tree.
func (n *Node) System() *actors.System { return n.system }

// Logger is the node's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// Templates are the loaded templates.
func (n *Node) Templates() []*workflow.Template { return n.tmpls }

// Stop shuts the node down in order: stop taking messages and let in-flight
// handlers finish within the shutdown timeout, stop the actors, stop the HTTP
// endpoint, close the pool and stop the embedded PostgreSQL if the node
// started it. It is idempotent.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() {
		var errs []error
		timeout := n.cfg.Shutdown.Timeout.Duration()
		if n.listener != nil {
			n.listener.stop()
		}
		if n.system != nil {
			sctx, cancel := context.WithTimeout(ctx, timeout)
			errs = append(errs, n.system.Stop(sctx))
			cancel()
		}
		if n.http != nil {
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			errs = append(errs, n.http.Shutdown(hctx))
			cancel()
		}
		// After the actors: no result comes to trace any more.
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		errs = append(errs, n.tracing.stop(tctx))
		cancel()
		if n.db != nil {
			errs = append(errs, n.db.Close(ctx))
		}
		n.stopErr = errors.Join(errs...)
		if n.log != nil {
			if n.stopErr != nil {
				n.log.Error("node stopped with errors", "error", n.stopErr)
			} else {
				n.log.Info("node stopped")
			}
		}
	})
	return n.stopErr
}

// Reload re-reads the configuration file and applies what can change on a
// running node: the log level, the circuit breaker thresholds and the
// backoff policy. An invalid file is refused with the error logged and the
// running configuration kept.
func (n *Node) Reload() {
	if n.opts.ConfigPath == "" {
		n.log.Warn("reload requested but the node runs without a configuration file")
		return
	}
	cfg, err := config.Load(config.LoadOptions{Path: n.opts.ConfigPath, Env: n.cfg.Env})
	if err != nil {
		n.log.Error("configuration reload refused; keeping the running configuration", "error", err)
		return
	}
	n.level.Set(parseLevel(cfg.Log.Level))
	for component, b := range n.system.Breakers() {
		b.Configure(breakerSettings(cfg.Breaker(component)))
	}
	n.store.SetBackoff(BackoffPolicy(cfg.Backoff))
	if err := flowHandlersKnown(cfg, n.registry, n.tmpls); err != nil {
		n.log.Error("flow limits not reloaded; keeping the running ones", "error", err)
	} else {
		n.store.SetFlowPolicy(cfg.Policy())
	}
	n.live.Store(cfg)
	n.log.Info("configuration reloaded", "log_level", cfg.Log.Level)
}

// flowHandlersKnown refuses a rate limit of a handler that neither the
// node has nor a template of the node names (external workers run the
// handlers of their namespaces).
func flowHandlersKnown(cfg *config.Config, reg *workflow.Registry, tmpls []*workflow.Template) error {
	known := map[string]bool{}
	for _, name := range reg.Names() {
		known[name] = true
	}
	for _, t := range tmpls {
		for _, st := range t.Steps {
			known[st.Handler] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Flow.Handlers)) {
		if !known[name] {
			return fmt.Errorf("flow.handlers.%s: no handler %q on this node or in its templates (handlers: %s)",
				name, name, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
		}
	}
	return nil
}

// HTTP server limits: a client that trickles its request, or holds an idle
// connection, is cut off; headers are bounded.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpWriteTimeout      = time.Minute
	httpIdleTimeout       = 30 * time.Second
	httpMaxHeaderBytes    = 64 << 10
)

func newHTTPServer(handler http.Handler) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
	}
}
