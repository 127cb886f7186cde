package config

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// envOf returns a getenv over a fixed map, so tests never touch the process
// environment.
func envOf(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

// problems returns the problems of a *ValidationError, failing otherwise.
func problems(t *testing.T, err error) []string {
	t.Helper()
	var verr *ValidationError
	require.ErrorAs(t, err, &verr)
	return verr.Problems
}

const layered = `
[queue]
batch_size = 20

[namespaces.payments]
workers = 8
poll_interval = "1s"

[circuit_breakers.components.payments]
delay = "20s"

[environments.test.queue]
batch_size = 3

[environments.test.namespaces.payments]
workers = 2

[environments.test.namespaces.reports]
visibility_timeout = "5m"

[environments.test.circuit_breakers.components.payments]
failure_threshold = 9

[environments.production.http]
listen = "0.0.0.0:9000"

[environments.staging.log]
level = "debug"
`

func TestParseOverlays(t *testing.T) {
	t.Parallel()

	tests := []struct {
		env   string
		check func(t *testing.T, c *Config)
	}{
		{EnvDevelopment, func(t *testing.T, c *Config) {
			require.Equal(t, 20, c.Queue.BatchSize)
			require.Equal(t, Duration(100*time.Millisecond), c.Queue.PollInterval)
			require.Equal(t, LogFormatAuto, c.Log.Format)
			require.Equal(t, "127.0.0.1:8080", c.HTTP.Listen)
			require.Equal(t, map[string]Namespace{"payments": {Workers: 8, PollInterval: Duration(time.Second), AllowedHosts: []string{}}}, c.Namespaces)
			require.Equal(t, Duration(20*time.Second), c.Breaker("payments").Delay)
			require.Equal(t, 5, c.Breaker("payments").FailureThreshold)
		}},
		{EnvTest, func(t *testing.T, c *Config) {
			// Built-in test defaults, then the root, then the overlay.
			require.Equal(t, Duration(10*time.Millisecond), c.Queue.PollInterval)
			require.Equal(t, Duration(2*time.Second), c.Queue.VisibilityTimeout)
			require.Equal(t, Duration(5*time.Second), c.Shutdown.Timeout)
			require.Equal(t, Duration(50*time.Millisecond), c.Backoff.Base)
			require.Equal(t, Duration(time.Second), c.Backoff.Max)
			require.Equal(t, 3, c.Queue.BatchSize)
			// A map entry in an overlay overrides only the keys it sets.
			require.Equal(t, map[string]Namespace{
				"payments": {Workers: 2, PollInterval: Duration(time.Second), AllowedHosts: []string{}},
				"reports":  {Workers: 4, VisibilityTimeout: Duration(5 * time.Minute), AllowedHosts: []string{}},
			}, c.Namespaces)
			require.Equal(t, Duration(20*time.Second), c.Breaker("payments").Delay)
			require.Equal(t, 9, c.Breaker("payments").FailureThreshold)
		}},
		{EnvProduction, func(t *testing.T, c *Config) {
			require.Equal(t, LogFormatJSON, c.Log.Format)
			require.False(t, c.Templates.Bundled, "no demo templates in production")
			require.Equal(t, "0.0.0.0:9000", c.HTTP.Listen)
			require.Equal(t, 20, c.Queue.BatchSize)
			require.Equal(t, Duration(100*time.Millisecond), c.Queue.PollInterval)
		}},
		{"staging", func(t *testing.T, c *Config) {
			require.Equal(t, LogLevelDebug, c.Log.Level)
			require.Equal(t, LogFormatAuto, c.Log.Format)
			require.Equal(t, 20, c.Queue.BatchSize)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Parallel()
			c, err := Parse([]byte(layered), tt.env, nil)
			require.NoError(t, err)
			require.Equal(t, tt.env, c.Env)
			tt.check(t, c)
		})
	}
}

func TestParseRootBeatsBuiltInEnvironmentDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte("[queue]\npoll_interval = \"200ms\"\n"), EnvTest, nil)
	require.NoError(t, err)
	require.Equal(t, Duration(200*time.Millisecond), c.Queue.PollInterval)
	require.Equal(t, Duration(2*time.Second), c.Queue.VisibilityTimeout)
}

