package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/tasker-run/tasker/workflow"
	"github.com/tasker-run/tasker/workflow/handlers"
)

// ValidationError lists every problem of a configuration. Each problem names
// the TOML key it is about.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid config: " + e.Problems[0]
	}
	return fmt.Sprintf("invalid config, %d problems:\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// Validate checks every key against its allowed range and returns a
// *[ValidationError] listing all problems, or nil.
func (c *Config) Validate() error {
	var v validator
	v.oneOf("node.mode", c.Node.Mode, ModeAll, ModeOrchestration, ModeWorkers)
	for i, ns := range c.Node.WorkerNamespaces {
		v.namespace(fmt.Sprintf("node.worker_namespaces[%d]", i), ns)
	}
	if c.Node.Mode == ModeOrchestration && len(c.Node.WorkerNamespaces) > 0 {
		v.add("node.worker_namespaces must be empty when node.mode is %q (got %q)", ModeOrchestration, c.Node.WorkerNamespaces)
	}

	if c.Database.URL != "" && !validDatabaseURL(c.Database.URL) {
		// The value is not echoed: it may hold a password.
		v.add("database.url must be a postgres:// or postgresql:// URL or key=value settings, or empty for the embedded PostgreSQL")
	}
	if c.Database.URL == "" && strings.TrimSpace(c.Database.DataDir) == "" {
		v.add("database.data_dir must not be empty when database.url is empty (the embedded PostgreSQL needs a folder)")
	}
	v.intRange("database.max_conns", c.Database.MaxConns, 1, 1000)
	v.durRange("database.connect_timeout", c.Database.ConnectTimeout, 100*time.Millisecond, 10*time.Minute)

	v.durRange("queue.poll_interval", c.Queue.PollInterval, time.Millisecond, time.Hour)
	v.seconds("queue.visibility_timeout", c.Queue.VisibilityTimeout, false)
	v.intRange("queue.batch_size", c.Queue.BatchSize, 1, 1000)
	v.intRange("queue.max_deliveries", c.Queue.MaxDeliveries, 1, 1000)
	v.intRange("queue.max_request_bytes", c.Queue.MaxRequestBytes, 1<<10, 64<<20)
	v.intRange("queue.max_result_bytes", c.Queue.MaxResultBytes, 1<<10, 64<<20)
	v.durRange("queue.template_grace", c.Queue.TemplateGrace, 0, 24*time.Hour)

	v.optDurRange("orchestration.poll_interval", c.Orchestration.PollInterval, time.Millisecond, time.Hour)

	for _, name := range slices.Sorted(maps.Keys(c.Namespaces)) {
		ns := c.Namespaces[name]
		key := toml.Key{"namespaces", name}.String()
		v.namespace(key, name)
		v.intRange(key+".workers", ns.Workers, 1, 1024)
		v.optDurRange(key+".poll_interval", ns.PollInterval, time.Millisecond, time.Hour)
		v.seconds(key+".visibility_timeout", ns.VisibilityTimeout, true)
		for i, entry := range ns.AllowedHosts {
			if err := handlers.ParseAllowedHost(entry); err != nil {
				v.add("%s.allowed_hosts[%d] %v", key, i, err)
			}
		}
		v.intRange(key+".max_in_flight", ns.MaxInFlight, 0, 1_000_000)
		v.rate(key, ns.Rate, ns.Burst)
		v.oneOf(key+".retry_after_pauses", ns.RetryAfterPauses, "", string(workflow.PauseKey), string(workflow.PauseHost))
	}

	v.durRange("flow.aging_interval", c.Flow.AgingInterval, 0, 24*time.Hour)
	for _, name := range slices.Sorted(maps.Keys(c.Flow.Handlers)) {
		key := toml.Key{"flow", "handlers", name}.String()
		h := c.Flow.Handlers[name]
		if h.Rate == "" && h.MaxInFlight == 0 {
			v.add("%s sets no limit: give it max_in_flight, rate or both", key)
		}
		v.intRange(key+".max_in_flight", h.MaxInFlight, 0, 1_000_000)
		v.rate(key, h.Rate, h.Burst)
	}

	v.intRange("circuit_breakers.max_hosts", c.CircuitBreakers.MaxHosts, 1, 1_000_000)

	v.breaker("circuit_breakers.default", c.CircuitBreakers.Default)
	for _, name := range slices.Sorted(maps.Keys(c.CircuitBreakers.Components)) {
		key := toml.Key{"circuit_breakers", "components", name}.String()
		_, declared := c.Namespaces[name]
		switch {
		case !validComponent(name):
			v.add("%s must name orchestration, a namespace or http:<host> (got %q)", key, name)
		case (name == "task_requests" || name == "step_results") && !declared:
			// The keys of earlier versions: one breaker guards both
			// orchestration queues.
			v.add("%s is no longer a component: the breaker of the orchestration queues is circuit_breakers.components.orchestration", key)
		}
		// Check only what the override sets: inherited values were checked above.
		o := c.CircuitBreakers.Components[name]
		if o.FailureThreshold != nil {
			v.intRange(key+".failure_threshold", *o.FailureThreshold, 1, 1000)
		}
		if o.FailureRatio != nil {
			v.floatRange(key+".failure_ratio", *o.FailureRatio, 0, 1)
		}
		if o.Window != nil {
			v.durRange(key+".window", *o.Window, time.Second, 24*time.Hour)
		}
		if o.Delay != nil {
			v.durRange(key+".delay", *o.Delay, 10*time.Millisecond, time.Hour)
		}
		if o.SuccessThreshold != nil {
			v.intRange(key+".success_threshold", *o.SuccessThreshold, 1, 1000)
		}
		if o.MinExecutions != nil {
			v.intRange(key+".min_executions", *o.MinExecutions, 1, 100000)
		}
	}

	v.durRange("backoff.base", c.Backoff.Base, time.Millisecond, time.Hour)
	v.floatRange("backoff.multiplier", c.Backoff.Multiplier, 1, 100)
	if c.Backoff.Max < c.Backoff.Base || c.Backoff.Max > Duration(24*time.Hour) {
		v.add("backoff.max must be between backoff.base (%s) and 24h (got %s)", c.Backoff.Base, c.Backoff.Max)
	}
	v.floatRange("backoff.jitter", c.Backoff.Jitter, 0, 1)
	v.durRange("backoff.max_server_delay", c.Backoff.MaxServerDelay, time.Second, 7*24*time.Hour)

	v.intRange("supervision.max_restarts", c.Supervision.MaxRestarts, 1, 10000)
	v.durRange("supervision.window", c.Supervision.Window, time.Second, 24*time.Hour)

	if c.HTTP.Listen != "" && !validListen(c.HTTP.Listen) {
		v.add("http.listen must be host:port with a port from 0 to 65535, like \"127.0.0.1:8080\", or \"\" to disable (got %q)", c.HTTP.Listen)
	}
	if c.HTTP.APIToken != "" && len(c.HTTP.APIToken) < 16 {
		// The value is not echoed: it is a secret.
		v.add("http.api_token must be at least 16 characters when set (got %d)", len(c.HTTP.APIToken))
	}

	if w := c.Health.XminHorizonWarn; w != 0 && (w < Duration(time.Second) || w > Duration(24*time.Hour)) {
		v.add("health.xmin_horizon_warn must be 0s (off) or between 1s and 24h (got %s)", w)
	}

	v.oneOf("log.level", c.Log.Level, LogLevelDebug, LogLevelInfo, LogLevelWarn, LogLevelError)
	v.oneOf("log.format", c.Log.Format, LogFormatAuto, LogFormatText, LogFormatJSON)
	if e := c.Tracing.OTLPEndpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			v.add("tracing.otlp_endpoint must be an http:// or https:// URL with a host and no user info (got %q)", e)
		}
	}

	v.durRange("shutdown.timeout", c.Shutdown.Timeout, 100*time.Millisecond, time.Hour)

	for i, dir := range c.Templates.Dirs {
		if strings.TrimSpace(dir) == "" {
			v.add("templates.dirs[%d] must not be empty", i)
		}
	}

	v.durRange("retention.interval", c.Retention.Interval, time.Second, 24*time.Hour)
	v.intRange("retention.batch_size", c.Retention.BatchSize, 1, 100_000)
	v.durRange("retention.time_budget", c.Retention.TimeBudget, 10*time.Millisecond, time.Hour)
	for _, k := range []struct {
		key  string
		keep Duration
	}{
		{"retention.complete_tasks", c.Retention.CompleteTasks}, {"retention.failed_tasks", c.Retention.FailedTasks},
		{"retention.cancelled_tasks", c.Retention.CancelledTasks}, {"retention.rejected_requests", c.Retention.RejectedRequests},
		{"retention.archives", c.Retention.Archives}, {"retention.schedule_fires", c.Retention.ScheduleFires},
	} {
		if k.keep < 0 || (k.keep != 0 && k.keep < Duration(time.Second)) {
			v.add("%s must be 0 (keep forever) or at least 1s (got %s)", k.key, k.keep)
		}
	}
	seen := map[string]int{}
	for i, sc := range c.Schedules {
		key := fmt.Sprintf("schedules[%d]", i)
		if _, err := sc.Workflow(); err != nil {
			var se *workflow.ScheduleError
			if errors.As(err, &se) {
				v.add("%s.%s %s", key, se.Field, se.Problem)
			} else {
				v.add("%s %v", key, err)
			}
			continue
		}
		if j, dup := seen[sc.Name]; dup {
			v.add("%s.name %q is also the name of schedules[%d]", key, sc.Name, j)
		}
		seen[sc.Name] = i
	}

	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

