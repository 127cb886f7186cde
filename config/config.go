// Package config reads Tasker's TOML configuration: documented types with
// defaults, per-environment overlays picked by TASKER_ENV, environment-variable
// overrides, strict unknown-key detection and validation errors that name the key.
//
// A configuration is built in layers, lowest first:
//
//  1. the built-in defaults of the environment ([Default]): the test environment
//     shortens poll intervals, timeouts and backoff; production logs JSON;
//  2. the root tables of the file;
//  3. the file's [environments.<env>] overlay, which has the shape of the root
//     (minus environments) and overrides only the keys it contains;
//  4. environment variables (TASKER_DATABASE_URL and friends, see [Parse]).
//
// tasker.example.toml at the repository root documents every key.
package config

import (
	"cmp"
	"github.com/tasker-run/tasker/workflow"
	"slices"
	"time"
)

// Environments with built-in defaults. Any other name needs an
// [environments.<name>] overlay in the file.
const (
	EnvDevelopment = "development"
	EnvTest        = "test"
	EnvProduction  = "production"
)

// Node modes: which roles a node runs.
const (
	ModeAll           = "all"
	ModeOrchestration = "orchestration"
	ModeWorkers       = "workers"
)

// Log levels and formats.
const (
	LogLevelDebug = "debug"
	LogLevelInfo  = "info"
	LogLevelWarn  = "warn"
	LogLevelError = "error"

	LogFormatAuto = "auto"
	LogFormatText = "text"
	LogFormatJSON = "json"
)

// ComponentOrchestration is the circuit breaker component of the shared
// orchestration queues (task requests and step results), beside namespaces
// (which use the namespace name) and downstream hosts (see [HTTPComponent]).
const ComponentOrchestration = "orchestration"

// HTTPComponent is the circuit breaker component name of a downstream host
// called by the HTTP handler: "http:<host>".
func HTTPComponent(host string) string { return "http:" + host }

// Config is the whole configuration of a Tasker node.
type Config struct {
	// Node identifies this process and picks the roles it runs.
	Node Node `toml:"node"`
	// Database says where PostgreSQL is.
	Database Database `toml:"database"`
	// Queue tunes the pgmq pollers.
	Queue Queue `toml:"queue"`
	// Orchestration tunes the task-request and step-result actors.
	Orchestration Orchestration `toml:"orchestration"`
	// Namespaces holds per-namespace worker settings keyed by namespace name. A
	// namespace with templates but no entry here runs with the defaults of
	// [Namespace]; use [Config.Namespace] to read effective settings. Defaults to
	// no entries.
	Namespaces map[string]Namespace `toml:"namespaces"`
	// CircuitBreakers configures the breakers around queue operations and
	// downstream hosts; use [Config.Breaker] to read a component's settings.
	CircuitBreakers CircuitBreakers `toml:"circuit_breakers"`
	// Backoff is the retry delay policy of failed steps.
	Backoff Backoff `toml:"backoff"`
	// Supervision is the restart intensity of the actor supervisors.
	Supervision Supervision `toml:"supervision"`
	// HTTP is the operator endpoint (health, metrics, actor tree).
	HTTP HTTP `toml:"http"`
	// Health tunes the checks of /health beyond the node's own state.
	Health Health `toml:"health"`
	// Log configures the process logger.
	Log Log `toml:"log"`
	// Tracing exports OpenTelemetry spans of tasks and step attempts.
	Tracing Tracing `toml:"tracing"`
	// Shutdown bounds the graceful stop.
	Shutdown Shutdown `toml:"shutdown"`
	// Templates says where task templates are loaded from.
	Templates Templates `toml:"templates"`
	// Retention says how long finished work is kept.
	Retention Retention `toml:"retention"`
	// Flow tunes flow control: the aging of priorities and the rate limits
	// of handlers. Namespaces set their own limits; templates set theirs.
	Flow Flow `toml:"flow"`
	// Schedules declares cron schedules that start tasks; each
	// [[schedules]] entry is written to the database when an orchestration
	// node starts. Defaults to none.
	Schedules []Schedule `toml:"schedules"`

	// Env is the environment the configuration was built for (TASKER_ENV). It is
	// not a TOML key.
	Env string `toml:"-"`
}

// Node identifies this process and picks the roles it runs.
type Node struct {
	// ID names this node in transitions, logs and the actor tree. Empty means
	// the node generates one when it starts. Overridden by TASKER_NODE_ID.
	// Defaults to "".
	ID string `toml:"id"`
	// Mode picks the roles: "all" (orchestration and workers), "orchestration"
	// (task requests and step results only) or "workers" (step handlers only).
	// Overridden by TASKER_NODE_MODE. Defaults to "all".
	Mode string `toml:"mode"`
	// WorkerNamespaces limits the namespaces whose steps this node runs; empty
	// means every namespace. Only allowed when Mode is "all" or "workers".
	// Defaults to [].
	WorkerNamespaces []string `toml:"worker_namespaces"`
}

// RunsOrchestration reports whether the node runs the task-request and
// step-result actors.
func (n Node) RunsOrchestration() bool { return n.Mode == ModeAll || n.Mode == ModeOrchestration }

// RunsWorkers reports whether the node runs namespace workers at all.
func (n Node) RunsWorkers() bool { return n.Mode == ModeAll || n.Mode == ModeWorkers }

// RunsNamespace reports whether the node runs the workers of namespace.
func (n Node) RunsNamespace(namespace string) bool {
	return n.RunsWorkers() && (len(n.WorkerNamespaces) == 0 || slices.Contains(n.WorkerNamespaces, namespace))
}

// Database says where PostgreSQL is.
type Database struct {
	// URL is the PostgreSQL connection string: a postgres:// URL or key=value
	// settings. Empty means Tasker starts an embedded PostgreSQL from the
	// machine's PostgreSQL binaries. Overridden by TASKER_DATABASE_URL. Defaults
	// to "".
	URL string `toml:"url"`
	// DataDir is the data folder of the embedded PostgreSQL, relative to the
	// working directory. Ignored when URL is set. Defaults to ".tasker/pgdata".
	DataDir string `toml:"data_dir"`
	// MaxConns is the size of the connection pool. Defaults to 10.
	MaxConns int `toml:"max_conns"`
	// ConnectTimeout bounds establishing one connection. Defaults to 10s.
	ConnectTimeout Duration `toml:"connect_timeout"`
}

// Queue tunes the pgmq pollers.
type Queue struct {
	// PollInterval is how long an idle poller waits before reading its queue
	// again. Defaults to 100ms (10ms in the test environment).
	PollInterval Duration `toml:"poll_interval"`
	// VisibilityTimeout is how long a read message stays invisible to other
	// readers; a worker that dies releases its message after this. Whole
	// seconds only, because pgmq takes integer seconds. Defaults to 30s (2s in
	// the test environment).
	VisibilityTimeout Duration `toml:"visibility_timeout"`
	// BatchSize is the most messages one read takes. Defaults to 50.
	BatchSize int `toml:"batch_size"`
	// MaxDeliveries is how many times a message may be read; a message read
	// more often is poison and is archived. A task request or a step result
	// past it is archived only when that many of its deliveries failed
	// through its own fault (store.MessageFault), or when it was read 4 times
	// as often: one read again only through overload is applied. Defaults
	// to 5.
	MaxDeliveries int `toml:"max_deliveries"`
	// MaxRequestBytes is the largest task request accepted; a larger one is
	// archived as rejected. Defaults to 262144 (256 KiB).
	MaxRequestBytes int `toml:"max_request_bytes"`
	// TemplateGrace is how long a task request for a template, version or
	// namespace not registered is retried, with growing delays, before it is
	// rejected: a node that registers it may be starting. 0 rejects it at
	// once. Defaults to 5m (1s in the test environment).
	TemplateGrace Duration `toml:"template_grace"`
	// MaxResultBytes is the largest result a handler may return; a larger
	// one, or one that is not JSON, fails the step for good. Defaults to
	// 1048576 (1 MiB).
	MaxResultBytes int `toml:"max_result_bytes"`
	// ListenNotify wakes pollers through PostgreSQL LISTEN/NOTIFY when a message
	// is sent, so PollInterval only bounds the delay when a notification is
	// missed. Defaults to true.
	ListenNotify bool `toml:"listen_notify"`
}

// Orchestration tunes the task-request and step-result actors. Whether they
// run at all is decided by node.mode.
type Orchestration struct {
	// PollInterval is how long the idle orchestration pollers wait between
	// reads; 0 means queue.poll_interval. Defaults to 0s.
	PollInterval Duration `toml:"poll_interval"`
}

// Namespace holds the worker settings of one namespace.
type Namespace struct {
	// Workers is how many handlers of this namespace run at once on this node.
	// Defaults to 4.
	Workers int `toml:"workers"`
	// PollInterval overrides queue.poll_interval for this namespace; 0 means
	// inherit. Defaults to 0s.
	PollInterval Duration `toml:"poll_interval"`
	// VisibilityTimeout overrides queue.visibility_timeout for this namespace,
	// for handlers that run longer than the default; 0 means inherit. Workers
	// of an external namespace choose their own (the vt of their reads).
	// Defaults to 0s.
	VisibilityTimeout Duration `toml:"visibility_timeout"`
	// AllowedHosts lists the destinations the http handler may call for
	// this namespace although they are loopback, link-local (the cloud
	// metadata address included), private, shared, unspecified, broadcast or
	// multicast addresses, which it refuses otherwise: a host name
	// ("internal.example", any address it resolves to), a host name and port
	// ("internal.example:8080"), an IP ("127.0.0.1", "::1"), an IP and port
	// ("[::1]:8080") or a CIDR ("10.0.0.0/8"). A step's config may add its
	// own. Public addresses need no entry. Defaults to [].
	AllowedHosts []string `toml:"allowed_hosts"`
	// External declares that programs outside the node run this namespace's
	// steps through the SQL worker contract (docs/workers.md): no node runs
	// Go workers for it, and orchestration (results, retries, timeouts)
	// carries on as for any namespace. Defaults to false.
	External bool `toml:"external"`
	// MaxInFlight bounds the steps of this namespace between their admission
	// and their end (enqueued, in progress or waiting for a retry) across
	// every node; a ready step past it waits, throttled. 0 means no bound.
	// Defaults to 0.
	MaxInFlight int `toml:"max_in_flight"`
	// Rate limits how fast this namespace's steps start, across every node:
	// "<count>/<unit>" with s, m, h or a duration ("50/s", "6/m",
	// "5/500ms"); "" means no limit. Defaults to "".
	Rate string `toml:"rate"`
	// Burst is how many steps may start at once under rate; 0 and 1 both
	// mean one at a time. Defaults to 0.
	Burst int `toml:"burst"`
	// RetryAfterPauses is what a Retry-After answer to one of this
	// namespace's steps pauses besides the step, for as long as its retry
	// waits: "key" (the step's concurrency key), "host" (the host of an
	// http step's url) or "" (nothing). Defaults to "".
	RetryAfterPauses string `toml:"retry_after_pauses"`
}

// Policy is the flow policy of the configuration: the limits of each
// namespace that sets any, of each handler, the aging, and what a
// Retry-After answer pauses in each namespace that says. The values were
// validated.
func (c *Config) Policy() workflow.FlowPolicy {
	p := workflow.FlowPolicy{Namespaces: map[string]workflow.Limit{}, Handlers: map[string]workflow.Limit{},
		Aging: c.Flow.AgingInterval.Duration()}
	limit := func(maxInFlight int, rate string, burst int) workflow.Limit {
		r, _ := workflow.ParseRate(rate) // validated; "" is no rate
		return workflow.Limit{MaxInFlight: maxInFlight, Rate: r, Burst: burst}
	}
	for name, ns := range c.Namespaces {
		if l := limit(ns.MaxInFlight, ns.Rate, ns.Burst); !l.IsZero() {
			p.Namespaces[name] = l
		}
		if ns.RetryAfterPauses != "" {
			if p.Pauses == nil {
				p.Pauses = map[string]workflow.PauseScope{}
			}
			p.Pauses[name] = workflow.PauseScope(ns.RetryAfterPauses)
		}
	}
	for name, h := range c.Flow.Handlers {
		if l := limit(h.MaxInFlight, h.Rate, h.Burst); !l.IsZero() {
			p.Handlers[name] = l
		}
	}
	return p
}

// Flow tunes flow control.
type Flow struct {
	// AgingInterval raises a waiting step's priority by one level each time
	// it passes, so a step of low priority is never starved: one waiting
	// behind steps up to n levels higher is offered the next slot within
	// n+1 intervals. 0 turns aging off. Defaults to 10s.
	AgingInterval Duration `toml:"aging_interval"`
	// Handlers limits a handler's steps in every namespace, keyed by
	// handler name. Defaults to no entries.
	Handlers map[string]HandlerFlow `toml:"handlers"`
}

