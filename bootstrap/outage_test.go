package bootstrap_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
)

// outageLength is how long the database stays away in TestDatabaseOutage.
const outageLength = 30 * time.Second

// TestDatabaseOutage cuts a node off its database for 30 s while 200 tasks
// are in flight. The node must stay up (live answers, Stop works), open its
// breakers within seconds and report not ready, keep its pollers from
// hammering the database, and after the database is back finish every task
// with every state change applied exactly once.
func TestDatabaseOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30 s database outage")
	}
	// Not parallel: the failure counts and timings are the point.
	ctx := t.Context()
	dbURL := testsupport.NewDatabaseURL(t)
	proxy := testsupport.NewProxy(t, dbURL)
	counts := &outageCounter{}
	node := testsupport.StartNodeOn(t, proxy.URL(),
		testsupport.WithConfig(func(cfg *config.Config) {
			cfg.Database.ConnectTimeout = config.Duration(time.Second)
		}),
		testsupport.WithOptions(func(o *bootstrap.Options) {
			o.WrapQueue = func(q actors.Queue) actors.Queue { return &outageQueue{next: q, c: counts} }
			o.WrapStore = func(s actors.Store) actors.Store { return &outageStore{next: s, c: counts} }
		}))
	direct := outagePool(t, dbURL)
	breakerCfg := config.Default(config.EnvTest).CircuitBreakers.Default

	requests := outageSubmitMix(t, direct, 200)
	testsupport.WaitFor(t, time.Minute, "a quarter of the tasks to complete", func() (bool, error) {
		n, err := outageCount(ctx, direct, `SELECT count(*) FROM tasker.tasks WHERE state = 'complete'`)
		return n >= 50, err
	})
	complete, err := outageCount(ctx, direct, `SELECT count(*) FROM tasker.tasks WHERE state = 'complete'`)
	require.NoError(t, err)
	require.Less(t, complete, 200, "tasks must still be in flight when the database goes")

	// The outage.
	counts.outage.Store(true)
	before := proxy.Stats()
	cutAt := time.Now()
	proxy.Cut()

	breakers := node.System().Breakers()
	seenOpen := map[string]time.Duration{}
	testsupport.WaitFor(t, 10*time.Second, "every breaker to open", func() (bool, error) {
		for name, b := range breakers {
			if _, ok := seenOpen[name]; !ok && b.State() == "open" {
				seenOpen[name] = time.Since(cutAt)
			}
		}
		return len(seenOpen) == len(breakers), nil
	})
	allOpen := time.Since(cutAt)
	t.Logf("breakers open after the cut: %s (all %d within %s)", outageDurations(seenOpen), len(breakers), allOpen.Round(time.Millisecond))

	base := "http://" + node.HTTPAddr()
	outageRequireStatus(t, base+"/health/live", http.StatusOK)
	ready := outageRequireStatus(t, base+"/health/ready", http.StatusServiceUnavailable)
	t.Logf("/health/ready during the outage: %s", ready)
	require.True(t, node.System().Running())

	// The database stays away for the whole outage: this wait is the
	// scenario, not a hope that something happened.
	time.Sleep(time.Until(cutAt.Add(outageLength)))

	outageRequireStatus(t, base+"/health/live", http.StatusOK)
	outageRequireStatus(t, base+"/health/ready", http.StatusServiceUnavailable)
	require.True(t, node.System().Running(), "the actor tree runs through the outage")
	require.Empty(t, node.System().GaveUp(), "no actor gave up during the outage")
	calls, failures := counts.calls.Load(), counts.failures.Load()
	during := proxy.Stats()
	counts.outage.Store(false)
	restoreAt := time.Now()
	proxy.Restore()

	// What the pollers did meanwhile. Each breaker lets FailureThreshold
	// calls fail, then one trial per Delay (at most SuccessThreshold of
	// them at once, plus a worker or two that were already past the
	// breaker); a poller that ignored it would read every poll interval.
	cycles := int64(outageLength/breakerCfg.Delay.Duration()) + 1
	bound := int64(len(breakers)) * (int64(breakerCfg.FailureThreshold) + cycles*int64(max(breakerCfg.SuccessThreshold, 1))*2)
	hotLoop := int64(len(breakers)) * int64(outageLength/config.Default(config.EnvTest).Queue.PollInterval.Duration())
	connAttempts := during.Accepted - before.Accepted
	t.Logf("during the %s outage: %d queue/store calls, %d failed (%.1f/s; bound %d; a poller per breaker without one would make ~%d); %d connection attempts reached the proxy",
		outageLength, calls, failures, float64(failures)/outageLength.Seconds(), bound, hotLoop, connAttempts)
	require.Positive(t, failures, "the node noticed the outage")
	require.LessOrEqual(t, failures, bound, "open breakers pause the pollers")
	require.Less(t, connAttempts, hotLoop, "the pool is not asked for connections in a hot loop")

	// Recovery.
	testsupport.WaitFor(t, 30*time.Second, "the node to be ready again", func() (bool, error) {
		for _, b := range breakers {
			if b.State() != "closed" {
				return false, nil
			}
		}
		return outageStatus(base+"/health/ready") == http.StatusOK, nil
	})
	readyAfter := time.Since(restoreAt)
	testsupport.WaitFor(t, time.Minute, "every task to complete", func() (bool, error) {
		n, err := outageCount(ctx, direct, `SELECT count(*) FROM tasker.tasks WHERE state = 'complete'`)
		return n == len(requests), err
	})
	doneAfter := time.Since(restoreAt)
	t.Logf("recovery: ready %s after the restore, all %d tasks complete %s after it (%d were complete at the cut)",
		readyAfter.Round(time.Millisecond), len(requests), doneAfter.Round(time.Millisecond), complete)

	fig := testsupport.AuditComplete(t, direct, requests)
	t.Logf("exactly once: %d tasks, %d steps, %d attempts, %d redeliveries (in_progress→in_progress), %d retries",
		fig.Tasks, fig.Steps, fig.Attempts, fig.Redeliveries, fig.Retries)

	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, node.Stop(stopCtx), "the node stops cleanly after the outage")
}