func TestParseEmptyIsDefault(t *testing.T) {
	t.Parallel()
	for _, env := range []string{EnvDevelopment, EnvTest, EnvProduction} {
		c, err := Parse(nil, env, nil)
		require.NoError(t, err)
		require.Equal(t, Default(env), c)
	}
	c, err := Parse(nil, "", nil)
	require.NoError(t, err)
	require.Equal(t, EnvDevelopment, c.Env)
}

func TestParseUnknownEnvironment(t *testing.T) {
	t.Parallel()
	_, err := Parse(nil, "staging", nil)
	require.Equal(t, []string{
		`environment "staging" (TASKER_ENV) is not development, test or production and the config has no [environments.staging] overlay`,
	}, problems(t, err))

	c, err := Parse([]byte("[environments.staging]\n"), "staging", nil)
	require.NoError(t, err)
	require.Equal(t, "staging", c.Env)
}

func TestParseEnvOverrides(t *testing.T) {
	t.Parallel()
	file := []byte(`
[database]
url = "postgres://file@db/tasker"
[http]
listen = "127.0.0.1:1"
[log]
level = "warn"
format = "text"
[node]
id = "from-file"
[environments.production.log]
level = "error"
`)
	c, err := Parse(file, EnvProduction, envOf(map[string]string{
		"TASKER_DATABASE_URL": "postgres://env@db/tasker",
		"TASKER_HTTP_LISTEN":  "127.0.0.1:2",
		"TASKER_LOG_LEVEL":    "DEBUG",
		"TASKER_LOG_FORMAT":   "json",
		"TASKER_NODE_ID":      "from-env",
		"TASKER_NODE_MODE":    "workers",
		"TASKER_API_TOKEN":    "0123456789abcdef",
	}))
	require.NoError(t, err)
	require.Equal(t, "postgres://env@db/tasker", c.Database.URL)
	require.Equal(t, "127.0.0.1:2", c.HTTP.Listen)
	require.Equal(t, LogLevelDebug, c.Log.Level) // beats the overlay too
	require.Equal(t, LogFormatJSON, c.Log.Format)
	require.Equal(t, "from-env", c.Node.ID)
	require.Equal(t, ModeWorkers, c.Node.Mode)
	require.Equal(t, "0123456789abcdef", c.HTTP.APIToken)

	// An empty variable leaves the file's value.
	c, err = Parse(file, EnvDevelopment, envOf(map[string]string{"TASKER_NODE_ID": ""}))
	require.NoError(t, err)
	require.Equal(t, "from-file", c.Node.ID)

	// A bad value from the environment says where it came from.
	_, err = Parse(nil, EnvDevelopment, envOf(map[string]string{"TASKER_LOG_LEVEL": "verbose"}))
	require.Equal(t, []string{
		`log.level must be one of debug, info, warn, error (got "verbose") (set by TASKER_LOG_LEVEL)`,
	}, problems(t, err))
}

func TestParseUnknownKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		toml string
		want []string
	}{
		{"top level", "colour = 1\n", []string{`unknown config key "colour"`}},
		{"top-level table", "[queu]\npoll_interval = \"1s\"\n", []string{`unknown config key "queu"`}},
		{"nested", "[queue]\npol_interval = \"1s\"\n", []string{`unknown config key "queue.pol_interval"`}},
		{"inline table", "queue = { pol_interval = \"1s\" }\n", []string{`unknown config key "queue.pol_interval"`}},
		{"case differs", "[queue]\nPoll_Interval = \"1s\"\n", []string{`unknown config key "queue.Poll_Interval"`}},
		{"not a key", "env = \"test\"\n", []string{`unknown config key "env"`}},
		{"namespace entry", "[namespaces.payments]\nworker = 2\n", []string{`unknown config key "namespaces.payments.worker"`}},
		{"breaker component", "[circuit_breakers.components.orchestration]\ndelays = \"1s\"\n", []string{
			`unknown config key "circuit_breakers.components.orchestration.delays"`,
		}},
		{"chosen overlay", "[environments.development.queue]\npol_interval = \"1s\"\n", []string{
			`unknown config key "environments.development.queue.pol_interval"`,
		}},
		{"other overlay", "[environments.production.queue]\npol_interval = \"1s\"\n", []string{
			`unknown config key "environments.production.queue.pol_interval"`,
		}},
		{"nested overlay", "[environments.production.environments.test]\n", []string{
			`unknown config key "environments.production.environments"`,
		}},
		{"all at once", "a = 1\n[queue]\nb = 2\n[environments.test]\nc = 3\n", []string{
			`unknown config key "a"`, `unknown config key "queue.b"`, `unknown config key "environments.test.c"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.toml), EnvDevelopment, nil)
			require.ElementsMatch(t, tt.want, problems(t, err))
		})
	}
}

func TestParseReportsEverythingTogether(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(`
typo = 1
[queue]
batch_size = 0
poll_interval = "0s"
[environments.test]
queue = 5
`), "staging", nil)
	got := problems(t, err)
	require.Len(t, got, 5)
	require.Contains(t, got[0], `environments.test.queue`)
	require.ElementsMatch(t, []string{
		`unknown config key "typo"`,
		`environment "staging" (TASKER_ENV) is not development, test or production and the config has no [environments.staging] overlay`,
		`queue.poll_interval must be between 1ms and 1h (got 0s)`,
		`queue.batch_size must be between 1 and 1000 (got 0)`,
	}, got[1:])
	require.True(t, strings.HasPrefix(err.Error(), "invalid config, 5 problems:\n  "), err.Error())
}

func TestParseSyntaxAndTypeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, toml, want string }{
		{"syntax", "[queue\n", "parsing config (line 2):"},
		{"bare number duration", "[queue]\npoll_interval = 1000\n", `queue.poll_interval (line 2): invalid duration "1000": want a string with a unit`},
		{"bad duration", "[queue]\npoll_interval = \"fast\"\n", `queue.poll_interval (line 2): invalid duration "fast"`},
		{"wrong type", "[queue]\nbatch_size = \"10\"\n", `queue.batch_size`},
		{"table for a value", "[queue.batch_size]\nx = 1\n", `parsing config: line 1 (last key "queue.batch_size")`},
		{"bad duration in an overlay", "[environments.production.queue]\npoll_interval = \"soon\"\n",
			`environments.production.queue.poll_interval (line 2): invalid duration "soon"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.toml), EnvDevelopment, nil)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "tasker.toml")
	require.NoError(t, os.WriteFile(path, []byte("[environments.test.queue]\nbatch_size = 7\n"), 0o600))

	t.Run("no file", func(t *testing.T) {
		t.Parallel()
		c, err := Load(LoadOptions{Getenv: envOf(map[string]string{"TASKER_ENV": "test", "TASKER_NODE_ID": "n1"})})
		require.NoError(t, err)
		want := Default(EnvTest)
		want.Node.ID = "n1"
		require.Equal(t, want, c)
	})
	t.Run("file and TASKER_ENV", func(t *testing.T) {
		t.Parallel()
		c, err := Load(LoadOptions{Path: path, Getenv: envOf(map[string]string{"TASKER_ENV": "test"})})
		require.NoError(t, err)
		require.Equal(t, 7, c.Queue.BatchSize)
	})
	t.Run("Env beats TASKER_ENV", func(t *testing.T) {
		t.Parallel()
		c, err := Load(LoadOptions{Path: path, Env: EnvProduction, Getenv: envOf(map[string]string{"TASKER_ENV": "test"})})
		require.NoError(t, err)
		require.Equal(t, EnvProduction, c.Env)
		require.Equal(t, 50, c.Queue.BatchSize)
	})
	t.Run("development when unset", func(t *testing.T) {
		t.Parallel()
		c, err := Load(LoadOptions{Path: path, Getenv: envOf(nil)})
		require.NoError(t, err)
		require.Equal(t, EnvDevelopment, c.Env)
	})
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		_, err := Load(LoadOptions{Path: filepath.Join(dir, "absent.toml"), Getenv: envOf(nil)})
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("invalid file names the file", func(t *testing.T) {
		t.Parallel()
		bad := filepath.Join(dir, "bad.toml")
		require.NoError(t, os.WriteFile(bad, []byte("[queue]\nbatch_size = 0\n"), 0o600))
		_, err := Load(LoadOptions{Path: bad, Getenv: envOf(nil)})
		require.EqualError(t, err, "loading "+bad+": invalid config: queue.batch_size must be between 1 and 1000 (got 0)")
		var verr *ValidationError
		require.True(t, errors.As(err, &verr))
	})
}

