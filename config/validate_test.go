package config

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/workflow"
)

func ptr[T any](v T) *T { return &v }

func TestValidateDefaults(t *testing.T) {
	t.Parallel()
	for _, env := range []string{EnvDevelopment, EnvTest, EnvProduction, "staging"} {
		require.NoError(t, Default(env).Validate(), env)
	}
}

func TestValidateRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"node.mode", func(c *Config) { c.Node.Mode = "both" },
			`node.mode must be one of all, orchestration, workers (got "both")`},
		{"node.worker_namespaces", func(c *Config) { c.Node.WorkerNamespaces = []string{"ok", "Bad"} },
			`node.worker_namespaces[1] must be a namespace name matching [a-z][a-z0-9_]* of at most 40 characters (got "Bad")`},
		{"node.worker_namespaces with orchestration", func(c *Config) {
			c.Node.Mode = ModeOrchestration
			c.Node.WorkerNamespaces = []string{"payments"}
		}, `node.worker_namespaces must be empty when node.mode is "orchestration" (got ["payments"])`},
		{"database.url", func(c *Config) { c.Database.URL = "mysql-secret" },
			`database.url must be a postgres:// or postgresql:// URL or key=value settings, or empty for the embedded PostgreSQL`},
		{"database.data_dir", func(c *Config) { c.Database.DataDir = " " },
			`database.data_dir must not be empty when database.url is empty (the embedded PostgreSQL needs a folder)`},
		{"database.max_conns", func(c *Config) { c.Database.MaxConns = 0 },
			`database.max_conns must be between 1 and 1000 (got 0)`},
		{"database.connect_timeout", func(c *Config) { c.Database.ConnectTimeout = Duration(time.Millisecond) },
			`database.connect_timeout must be between 100ms and 10m (got 1ms)`},
		{"queue.poll_interval", func(c *Config) { c.Queue.PollInterval = 0 },
			`queue.poll_interval must be between 1ms and 1h (got 0s)`},
		{"queue.visibility_timeout whole seconds", func(c *Config) { c.Queue.VisibilityTimeout = Duration(1500 * time.Millisecond) },
			`queue.visibility_timeout must be a whole number of seconds between 1s and 24h (got 1.5s)`},
		{"queue.visibility_timeout range", func(c *Config) { c.Queue.VisibilityTimeout = 0 },
			`queue.visibility_timeout must be a whole number of seconds between 1s and 24h (got 0s)`},
		{"queue.batch_size", func(c *Config) { c.Queue.BatchSize = 1001 },
			`queue.batch_size must be between 1 and 1000 (got 1001)`},
		{"queue.max_deliveries", func(c *Config) { c.Queue.MaxDeliveries = 0 },
			`queue.max_deliveries must be between 1 and 1000 (got 0)`},
		{"queue.max_request_bytes", func(c *Config) { c.Queue.MaxRequestBytes = 100 },
			`queue.max_request_bytes must be between 1024 and 67108864 (got 100)`},
		{"orchestration.poll_interval", func(c *Config) { c.Orchestration.PollInterval = Duration(-time.Second) },
			`orchestration.poll_interval must be 0s (inherit) or between 1ms and 1h (got -1s)`},
		{"namespaces name pattern", func(c *Config) { c.Namespaces = map[string]Namespace{"Pay-ments": defaultNamespace()} },
			`namespaces.Pay-ments must be a namespace name matching [a-z][a-z0-9_]* of at most 40 characters (got "Pay-ments")`},
		{"namespaces name length", func(c *Config) { c.Namespaces = map[string]Namespace{strings.Repeat("n", 41): defaultNamespace()} },
			`namespaces.` + strings.Repeat("n", 41) + ` must be a namespace name matching [a-z][a-z0-9_]* of at most 40 characters (got "` + strings.Repeat("n", 41) + `")`},
		{"namespaces.workers", func(c *Config) { c.Namespaces = map[string]Namespace{"payments": {Workers: 0}} },
			`namespaces.payments.workers must be between 1 and 1024 (got 0)`},
		{"namespaces.max_in_flight", func(c *Config) { c.Namespaces = map[string]Namespace{"payments": {Workers: 1, MaxInFlight: -1}} },
			`namespaces.payments.max_in_flight must be between 0 and 1000000 (got -1)`},
		{"namespaces.rate", func(c *Config) { c.Namespaces = map[string]Namespace{"payments": {Workers: 1, Rate: "50 per second"}} },
			`namespaces.payments.rate: rate "50 per second" is not <count>/<unit> (like 100/s, 6/m or 5/500ms)`},
		{"namespaces.burst", func(c *Config) { c.Namespaces = map[string]Namespace{"payments": {Workers: 1, Rate: "5/s", Burst: -2}} },
			`namespaces.payments.burst must be between 0 and 1000000 (got -2)`},
		{"flow.aging_interval", func(c *Config) { c.Flow.AgingInterval = Duration(48 * time.Hour) },
			`flow.aging_interval must be between 0s and 24h (got 48h)`},
		{"flow.handlers rate", func(c *Config) { c.Flow.Handlers = map[string]HandlerFlow{"http": {}} },
			`flow.handlers.http sets no limit: give it max_in_flight, rate or both`},
		{"namespaces.retry_after_pauses", func(c *Config) {
			c.Namespaces = map[string]Namespace{"payments": {Workers: 1, RetryAfterPauses: "tenant"}}
		}, `namespaces.payments.retry_after_pauses must be one of , key, host (got "tenant")`},
		{"flow.handlers max_in_flight", func(c *Config) { c.Flow.Handlers = map[string]HandlerFlow{"http": {MaxInFlight: -3}} },
			`flow.handlers.http.max_in_flight must be between 0 and 1000000 (got -3)`},
		{"flow.handlers bad rate", func(c *Config) { c.Flow.Handlers = map[string]HandlerFlow{"http": {Rate: "0/s"}} },
			`flow.handlers.http.rate: rate "0/s": the count must be a whole number of at least 1`},
		{"namespaces.poll_interval", func(c *Config) {
			c.Namespaces = map[string]Namespace{"payments": {Workers: 1, PollInterval: Duration(2 * time.Hour)}}
		}, `namespaces.payments.poll_interval must be 0s (inherit) or between 1ms and 1h (got 2h)`},
		{"namespaces.visibility_timeout", func(c *Config) {
			c.Namespaces = map[string]Namespace{"payments": {Workers: 1, VisibilityTimeout: Duration(500 * time.Millisecond)}}
		}, `namespaces.payments.visibility_timeout must be 0s (inherit) or a whole number of seconds between 1s and 24h (got 500ms)`},
		{"namespaces.allowed_hosts", func(c *Config) {
			c.Namespaces = map[string]Namespace{"payments": {Workers: 1, AllowedHosts: []string{"127.0.0.1", "10.0.0.0/99"}}}
		}, `namespaces.payments.allowed_hosts[1] "10.0.0.0/99" is not a CIDR such as "10.0.0.0/8" or "fc00::/7"`},
		{"namespaces.allowed_hosts wildcard", func(c *Config) {
			c.Namespaces = map[string]Namespace{"payments": {Workers: 1, AllowedHosts: []string{"*.internal"}}}
		}, `namespaces.payments.allowed_hosts[0] "*.internal": wildcards are not supported; list host names, IPs or CIDRs such as "10.0.0.0/8"`},
		{"circuit_breakers.max_hosts", func(c *Config) { c.CircuitBreakers.MaxHosts = 0 },
			`circuit_breakers.max_hosts must be between 1 and 1000000 (got 0)`},
		{"circuit_breakers.default.failure_threshold", func(c *Config) { c.CircuitBreakers.Default.FailureThreshold = 0 },
			`circuit_breakers.default.failure_threshold must be between 1 and 1000 (got 0)`},
		{"circuit_breakers.default.failure_ratio", func(c *Config) { c.CircuitBreakers.Default.FailureRatio = 1.5 },
			`circuit_breakers.default.failure_ratio must be between 0 and 1 (got 1.5)`},
		{"circuit_breakers.default.failure_ratio NaN", func(c *Config) { c.CircuitBreakers.Default.FailureRatio = math.NaN() },
			`circuit_breakers.default.failure_ratio must be between 0 and 1 (got NaN)`},
		{"circuit_breakers.default.window", func(c *Config) { c.CircuitBreakers.Default.Window = Duration(time.Millisecond) },
			`circuit_breakers.default.window must be between 1s and 24h (got 1ms)`},
		{"circuit_breakers.default.delay", func(c *Config) { c.CircuitBreakers.Default.Delay = 0 },
			`circuit_breakers.default.delay must be between 10ms and 1h (got 0s)`},
		{"circuit_breakers.default.success_threshold", func(c *Config) { c.CircuitBreakers.Default.SuccessThreshold = 0 },
			`circuit_breakers.default.success_threshold must be between 1 and 1000 (got 0)`},
		{"circuit_breakers.default.min_executions", func(c *Config) { c.CircuitBreakers.Default.MinExecutions = 0 },
			`circuit_breakers.default.min_executions must be between 1 and 100000 (got 0)`},
		{"circuit_breakers.components name", func(c *Config) {
			c.CircuitBreakers.Components = map[string]BreakerOverride{"http:": {}}
		}, `circuit_breakers.components."http:" must name orchestration, a namespace or http:<host> (got "http:")`},
		{"the old orchestration key", func(c *Config) {
			c.CircuitBreakers.Components = map[string]BreakerOverride{"step_results": {}}
		}, `circuit_breakers.components.step_results is no longer a component: the breaker of the orchestration queues is circuit_breakers.components.orchestration`},
		{"circuit_breakers.components.failure_threshold", func(c *Config) {
			c.CircuitBreakers.Components = map[string]BreakerOverride{"orchestration": {FailureThreshold: ptr(0)}}
		}, `circuit_breakers.components.orchestration.failure_threshold must be between 1 and 1000 (got 0)`},
		{"circuit_breakers.components.failure_ratio", func(c *Config) {
			c.CircuitBreakers.Components = map[string]BreakerOverride{"orchestration": {FailureRatio: ptr(-0.1)}}
		}, `circuit_breakers.components.orchestration.failure_ratio must be between 0 and 1 (got -0.1)`},
		{"circuit_breakers.components.window", func(c *Config) {
			c.CircuitBreakers.Components = map[string]BreakerOverride{"payments": {Window: ptr(Duration(48 * time.Hour))}}
		}, `circuit_breakers.components.payments.window must be between 1s and 24h (got 48h)`},
		{"circuit_breakers.components.delay", func(c *Config) {
			c.CircuitBreakers.Components = map[string]BreakerOverride{"http:api.example.com": {Delay: ptr(Duration(0))}}
		}, `circuit_breakers.components."http:api.example.com".delay must be between 10ms and 1h (got 0s)`},
		{"circuit_breakers.components.success_threshold", func(c *Config) {
			c.CircuitBreakers.Components = map[string]BreakerOverride{"payments": {SuccessThreshold: ptr(1001)}}
		}, `circuit_breakers.components.payments.success_threshold must be between 1 and 1000 (got 1001)`},
		{"circuit_breakers.components.min_executions", func(c *Config) {
			c.CircuitBreakers.Components = map[string]BreakerOverride{"payments": {MinExecutions: ptr(0)}}
		}, `circuit_breakers.components.payments.min_executions must be between 1 and 100000 (got 0)`},
		{"backoff.base", func(c *Config) { c.Backoff.Base = 0 },
			`backoff.base must be between 1ms and 1h (got 0s)`},
		{"backoff.multiplier", func(c *Config) { c.Backoff.Multiplier = 0.5 },
			`backoff.multiplier must be between 1 and 100 (got 0.5)`},
		{"backoff.max below base", func(c *Config) { c.Backoff.Max = Duration(500 * time.Millisecond) },
			`backoff.max must be between backoff.base (1s) and 24h (got 500ms)`},
		{"backoff.jitter", func(c *Config) { c.Backoff.Jitter = 2 },
			`backoff.jitter must be between 0 and 1 (got 2)`},
		{"backoff.max_server_delay", func(c *Config) { c.Backoff.MaxServerDelay = 0 },
			`backoff.max_server_delay must be between 1s and 168h (got 0s)`},
		{"supervision.max_restarts", func(c *Config) { c.Supervision.MaxRestarts = 0 },
			`supervision.max_restarts must be between 1 and 10000 (got 0)`},
		{"supervision.window", func(c *Config) { c.Supervision.Window = Duration(10 * time.Millisecond) },
			`supervision.window must be between 1s and 24h (got 10ms)`},
		{"http.listen", func(c *Config) { c.HTTP.Listen = "8080" },
			`http.listen must be host:port with a port from 0 to 65535, like "127.0.0.1:8080", or "" to disable (got "8080")`},
		{"http.listen port", func(c *Config) { c.HTTP.Listen = "localhost:99999" },
			`http.listen must be host:port with a port from 0 to 65535, like "127.0.0.1:8080", or "" to disable (got "localhost:99999")`},
		{"http.api_token", func(c *Config) { c.HTTP.APIToken = "short" },
			`http.api_token must be at least 16 characters when set (got 5)`},
		{"health.xmin_horizon_warn", func(c *Config) { c.Health.XminHorizonWarn = Duration(500 * time.Millisecond) },
			`health.xmin_horizon_warn must be 0s (off) or between 1s and 24h (got 500ms)`},
		{"health.xmin_horizon_warn too long", func(c *Config) { c.Health.XminHorizonWarn = Duration(48 * time.Hour) },
			`health.xmin_horizon_warn must be 0s (off) or between 1s and 24h (got 48h)`},
		{"log.level", func(c *Config) { c.Log.Level = "trace" },
			`log.level must be one of debug, info, warn, error (got "trace")`},
		{"log.format", func(c *Config) { c.Log.Format = "pretty" },
			`log.format must be one of auto, text, json (got "pretty")`},
		{"shutdown.timeout", func(c *Config) { c.Shutdown.Timeout = Duration(2 * time.Hour) },
			`shutdown.timeout must be between 100ms and 1h (got 2h)`},
		{"templates.dirs", func(c *Config) { c.Templates.Dirs = []string{"examples", ""} },
			`templates.dirs[1] must not be empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Default(EnvDevelopment)
			tt.change(c)
			err := c.Validate()
			require.Equal(t, []string{tt.want}, problems(t, err))
			require.EqualError(t, err, "invalid config: "+tt.want)
		})
	}
}

func TestValidateAllowed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(c *Config)
	}{
		{"http disabled", func(c *Config) { c.HTTP.Listen = "" }},
		{"http all interfaces", func(c *Config) { c.HTTP.Listen = ":8080" }},
		{"http ipv6", func(c *Config) { c.HTTP.Listen = "[::1]:0" }},
		{"url form", func(c *Config) { c.Database.URL = "postgresql://u:p@db:5432/tasker?sslmode=disable" }},
		{"key=value form", func(c *Config) { c.Database.URL = "host=db user=tasker dbname=tasker" }},
		{"data_dir ignored with a URL", func(c *Config) { c.Database.URL = "postgres://db/tasker"; c.Database.DataDir = "" }},
		{"workers with namespaces", func(c *Config) { c.Node.Mode = ModeWorkers; c.Node.WorkerNamespaces = []string{"payments"} }},
		{"namespace of 40 characters", func(c *Config) { c.Namespaces = map[string]Namespace{strings.Repeat("n", 40): defaultNamespace()} }},
		{"components", func(c *Config) {
			c.CircuitBreakers.Components = map[string]BreakerOverride{
				"orchestration": {}, "payments": {}, "http:api.example.com:8443": {},
			}
		}},
		{"backoff max equals base", func(c *Config) { c.Backoff.Max = c.Backoff.Base }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Default(EnvDevelopment)
			tt.change(c)
			require.NoError(t, c.Validate())
		})
	}
}

func TestValidateCollectsAll(t *testing.T) {
	t.Parallel()
	c := Default(EnvDevelopment)
	c.Queue.PollInterval = 0
	c.Log.Level = "loud"
	c.Backoff.Jitter = -1
	require.Equal(t, []string{
		`queue.poll_interval must be between 1ms and 1h (got 0s)`,
		`backoff.jitter must be between 0 and 1 (got -1)`,
		`log.level must be one of debug, info, warn, error (got "loud")`,
	}, problems(t, c.Validate()))
}

func TestValidateDoesNotEchoSecrets(t *testing.T) {
	t.Parallel()
	c := Default(EnvDevelopment)
	c.Database.URL = "s3cr3t-password"
	c.HTTP.APIToken = "tiny-secret"
	err := c.Validate()
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cr3t")
	require.NotContains(t, err.Error(), "tiny-secret")
}

func TestProductionProblems(t *testing.T) {
	t.Parallel()
	c := Default(EnvProduction)
	c.Env = EnvProduction
	problems := c.ProductionProblems()
	require.Len(t, problems, 1)
	require.Contains(t, problems[0], "database.url")

	c.Database.URL = "postgres://db/tasker"
	c.HTTP.Listen = "0.0.0.0:8080"
	problems = c.ProductionProblems()
	require.Len(t, problems, 1)
	require.Contains(t, problems[0], "http.api_token")
	require.Contains(t, problems[0], `"0.0.0.0:8080"`)

	c.HTTP.APIToken = "s3cret"
	require.Empty(t, c.ProductionProblems())
	c.HTTP.APIToken, c.HTTP.Listen = "", "127.0.0.1:8080"
	require.Empty(t, c.ProductionProblems(), "a loopback listener needs no token")

	d := Default(EnvDevelopment)
	d.Env = EnvDevelopment
	require.Empty(t, d.ProductionProblems(), "development may use the embedded server")
}

func TestLoopbackHost(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"localhost": true, "localhost:8080": true, "LOCALHOST.": true, "127.0.0.1:8080": true, "127.5.5.5": true,
		"[::1]:8080": true, "::1": true, "0.0.0.0:8080": false, ":8080": false, "": false, "10.0.0.5:80": false,
		"evil.example:8080": false, "localhost.evil.example": false,
	} {
		require.Equal(t, want, LoopbackHost(host), host)
	}
}

func TestPolicy(t *testing.T) {
	c, err := Parse([]byte(`
[namespaces.payments]
max_in_flight = 20
rate = "50/s"
burst = 10
[namespaces.reports]
workers = 2
retry_after_pauses = "host"
[flow]
aging_interval = "30s"
[flow.handlers.http]
rate = "6/m"
[flow.handlers.shell]
max_in_flight = 3
`), EnvDevelopment, nil)
	require.NoError(t, err)
	require.NoError(t, c.Validate())
	require.Equal(t, workflow.FlowPolicy{
		Namespaces: map[string]workflow.Limit{"payments": {MaxInFlight: 20, Rate: workflow.Rate{Count: 50, Per: time.Second}, Burst: 10}},
		Handlers: map[string]workflow.Limit{"http": {Rate: workflow.Rate{Count: 6, Per: time.Minute}},
			"shell": {MaxInFlight: 3}},
		Aging:  30 * time.Second,
		Pauses: map[string]workflow.PauseScope{"reports": workflow.PauseHost},
	}, c.Policy(), "a namespace without limits is not in the policy")
}
