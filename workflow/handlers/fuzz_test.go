package handlers

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

var (
	fuzzHostName = regexp.MustCompile(`^[a-z0-9.-]+$`)
	fuzzHostIPv6 = regexp.MustCompile(`^\[[0-9a-f:.]+\]$`)
)

// FuzzHTTPURL builds URLs from templates whose host is literal, with
// placeholders and literal text around it and a value from the task
// context: building fails, or the built URL's host is the template's.
func FuzzHTTPURL(f *testing.F) {
	for _, seed := range [][5]string{
		{"", "127.0.0.1", "{{context.v}}", "x", "80@evil.example:8443"},
		{"", "127.0.0.1", "{{context.v}}", "x", "8080"},
		{"{{context.v}}", "api.example", "", "orders/{{context.v}}", "evil.example/"},
		{"{{context.v}}:{{context.v}}", "api.example", "443", "", "user"},
		{"", "[::1]", "{{context.v}}", "{{context.v}}?q={{context.v}}", "1@[::2]"},
		{"", "api.example", "", "{{context.v}}#{{context.v}}", "//evil.example"},
		{"u", "api.example", "{{context.v}}{{context.v}}", "", "8\t0"},
		{"", "api.example", "80", "a/{{context.v}}@b/", "x:y@evil.example"},
		{"{{context.v}}", "api.example", "", "", "a%40b"},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3], seed[4])
	}
	f.Fuzz(func(t *testing.T, user, host, port, rest, value string) {
		if !fuzzHostName.MatchString(host) && !fuzzHostIPv6.MatchString(host) {
			t.Skip("not a literal host")
		}
		// Literal user and port text must not end the authority itself:
		// only placeholders are under test there.
		literal := func(s string) string { return strings.ReplaceAll(s, "{{context.v}}", "") }
		if strings.ContainsAny(literal(user), "/?#@[]{}") || strings.ContainsAny(literal(port), "/?#@[]{}:") {
			t.Skip("literal text that changes the authority")
		}
		tmpl := "http://"
		if user != "" {
			tmpl += user + "@"
		}
		tmpl += host
		if port != "" {
			tmpl += ":" + port
		}
		tmpl += "/" + rest
		th := templateHost(tmpl)
		if !th.literal || th.host != host {
			t.Fatalf("template %q: host read as %+v, want literal %q", tmpl, th, host)
		}
		cfg, err := json.Marshal(map[string]any{"url": tmpl})
		if err != nil {
			t.Skip("not encodable")
		}
		ctx, err := json.Marshal(map[string]any{"v": value})
		if err != nil {
			t.Skip("not encodable")
		}
		in := stepInput(string(cfg))
		in.Context = ctx
		c, err := buildCall(in)
		if err != nil {
			return
		}
		want := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if !strings.EqualFold(c.url.Hostname(), want) {
			t.Fatalf("template %q with value %q called host %q, not %q", tmpl, value, c.url.Hostname(), want)
		}
		if c.guardHost != strings.ToLower(th.hostport()) {
			t.Fatalf("template %q: guard host %q, want %q", tmpl, c.guardHost, th.hostport())
		}
	})
}