// HandlerFlow is the limit of one handler, across every node and
// namespace: how many of its steps may be in flight, how fast they start,
// or both.
type HandlerFlow struct {
	// MaxInFlight bounds the handler's steps between their admission and
	// their end, as namespaces.<ns>.max_in_flight does a namespace's; 0 is
	// no bound. Defaults to 0.
	MaxInFlight int `toml:"max_in_flight"`
	// Rate limits how fast steps of the handler start, written as
	// namespaces.<ns>.rate; "" is no rate. Defaults to "".
	Rate string `toml:"rate"`
	// Burst is how many may start at once; 0 and 1 both mean one at a
	// time. Defaults to 0.
	Burst int `toml:"burst"`
}

// CircuitBreakers configures the breakers: one default and overrides per
// component.
type CircuitBreakers struct {
	// MaxHosts caps the breakers of downstream hosts (one per host the http
	// handler calls): past it, the least recently used closed one is
	// dropped, with its node in the actor tree and its metric series; when
	// none is closed, the least recently used one is dropped anyway, and its
	// host is called again until a new breaker opens. Read at start-up.
	// Defaults to 1024.
	MaxHosts int `toml:"max_hosts"`
	// Default applies to every component without an override.
	Default BreakerConfig `toml:"default"`
	// Components overrides the default per component: "orchestration" (the
	// breaker of the orchestration queues), a namespace name, or
	// "http:<host>". Keys left out inherit
	// from Default. Defaults to no entries.
	Components map[string]BreakerOverride `toml:"components"`
}

// BreakerConfig is the complete setting of one circuit breaker.
type BreakerConfig struct {
	// FailureThreshold is how many failures within Window open the breaker
	// when FailureRatio is 0. Defaults to 5.
	FailureThreshold int `toml:"failure_threshold"`
	// FailureRatio, when above 0, opens the breaker when this fraction of the
	// executions within Window failed (once MinExecutions were seen) instead of
	// counting FailureThreshold. Defaults to 0.
	FailureRatio float64 `toml:"failure_ratio"`
	// Window is the period over which failures are counted. Defaults to 30s.
	Window Duration `toml:"window"`
	// Delay is how long the breaker stays open before letting trial executions
	// through (half-open); a breaker guarding the database goes half-open
	// sooner, as soon as the database answers a ping. Defaults to 5s.
	Delay Duration `toml:"delay"`
	// SuccessThreshold is how many successful trial executions close a
	// half-open breaker. Defaults to 2.
	SuccessThreshold int `toml:"success_threshold"`
	// MinExecutions is how many executions within Window are needed before
	// FailureRatio is judged. Defaults to 10.
	MinExecutions int `toml:"min_executions"`
}

// BreakerOverride is a per-component override of [BreakerConfig]; a nil field
// inherits circuit_breakers.default.
type BreakerOverride struct {
	// FailureThreshold overrides circuit_breakers.default.failure_threshold.
	// Defaults to the default breaker's value.
	FailureThreshold *int `toml:"failure_threshold"`
	// FailureRatio overrides circuit_breakers.default.failure_ratio. Defaults
	// to the default breaker's value.
	FailureRatio *float64 `toml:"failure_ratio"`
	// Window overrides circuit_breakers.default.window. Defaults to the default
	// breaker's value.
	Window *Duration `toml:"window"`
	// Delay overrides circuit_breakers.default.delay. Defaults to the default
	// breaker's value.
	Delay *Duration `toml:"delay"`
	// SuccessThreshold overrides circuit_breakers.default.success_threshold.
	// Defaults to the default breaker's value.
	SuccessThreshold *int `toml:"success_threshold"`
	// MinExecutions overrides circuit_breakers.default.min_executions. Defaults
	// to the default breaker's value.
	MinExecutions *int `toml:"min_executions"`
}

