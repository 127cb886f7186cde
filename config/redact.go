package config

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// redacted replaces secrets in output.
const redacted = "xxxxx"

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	out := *c
	out.Node.WorkerNamespaces = slices.Clone(c.Node.WorkerNamespaces)
	out.Namespaces = maps.Clone(c.Namespaces)
	out.Templates.Dirs = slices.Clone(c.Templates.Dirs)
	out.Schedules = slices.Clone(c.Schedules)
	if c.CircuitBreakers.Components != nil {
		out.CircuitBreakers.Components = make(map[string]BreakerOverride, len(c.CircuitBreakers.Components))
		for name, o := range c.CircuitBreakers.Components {
			out.CircuitBreakers.Components[name] = BreakerOverride{
				FailureThreshold: clonePtr(o.FailureThreshold),
				FailureRatio:     clonePtr(o.FailureRatio),
				Window:           clonePtr(o.Window),
				Delay:            clonePtr(o.Delay),
				SuccessThreshold: clonePtr(o.SuccessThreshold),
				MinExecutions:    clonePtr(o.MinExecutions),
			}
		}
	}
	return &out
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// Redacted returns a copy of c with secrets replaced by "xxxxx": the password
// in database.url and http.api_token.
func (c *Config) Redacted() *Config {
	out := c.Clone()
	out.Database.URL = redactDatabaseURL(out.Database.URL)
	if out.HTTP.APIToken != "" {
		out.HTTP.APIToken = redacted
	}
	return out
}

// passwordSetting matches password=... in key=value settings, quoted or not,
// with whatever follows up to the next space: a quote left open runs to the
// end.
var passwordSetting = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)((?:'(?:[^'\\]|\\.)*(?:'|\\?$))?\S*)`)

func redactDatabaseURL(s string) string {
	if s == "" {
		return s
	}
	if !validDatabaseURL(s) {
		return redacted // cannot tell where a password would be
	}
	// Only these prefixes make a URL, as for validation and the driver:
	// "x:host=db password=..." is key=value settings, not a URL.
	if !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") {
		return passwordSetting.ReplaceAllString(s, "${1}"+redacted)
	}
	u, err := url.Parse(s)
	if err != nil {
		return redacted
	}
	changed := false
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), redacted)
		changed = true
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", redacted)
		u.RawQuery = q.Encode()
		changed = true
	}
	if !changed {
		return s
	}
	// Without a host the rebuilt URL loses its "//": keep the prefix it was
	// recognized by.
	out := u.String()
	if rest, ok := strings.CutPrefix(out, u.Scheme+":"); ok && !strings.HasPrefix(rest, "//") {
		out = u.Scheme + "://" + rest
	}
	return out
}

// WriteTOML writes c as TOML: every key with its effective value. Call it on
// [Config.Redacted] before showing the result to anyone.
func (c *Config) WriteTOML(w io.Writer) error {
	enc := toml.NewEncoder(w)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	return nil
}

// Tree returns the configuration as nested tables keyed by the TOML keys,
// with values as the TOML file writes them (durations as strings): for a
// JSON rendering that uses the same names as the file.
func (c *Config) Tree() (map[string]any, error) {
	var b bytes.Buffer
	if err := c.WriteTOML(&b); err != nil {
		return nil, err
	}
	out := map[string]any{}
	if _, err := toml.NewDecoder(&b).Decode(&out); err != nil {
		return nil, fmt.Errorf("reading config back: %w", err)
	}
	return out, nil
}
