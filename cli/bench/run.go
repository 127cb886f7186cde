package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/examples"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// sendBatchSize is the most requests one pgmq.send_batch carries.
const sendBatchSize = 1000

// run is one bench run: its requests, its node and what was measured
// around it.
type run struct {
	db *database
	o  Options
	t  *tracker
	// h writes the finished tasks of Options.History, and deletes them.
	h *history

	node *bootstrap.Node

	// Measured while the node ran: wall time and this process's CPU time,
	// at node start and when the last task was seen finished.
	began, ended     time.Time
	cpuBegan, cpuEnd time.Duration
	// The server's counters (commits, rows, WAL) before the node started
	// and once it has stopped; PostgreSQL's CPU at the same moments as
	// cpuBegan and cpuEnd.
	countersBegan, countersEnd counters
	serverBegan, serverEnd     serverCPU
	// What the planner knew of the tables when the node started, and
	// whether autovacuum was on.
	statistics []TableStatistics
	autovacuum bool
	// activity samples the other clients of the server while the node
	// runs.
	activity *activity
	// The process's allocation counts (runtime.MemStats Mallocs and
	// TotalAlloc) at the same two moments.
	mallocsBegan, mallocsEnd uint64
	allocBegan, allocEnd     uint64
	// peakRSS is the process's peak resident set when the last task was
	// seen finished: the report's reading of every step comes after.
	peakRSS  int64
	timedOut bool
	// workers is the bench namespace's worker count.
	workers int
	// steadyBegan and steadyEnded bound the steady submitter; steadyErr is
	// its error.
	steadyBegan, steadyEnded time.Time
	steadyErr                error
}

func newRun(db *database, o Options) (*run, error) {
	h, err := newHistory(db, o)
	if err != nil {
		return nil, err
	}
	return &run{db: db, o: o, t: newTracker(), h: h, activity: newActivity(db)}, nil
}

// prepare makes the request queue, writes the history (Options.History)
// and, for a burn-down, sends every request before the node starts.
func (r *run) prepare(ctx context.Context) error {
	if err := r.db.client.Queue.Create(ctx, queue.TaskRequestsQueue); err != nil {
		return err
	}
	if err := r.h.fill(ctx); err != nil {
		return err
	}
	counts, err := r.db.client.Store.TaskCount(ctx, Namespace)
	if err != nil {
		return fmt.Errorf("looking for unfinished bench tasks: %w", err)
	}
	if counts.Unfinished > 0 {
		fmt.Fprintf(r.o.LogOutput, "bench: %d unfinished tasks of namespace %s from an earlier run will be worked on too\n", counts.Unfinished, Namespace)
	}
	if r.o.Mode != ModeBurnDown {
		return nil
	}
	for sent := 0; sent < r.o.Tasks; {
		n := min(sendBatchSize, r.o.Tasks-sent)
		if err := r.send(ctx, n); err != nil {
			return err
		}
		sent += n
	}
	r.t.sending.Store(false)
	return nil
}

// send sends n task requests in one pgmq.send_batch, in a transaction that
// also reads the send time, and wakes the node as Tasker's own sends do.
func (r *run) send(ctx context.Context, n int) error {
	ids := make([]uuid.UUID, n)
	bodies := make([][]byte, n)
	for i := range ids {
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		body, err := queue.TaskRequest{RequestID: id, Namespace: Namespace, Name: r.o.Pattern,
			RequestedBy: "tasker-bench"}.Encode()
		if err != nil {
			return err
		}
		ids[i], bodies[i] = id, body
	}
	var at time.Time
	err := pgx.BeginFunc(ctx, r.db.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, sqlNow).Scan(&at); err != nil {
			return err
		}
		if _, err := queue.NewClient(tx).SendBatch(ctx, queue.TaskRequestsQueue, bodies, 0); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", store.WakeChannel, queue.TaskRequestsQueue)
		return err
	})
	if err != nil {
		return fmt.Errorf("sending %d task requests: %w", n, err)
	}
	r.t.sent(ids, at)
	return nil
}