// validator collects problems; every message starts with the key.
type validator struct{ problems []string }

func (v *validator) add(format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, args...))
}

func (v *validator) intRange(key string, got, lo, hi int) {
	if got < lo || got > hi {
		v.add("%s must be between %d and %d (got %d)", key, lo, hi, got)
	}
}

func (v *validator) floatRange(key string, got, lo, hi float64) {
	if !(got >= lo && got <= hi) { // also rejects NaN
		v.add("%s must be between %g and %g (got %g)", key, lo, hi, got)
	}
}

func (v *validator) durRange(key string, got Duration, lo, hi time.Duration) {
	if got < Duration(lo) || got > Duration(hi) {
		v.add("%s must be between %s and %s (got %s)", key, Duration(lo), Duration(hi), got)
	}
}

// optDurRange is durRange for a duration where 0 means inherit.
func (v *validator) optDurRange(key string, got Duration, lo, hi time.Duration) {
	if got != 0 && (got < Duration(lo) || got > Duration(hi)) {
		v.add("%s must be 0s (inherit) or between %s and %s (got %s)", key, Duration(lo), Duration(hi), got)
	}
}

// seconds checks a visibility timeout: pgmq takes whole seconds.
func (v *validator) seconds(key string, got Duration, inherit bool) {
	const lo, hi = time.Second, 24 * time.Hour
	if inherit && got == 0 {
		return
	}
	if got < Duration(lo) || got > Duration(hi) || got.Duration()%time.Second != 0 {
		or := ""
		if inherit {
			or = "0s (inherit) or "
		}
		v.add("%s must be %sa whole number of seconds between %s and %s (got %s)", key, or, Duration(lo), Duration(hi), got)
	}
}

