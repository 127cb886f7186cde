package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/store"
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
		writeJSON(w, http.StatusOK, map[string]string{"status": HealthOK, "node_id": d.NodeID})
	})
	mux.HandleFunc("GET /health/ready", func(w http.ResponseWriter, r *http.Request) {
		h := d.Health(r.Context(), false)
		writeJSON(w, healthCode(h), h)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		h := d.Health(r.Context(), true)
		writeJSON(w, healthCode(h), h)
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
		writeJSON(w, http.StatusOK, map[string]any{"node_id": d.NodeID, "actors": nodes})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.Metrics, promhttp.HandlerOpts{}))
	s.routes(mux)
	return authorize(d.Token, mux)
}

// authorize requires the API token, when one is configured, on every route
// but /health/*.
func authorize(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/health/") || r.URL.Path == "/health" {
			next.ServeHTTP(w, r)
			return
		}
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			writeJSON(w, http.StatusUnauthorized, apiError{Code: CodeUnauthorized, Message: "a valid Authorization: Bearer token is required"})
			return
		}
		next.ServeHTTP(w, r)
	})
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

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
