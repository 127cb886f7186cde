package config

import (
	"bytes"
	"errors"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// fuzzEnvs are the environments FuzzConfigParse builds for: the built-in
// ones and one that exists only through an overlay.
var fuzzEnvs = []string{EnvDevelopment, EnvTest, EnvProduction, "staging"}

// commentedKey matches a commented-out key or table of the example file.
var commentedKey = regexp.MustCompile(`(?m)^# (\[[a-z_.:"]+\]$|[a-z_]+ = )`)

// uncommented matches a comment line and blank lines.
var uncommented = regexp.MustCompile(`(?m)^(#.*)?\n`)

// FuzzConfigParse feeds arbitrary TOML to Parse, the function Load (and so
// the node) builds its configuration with. Parse must never panic and must
// answer a *ValidationError or a valid configuration; a valid one
// re-validates, clones and redacts without change to itself, and what
// WriteTOML prints (the effective settings, as `tasker config check` shows
// them) parses back to the same configuration, redacted or not.
func FuzzConfigParse(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	if err != nil {
		f.Fatal(err)
	}
	// The example without its comments, and with every key set to its
	// documented value: small seeds keep the minimizing of new inputs short.
	seeds := []string{
		uncommented.ReplaceAllString(string(example), ""),
		uncommented.ReplaceAllString(commentedKey.ReplaceAllString(string(example), "$1"), ""),
		"",
		"[queue]\npoll_interval = \"200ms\"\n",
		"[environments.staging]\n[environments.staging.log]\nlevel = \"debug\"\n",
		"[database]\nurl = \"postgres://tasker:s3cret@db:5432/tasker?password=x&sslmode=disable\"\n",
		"[database]\nurl = \"host=db user=tasker password='s3 cr\\\\'et' dbname=tasker\"\n",
		"[http]\nlisten = \"0.0.0.0:8080\"\napi_token = \"0123456789abcdef0123\"\n",
		"[node]\nmode = \"workers\"\nworker_namespaces = [\"payments\", \"linear_workflow\"]\n",
		"[namespaces.payments]\nworkers = 8\nvisibility_timeout = \"2m\"\n[namespaces.ops]\n",
		"[circuit_breakers.components.\"http:api.example.com\"]\nfailure_ratio = 0.5\nwindow = \"1m\"\n" +
			"[circuit_breakers.components.orchestration]\ndelay = \"250ms\"\n",
		"[backoff]\nbase = \"1.5s\"\nmultiplier = 1.25\njitter = 0.0\nmax = \"90m\"\n",
		"[templates]\ndirs = [\"templates\", \"/etc/tasker/templates\"]\nbundled = false\n",
		"[queue]\npoll_interval = 1000\n",
		"[Queue]\nPoll_Interval = \"1s\"\n",
		"[environments.production.namespaces.payments]\nworkers = 2\n",
		"environments = 1\n",
		"[node]\nid = \"n\\u0000\\u00e9\\t\"\n",
	}
	for _, s := range seeds {
		for i := range fuzzEnvs {
			f.Add([]byte(s), uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, pick uint8) {
		env := fuzzEnvs[int(pick)%len(fuzzEnvs)]
		cfg, err := Parse(data, env, nil)
		if err != nil {
			if cfg != nil {
				t.Fatalf("Parse returned a configuration with error %v", err)
			}
			var verr *ValidationError
			if errors.As(err, &verr) && len(verr.Problems) == 0 {
				t.Fatalf("validation error without problems")
			}
			if err.Error() == "" {
				t.Fatalf("empty error")
			}
			return
		}
		if cfg.Env != env {
			t.Fatalf("built for %q, Env is %q", env, cfg.Env)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse returned a configuration that does not validate: %v", err)
		}
		if c := cfg.Clone(); !reflect.DeepEqual(c, cfg) {
			t.Fatalf("clone differs:\n%+v\n%+v", c, cfg)
		}
		before := cfg.Clone()
		red := cfg.Redacted()
		if !reflect.DeepEqual(before, cfg) {
			t.Fatalf("Redacted changed its receiver")
		}
		if red.HTTP.APIToken != "" && red.HTTP.APIToken != redacted {
			t.Fatalf("api token left in: %q", red.HTTP.APIToken)
		}
		if p, ok := passwordOf(red.Database.URL); ok {
			t.Fatalf("password %q left in database.url %q", p, red.Database.URL)
		}
		if again := red.Redacted(); !reflect.DeepEqual(again, red) {
			t.Fatalf("redacting twice differs: %q, %q", red.Database.URL, again.Database.URL)
		}
		reparse(t, cfg, env)
		// "xxxxx" is shorter than a token may be; the rest of the redacted
		// configuration is still valid.
		red.HTTP.APIToken = cfg.HTTP.APIToken
		reparse(t, red, env)
		if _, err := cfg.Tree(); err != nil {
			t.Fatalf("Tree: %v", err)
		}
	})
}

// reparse checks that the TOML cfg writes parses back to cfg.
func reparse(t *testing.T, cfg *Config, env string) {
	t.Helper()
	var b bytes.Buffer
	if err := cfg.WriteTOML(&b); err != nil {
		t.Fatalf("WriteTOML: %v", err)
	}
	if env == "staging" {
		// An environment without built-in defaults needs its overlay.
		b.WriteString("[environments.staging]\n")
	}
	back, err := Parse(b.Bytes(), env, nil)
	if err != nil {
		t.Fatalf("the written configuration does not parse: %v\n%s", err, indent(b.String()))
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Fatalf("the written configuration parses to another:\n%+v\n%+v\n%s", back, cfg, indent(b.String()))
	}
}

// passwordOf returns a password in a connection string that is not the
// redacted placeholder, read the way PostgreSQL clients read it: the user
// info and password parameter of a postgres:// URL, else every
// password=... setting.
func passwordOf(conn string) (string, bool) {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := url.Parse(conn)
		if err != nil {
			return "", false
		}
		if p, ok := u.User.Password(); ok && p != redacted {
			return p, true
		}
		for _, p := range u.Query()["password"] {
			if p != redacted {
				return p, true
			}
		}
		return "", false
	}
	for _, m := range passwordSetting.FindAllStringSubmatch(conn, -1) {
		if m[2] != redacted {
			return m[2], true
		}
	}
	return "", false
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }
