package dashboard_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/api/dashboard"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// benchHistory is how many finished tasks the pages are measured over.
const benchHistory = 100_000

// BenchmarkPages renders the pages server-side, through the dashboard's
// handler, with benchHistory finished tasks in the database, and reports
// the median handler time (p50-µs) and the size of each page (bytes):
//
//	go test -run '^$' -bench BenchmarkPages -benchtime 200x ./api/dashboard/
func BenchmarkPages(b *testing.B) {
	node := testsupport.StartNode(b)
	st := node.Store()
	ctx := context.Background()
	var linear *workflow.Template
	for _, t := range node.Templates() {
		if t.Namespace == testsupport.LinearNamespace {
			linear = t
		}
	}
	require.NotNil(b, linear)
	began := time.Now()
	const chunk = 10_000
	for from := int64(0); from < benchHistory; from += chunk {
		_, err := st.TaskHistoryInsert(ctx, store.TaskHistoryInsertParams{
			Template: linear, From: from, To: from + chunk, Total: benchHistory, Newest: time.Now().Add(-time.Minute),
			Spacing: 10 * time.Millisecond, StepGap: 10 * time.Millisecond, StartAfter: 4 * time.Millisecond,
			RequestedBy: "dashboard-bench", Mark: "dashboard-bench", NodeID: "bench-history",
		})
		require.NoError(b, err)
	}
	require.NoError(b, st.TablesAnalyze(ctx))
	b.Logf("wrote %d finished tasks in %s", benchHistory, time.Since(began).Round(time.Millisecond))

	h := dashboard.New(dashboard.Deps{
		NodeID: node.NodeID(), Mode: "all", Namespaces: []string{testsupport.LinearNamespace},
		Operator: api.Operator{Store: st}, Health: node.Health, Actors: func() []actors.Node { return nil },
		Activity: dashboard.NewActivity(nil),
	})
	newest, err := st.TaskList(ctx, store.TaskListParams{Limit: 1})
	require.NoError(b, err)
	require.Len(b, newest, 1)
	for _, p := range []struct{ name, path string }{
		{"tasks", "/tasks"},
		{"tasks-filtered", "/tasks?state=complete&namespace=" + testsupport.LinearNamespace + "&limit=200"},
		{"task-detail", "/tasks/" + newest[0].TaskUUID.String()},
		{"overview", "/"},
	} {
		b.Run(p.name, func(b *testing.B) {
			var (
				took []time.Duration
				size int
			)
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, p.path, nil)
				rec := httptest.NewRecorder()
				start := time.Now()
				h.ServeHTTP(rec, req)
				took = append(took, time.Since(start))
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: %d %s", p.path, rec.Code, rec.Body.String())
				}
				size = rec.Body.Len()
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(size), "bytes")
		})
	}
}