// apply returns b with the fields set in o replaced.
func (o BreakerOverride) apply(b BreakerConfig) BreakerConfig {
	set(&b.FailureThreshold, o.FailureThreshold)
	set(&b.FailureRatio, o.FailureRatio)
	set(&b.Window, o.Window)
	set(&b.Delay, o.Delay)
	set(&b.SuccessThreshold, o.SuccessThreshold)
	set(&b.MinExecutions, o.MinExecutions)
	return b
}

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// Backoff is the retry delay policy of failed steps: base × multiplier^(n-1),
// capped at Max, with ±Jitter spread. A step's template may override Base and
// Max.
type Backoff struct {
	// Base is the delay before the first retry. Defaults to 1s (50ms in the
	// test environment).
	Base Duration `toml:"base"`
	// Multiplier grows the delay on each further retry; at least 1. Defaults
	// to 2.
	Multiplier float64 `toml:"multiplier"`
	// Max caps the computed delay. Defaults to 5m (1s in the test environment).
	Max Duration `toml:"max"`
	// Jitter spreads each delay by up to this fraction either way, so retries
	// of many steps do not line up. Defaults to 0.1.
	Jitter float64 `toml:"jitter"`
	// MaxServerDelay caps a delay requested by a downstream service
	// (Retry-After or an explicit hint). Defaults to 1h.
	MaxServerDelay Duration `toml:"max_server_delay"`
}

// Supervision is the restart intensity of the actor supervisors: a child that
// restarts more than MaxRestarts times within Window escalates to its parent.
type Supervision struct {
	// MaxRestarts is how many restarts within Window a supervisor allows
	// before escalating. Defaults to 10.
	MaxRestarts int `toml:"max_restarts"`
	// Window is the period over which restarts are counted. Defaults to 1m.
	Window Duration `toml:"window"`
}

// HTTP is the operator endpoint: /health/*, /metrics, /debug/actors.
type HTTP struct {
	// Listen is the host:port to serve on; "" disables the endpoint. Overridden
	// by TASKER_HTTP_LISTEN. Defaults to "127.0.0.1:8080" ("127.0.0.1:0", a
	// free port, in the test environment).
	Listen string `toml:"listen"`
	// APIToken, when set, is required as "Authorization: Bearer <token>" on
	// every request; at least 16 characters. Overridden by TASKER_API_TOKEN.
	// Defaults to "".
	APIToken string `toml:"api_token"`
}

// Health tunes the checks of /health beyond the node's own state.
type Health struct {
	// XminHorizonWarn is how long a session, a prepared transaction or a
	// backend of a replication slot may hold back the database's xmin
	// horizon (an open snapshot or transaction) before /health reports
	// degraded, naming it: while it is held, VACUUM removes no deleted queue
	// message or replaced step row, and every queue read walks them. An
	// inactive replication slot that holds it is reported at once. 0s turns
	// the check off. Defaults to 5m.
	XminHorizonWarn Duration `toml:"xmin_horizon_warn"`
}

// Log configures the process logger.
type Log struct {
	// Level is the lowest level written: debug, info, warn or error. Overridden
	// by TASKER_LOG_LEVEL. Defaults to "info".
	Level string `toml:"level"`
	// Format is text (human-readable), json, or auto: text on a terminal in
	// the development environment, JSON otherwise. Overridden by
	// TASKER_LOG_FORMAT. Defaults to "auto" ("json" in production).
	Format string `toml:"format"`
}

// Tracing exports a span per task and per step attempt over OTLP/HTTP,
// children of the trace context the task's request carried. Off unless an
// endpoint is set: then no exporter runs and nothing is sent anywhere.
type Tracing struct {
	// OTLPEndpoint is the collector's OTLP/HTTP base URL, e.g.
	// "http://127.0.0.1:4318" (spans go to its /v1/traces). Empty turns
	// tracing off. Defaults to "".
	OTLPEndpoint string `toml:"otlp_endpoint"`
	// ServiceName is the service.name of the spans. Defaults to "tasker".
	ServiceName string `toml:"service_name"`
}

// Shutdown bounds the graceful stop.
type Shutdown struct {
	// Timeout is how long in-flight handlers may run after a stop is
	// requested; what is left is redelivered later. Defaults to 30s (5s in the
	// test environment).
	Timeout Duration `toml:"timeout"`
}

// Templates says where task templates are loaded from.
type Templates struct {
	// Dirs are extra folders of template files, loaded at start-up. Defaults
	// to [].
	Dirs []string `toml:"dirs"`
	// Bundled loads the example templates shipped with Tasker, with their
	// demo handlers. Defaults to true (false in production).
	Bundled bool `toml:"bundled"`
}

