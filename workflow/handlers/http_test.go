package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/workflow"
)

// request is what a test server saw.
type request struct {
	Method     string
	EscapedURI string
	Query      url.Values
	Header     http.Header
	Body       string
}

// testServer serves fn, records every request and counts them.
type testServer struct {
	*httptest.Server
	hits     atomic.Int64
	requests chan request
}

func newServer(t *testing.T, fn http.HandlerFunc) *testServer {
	t.Helper()
	s := &testServer{requests: make(chan request, 32)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		s.requests <- request{
			Method:     r.Method,
			EscapedURI: r.URL.EscapedPath(),
			Query:      r.URL.Query(),
			Header:     r.Header.Clone(),
			Body:       string(body),
		}
		fn(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// last returns the request the server saw (the handler has returned, so it
// has been recorded).
func (s *testServer) last(t *testing.T) request {
	t.Helper()
	select {
	case r := <-s.requests:
		return r
	default:
		t.Fatal("the server saw no request")
		return request{}
	}
}

// respond answers with a status, headers and a body.
func respond(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// loopback declares the test servers' address, 127.0.0.1, in the
// namespace's allowed_hosts: the destination policy denies it otherwise.
func loopback(opts HTTPOptions) HTTPOptions {
	opts.AllowedHosts = func(string) []string { return []string{"127.0.0.1"} }
	return opts
}

func configJSON(t *testing.T, v map[string]any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestHTTPStatusMapping(t *testing.T) {
	t.Parallel()
	now := time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		want       string // result JSON, on success
		kind       string // error kind, on failure
		retryable  bool
		retryAfter time.Duration
		message    string // the whole error message, after the target
		body       any    // Metadata["body"]
	}{
		{name: "200 json", handler: respond(200, `{"ok":true,"id":"o-1"}`, "Content-Type", "application/json"),
			want: `{"ok":true,"id":"o-1"}`},
		{name: "201 json scalar", handler: respond(201, ` 42 `), want: `42`},
		{name: "200 not json", handler: respond(200, "accepted, thanks", "Content-Type", "text/plain"),
			want: `{"status":200,"body":"accepted, thanks"}`},
		{name: "204", handler: respond(204, ""), want: `{"status":204}`},
		{name: "400 with body", handler: respond(400, `{"error":"name is required"}`),
			kind: KindHTTP4xx, message: `400 Bad Request: {"error":"name is required"}`, body: `{"error":"name is required"}`},
		{name: "404", handler: respond(404, ""), kind: KindHTTP4xx, message: "404 Not Found"},
		{name: "429 retry-after seconds", handler: respond(429, "slow down", "Retry-After", "7"),
			kind: KindHTTP429, retryable: true, retryAfter: 7 * time.Second, message: "429 Too Many Requests", body: "slow down"},
		{name: "429 bad retry-after", handler: respond(429, "", "Retry-After", "soon"),
			kind: KindHTTP429, retryable: true, message: "429 Too Many Requests"},
		{name: "503 retry-after date", handler: respond(503, "", "Retry-After", now.Add(90*time.Second).Format(http.TimeFormat)),
			kind: KindHTTP503, retryable: true, retryAfter: 90 * time.Second, message: "503 Service Unavailable"},
		{name: "503 retry-after date in the past", handler: respond(503, "", "Retry-After", now.Add(-time.Hour).Format(http.TimeFormat)),
			kind: KindHTTP503, retryable: true, message: "503 Service Unavailable"},
		{name: "500", handler: respond(500, "boom"), kind: KindHTTP5xx, retryable: true,
			message: "500 Internal Server Error", body: "boom"},
		{name: "502", handler: respond(502, ""), kind: KindHTTP5xx, retryable: true, message: "502 Bad Gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, tt.handler)
			h := NewHTTP(loopback(HTTPOptions{Now: func() time.Time { return now }}))
			res, err := h.Handle(context.Background(), stepInput(configJSON(t, map[string]any{"url": srv.URL + "/hook?token=secret"})))
			require.EqualValues(t, 1, srv.hits.Load())
			if tt.kind == "" {
				require.NoError(t, err)
				require.JSONEq(t, tt.want, string(res))
				return
			}
			se := requireStepError(t, err, tt.kind, tt.retryable)
			require.Nil(t, res)
			code, _, _ := strings.Cut(tt.name, " ")
			require.Equal(t, code, fmt.Sprint(se.HTTPStatus))
			require.Equal(t, tt.retryAfter, se.RetryAfter)
			require.Equal(t, "GET "+srv.URL+"/hook: "+tt.message, se.Message, "no query string in messages")
			if tt.body == nil {
				require.Nil(t, se.Metadata)
			} else {
				require.Equal(t, map[string]any{"body": tt.body}, se.Metadata)
			}
		})
	}
}

func TestHTTP4xxBodyExcerpt(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 300) + strings.Repeat("x", 2000) // 600 bytes of 2-byte runes first
	srv := newServer(t, respond(422, long))
	_, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), stepInput(configJSON(t, map[string]any{"url": srv.URL})))
	se := requireStepError(t, err, KindHTTP4xx, false)
	require.Equal(t, 422, se.HTTPStatus)
	body, ok := se.Metadata["body"].(string)
	require.True(t, ok)
	require.Equal(t, strings.Repeat("é", 256), body, "512 bytes, cut on a rune boundary")
	require.Equal(t, true, se.Metadata["body_truncated"])
	require.Equal(t, "GET "+srv.URL+": 422 Unprocessable Entity: "+body, se.Message)
}