// rate checks the rate and burst of the table at key; an empty rate sets
// none.
func (v *validator) rate(key, rate string, burst int) {
	if rate != "" {
		if _, err := workflow.ParseRate(rate); err != nil {
			v.add("%s.rate: %v", key, err)
		}
	}
	v.intRange(key+".burst", burst, 0, 1_000_000)
}

func (v *validator) oneOf(key, got string, allowed ...string) {
	if !slices.Contains(allowed, got) {
		v.add("%s must be one of %s (got %q)", key, strings.Join(allowed, ", "), got)
	}
}

func (v *validator) namespace(key, name string) {
	if !workflow.ValidNamespace(name) {
		v.add("%s must be a namespace name matching %s of at most %d characters (got %q)", key, workflow.IdentPattern, workflow.MaxNamespaceLen, name)
	}
}

func (v *validator) breaker(key string, b BreakerConfig) {
	v.intRange(key+".failure_threshold", b.FailureThreshold, 1, 1000)
	v.floatRange(key+".failure_ratio", b.FailureRatio, 0, 1)
	v.durRange(key+".window", b.Window, time.Second, 24*time.Hour)
	v.durRange(key+".delay", b.Delay, 10*time.Millisecond, time.Hour)
	v.intRange(key+".success_threshold", b.SuccessThreshold, 1, 1000)
	v.intRange(key+".min_executions", b.MinExecutions, 1, 100000)
}

func validComponent(name string) bool {
	if host, ok := strings.CutPrefix(name, "http:"); ok {
		return host != "" && !strings.ContainsAny(host, " /\t")
	}
	return name == ComponentOrchestration || workflow.ValidNamespace(name)
}

func validDatabaseURL(s string) bool {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		_, err := url.Parse(s)
		return err == nil
	}
	return strings.Contains(s, "=")
}

func validListen(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

// ProductionProblems lists what makes the configuration unsafe to run in
// production, each naming the key to set: the embedded PostgreSQL (a
// private, local server meant for development), and an HTTP listener other
// machines can reach with no API token. Empty outside production.
func (c *Config) ProductionProblems() []string {
	if c.Env != EnvProduction {
		return nil
	}
	var out []string
	if c.Database.URL == "" {
		out = append(out, "database.url (or TASKER_DATABASE_URL) must be set in production: the embedded PostgreSQL is for development")
	}
	if c.HTTP.Listen != "" && c.HTTP.APIToken == "" && !LoopbackHost(c.HTTP.Listen) {
		out = append(out, fmt.Sprintf("http.api_token (or TASKER_API_TOKEN) must be set in production when http.listen is not a loopback address (got %q)", c.HTTP.Listen))
	}
	return out
}

// LoopbackHost reports whether host (a name or address, with or without a
// port) is this machine's loopback: localhost, or a loopback address. An
// empty host (":8080", every interface) is not.
func LoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