// Retention says how long finished work is kept; a maintenance actor on
// one orchestration node at a time (a lease in the database) deletes what
// is older, in small batches. A period of 0 keeps that kind forever.
type Retention struct {
	// Enabled runs the pruning on orchestration nodes. Defaults to true.
	Enabled bool `toml:"enabled"`
	// CompleteTasks keeps complete and resolved tasks, with their steps,
	// edges and transitions, this long after they finished. A request id
	// whose task was deleted is new again. Defaults to 7d.
	CompleteTasks Duration `toml:"complete_tasks"`
	// FailedTasks keeps tasks in error this long after they failed.
	// Defaults to 30d.
	FailedTasks Duration `toml:"failed_tasks"`
	// CancelledTasks keeps cancelled tasks this long. Defaults to 7d.
	CancelledTasks Duration `toml:"cancelled_tasks"`
	// RejectedRequests keeps the rejected task requests (tasker requests
	// rejected) this long. Defaults to 30d.
	RejectedRequests Duration `toml:"rejected_requests"`
	// Archives keeps each queue's archived messages (rejected requests'
	// bodies, poison messages) this long. Defaults to 7d.
	Archives Duration `toml:"archives"`
	// ScheduleFires keeps the schedules' fire history this long. Defaults
	// to 30d.
	ScheduleFires Duration `toml:"schedule_fires"`
	// Interval is the time between two pruning runs. Defaults to 1m.
	Interval Duration `toml:"interval"`
	// BatchSize is how many rows (tasks, with what belongs to them) one
	// transaction deletes. Defaults to 500.
	BatchSize int `toml:"batch_size"`
	// TimeBudget bounds one run; what is left waits for the next.
	// Defaults to 5s.
	TimeBudget Duration `toml:"time_budget"`
	// Vacuum makes the pruning node, on a server whose autovacuum is off,
	// vacuum after each run the Tasker and queue tables whose dead rows
	// pass autovacuum's own threshold, which autovacuum would have done.
	// Defaults to true.
	Vacuum bool `toml:"vacuum"`
}

// Schedule is one [[schedules]] entry: a cron expression that starts a
// task from a template. Each fire is a task request with a request id
// derived from the schedule and the fire time, sent once however many
// nodes run.
type Schedule struct {
	// Name identifies the schedule (a lower-case identifier); it must be
	// set. Defaults to "".
	Name string `toml:"name"`
	// Namespace is the template's namespace; it must be set. Defaults to
	// "".
	Namespace string `toml:"namespace"`
	// Template is the template's name; it must be set. Defaults to "".
	Template string `toml:"template"`
	// Version is the template's version; empty takes the newest when the
	// fire's request is accepted. Defaults to "".
	Version string `toml:"version"`
	// Cron is five fields (minute hour day-of-month month day-of-week), six
	// with seconds first, or a descriptor ("@hourly", "@every 30s"); it
	// must be set. Defaults to "".
	Cron string `toml:"cron"`
	// TimeZone is the IANA zone Cron is read in. Defaults to "UTC".
	TimeZone string `toml:"time_zone"`
	// Context is each task's context. Defaults to {}.
	Context map[string]any `toml:"context"`
	// Priority is each request's priority. Defaults to 0.
	Priority int `toml:"priority"`
	// Overlap is what a fire does while the previous fire's task runs:
	// "skip", "allow" or "cancel_previous". Defaults to "skip".
	Overlap string `toml:"overlap"`
	// CatchUp is what becomes of fires missed while no node ran: "none",
	// "one" (one task for them all) or "all" (up to CatchUpLimit).
	// Defaults to "one".
	CatchUp string `toml:"catch_up"`
	// CatchUpLimit bounds the missed fires "all" sends. Defaults to 10.
	CatchUpLimit int `toml:"catch_up_limit"`
}

// Default returns the built-in configuration of env: the base defaults with
// the environment's own defaults applied ("" means development; an unknown
// name gets the base defaults).
func Default(env string) *Config {
	c := &Config{
		Node: Node{Mode: ModeAll, WorkerNamespaces: []string{}},
		Database: Database{
			DataDir:        ".tasker/pgdata",
			MaxConns:       10,
			ConnectTimeout: Duration(10 * time.Second),
		},
		Queue: Queue{
			PollInterval:      Duration(100 * time.Millisecond),
			VisibilityTimeout: Duration(30 * time.Second),
			BatchSize:         50,
			MaxDeliveries:     5,
			MaxRequestBytes:   256 << 10,
			TemplateGrace:     Duration(5 * time.Minute),
			MaxResultBytes:    1 << 20,
			ListenNotify:      true,
		},
		CircuitBreakers: CircuitBreakers{MaxHosts: 1024, Default: BreakerConfig{
			FailureThreshold: 5,
			Window:           Duration(30 * time.Second),
			Delay:            Duration(5 * time.Second),
			SuccessThreshold: 2,
			MinExecutions:    10,
		}},
		Backoff: Backoff{
			Base:           Duration(time.Second),
			Multiplier:     2,
			Max:            Duration(5 * time.Minute),
			Jitter:         0.1,
			MaxServerDelay: Duration(time.Hour),
		},
		Supervision: Supervision{MaxRestarts: 10, Window: Duration(time.Minute)},
		HTTP:        HTTP{Listen: "127.0.0.1:8080"},
		Health:      Health{XminHorizonWarn: Duration(5 * time.Minute)},
		Log:         Log{Level: LogLevelInfo, Format: LogFormatAuto},
		Tracing:     Tracing{ServiceName: "tasker"},
		Shutdown:    Shutdown{Timeout: Duration(30 * time.Second)},
		Templates:   Templates{Dirs: []string{}, Bundled: true},
		Flow:        Flow{AgingInterval: Duration(10 * time.Second), Handlers: map[string]HandlerFlow{}},
		Retention: Retention{
			Enabled:          true,
			CompleteTasks:    Duration(7 * 24 * time.Hour),
			FailedTasks:      Duration(30 * 24 * time.Hour),
			CancelledTasks:   Duration(7 * 24 * time.Hour),
			RejectedRequests: Duration(30 * 24 * time.Hour),
			Archives:         Duration(7 * 24 * time.Hour),
			ScheduleFires:    Duration(30 * 24 * time.Hour),
			Interval:         Duration(time.Minute),
			BatchSize:        500,
			TimeBudget:       Duration(5 * time.Second),
			Vacuum:           true,
		},
		Schedules: []Schedule{},
		Env:       cmp.Or(env, EnvDevelopment),
	}
	switch env {
	case EnvTest:
		// Test suites start many nodes; keep every wait short and every port free.
		c.Queue.PollInterval = Duration(10 * time.Millisecond)
		c.Queue.VisibilityTimeout = Duration(2 * time.Second)
		c.Shutdown.Timeout = Duration(5 * time.Second)
		c.Backoff.Base = Duration(50 * time.Millisecond)
		c.Backoff.Max = Duration(time.Second)
		c.CircuitBreakers.Default.Delay = Duration(500 * time.Millisecond)
		c.Queue.TemplateGrace = Duration(time.Second)
		c.HTTP.Listen = "127.0.0.1:0"
	case EnvProduction:
		c.Log.Format = LogFormatJSON
		// The demo namespaces have no place in production: five pollers
		// and their workers for nothing.
		c.Templates.Bundled = false
	}
	return c
}

// defaultNamespace is the setting of a namespace without an entry, and the
// starting point of an entry that sets only some keys.
func defaultNamespace() Namespace { return Namespace{Workers: 4, AllowedHosts: []string{}} }

// Namespace returns the effective worker settings of namespace: its entry (or
// the defaults) with inherited intervals filled in from [queue].
func (c *Config) Namespace(name string) Namespace {
	ns, ok := c.Namespaces[name]
	if !ok {
		ns = defaultNamespace()
	}
	ns.PollInterval = cmp.Or(ns.PollInterval, c.Queue.PollInterval)
	ns.VisibilityTimeout = cmp.Or(ns.VisibilityTimeout, c.Queue.VisibilityTimeout)
	return ns
}

// OrchestrationPollInterval is the effective poll interval of the
// orchestration queues.
func (c *Config) OrchestrationPollInterval() time.Duration {
	return cmp.Or(c.Orchestration.PollInterval, c.Queue.PollInterval).Duration()
}

// Breaker returns the settings of a component's circuit breaker:
// circuit_breakers.default with the component's override applied.
func (c *Config) Breaker(component string) BreakerConfig {
	b := c.CircuitBreakers.Default
	if o, ok := c.CircuitBreakers.Components[component]; ok {
		b = o.apply(b)
	}
	return b
}
