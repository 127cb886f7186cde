package bootstrap

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tasker-run/tasker/actors"
)

// routes is the node's HTTP endpoint.
func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": HealthOK, "node_id": n.nodeID})
	})
	mux.HandleFunc("GET /health/ready", func(w http.ResponseWriter, r *http.Request) {
		h := n.Health(r.Context(), false)
		writeJSON(w, healthCode(h), h)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		h := n.Health(r.Context(), true)
		writeJSON(w, healthCode(h), h)
	})
	mux.HandleFunc("GET /debug/actors", func(w http.ResponseWriter, r *http.Request) {
		nodes := n.treeNodes()
		if r.URL.Query().Get("format") == "text" {
			var buf bytes.Buffer
			_ = actors.WriteText(&buf, nodes)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(buf.Bytes())
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"node_id": n.nodeID, "actors": nodes})
	})
	n.metrics.Registry.MustRegister(&scrapeCollector{n: n})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.Registry, promhttp.HandlerOpts{}))
	n.apiRoutes(mux)
	return n.authorize(mux)
}

// authorize requires the API token, when one is configured, on every route
// but /health/*.
func (n *Node) authorize(next http.Handler) http.Handler {
	token := n.cfg.HTTP.APIToken
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
			writeJSON(w, http.StatusUnauthorized, apiError{Code: "unauthorized", Message: "a valid Authorization: Bearer token is required"})
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

// scrapeCollector reads what the database knows at scrape time: queue depth
// per queue, and restarts per actor from the tree.
type scrapeCollector struct{ n *Node }

var (
	queueDepthDesc = prometheus.NewDesc("tasker_queue_depth", "Messages in a queue (visible or not).", []string{"queue"}, nil)
	queueVisDesc   = prometheus.NewDesc("tasker_queue_visible", "Messages a read could take now.", []string{"queue"}, nil)
	restartsDesc   = prometheus.NewDesc("tasker_actor_restarts_total", "Restarts of each actor since the node started.", []string{"actor", "kind"}, nil)
)

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- queueVisDesc
	ch <- restartsDesc
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, d := range c.n.queueDepths(ctx) {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(d.Length), d.Queue)
		ch <- prometheus.MustNewConstMetric(queueVisDesc, prometheus.GaugeValue, float64(d.Visible), d.Queue)
	}
	if c.n.system != nil {
		for _, node := range c.n.system.Tree().All() {
			if node.Kind == actors.KindBreaker {
				continue
			}
			ch <- prometheus.MustNewConstMetric(restartsDesc, prometheus.CounterValue, float64(node.Restarts), node.PID, node.Kind)
		}
	}
}