// measureBefore reads the server's counters, CPU and the tables'
// statistics before the node starts. The bench's sessions end first, so
// that the counts they have not reported yet (the requests and the history
// just written) are in the counters before the run, not in the run's.
func (r *run) measureBefore(ctx context.Context) (err error) {
	r.db.pool.Reset()
	if r.countersBegan, err = r.db.settledCounters(ctx); err != nil {
		return err
	}
	if r.statistics, r.autovacuum, err = r.db.statistics(ctx); err != nil {
		return err
	}
	r.serverBegan = r.db.serverCPU(ctx)
	return nil
}

// execute starts the node, submits (steady mode), waits until every
// request of the run is finished with, and stops the node.
func (r *run) execute(ctx context.Context, cfg *config.Config) (err error) {
	stopProfile, err := profile(r.o.CPUProfile, r.o.MemProfile)
	if err != nil {
		return err
	}
	r.workers = cfg.Namespace(Namespace).Workers
	r.mallocsBegan, r.allocBegan = allocations()
	r.began, r.cpuBegan = time.Now(), cpuTime()
	r.node, err = bootstrap.Start(ctx, bootstrap.Options{
		Config:    cfg,
		LogOutput: r.o.LogOutput,
		Templates: []fs.FS{Templates(handlerFor(r.o))},
		Bundled:   examples.Bundle(),
		Handlers: func(reg *workflow.Registry) error {
			return reg.Register(HandlerName, Handler(r.o.HandlerDuration, r.o.FailureRate))
		},
		WrapStore: func(s actors.Store) actors.Store { return observedStore{Store: s, t: r.t} },
	})
	if err != nil {
		_ = stopProfile()
		return fmt.Errorf("starting the bench node: %w", err)
	}

	var wg sync.WaitGroup
	sctx, stopSubmit := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.activity.run(sctx)
	}()
	if r.o.Mode == ModeSteady {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.steadyErr = r.submitSteady(sctx)
			r.steadyEnded = time.Now()
			r.t.sending.Store(false)
		}()
	}
	waitErr := r.wait(ctx)
	r.ended, r.cpuEnd = time.Now(), cpuTime()
	r.mallocsEnd, r.allocEnd = allocations()
	r.peakRSS = peakRSS()
	r.serverEnd = r.db.serverCPU(context.WithoutCancel(ctx))
	stopSubmit()
	wg.Wait()
	profErr := stopProfile()
	if r.o.Progress != nil && r.o.ProgressTTY {
		fmt.Fprintln(r.o.Progress)
	}

	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	stopErr := r.node.Stop(stopCtx)
	r.db.pool.Reset() // a steady run's sends, as above
	var cerr error
	r.countersEnd, cerr = r.db.settledCounters(stopCtx)
	return errors.Join(waitErr, r.steadyErr, profErr, stopErr, cerr)
}