// blackHoleLength is how long the network drops everything in
// TestDatabaseBlackHole.
const blackHoleLength = 20 * time.Second

// TestDatabaseBlackHole is the nastier outage: the network to the database
// drops everything, so nothing fails fast and every call waits for a
// timeout. The node must still answer /health/live at once, report not
// ready, open its breakers, and after the network heals finish every task
// exactly once.
func TestDatabaseBlackHole(t *testing.T) {
	if testing.Short() {
		t.Skip("a 15 s network partition")
	}
	ctx := t.Context()
	dbURL := testsupport.NewDatabaseURL(t)
	proxy := testsupport.NewProxy(t, dbURL)
	node := testsupport.StartNodeOn(t, proxy.URL(), testsupport.WithConfig(func(cfg *config.Config) {
		cfg.Database.ConnectTimeout = config.Duration(time.Second)
		// In a partition every failure is a timeout (a poller's read gives
		// up after 5 s), so a breaker opens after about threshold × 5 s:
		// 25 s with the default of 5. Two keeps the test short.
		cfg.CircuitBreakers.Default.FailureThreshold = 2
	}))
	direct := outagePool(t, dbURL)

	requests := outageSubmitMix(t, direct, 100)
	testsupport.WaitFor(t, time.Minute, "a fifth of the tasks to complete", func() (bool, error) {
		n, err := outageCount(ctx, direct, `SELECT count(*) FROM tasker.tasks WHERE state = 'complete'`)
		return n >= 20, err
	})
	holeAt := time.Now()
	proxy.BlackHole()

	breakers := node.System().Breakers()
	seenOpen := map[string]time.Duration{}
	testsupport.WaitFor(t, blackHoleLength, "every breaker to open", func() (bool, error) {
		for name, b := range breakers {
			if _, ok := seenOpen[name]; !ok && b.State() == "open" {
				seenOpen[name] = time.Since(holeAt)
			}
		}
		return len(seenOpen) == len(breakers), nil
	})
	t.Logf("breakers open in the black hole: %s", outageDurations(seenOpen))

	base := "http://" + node.HTTPAddr()
	began := time.Now()
	outageRequireStatus(t, base+"/health/live", http.StatusOK)
	require.Less(t, time.Since(began), time.Second, "live answers without the database")
	began = time.Now()
	ready := outageRequireStatus(t, base+"/health/ready", http.StatusServiceUnavailable)
	t.Logf("/health/ready in the black hole, after %s: %s", time.Since(began).Round(time.Millisecond), ready)
	require.True(t, node.System().Running())

	// The partition lasts its full length: this wait is the scenario.
	time.Sleep(time.Until(holeAt.Add(blackHoleLength)))
	require.True(t, node.System().Running(), "the actor tree runs through the partition")
	require.Empty(t, node.System().GaveUp())
	healAt := time.Now()
	proxy.Restore()

	testsupport.WaitFor(t, time.Minute, "the node to be ready again", func() (bool, error) {
		return outageStatus(base+"/health/ready") == http.StatusOK, nil
	})
	readyAfter := time.Since(healAt)
	testsupport.WaitFor(t, time.Minute, "every task to complete", func() (bool, error) {
		n, err := outageCount(ctx, direct, `SELECT count(*) FROM tasker.tasks WHERE state = 'complete'`)
		return n == len(requests), err
	})
	t.Logf("after the partition: ready in %s, all %d tasks complete in %s",
		readyAfter.Round(time.Millisecond), len(requests), time.Since(healAt).Round(time.Millisecond))
	fig := testsupport.AuditComplete(t, direct, requests)
	t.Logf("exactly once: %d tasks, %d steps, %d attempts, %d redeliveries, %d retries",
		fig.Tasks, fig.Steps, fig.Attempts, fig.Redeliveries, fig.Retries)

	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, node.Stop(stopCtx))
}

