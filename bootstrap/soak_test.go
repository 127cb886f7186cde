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

// TestSoakRetention keeps a node saturated with linear tasks for
// TASKER_SOAK_DURATION (default 10m) with every retention period at one
// minute, and samples each minute the size of every Tasker and queue table
// (pg_total_relation_size) and the steps completed: past the first
// minutes the sizes stay within a bound and the rate at the end is within
// 10% of the rate at the start. Run it with
//
//	go test -tags soak -run TestSoakRetention -v -timeout 30m ./bootstrap/
func TestSoakRetention(t *testing.T) {
	duration := 10 * time.Minute
	if s := os.Getenv("TASKER_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err)
		duration = d
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

	// Keep about backlog tasks waiting or running.
	const backlog = 400
	stop := make(chan struct{})
	feeder := make(chan error, 1)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				feeder <- nil
				return
			case <-tick.C:
			}
			var open int
			if err := e.client.QueryRow(ctx, `SELECT (SELECT count(*) FROM tasker.tasks WHERE state IN ('pending', 'in_progress'))
				+ (SELECT count(*) FROM pgmq.q_orchestration_task_requests)`).Scan(&open); err != nil {
				feeder <- err
				return
			}
			if open >= backlog {
				continue
			}
			bodies := make([][]byte, backlog-open)
			for i := range bodies {
				bodies[i] = []byte(newRequest("linear_workflow", "mathematical_sequence", `{"even_number": 2}`).body(t))
			}
			if _, err := q.SendBatch(ctx, queue.TaskRequestsQueue, bodies, 0); err != nil {
				feeder <- err
				return
			}
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
		var tasks int
		require.NoError(t, e.client.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks`).Scan(&tasks))
		s := sample{at: time.Since(began).Round(time.Second), stepsPerS: (now - last) * 4 / minute.Seconds(), totalBytes: total, tables: by, tasks: tasks}
		last = now
		samples = append(samples, s)
		t.Logf("minute %2d: %6.0f steps/s, %6d tasks kept, Tasker and queue tables %7.1f MiB", i, s.stepsPerS, s.tasks, float64(total)/(1<<20))
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
	require.GreaterOrEqual(t, end.stepsPerS, 0.9*samples[1].stepsPerS, "steps/s at the end within 10%% of the start (minute 2)")
	out, err := json.MarshalIndent(map[string]any{"first": samples[1].tables, "last": end.tables}, "", "  ")
	require.NoError(t, err)
	t.Logf("table sizes at minute 2 and at the end:\n%s", out)
}