// submitSteady sends requests at Options.Rate for Options.Duration. Each
// tick sends, in one batch, the requests due by then, so a slow send is
// caught up rather than lowering the rate.
func (r *run) submitSteady(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	r.steadyBegan = start
	sent := 0
	for {
		elapsed := time.Since(start)
		if elapsed > r.o.Duration {
			elapsed = r.o.Duration
		}
		due := int(r.o.Rate*elapsed.Seconds()) - sent
		for due > 0 {
			n := min(due, sendBatchSize)
			if err := r.send(ctx, n); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			sent += n
			due -= n
		}
		if elapsed >= r.o.Duration {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Progress and completion checks.
const (
	progressEvery    = 250 * time.Millisecond
	progressLineGap  = 5 * time.Second
	confirmMinGap    = time.Second
	confirmFallback  = 5 * time.Second
	stepsRateHorizon = 2 * time.Second
)

// wait returns when every request of the run is finished with (a terminal
// task or a rejection), as confirmed by the database. The node's counts say
// when to ask; every few seconds the database is asked anyway.
func (r *run) wait(ctx context.Context) error {
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	var (
		lastConfirm time.Time
		lastLine    time.Time
		samples     []progressSample
	)
	for {
		select {
		case <-ctx.Done():
			r.timedOut = true
			return fmt.Errorf("bench stopped before the run finished (%d of %d tasks done): %w",
				r.t.done(), r.t.submitted(), ctx.Err())
		case <-tick.C:
		}
		now := time.Now()
		samples = append(samples, progressSample{at: now, steps: r.t.steps.Load()})
		for len(samples) > 1 && now.Sub(samples[0].at) > stepsRateHorizon {
			samples = samples[1:]
		}
		if r.o.Progress != nil && (r.o.ProgressTTY || now.Sub(lastLine) >= progressLineGap) {
			r.progress(r.o.Progress, now, samples)
			lastLine = now
		}
		if r.t.sending.Load() {
			continue
		}
		submitted := r.t.submitted()
		hint := r.t.done() >= submitted
		if (!hint || now.Sub(lastConfirm) < confirmMinGap) && now.Sub(lastConfirm) < confirmFallback {
			continue
		}
		lastConfirm = now
		finished, err := r.db.client.Store.RequestsFinishedCount(ctx, r.t.requestIDs())
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			return fmt.Errorf("counting finished tasks: %w", err)
		}
		if finished >= submitted {
			if r.o.Progress != nil {
				r.progress(r.o.Progress, now, samples)
			}
			return nil
		}
	}
}

type progressSample struct {
	at    time.Time
	steps int64
}

// progress writes the progress line: tasks done, steps done and the recent
// step rate.
func (r *run) progress(w io.Writer, now time.Time, samples []progressSample) {
	rate := 0.0
	if n := len(samples); n > 1 {
		first, last := samples[0], samples[n-1]
		if d := last.at.Sub(first.at).Seconds(); d > 0 {
			rate = float64(last.steps-first.steps) / d
		}
	}
	line := fmt.Sprintf("%s %s: tasks %d/%d done, steps %d, %.0f steps/s, %s",
		r.o.Mode, r.o.Pattern, r.t.done(), r.t.submitted(), r.t.steps.Load(), rate,
		now.Sub(r.began).Truncate(100*time.Millisecond))
	if r.o.ProgressTTY {
		fmt.Fprintf(w, "\r\033[K%s", line)
		return
	}
	fmt.Fprintln(w, line)
}

// allocations reads the process's count of heap objects allocated and of
// bytes allocated for them, cumulative.
func allocations() (mallocs, bytes uint64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs, ms.TotalAlloc
}

// cleanup deletes the run's tasks and rejections, whatever messages of the
// run are left in the queues (a run that stopped early) and the history the
// run wrote, unless Options.Keep.
func (r *run) cleanup() {
	if r.o.Keep {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := r.deleteTasks(ctx); err != nil {
		fmt.Fprintf(r.o.LogOutput, "bench: deleting the run's tasks: %v\n", err)
	}
	if err := r.h.remove(ctx); err != nil {
		fmt.Fprintf(r.o.LogOutput, "bench: deleting the history: %v\n", err)
	}
	if err := r.vacuum(ctx); err != nil {
		fmt.Fprintf(r.o.LogOutput, "bench: vacuuming: %v\n", err)
	}
}

// vacuum reclaims what the run deleted and refreshes the planner's
// statistics. A bench on the embedded server lives shorter than
// autovacuum's nap, so without it every run would leave its dead rows to
// the next, which would then measure a bloated database.
func (r *run) vacuum(ctx context.Context) error {
	return r.db.client.Store.TablesVacuum(ctx, []string{queue.TaskRequestsQueue, queue.StepResultsQueue, queue.NamespaceQueue(Namespace)})
}

// deleteTasks deletes the run's tasks, rejections and queue messages.
func (r *run) deleteTasks(ctx context.Context) error {
	ids := r.t.requestIDs()
	if len(ids) == 0 {
		return nil
	}
	return r.db.client.Store.RequestsDelete(ctx, ids, []string{queue.NamespaceQueue(Namespace), queue.StepResultsQueue})
}
