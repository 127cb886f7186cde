package handlers

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/workflow"
)

// withContext is stepInput with the task context replaced.
func withContext(t *testing.T, config string, taskContext map[string]any) workflow.StepInput {
	t.Helper()
	in := stepInput(config)
	b, err := json.Marshal(taskContext)
	require.NoError(t, err)
	in.Context = b
	return in
}

func TestHTTPPlaceholderCannotTakeOverAuthority(t *testing.T) {
	t.Parallel()
	srv := newServer(t, respond(200, `{}`))
	tests := []struct {
		name, url, value, char string
	}{
		{"userinfo through the port", "http://127.0.0.1:{{context.v}}/x", "80@evil.example:8443", `"@"`},
		{"second port", "http://127.0.0.1:{{context.v}}/x", "80:8443", `":"`},
		{"path through the port", "http://127.0.0.1:{{context.v}}/x", "80/../y", `"/"`},
		{"host through the user", "http://{{context.v}}@127.0.0.1/x", "evil.example/", `"/"`},
		{"host ends early", "http://{{context.v}}/x", "evil.example?", `"?"`},
		{"fragment in the host", "http://{{context.v}}/x", "evil.example#", `"#"`},
		{"IPv6 literal", "http://{{context.v}}/x", "[::1]", `"["`},
		{"scheme", "{{context.v}}://127.0.0.1/x", "http://evil.example/", `":"`},
		{"space", "http://{{context.v}}/x", "evil example", `" "`},
		{"control character", "http://{{context.v}}/x", "evil\nexample", `"\n"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := withContext(t, configJSON(t, map[string]any{"url": tt.url}), map[string]any{"v": tt.value})
			_, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), in)
			se := requireStepError(t, err, KindURLRefused, false)
			require.Contains(t, se.Message, "placeholder {{context.v}} is in the scheme or authority of the URL")
			require.Contains(t, se.Message, "contains "+tt.char)
			require.NotContains(t, se.Message, tt.value, "the value may be a credential")
		})
	}
	t.Cleanup(func() { require.Zero(t, srv.hits.Load(), "no refused URL is called") })

	// A plain value still fills the authority.
	ok := newServer(t, respond(200, `{}`))
	port := ok.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	in := withContext(t, configJSON(t, map[string]any{"url": "http://{{context.host}}:{{context.port}}/x"}),
		map[string]any{"host": "127.0.0.1", "port": port})
	res, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), in)
	require.NoError(t, err)
	require.JSONEq(t, `{}`, string(res))
}

func TestTemplateHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tmpl     string
		host     string
		port     string
		literal  bool
		hostport string
	}{
		{"http://api.example/x", "api.example", "", true, "api.example"},
		{"http://API.example:8080/x?{{context.q}}", "API.example", "8080", true, "API.example:8080"},
		{"http://127.0.0.1:{{context.port}}/x", "127.0.0.1", "", true, "127.0.0.1"},
		{"http://{{context.u}}:{{context.p}}@api.example/x", "api.example", "", true, "api.example"},
		{"http://{{context.host}}/x", "{{context.host}}", "", false, ""},
		{"http://api{{context.n}}.example/x", "api{{context.n}}.example", "", false, ""},
		{"https://[::1]:8443/x", "[::1]", "8443", true, "[::1]:8443"},
		{"{{context.scheme}}://api.example/", "api.example", "", true, "api.example"},
		{"http://a/{{context.x}}@b/", "a", "", true, "a"},
		{"{{context.url}}", "", "", false, ""},
	}
	for _, tt := range tests {
		got := templateHost(tt.tmpl)
		require.Equal(t, tt.literal, got.literal, tt.tmpl)
		if tt.literal {
			require.Equal(t, tt.host, got.host, tt.tmpl)
			require.Equal(t, tt.port, got.port, tt.tmpl)
			require.Equal(t, tt.hostport, got.hostport(), tt.tmpl)
		}
	}
}

func TestDeniedRange(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"127.0.0.1":        "loopback",
		"127.8.9.10":       "loopback",
		"::1":              "loopback",
		"::ffff:127.0.0.1": "loopback",
		"64:ff9b::a00:1":   "private", // NAT64 of 10.0.0.1
		"10.1.2.3":         "private",
		"172.16.0.1":       "private",
		"172.31.255.255":   "private",
		"192.168.1.1":      "private",
		"fc00::1":          "private",
		"fd00:ec2::254":    "private",
		"169.254.169.254":  "link-local (cloud metadata)",
		"169.254.1.1":      "link-local",
		"fe80::1":          "link-local",
		"100.100.100.200":  "shared",
		"0.0.0.0":          "unspecified",
		"0.1.2.3":          "unspecified",
		"::":               "unspecified",
		"224.0.0.1":        "multicast",
		"ff02::1":          "multicast",
		"255.255.255.255":  "broadcast",
		"93.184.216.34":    "",
		"172.32.0.1":       "",
		"2606:4700::1111":  "",
	}
	for ip, want := range tests {
		require.Equal(t, want, DeniedRange(netip.MustParseAddr(ip)), ip)
	}
}

func TestParseAllowedHosts(t *testing.T) {
	t.Parallel()
	a, err := ParseAllowedHosts([]string{"Internal.Example.", "svc.example:8080", "127.0.0.1", "[::1]:9000", "10.0.0.0/8", " 192.168.1.7:443 "})
	require.NoError(t, err)
	require.True(t, a.allowsName("internal.example", "1"))
	require.True(t, a.allowsName("svc.example", "8080"))
	require.False(t, a.allowsName("svc.example", "8081"))
	require.True(t, a.allowsAddr(netip.MustParseAddr("127.0.0.1"), "5"))
	require.False(t, a.allowsAddr(netip.MustParseAddr("127.0.0.2"), "5"))
	require.True(t, a.allowsAddr(netip.MustParseAddr("::1"), "9000"))
	require.False(t, a.allowsAddr(netip.MustParseAddr("::1"), "9001"))
	require.True(t, a.allowsAddr(netip.MustParseAddr("10.200.0.1"), "80"))
	require.True(t, a.allowsAddr(netip.MustParseAddr("::ffff:10.200.0.1"), "80"))
	require.True(t, a.allowsAddr(netip.MustParseAddr("192.168.1.7"), "443"))
	require.False(t, a.allowsAddr(netip.MustParseAddr("192.168.1.7"), "80"))

	for entry, want := range map[string]string{
		"":             `"" is empty`,
		"*.example":    "wildcards are not supported",
		"10.0.0.0/33":  "is not a CIDR",
		"svc:0":        `port "0" is not a number from 1 to 65535`,
		"svc:http":     `port "http" is not a number`,
		"::1:80:x":     "is neither host, host:port, an IP nor a CIDR",
		"bad host":     "is not a host name",
		"fe80::1%eth0": "with a zone is not supported",
	} {
		_, err := ParseAllowedHosts([]string{"ok.example", entry})
		require.ErrorContains(t, err, "[1] ", entry)
		require.ErrorContains(t, err, want, entry)
	}
}

func TestHTTPDialerDeniesPrivateUnlessAllowed(t *testing.T) {
	t.Parallel()
	srv := newServer(t, respond(200, `{"ok":true}`))
	port := srv.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	local := "http://localhost:" + strings.TrimPrefix(srv.URL, "http://127.0.0.1:")
	// The refusals call denied, the allowed calls srv.
	denied := newServer(t, respond(200, `{"ok":true}`))
	deniedLocal := "http://localhost:" + strings.TrimPrefix(denied.URL, "http://127.0.0.1:")
	call := func(t *testing.T, opts HTTPOptions, u string, allowed []string) (json.RawMessage, error) {
		t.Helper()
		cfg := map[string]any{"url": u}
		if allowed != nil {
			cfg["allowed_hosts"] = allowed
		}
		return NewHTTP(opts).Handle(context.Background(), stepInput(configJSON(t, cfg)))
	}

	t.Run("loopback refused", func(t *testing.T) {
		t.Parallel()
		_, err := call(t, HTTPOptions{}, denied.URL+"/x?token=secret", nil)
		se := requireStepError(t, err, KindDestinationRefused, false)
		require.Contains(t, se.Message, "127.0.0.1 is a loopback address")
		require.Contains(t, se.Message, `list "127.0.0.1" in allowed_hosts of [namespaces.shop]`)
		require.NotContains(t, se.Message, "secret")
	})
	t.Run("a name is checked on the address it resolves to", func(t *testing.T) {
		t.Parallel()
		_, err := call(t, HTTPOptions{}, deniedLocal, nil)
		se := requireStepError(t, err, KindDestinationRefused, false)
		require.Contains(t, se.Message, "localhost resolves to")
		require.Contains(t, se.Message, "a loopback address")
		require.Contains(t, se.Message, `list "localhost" in allowed_hosts`)
	})
	t.Run("another port of an allowed address", func(t *testing.T) {
		t.Parallel()
		_, err := call(t, HTTPOptions{}, denied.URL, []string{"127.0.0.1:1"})
		_ = requireStepError(t, err, KindDestinationRefused, false)
	})
	t.Run("another namespace", func(t *testing.T) {
		t.Parallel()
		opts := HTTPOptions{AllowedHosts: func(ns string) []string {
			if ns == "internal" {
				return []string{"127.0.0.1"}
			}
			return nil
		}}
		_, err := call(t, opts, denied.URL, nil)
		_ = requireStepError(t, err, KindDestinationRefused, false)
	})
	t.Run("bad step entry", func(t *testing.T) {
		t.Parallel()
		_, err := call(t, HTTPOptions{}, denied.URL, []string{"127.0.0.1", "10.0.0.0/40"})
		se := requireStepError(t, err, KindBadConfig, false)
		require.Equal(t, `allowed_hosts[1] "10.0.0.0/40" is not a CIDR such as "10.0.0.0/8" or "fc00::/7"`, se.Message)
	})
	t.Run("bad namespace entry", func(t *testing.T) {
		t.Parallel()
		opts := HTTPOptions{AllowedHosts: func(string) []string { return []string{"*"} }}
		_, err := call(t, opts, denied.URL, nil)
		se := requireStepError(t, err, KindBadConfig, false)
		require.Contains(t, se.Message, "namespaces.shop.allowed_hosts[0]")
	})
	t.Cleanup(func() { require.Zero(t, denied.hits.Load(), "no refused destination is called") })

	for name, tc := range map[string]struct {
		opts    HTTPOptions
		url     string
		allowed []string
	}{
		"step IP":          {url: srv.URL, allowed: []string{"127.0.0.1"}},
		"step IP and port": {url: srv.URL, allowed: []string{"127.0.0.1:" + itoa(port)}},
		"step CIDR":        {url: srv.URL, allowed: []string{"127.0.0.0/8"}},
		"step name":        {url: local, allowed: []string{"localhost"}},
		"namespace":        {url: srv.URL, opts: HTTPOptions{AllowedHosts: func(ns string) []string { return map[string][]string{"shop": {"127.0.0.1"}}[ns] }}},
	} {
		res, err := call(t, tc.opts, tc.url, tc.allowed)
		require.NoError(t, err, name)
		require.JSONEq(t, `{"ok":true}`, string(res), name)
	}
}

func itoa(port uint16) string { return strconv.Itoa(int(port)) }

// A connection dialled under one allowed_hosts list is not reused under
// another: each list has its own pool.
func TestHTTPPooledConnectionNotReusedAcrossAllowLists(t *testing.T) {
	t.Parallel()
	srv := newServer(t, respond(200, `{}`))
	h := NewHTTP(HTTPOptions{AllowedHosts: func(ns string) []string {
		return map[string][]string{"shop": {"127.0.0.1"}}[ns]
	}})
	in := stepInput(configJSON(t, map[string]any{"url": srv.URL}))
	_, err := h.Handle(context.Background(), in)
	require.NoError(t, err)
	in.Namespace = "other"
	_, err = h.Handle(context.Background(), in)
	_ = requireStepError(t, err, KindDestinationRefused, false)
	require.EqualValues(t, 1, srv.hits.Load())
}

func TestHTTPRedirectToLoopbackRefused(t *testing.T) {
	t.Parallel()
	inner := newServer(t, respond(200, `{"secret":"internal"}`))
	innerPort := strings.TrimPrefix(inner.URL, "http://127.0.0.1:")
	outer := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	})
	outerHost := strings.TrimPrefix(outer.URL, "http://")
	tests := []struct{ to, want string }{
		{inner.URL + "/admin", "destination 127.0.0.1:" + innerPort + " refused: 127.0.0.1 is a loopback address"},
		{"http://localhost:" + innerPort + "/admin", "destination localhost:" + innerPort + " refused: localhost resolves to"},
		{"http://169.254.169.254/latest/meta-data/", "destination 169.254.169.254:80 refused: 169.254.169.254 is a link-local (cloud metadata) address"},
		{"http://[::1]:" + innerPort + "/", "::1 is a loopback address"},
		{"ftp://example.com/file", "redirect from " + outer.URL + "/go to ftp://example.com/file refused: only http and https are followed"},
	}
	for _, tt := range tests {
		t.Run(tt.to, func(t *testing.T) {
			t.Parallel()
			// Only the first host, by address and port, is allowed.
			cfg := configJSON(t, map[string]any{"url": outer.URL + "/go?to=" + url.QueryEscape(tt.to), "allowed_hosts": []string{outerHost}})
			_, err := NewHTTP(HTTPOptions{}).Handle(context.Background(), stepInput(cfg))
			se := requireStepError(t, err, KindDestinationRefused, false)
			require.Contains(t, se.Message, tt.want)
		})
	}
	t.Cleanup(func() { require.Zero(t, inner.hits.Load(), "no redirect reached the loopback service") })
}

func TestHTTPRedirectHTTPSToHTTPRefused(t *testing.T) {
	t.Parallel()
	plain := newServer(t, respond(200, `{"plain":true}`))
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/done", http.StatusFound)
		case "/done":
			_, _ = w.Write([]byte(`{"tls":true}`))
		default:
			http.Redirect(w, r, plain.URL+"/clear", http.StatusFound)
		}
	}))
	t.Cleanup(tlsSrv.Close)
	opts := loopback(HTTPOptions{Transport: tlsSrv.Client().Transport.(*http.Transport)})

	_, err := NewHTTP(opts).Handle(context.Background(), stepInput(configJSON(t, map[string]any{"url": tlsSrv.URL + "/down?k=secret"})))
	se := requireStepError(t, err, KindDestinationRefused, false)
	require.Contains(t, se.Message, "redirect from "+tlsSrv.URL+"/down to "+plain.URL+"/clear refused: https to http")
	require.NotContains(t, se.Message, "secret")
	require.Zero(t, plain.hits.Load())

	res, err := NewHTTP(opts).Handle(context.Background(), stepInput(configJSON(t, map[string]any{"url": tlsSrv.URL + "/same"})))
	require.NoError(t, err, "https to https is followed")
	require.JSONEq(t, `{"tls":true}`, string(res))
}

// The guard names the template's literal host, so values from the task
// context do not make a breaker each.
func TestHTTPGuardKeyedByTemplateHost(t *testing.T) {
	t.Parallel()
	srv := newServer(t, respond(200, `{}`))
	hostport := strings.TrimPrefix(srv.URL, "http://")
	port := strings.TrimPrefix(hostport, "127.0.0.1:")
	tests := []struct{ url, want string }{
		{srv.URL + "/x", hostport},
		{"http://127.0.0.1:{{context.port}}/x", "127.0.0.1"},
		{"http://{{context.host}}:" + port + "/x", hostport},
	}
	for _, tt := range tests {
		guard := &fakeGuard{}
		in := withContext(t, configJSON(t, map[string]any{"url": tt.url}), map[string]any{"port": port, "host": "127.0.0.1"})
		_, err := NewHTTP(loopback(HTTPOptions{Guard: guard})).Handle(context.Background(), in)
		require.NoError(t, err, tt.url)
		require.Equal(t, []string{tt.want}, guard.hosts, tt.url)
	}
}