func TestHTTPResponseTooLarge(t *testing.T) {
	t.Parallel()
	srv := newServer(t, respond(200, `{"data":"`+strings.Repeat("x", 100)+`"}`))
	_, err := NewHTTP(loopback(HTTPOptions{MaxBodyBytes: 64})).Handle(context.Background(), stepInput(configJSON(t, map[string]any{"url": srv.URL})))
	se := requireStepError(t, err, KindResponseTooLarge, false)
	require.Contains(t, se.Message, "response body is larger than 64 bytes")

	// At the limit is fine.
	srv = newServer(t, respond(200, `{"data":"`+strings.Repeat("x", 53)+`"}`))
	res, err := NewHTTP(loopback(HTTPOptions{MaxBodyBytes: 64})).Handle(context.Background(), stepInput(configJSON(t, map[string]any{"url": srv.URL})))
	require.NoError(t, err)
	require.Len(t, res, 64)
}

func TestHTTPConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	_, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), stepInput(configJSON(t, map[string]any{"url": srv.URL + "/x?token=secret"})))
	se := requireStepError(t, err, KindNetwork, true)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.Zero(t, se.HTTPStatus)
	require.True(t, strings.HasPrefix(se.Message, "calling GET "+srv.URL+"/x: "), se.Message)
	require.NotContains(t, se.Message, "secret")
}

// blockingServer holds every request until the test ends; started is
// signalled once per request received.
func blockingServer(t *testing.T) (*httptest.Server, chan struct{}) {
	t.Helper()
	started := make(chan struct{}, 8)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv, started
}

func TestHTTPDeadline(t *testing.T) {
	t.Parallel()
	srv, _ := blockingServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := NewHTTP(loopback(HTTPOptions{})).Handle(ctx, stepInput(configJSON(t, map[string]any{"url": srv.URL})))
	_ = requireStepError(t, err, workflow.KindTimeout, true)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestHTTPCancelled(t *testing.T) {
	t.Parallel()
	srv, started := blockingServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, err := NewHTTP(loopback(HTTPOptions{})).Handle(ctx, stepInput(configJSON(t, map[string]any{"url": srv.URL})))
	_ = requireStepError(t, err, KindCanceled, true)
	require.ErrorIs(t, err, context.Canceled)
}

func TestHTTPRedirects(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("/old", http.RedirectHandler("/new", http.StatusFound))
	mux.Handle("/new", respond(200, `{"moved":true}`))
	// 300 Multiple Choices is not followed.
	mux.Handle("/choices", respond(http.StatusMultipleChoices, "", "Location", "/new"))
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusTemporaryRedirect)
	})
	srv := newServer(t, mux.ServeHTTP)
	cfg := func(path string) workflow.StepInput {
		return stepInput(configJSON(t, map[string]any{"url": srv.URL + path}))
	}

	t.Run("followed", func(t *testing.T) {
		t.Parallel()
		res, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), cfg("/old"))
		require.NoError(t, err)
		require.JSONEq(t, `{"moved":true}`, string(res))
	})
	t.Run("too many", func(t *testing.T) {
		t.Parallel()
		_, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), cfg("/loop"))
		se := requireStepError(t, err, KindHTTP3xx, false)
		require.Contains(t, se.Message, "stopped after 5 redirects")
	})
	t.Run("final 3xx", func(t *testing.T) {
		t.Parallel()
		_, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), cfg("/choices"))
		se := requireStepError(t, err, KindHTTP3xx, false)
		require.Equal(t, http.StatusMultipleChoices, se.HTTPStatus)
		require.Contains(t, se.Message, `300 Multiple Choices (redirect not followed, Location "/new")`)
	})
}

func TestHTTPRequest(t *testing.T) {
	t.Parallel()
	srv := newServer(t, respond(200, `{}`))
	cfg := configJSON(t, map[string]any{
		"url": srv.URL + "/orders/{{context.order.id}}/notify?user={{ context.user.name }}&receipt={{parents.charge.receipt.number}}",
		"headers": map[string]any{
			"X-Order":       "order {{context.order.id}}",
			"X-Total":       "{{context.order.total}}",
			"X-Paid":        "{{context.paid}}",
			"X-Lines":       "{{parents.charge.receipt.lines}}",
			"X-Tasker-Step": "spoofed",
		},
		"body": map[string]any{
			"id":        "{{context.order.id}}",
			"total":     "{{context.order.total}}",
			"paid":      "{{context.paid}}",
			"note":      "{{context.note}}",
			"items":     "{{context.order.items}}",
			"receipt":   "{{ parents.charge.receipt }}",
			"first_sku": "{{context.order.items.0.sku}}",
			"label":     "order {{context.order.id}} for {{context.user.name}} ({{context.note}})",
			"list":      []any{"{{parents.charge.receipt.lines.1}}", "n={{parents.charge.receipt.number}}", 3, nil},
			"html":      "<b>&</b>",
			"static":    map[string]any{"x": 1.25},
		},
	})
	in := stepInput(cfg)
	in.Trace = workflow.Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "congo=t61rcWkgMzE"}
	res, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), in)
	require.NoError(t, err)
	require.JSONEq(t, `{}`, string(res))

	r := srv.last(t)
	require.Equal(t, in.Trace.Parent, r.Header.Get("Traceparent"), "the task's trace context goes on")
	require.Equal(t, in.Trace.State, r.Header.Get("Tracestate"))
	require.Equal(t, http.MethodPost, r.Method, "POST when a body is configured")
	require.Equal(t, "/orders/A%201%2F2/notify", r.EscapedURI, "path placeholders are path-escaped")
	require.Equal(t, url.Values{"user": {"Zoë & co"}, "receipt": {"42"}}, r.Query, "query placeholders are query-escaped")

	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	require.Equal(t, "application/json", r.Header.Get("Accept"))
	require.Equal(t, testTask.String(), r.Header.Get("X-Tasker-Task"))
	require.Equal(t, testStep.String(), r.Header.Get("X-Tasker-Step"), "a template cannot override it")
	require.Equal(t, "2", r.Header.Get("X-Tasker-Attempt"))
	require.Equal(t, "order A 1/2", r.Header.Get("X-Order"))
	require.Equal(t, "12.5", r.Header.Get("X-Total"))
	require.Equal(t, "true", r.Header.Get("X-Paid"))
	require.Equal(t, "[7,8]", r.Header.Get("X-Lines"))

	require.JSONEq(t, `{
		"id": "A 1/2",
		"total": 12.5,
		"paid": true,
		"note": null,
		"items": [{"sku":"x-1"}],
		"receipt": {"number":42,"lines":[7,8]},
		"first_sku": "x-1",
		"label": "order A 1/2 for Zoë & co ()",
		"list": [8, "n=42", 3, null],
		"html": "<b>&</b>",
		"static": {"x": 1.25}
	}`, r.Body)
	require.Contains(t, r.Body, `"html":"<b>&</b>"`, "no HTML escaping")
}

func TestHTTPMethod(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		config map[string]any
		method string
		body   string
	}{
		{name: "GET without a body", config: map[string]any{}, method: http.MethodGet},
		{name: "explicit lower case", config: map[string]any{"method": "put", "body": map[string]any{"a": 1}}, method: http.MethodPut, body: `{"a":1}`},
		{name: "DELETE without a body", config: map[string]any{"method": "DELETE"}, method: http.MethodDelete},
		{name: "scalar body", config: map[string]any{"body": "{{context.order.total}}"}, method: http.MethodPost, body: `12.5`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, respond(204, ""))
			tt.config["url"] = srv.URL
			_, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), stepInput(configJSON(t, tt.config)))
			require.NoError(t, err)
			r := srv.last(t)
			require.Equal(t, tt.method, r.Method)
			require.Equal(t, tt.body, r.Body)
			if tt.body == "" {
				require.Empty(t, r.Header.Get("Content-Type"), "no Content-Type without content")
			} else {
				require.Equal(t, "application/json", r.Header.Get("Content-Type"))
			}
		})
	}
}

