package bootstrap_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/testsupport"
)

// EnvMeasureRestart makes TestPgCtlRestartUnderLoad run three rounds of
// each mode and report the median and range of its figures.
const EnvMeasureRestart = "TASKER_MEASURE_RESTART"

// restartTasks is how many tasks are in flight when the server restarts.
const restartTasks = 400

// restartVisibility is the visibility timeout in TestPgCtlRestartUnderLoad:
// longer than the test waits for every task after the restart, so a message
// left invisible rather than held in process fails the test.
const restartVisibility = time.Minute

// TestPgCtlRestartUnderLoad restarts the node's PostgreSQL with pg_ctl
// (-m fast, then -m immediate) while 400 tasks are in flight. The node
// holds the messages it had read and tries them again once the server
// answers, instead of leaving them invisible for the visibility timeout:
// every task completes well within it, nothing is lost and no state
// change is applied twice.
func TestPgCtlRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a PostgreSQL server under load")
	}
	rounds := 1
	if os.Getenv(EnvMeasureRestart) == "1" {
		rounds = 3
	}
	for _, mode := range []string{"fast", "immediate"} {
		var first, all []time.Duration
		for round := 1; round <= rounds; round++ {
			t.Run(fmt.Sprintf("%s-%d", mode, round), func(t *testing.T) {
				f := restartUnderLoad(t, mode)
				first, all = append(first, f.first), append(all, f.all)
			})
		}
		if rounds > 1 && len(first) == rounds {
			t.Logf("pg_ctl restart -m %s, %d tasks in flight, %d rounds: first step completion %s after the server accepted connections, every task complete %s after it",
				mode, restartTasks, rounds, medianRange(first), medianRange(all))
		}
	}
}

// restartFigures are the times from the server accepting connections again
// to the first step completion and to the last task's.
type restartFigures struct{ first, all time.Duration }

func restartUnderLoad(t *testing.T, mode string) restartFigures {
	srv := testsupport.PrivateServer(t)
	node := testsupport.StartNodeOn(t, srv.URL(), testsupport.WithConfig(func(cfg *config.Config) {
		cfg.Database.ConnectTimeout = config.Duration(time.Second)
		cfg.Queue.VisibilityTimeout = config.Duration(restartVisibility)
		// The breakers of a production node: a five-second delay.
		cfg.CircuitBreakers.Default = config.Default(config.EnvProduction).CircuitBreakers.Default
	}))
	before, err := pgxpool.New(t.Context(), srv.URL())
	require.NoError(t, err)
	requests := outageSubmitMix(t, before, restartTasks)
	testsupport.WaitFor(t, time.Minute, "the tasks to be under way", func() (bool, error) {
		n, err := outageCount(t.Context(), before,
			`SELECT count(*) FROM tasker.step_transitions WHERE to_state = 'complete'`)
		// A few completions: the node is running them, and most tasks
		// (of up to eight steps) are still to finish however fast it is.
		return n >= restartTasks/8, err
	})
	complete, err := outageCount(t.Context(), before, `SELECT count(*) FROM tasker.tasks WHERE state = 'complete'`)
	require.NoError(t, err)
	before.Close()
	require.Less(t, complete, restartTasks/4, "most tasks are in flight when the server restarts")

	var restartErr error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		restartErr = testsupport.PgCtl(srv, "restart", "-m", mode)
	}()
	accepted := waitAccepting(t, srv.URL(), finished)
	<-finished
	require.NoError(t, restartErr)
	require.False(t, accepted.IsZero(), "the server accepts connections after pg_ctl restart")

	after, err := pgxpool.New(t.Context(), srv.URL())
	require.NoError(t, err)
	t.Cleanup(after.Close)
	// Well within the visibility timeout: the messages read before the
	// restart are not waiting it out.
	allDone := func() (bool, error) {
		n, err := outageCount(t.Context(), after, `SELECT count(*) FROM tasker.tasks WHERE state = 'complete'`)
		return n == restartTasks, err
	}
	if !restartEventually(t, restartVisibility/2, allDone) {
		t.Fatalf("tasks still not complete %s after the restart; messages invisible for more than 5 s: %v; steps not complete: %v",
			restartVisibility/2, restartInvisible(t, after), testsupport.TextRows(t, after,
				`SELECT format('%s %s attempts=%s', name, state, attempts) FROM tasker.steps WHERE state <> 'complete' ORDER BY name LIMIT 20`))
	}
	var first, all float64
	require.NoError(t, after.QueryRow(t.Context(), `
		SELECT (SELECT extract(epoch FROM min(created_at) - $1) FROM tasker.step_transitions
				WHERE to_state = 'complete' AND created_at >= $1)::float8,
			(SELECT extract(epoch FROM max(finished_at) - $1) FROM tasker.tasks)::float8`, accepted).
		Scan(&first, &all))
	f := restartFigures{first: time.Duration(first * float64(time.Second)), all: time.Duration(all * float64(time.Second))}
	fig := testsupport.AuditComplete(t, after, requests)

	handled := heldMessages(t, node.HTTPAddr(), "handled")
	released := heldMessages(t, node.HTTPAddr(), "released")
	t.Logf("pg_ctl restart -m %s with %d tasks in flight (%d complete): first step completion %s after the server accepted connections, every task complete %s after it; %d messages held through the restart and handled, %d released to redelivery; %d attempts, %d redeliveries",
		mode, restartTasks, complete, f.first.Round(time.Millisecond), f.all.Round(time.Millisecond),
		handled, released, fig.Attempts, fig.Redeliveries)
	require.Positive(t, handled, "messages read before the restart were held and handled")
	return f
}