// outageCounter counts the node's queue and store calls while the outage
// lasts.
type outageCounter struct {
	outage   atomic.Bool
	calls    atomic.Int64
	failures atomic.Int64
}

func (c *outageCounter) record(err error) {
	if !c.outage.Load() {
		return
	}
	c.calls.Add(1)
	// Stale and missing rows are answers from the database, not failures.
	if err != nil && !errors.Is(err, store.ErrStale) && !errors.Is(err, store.ErrNotFound) {
		c.failures.Add(1)
	}
}

// outageQueue counts the calls of the actors' queue.
type outageQueue struct {
	next actors.Queue
	c    *outageCounter
}

func (q *outageQueue) Read(ctx context.Context, name string, vt time.Duration, qty int) ([]queue.Message, error) {
	msgs, err := q.next.Read(ctx, name, vt, qty)
	q.c.record(err)
	return msgs, err
}

func (q *outageQueue) Delete(ctx context.Context, name string, id int64) (bool, error) {
	ok, err := q.next.Delete(ctx, name, id)
	q.c.record(err)
	return ok, err
}

func (q *outageQueue) Archive(ctx context.Context, name string, id int64) (bool, error) {
	ok, err := q.next.Archive(ctx, name, id)
	q.c.record(err)
	return ok, err
}

func (q *outageQueue) SetVisibility(ctx context.Context, name string, id int64, vt time.Duration) error {
	err := q.next.SetVisibility(ctx, name, id, vt)
	q.c.record(err)
	return err
}

// outageStore counts the calls of the actors' store.
type outageStore struct {
	next actors.Store
	c    *outageCounter
}

func (s *outageStore) RequestAccept(ctx context.Context, msg queue.Message) (store.RequestOutcome, error) {
	out, err := s.next.RequestAccept(ctx, msg)
	s.c.record(err)
	return out, err
}

func (s *outageStore) RequestReject(ctx context.Context, msg queue.Message, reason string) (store.RequestOutcome, error) {
	out, err := s.next.RequestReject(ctx, msg, reason)
	s.c.record(err)
	return out, err
}

func (s *outageStore) ResultApply(ctx context.Context, msg queue.Message) (store.ResultOutcome, error) {
	out, err := s.next.ResultApply(ctx, msg)
	s.c.record(err)
	return out, err
}

