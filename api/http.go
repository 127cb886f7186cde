package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// Deps are what the API reads of the node that mounts it.
type Deps struct {
	// NodeID names the node in /health/live and /debug/actors.
	NodeID string
	// Store serves the /v1 routes, through Operator.
	Store *store.Store
	// Health computes the node's health; detail adds queue depths and pool
	// statistics.
	Health func(ctx context.Context, detail bool) Health
	// Actors is a snapshot of the node's actor tree.
	Actors func() []actors.Node
	// Metrics is the registry /metrics serves.
	Metrics *prometheus.Registry
	// Token, when set, is required as a bearer token on every route but
	// /health/*.
	Token string
	// Logger records the API requests that fail for an internal reason.
	Logger *slog.Logger
	// Dashboard, when set, serves every path outside the API's (/v1/,
	// /health, /debug/, /metrics): the web pages. It checks the token
	// itself (a cookie, for a browser) and protects its own POSTs; the
	// API's guard applies only its loopback rule to it.
	Dashboard http.Handler
}

// server is the API of one node.
type server struct {
	d  Deps
	op Operator
}

// Handler is the node's HTTP endpoint: /health/*, /debug/actors, /metrics
// and the operator API under /v1.
func Handler(d Deps) http.Handler {
	s := &server{d: d, op: Operator{Store: d.Store}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, map[string]string{"status": HealthOK, "node_id": d.NodeID})
	})
	mux.HandleFunc("GET /health/ready", func(w http.ResponseWriter, r *http.Request) {
		h := d.Health(r.Context(), false)
		writeJSON(w, r, healthCode(h), h)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		h := d.Health(r.Context(), true)
		writeJSON(w, r, healthCode(h), h)
	})
	mux.HandleFunc("GET /debug/actors", func(w http.ResponseWriter, r *http.Request) {
		nodes := d.Actors()
		if r.URL.Query().Get("format") == "text" {
			var buf bytes.Buffer
			_ = actors.WriteText(&buf, nodes)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(buf.Bytes())
			return
		}
		writeJSON(w, r, http.StatusOK, map[string]any{"node_id": d.NodeID, "actors": nodes})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.Metrics, promhttp.HandlerOpts{}))
	s.routes(mux)
	if d.Dashboard != nil {
		mux.Handle("/", d.Dashboard)
	}
	return guard(d.Token, d.Dashboard != nil, mux)
}

// apiPath reports whether path is the API's rather than the dashboard's.
func apiPath(path string) bool {
	return path == "/v1" || strings.HasPrefix(path, "/v1/") || path == "/health" || strings.HasPrefix(path, "/health/") ||
		strings.HasPrefix(path, "/debug/") || path == "/metrics"
}

// guard is what every request passes before its route. With a token
// configured, every route but /health/* requires it (the Bearer scheme in
// any case, as HTTP says). Without one, the node serves, /health/* aside,
// only requests addressed to a loopback name: a page on another site that a browser was
// made to resolve to 127.0.0.1 (DNS rebinding) carries that site's name in
// Host and is refused. Every POST must say its body is JSON: a browser
// sends that type across sites only after asking, so a page elsewhere
// cannot post an action.
//
// With dashboard set, the paths outside the API's are the dashboard's: the
// loopback rule holds for them, but a browser can follow neither the
// bearer token nor the JSON rule, so the dashboard checks the token itself
// (from a cookie) and protects its own POSTs.
func guard(token string, dashboard bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		health := strings.HasPrefix(r.URL.Path, "/health/") || r.URL.Path == "/health"
		switch {
		case token == "" && !health && !config.LoopbackHost(r.Host):
			writeJSON(w, r, http.StatusForbidden, apiError{Code: CodeForbidden,
				Message: fmt.Sprintf("host %q is not a loopback name; without http.api_token the node answers only requests to localhost", r.Host)})
			return
		case dashboard && !apiPath(r.URL.Path):
			// The dashboard checks the token and its POSTs itself.
		case token != "" && !health && !bearer(r.Header.Get("Authorization"), token):
			writeJSON(w, r, http.StatusUnauthorized, apiError{Code: CodeUnauthorized, Message: "a valid Authorization: Bearer token is required"})
			return
		case r.Method == http.MethodPost && !jsonContent(r.Header.Get("Content-Type")):
			writeJSON(w, r, http.StatusUnsupportedMediaType, apiError{Code: CodeUnsupportedMediaType,
				Message: fmt.Sprintf("a POST must have Content-Type: application/json (got %q)", r.Header.Get("Content-Type"))})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer reports whether an Authorization header carries token under the
// Bearer scheme, whose name is case-insensitive.
func bearer(header, token string) bool {
	scheme, got, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1
}

func jsonContent(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func healthCode(h Health) int {
	if h.Status == HealthUnhealthy {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

// writeJSON answers v as compact JSON, indented with ?pretty=1 unless the
// indented answer would exceed maxPrettyBytes: indenting costs bytes in
// proportion to nesting, which a hostile context controls (a 256 KiB context
// 64 levels deep indents to 11 MB). Such an answer is sent compact, with a
// Tasker-Pretty header saying why.
func writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	b, err := json.Marshal(v)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, "{\"error\":\"internal\",\"message\":%q}\n", "encoding the answer: "+err.Error())
		return
	}
	if r.URL.Query().Get(prettyParam) == "1" {
		var ok bool
		if b, ok = Indent(b, maxPrettyBytes); !ok {
			w.Header().Set("Tasker-Pretty", fmt.Sprintf("not indented: the indented answer would be about %d bytes, over %d", indentedSize(b), maxPrettyBytes))
		}
	}
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

const (
	// prettyParam asks any route for indented JSON.
	prettyParam = "pretty"
	// prettyIndent is the indentation of ?pretty=1.
	prettyIndent = "  "
	// maxPrettyBytes bounds an indented answer.
	maxPrettyBytes = 4 << 20
)

// Indent returns JSON b indented as ?pretty=1 indents answers, unless the
// indented JSON would be over limit bytes (or b is not JSON): then b as it
// is, and false.
func Indent(b []byte, limit int) ([]byte, bool) {
	n := indentedSize(b)
	if n > limit {
		return b, false
	}
	var buf bytes.Buffer
	buf.Grow(n)
	if json.Indent(&buf, b, "", prettyIndent) != nil {
		return b, false
	}
	return buf.Bytes(), true
}

// indentedSize is (an upper bound of) the size of compact JSON b once
// indented with prettyIndent: each opening, closing and comma starts a line
// indented to its depth, and each colon gains a space.
func indentedSize(b []byte) int {
	n := len(b)
	workflow.JSONStructure(b, func(c byte, depth int) {
		if c == ':' {
			n++
			return
		}
		n += 1 + max(depth, 0)*len(prettyIndent)
	})
	return n
}