func TestHTTPBodyFrom(t *testing.T) {
	t.Parallel()
	in := stepInput("")
	parents := `{"charge":{"receipt":{"number":42,"lines":[7,8]}},"reserve":{"ok":true}}`
	tests := []struct{ from, want string }{
		{"context", string(in.Context)},
		{"parents", parents},
		{"both", `{"context":` + string(in.Context) + `,"parents":` + parents + `}`},
	}
	for _, tt := range tests {
		t.Run(tt.from, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, respond(200, `{"ok":true}`))
			_, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(),
				stepInput(configJSON(t, map[string]any{"url": srv.URL, "body_from": tt.from})))
			require.NoError(t, err)
			r := srv.last(t)
			require.Equal(t, http.MethodPost, r.Method)
			require.Equal(t, "application/json", r.Header.Get("Content-Type"))
			require.JSONEq(t, tt.want, r.Body)
		})
	}

	t.Run("root step", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, respond(200, `{}`))
		in := stepInput(configJSON(t, map[string]any{"url": srv.URL, "body_from": "both"}))
		in.Parents = nil
		_, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), in)
		require.NoError(t, err)
		require.JSONEq(t, `{"context":`+string(in.Context)+`,"parents":{}}`, srv.last(t).Body)
	})
}

// fakeGuard refuses the hosts in open and counts outcomes of the others.
type fakeGuard struct {
	open map[string]bool

	mu        sync.Mutex
	hosts     []string
	failures  int
	successes int
}

// openError is a refusal that says when to try again.
type openError struct{ host string }

func (e openError) Error() string             { return "http:" + e.host + ": " + ErrHostOpen.Error() }
func (e openError) Is(target error) bool      { return target == ErrHostOpen }
func (e openError) RetryAfter() time.Duration { return 12 * time.Second }

func (g *fakeGuard) Run(host string, fn func() error) error {
	g.mu.Lock()
	g.hosts = append(g.hosts, host)
	g.mu.Unlock()
	if g.open[host] {
		return openError{host}
	}
	err := fn()
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		g.failures++
	} else {
		g.successes++
	}
	return err
}

func TestHTTPGuardRefuses(t *testing.T) {
	t.Parallel()
	srv := newServer(t, respond(200, `{}`))
	host := strings.TrimPrefix(srv.URL, "http://")
	guard := &fakeGuard{open: map[string]bool{host: true}}
	_, err := NewHTTP(loopback(HTTPOptions{Guard: guard})).Handle(context.Background(), stepInput(configJSON(t, map[string]any{"url": srv.URL})))
	se := requireStepError(t, err, KindCircuitOpen, true)
	require.ErrorIs(t, err, ErrHostOpen)
	require.Equal(t, 12*time.Second, se.RetryAfter)
	require.Zero(t, srv.hits.Load(), "the host must not be called")
	require.Equal(t, []string{host}, guard.hosts)
}

func TestHTTPGuardCountsHostFailures(t *testing.T) {
	t.Parallel()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	tests := []struct {
		name    string
		url     func(t *testing.T) string
		failure bool
	}{
		{"200", func(t *testing.T) string { return newServer(t, respond(200, `{}`)).URL }, false},
		{"400", func(t *testing.T) string { return newServer(t, respond(400, "")).URL }, false},
		{"404", func(t *testing.T) string { return newServer(t, respond(404, "")).URL }, false},
		{"429", func(t *testing.T) string { return newServer(t, respond(429, "")).URL }, true},
		{"500", func(t *testing.T) string { return newServer(t, respond(500, "")).URL }, true},
		{"503", func(t *testing.T) string { return newServer(t, respond(503, "")).URL }, true},
		{"refused", func(*testing.T) string { return closed.URL }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			guard := &fakeGuard{}
			u := tt.url(t)
			_, _ = NewHTTP(loopback(HTTPOptions{Guard: guard})).Handle(context.Background(), stepInput(configJSON(t, map[string]any{"url": u})))
			require.Equal(t, []string{strings.TrimPrefix(u, "http://")}, guard.hosts)
			if tt.failure {
				require.Equal(t, 1, guard.failures)
			} else {
				require.Equal(t, 1, guard.successes)
			}
		})
	}
}