func TestBreaker(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
[circuit_breakers.default]
failure_ratio = 0.5
[circuit_breakers.components.orchestration]
failure_ratio = 0.0
window = "1m"
[circuit_breakers.components."http:api.example.com"]
delay = "30s"
`), EnvDevelopment, nil)
	require.NoError(t, err)

	def := BreakerConfig{
		FailureThreshold: 5, FailureRatio: 0.5, Window: Duration(30 * time.Second),
		Delay: Duration(5 * time.Second), SuccessThreshold: 2, MinExecutions: 10,
	}
	require.Equal(t, def, c.Breaker("payments"))

	steps := def
	steps.FailureRatio = 0 // an explicit zero overrides
	steps.Window = Duration(time.Minute)
	require.Equal(t, steps, c.Breaker(ComponentOrchestration))

	host := def
	host.Delay = Duration(30 * time.Second)
	require.Equal(t, host, c.Breaker(HTTPComponent("api.example.com")))
}

func TestNamespaceAndOrchestrationInherit(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
[queue]
poll_interval = "200ms"
visibility_timeout = "40s"
[orchestration]
poll_interval = "50ms"
[namespaces.slow]
visibility_timeout = "10m"
`), EnvDevelopment, nil)
	require.NoError(t, err)
	require.Equal(t, Namespace{Workers: 4, PollInterval: Duration(200 * time.Millisecond), VisibilityTimeout: Duration(10 * time.Minute), AllowedHosts: []string{}}, c.Namespace("slow"))
	require.Equal(t, Namespace{Workers: 4, PollInterval: Duration(200 * time.Millisecond), VisibilityTimeout: Duration(40 * time.Second), AllowedHosts: []string{}}, c.Namespace("unconfigured"))
	require.Equal(t, 50*time.Millisecond, c.OrchestrationPollInterval())

	c.Orchestration.PollInterval = 0
	require.Equal(t, 200*time.Millisecond, c.OrchestrationPollInterval())
}

func TestNodeRoles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		node                     Node
		orchestration, workers   bool
		payments, reportsRunHere bool
	}{
		{Node{Mode: ModeAll}, true, true, true, true},
		{Node{Mode: ModeOrchestration}, true, false, false, false},
		{Node{Mode: ModeWorkers, WorkerNamespaces: []string{"payments"}}, false, true, true, false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.orchestration, tt.node.RunsOrchestration(), tt.node)
		require.Equal(t, tt.workers, tt.node.RunsWorkers(), tt.node)
		require.Equal(t, tt.payments, tt.node.RunsNamespace("payments"), tt.node)
		require.Equal(t, tt.reportsRunHere, tt.node.RunsNamespace("reports"), tt.node)
	}
}

func TestDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text string
		want Duration
		out  string
	}{
		{"250ms", Duration(250 * time.Millisecond), "250ms"},
		{"5s", Duration(5 * time.Second), "5s"},
		{"0s", 0, "0s"},
		{"0", 0, "0s"},
		{"90s", Duration(90 * time.Second), "1m30s"},
		{"60m", Duration(time.Hour), "1h"},
		{"5m0s", Duration(5 * time.Minute), "5m"},
		{"1h0m1s", Duration(time.Hour + time.Second), "1h0m1s"},
		{"1.5s", Duration(1500 * time.Millisecond), "1.5s"},
		{"7d", Duration(7 * 24 * time.Hour), "168h"},
		{"1d12h", Duration(36 * time.Hour), "36h"},
	}
	for _, tt := range tests {
		var d Duration
		require.NoError(t, d.UnmarshalText([]byte(tt.text)), tt.text)
		require.Equal(t, tt.want, d, tt.text)
		out, err := d.MarshalText()
		require.NoError(t, err)
		require.Equal(t, tt.out, string(out), tt.text)
		require.Equal(t, tt.want.Duration(), time.Duration(d))

		var back Duration
		require.NoError(t, back.UnmarshalText(out))
		require.Equal(t, d, back)
	}
	var d Duration
	require.EqualError(t, d.UnmarshalText([]byte("10")), `invalid duration "10": want a string with a unit, like "250ms", "5s" or "7d"`)
}

// TestFieldsDocumentDefaults keeps every TOML key of config.go documented
// with its default, as the package promises.
func TestFieldsDocumentDefaults(t *testing.T) {
	t.Parallel()
	file, err := parser.ParseFile(token.NewFileSet(), "config.go", nil, parser.ParseComments)
	require.NoError(t, err)
	// Fields holding a table document their keys on their own type instead.
	tables := map[string]bool{}
	ast.Inspect(file, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok {
			_, tables[ts.Name.Name] = ts.Type.(*ast.StructType)
		}
		return true
	})
	checked := 0
	ast.Inspect(file, func(n ast.Node) bool {
		st, ok := n.(*ast.StructType)
		if !ok {
			return true
		}
		for _, f := range st.Fields.List {
			if f.Tag == nil || strings.Contains(f.Tag.Value, `toml:"-"`) {
				continue
			}
			if id, ok := f.Type.(*ast.Ident); ok && tables[id.Name] {
				continue
			}
			name := f.Names[0].Name
			require.NotNil(t, f.Doc, "%s has no doc comment", name)
			doc := strings.Join(strings.Fields(f.Doc.Text()), " ")
			require.Regexp(t, `Defaults to [^.]+(\.[0-9][^.]*)?\.`, doc, "%s does not document its default", name)
			checked++
		}
		return true
	})
	require.Greater(t, checked, 40)
}

func TestNamespaceAllowedHosts(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
[namespaces.orders]
allowed_hosts = ["127.0.0.1", "internal.example:8080", "10.0.0.0/8", "[::1]:9000"]
`), EnvDevelopment, nil)
	require.NoError(t, err)
	require.NoError(t, c.Validate())
	require.Equal(t, []string{"127.0.0.1", "internal.example:8080", "10.0.0.0/8", "[::1]:9000"}, c.Namespace("orders").AllowedHosts)
	require.Empty(t, c.Namespace("other").AllowedHosts)
	require.Equal(t, 1024, c.CircuitBreakers.MaxHosts)
}

func TestTracingEndpointChecked(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"127.0.0.1:4318", "ftp://collector", "http://user:pw@collector:4318", "http://"} {
		cfg := Default(EnvTest)
		cfg.Tracing.OTLPEndpoint = bad
		require.ErrorContains(t, cfg.Validate(), "tracing.otlp_endpoint", bad)
	}
	cfg := Default(EnvTest)
	cfg.Tracing.OTLPEndpoint = "https://collector.example:4318"
	require.NoError(t, cfg.Validate())
}

func TestHealthXminHorizonWarn(t *testing.T) {
	t.Parallel()
	require.Equal(t, Duration(5*time.Minute), Default(EnvProduction).Health.XminHorizonWarn)
	c, err := Parse([]byte("[health]\nxmin_horizon_warn = \"90s\"\n"), EnvDevelopment, nil)
	require.NoError(t, err)
	require.Equal(t, Duration(90*time.Second), c.Health.XminHorizonWarn)
	c, err = Parse([]byte("[health]\nxmin_horizon_warn = \"0s\"\n"), EnvDevelopment, nil)
	require.NoError(t, err)
	require.NoError(t, c.Validate(), "0s turns the check off")
}