// waitAccepting returns the server's clock when it accepts connections
// again after going away: it connects every 5 ms until a connection fails,
// then until one succeeds. Once pg_ctl has finished (finished closed) the
// next success counts too; zero when pg_ctl finished and none succeeds.
func waitAccepting(t *testing.T, url string, finished <-chan struct{}) time.Time {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(2 * time.Minute)
	down := false
	for {
		done := false
		select {
		case <-finished:
			done = true
		default:
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		var now time.Time
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			err = conn.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now)
			_ = conn.Close(ctx)
		}
		cancel()
		switch {
		case err == nil && (down || done):
			return now
		case err != nil && done:
			return time.Time{}
		case err != nil:
			down = true
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("the server did not accept connections again within 2 minutes")
		}
	}
}

// heldMessages sums tasker_held_messages_total of outcome over the queues,
// from the node's /metrics.
func heldMessages(t *testing.T, addr, outcome string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	n := 0
	for _, l := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(l, "tasker_held_messages_total{") || !strings.Contains(l, `outcome="`+outcome+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		require.NoError(t, err, l)
		n += int(v)
	}
	return n
}

// restartEventually polls cond every 10 ms until it holds (true) or d
// has passed (false).
func restartEventually(t *testing.T, d time.Duration, cond func() (bool, error)) bool {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for {
		ok, err := cond()
		require.NoError(t, err)
		if ok {
			return true
		}
		select {
		case <-tick.C:
		case <-deadline:
			return false
		}
	}
}

// restartInvisible lists the messages of every queue that stay invisible
// for more than 5 s more.
func restartInvisible(t *testing.T, db *pgxpool.Pool) []string {
	t.Helper()
	var out []string
	for _, q := range testsupport.TextRows(t, db, `SELECT queue_name FROM pgmq.list_queues() ORDER BY 1`) {
		out = append(out, testsupport.TextRows(t, db, `SELECT format('%s msg %s read %s times, visible in %s s: %s', `+
			`'`+q+`'::text, msg_id, read_ct, round(extract(epoch FROM vt - clock_timestamp())), message) `+
			`FROM `+pgx.Identifier{"pgmq", "q_" + q}.Sanitize()+` WHERE vt > clock_timestamp() + interval '5 seconds'`)...)
	}
	return out
}

// medianRange formats durations as "median (min–max)".
func medianRange(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("%s (%s–%s)", r(s[len(s)/2]), r(s[0]), r(s[len(s)-1]))
}