func TestHTTPGuardOtherError(t *testing.T) {
	t.Parallel()
	srv := newServer(t, respond(200, `{}`))
	guard := guardFunc(func(string, func() error) error { return errors.New("guard misconfigured") })
	_, err := NewHTTP(loopback(HTTPOptions{Guard: guard})).Handle(context.Background(), stepInput(configJSON(t, map[string]any{"url": srv.URL})))
	se := requireStepError(t, err, workflow.KindError, true)
	require.Contains(t, se.Message, "host guard: guard misconfigured")
	require.Zero(t, srv.hits.Load())
}

type guardFunc func(host string, fn func() error) error

func (f guardFunc) Run(host string, fn func() error) error { return f(host, fn) }

func TestHTTPBadConfig(t *testing.T) {
	t.Parallel()
	srv := newServer(t, respond(200, `{}`))
	tests := []struct{ config, want string }{
		{`{}`, `url is required`},
		{`{"url":""}`, `url is required`},
		{`{"url":5}`, `url must be a string, got 5`},
		{`{"url":"ftp://h/x"}`, `url "ftp://h/x" must be http or https`},
		{`{"url":"http:///x"}`, `url "http:///x" has no host`},
		{`{"url":"URL","method":"TRACE"}`, `method "TRACE" is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS`},
		{`{"url":"URL","method":1}`, `method must be a string, got 1`},
		{`{"url":"URL","body":{},"body_from":"context"}`, `body and body_from are exclusive: set one`},
		{`{"url":"URL","body_from":"all"}`, `body_from must be "context", "parents" or "both", got "all"`},
		{`{"url":"URL","body_from":true}`, `body_from must be "context", "parents" or "both", got true`},
		{`{"url":"URL","headers":"x"}`, `headers must be a table of strings, got "x"`},
		{`{"url":"URL","headers":{"X-N":1}}`, `headers.X-N must be a string, got 1`},
		{`{"url":"URL","headers":{"Bad Name":"v"}}`, `headers.Bad Name: "Bad Name" is not a valid header name`},
		{`{"url":"URL","headers":{"X-Evil":"{{context.evil}}"}}`, `headers.X-Evil: value contains a control character`},
		{`{"url":"URL","headers":{"X-N":"{{context.nope}}"}}`, `headers.X-N: placeholder {{context.nope}}: context has no key "nope"`},
		{`{"url":"URL/{{context.missing}}"}`, `url: placeholder {{context.missing}}: context has no key "missing"`},
		{`{"url":"URL/{{context.order.ref}}"}`, `url: placeholder {{context.order.ref}}: context.order has no key "ref"`},
		{`{"url":"URL/{{task.id}}"}`, `url: placeholder {{task.id}}: must start with context or parents, not "task"`},
		{`{"url":"URL/{{parents.nope.x}}"}`, `url: placeholder {{parents.nope.x}}: no parent step "nope" (parents: charge, reserve)`},
		{`{"url":"URL/{{context.order.id"}`, `url: unterminated placeholder "{{context.order.id"`},
		{`{"url":"URL/{{context..id}}"}`, `url: placeholder {{context..id}}: empty path segment`},
		{`{"url":"URL/{{}}"}`, `url: placeholder {{}}: empty path segment`},
		{`{"url":"URL/{{context.order.items.5}}"}`, `url: placeholder {{context.order.items.5}}: context.order.items is an array of 1, "5" is not an index in it`},
		{`{"url":"URL/{{context.order.id.x}}"}`, `url: placeholder {{context.order.id.x}}: context.order.id is a string, not an object or array`},
		{`{"url":"URL","body":{"a":[1,"{{context.nope}}"]}}`, `body.a[1]: placeholder {{context.nope}}: context has no key "nope"`},
		{`{"url":"URL","body":{"a":"x {{parents.reserve.ok.y}}"}}`, `body.a: placeholder {{parents.reserve.ok.y}}: parents.reserve.ok is a boolean, not an object or array`},
		{`{"url":"URL","timeout":"5s"}`, `timeout is not an http config key: set the step's timeout, which applies to the call`},
		{`{"url":"URL","retries":3,"auth":"x"}`, `unknown config key auth, retries (known: method, url, headers, body, body_from, allowed_hosts)`},
		{`"URL"`, `config must be a table`},
	}
	// Cleanups run after the parallel subtests and before srv.Close.
	t.Cleanup(func() { require.Zero(t, srv.hits.Load(), "no bad config reaches the host") })
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			_, err := NewHTTP(loopback(HTTPOptions{})).Handle(context.Background(), stepInput(strings.ReplaceAll(tt.config, "URL", srv.URL)))
			se := requireStepError(t, err, KindBadConfig, false)
			require.Equal(t, tt.want, se.Message)
		})
	}
}
