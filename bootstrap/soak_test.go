//go:build soak

package bootstrap_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
)

// TestSoakRetention submits linear tasks at TASKER_SOAK_RATE tasks/s
// (default 40: 160 steps/s) for TASKER_SOAK_DURATION (default 10m) with
// every retention period at one minute, and samples each minute the size
// of every Tasker and queue table (pg_total_relation_size), the steps
// completed and the dispatch latency of the last 50 s: past the first
// minutes the sizes stay within a bound, and at the end the node still
// completes what is submitted (within 10% of the start) with its dispatch
// latency no worse than twice the start's. Run it with
//
//	go test -tags soak -run TestSoakRetention -v -timeout 30m ./bootstrap/
func TestSoakRetention(t *testing.T) {
	duration := 10 * time.Minute
	if s := os.Getenv("TASKER_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err)
		duration = d
	}
	rate := 40
	if s := os.Getenv("TASKER_SOAK_RATE"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		rate = n
	}
	minute := time.Minute
	e := startEnv(t, testsupport.WithConfig(func(c *config.Config) {
		r := &c.Retention
		for _, p := range []*config.Duration{&r.CompleteTasks, &r.FailedTasks, &r.CancelledTasks, &r.RejectedRequests, &r.Archives, &r.ScheduleFires} {
			*p = config.Duration(minute)
		}
		r.Interval = config.Duration(10 * time.Second)
		ns := c.Namespace("linear_workflow")
		ns.Workers = 16
		c.Namespaces = map[string]config.Namespace{"linear_workflow": ns}
		c.Log.Level = config.LogLevelWarn
	}))
	ctx := t.Context()
	q := queue.NewClient(e.client)

	// Submit rate tasks/s, a tenth every 100 ms.
	stop := make(chan struct{})
	feeder := make(chan error, 1)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		sent := 0
		began := time.Now()
		for {
			select {
			case <-stop:
				feeder <- nil
				return
			case <-tick.C:
			}
			due := int(time.Since(began).Seconds()*float64(rate)) - sent
			if due <= 0 {
				continue
			}
			bodies := make([][]byte, due)
			for i := range bodies {
				bodies[i] = []byte(newRequest("linear_workflow", "mathematical_sequence", `{"even_number": 2}`).body(t))
			}
			if _, err := q.SendBatch(ctx, queue.TaskRequestsQueue, bodies, 0); err != nil {
				feeder <- err
				return
			}
			sent += due
		}
	}()

	completed := func() float64 {
		code, _, body := httpGet(t, "http://"+e.node.HTTPAddr()+"/metrics", "")
		require.Equal(t, 200, code)
		for _, l := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(l, `tasker_tasks_finished_total{namespace="linear_workflow",state="complete"} `); ok {
				f, err := strconv.ParseFloat(v, 64)
				require.NoError(t, err)
				return f
			}
		}
		return 0
	}
	size := func() (int64, map[string]int64) {
		rows, err := e.client.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind = 'r' AND n.nspname IN ('tasker', 'pgmq')`)
		require.NoError(t, err)
		defer rows.Close()
		total, by := int64(0), map[string]int64{}
		for rows.Next() {
			var name string
			var b int64
			require.NoError(t, rows.Scan(&name, &b))
			by[name], total = b, total+b
		}
		require.NoError(t, rows.Err())
		return total, by
	}

	type sample struct {
		at         time.Duration
		stepsPerS  float64
		totalBytes int64
		tables     map[string]int64
		tasks      int
		p50, p99   float64
	}
	var samples []sample
	began := time.Now()
	last := completed()
	for i := 1; time.Since(began) < duration; i++ {
		testsupport.WaitFor(t, 2*minute, fmt.Sprintf("minute %d", i), func() (bool, error) {
			return time.Since(began) >= time.Duration(i)*minute, nil
		})
		now := completed()
		total, by := size()
		s := sample{at: time.Since(began).Round(time.Second), stepsPerS: (now - last) * 4 / minute.Seconds(), totalBytes: total, tables: by}
		require.NoError(t, e.client.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks`).Scan(&s.tasks))
		// Dispatch: from a step's enqueueing to its start, for the steps
		// that started in the last 50 s (retention keeps a minute).
		require.NoError(t, e.client.QueryRow(ctx, `
			SELECT COALESCE(percentile_cont(0.5) WITHIN GROUP (ORDER BY d), 0), COALESCE(percentile_cont(0.99) WITHIN GROUP (ORDER BY d), 0)
			FROM (SELECT extract(epoch FROM last_attempted_at - enqueued_at) * 1000 AS d FROM tasker.steps
				WHERE last_attempted_at > now() - interval '50 seconds' AND enqueued_at IS NOT NULL) x`).Scan(&s.p50, &s.p99))
		last = now
		samples = append(samples, s)
		t.Logf("minute %2d: %5.0f steps/s, dispatch p50 %5.1f ms p99 %6.1f ms, %6d tasks kept, Tasker and queue tables %6.1f MiB",
			i, s.stepsPerS, s.p50, s.p99, s.tasks, float64(total)/(1<<20))
	}
	close(stop)
	require.NoError(t, <-feeder)
	require.GreaterOrEqual(t, len(samples), 4, "a soak of at least 4 minutes")

	// The first two minutes fill the tables up to the retention period;
	// from the third on they must hold.
	base := samples[2]
	bound := base.totalBytes + base.totalBytes/4
	for _, s := range samples[3:] {
		require.LessOrEqual(t, s.totalBytes, bound, "at %s the tables hold %d bytes, more than 1.25× the %d of minute 3", s.at, s.totalBytes, base.totalBytes)
	}
	end := samples[len(samples)-1]
	require.InDelta(t, samples[1].stepsPerS, end.stepsPerS, 0.1*samples[1].stepsPerS, "steps/s at the end within 10%% of the start (minute 2)")
	require.LessOrEqual(t, end.p99, 2*max(samples[1].p99, 20), "dispatch p99 at the end no worse than twice the start's")
	out, err := json.MarshalIndent(map[string]any{"first": samples[1].tables, "last": end.tables}, "", "  ")
	require.NoError(t, err)
	t.Logf("table sizes at minute 2 and at the end:\n%s", out)
}