func (s *outageStore) ResultQuarantine(ctx context.Context, msg queue.Message, reason string) (store.ResultOutcome, error) {
	out, err := s.next.ResultQuarantine(ctx, msg, reason)
	s.c.record(err)
	return out, err
}

func (s *outageStore) OutcomeApply(ctx context.Context, d store.OutcomeDue) (store.ResultOutcome, error) {
	out, err := s.next.OutcomeApply(ctx, d)
	s.c.record(err)
	return out, err
}

func (s *outageStore) OutcomeQuarantine(ctx context.Context, d store.OutcomeDue, reason string) (store.ResultOutcome, error) {
	out, err := s.next.OutcomeQuarantine(ctx, d, reason)
	s.c.record(err)
	return out, err
}

func (s *outageStore) OutcomeForward(ctx context.Context, d store.OutcomeDue) error {
	err := s.next.OutcomeForward(ctx, d)
	s.c.record(err)
	return err
}

func (s *outageStore) StepStart(ctx context.Context, step uuid.UUID) (store.StepWork, error) {
	w, err := s.next.StepStart(ctx, step)
	s.c.record(err)
	return w, err
}

func (s *outageStore) StepsTake(ctx context.Context, namespace string, vt time.Duration, qty int) ([]store.TakenStep, error) {
	taken, err := s.next.StepsTake(ctx, namespace, vt, qty)
	s.c.record(err)
	return taken, err
}

func (s *outageStore) StepOutcomeRecord(ctx context.Context, o store.Outcome) error {
	err := s.next.StepOutcomeRecord(ctx, o)
	s.c.record(err)
	return err
}

func (s *outageStore) MessageArchive(ctx context.Context, queueName string, id int64, reason string) error {
	err := s.next.MessageArchive(ctx, queueName, id, reason)
	s.c.record(err)
	return err
}

func (s *outageStore) ApplyFailed(ctx context.Context, queueName string, msgID int64, readCount int, cause error) error {
	err := s.next.ApplyFailed(ctx, queueName, msgID, readCount, cause)
	s.c.record(err)
	return err
}

func (s *outageStore) ApplyFailures(ctx context.Context, queueName string, msgID int64) (int, string, error) {
	n, last, err := s.next.ApplyFailures(ctx, queueName, msgID)
	s.c.record(err)
	return n, last, err
}

// outagePool opens a pool straight on the database, past any proxy.
func outagePool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// outageSubmitMix sends n task requests of the five reference workflows, in
// turn, through the request queue with plain SQL, and returns their
// request ids.
func outageSubmitMix(t *testing.T, db *pgxpool.Pool, n int) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, 0, n)
	// In one transaction: the node sees every request at once, not the
	// first ones run to the end while the last are being sent.
	tx, err := db.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(t.Context())) }()
	for i := range n {
		id := uuid.Must(uuid.NewV7())
		body, err := testsupport.ReferenceRequest(id, i, "outage-test")
		require.NoError(t, err)
		_, err = tx.Exec(t.Context(), `SELECT pgmq.send($1, $2::jsonb)`, queue.TaskRequestsQueue, body)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.NoError(t, tx.Commit(t.Context()))
	return ids
}

func outageCount(ctx context.Context, db *pgxpool.Pool, sql string, args ...any) (int, error) {
	var n int
	err := db.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

// outageStatus is the HTTP status of a GET of url, 0 when it fails.
func outageStatus(url string) int {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

// outageRequireStatus GETs url, requires status and returns the body's
// reasons (for /health) or status.
func outageRequireStatus(t *testing.T, url string, status int) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	var h api.Health
	_ = json.NewDecoder(resp.Body).Decode(&h)
	require.Equal(t, status, resp.StatusCode, "GET %s: %s %v", url, h.Status, h.Reasons)
	if len(h.Reasons) > 0 {
		return fmt.Sprintf("%s %v", h.Status, h.Reasons)
	}
	return h.Status
}

// outageDurations formats per-breaker delays, sorted by name.
func outageDurations(m map[string]time.Duration) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s %s", n, m[n].Round(time.Millisecond))
	}
	return s
}
