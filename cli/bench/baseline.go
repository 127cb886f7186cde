package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/queue"
)

// baselineQueue is the queue of the raw pgmq measurement; it is dropped
// afterwards.
const baselineQueue = "tasker_bench_baseline"

// Baseline is a raw pgmq cycle measured on the bench's database: each
// client sends one message, reads one and deletes it, each operation its
// own transaction, as fast as it can.
type Baseline struct {
	Clients   int     `json:"clients"`
	DurationS float64 `json:"duration_s"`
	// Cycles counts completed send, read, delete cycles.
	Cycles       int64   `json:"cycles"`
	CyclesPerSec float64 `json:"cycles_per_sec"`
	// CommitsPerCycle is the database's commits divided by Cycles.
	CommitsPerCycle float64 `json:"commits_per_cycle"`
	// PostgreSQL's side, per cycle, measured as the run's (see Report):
	// rows written, WAL, and CPU or statement time of PGCPUSource.
	RowsWrittenPerCycle float64 `json:"pg_rows_written_per_cycle"`
	WALBytesPerCycle    float64 `json:"pg_wal_bytes_per_cycle"`
	PGCPUSource         string  `json:"pg_cpu_source"`
	PGCPUMSPerCycle     float64 `json:"pg_cpu_ms_per_cycle"`
}

// runBaseline measures the raw pgmq cycle with clients concurrent clients
// for d.
func runBaseline(ctx context.Context, db *database, clients int, d time.Duration) (Baseline, error) {
	b := Baseline{Clients: clients}
	qc := queue.NewClient(db.pool)
	if err := qc.Create(ctx, baselineQueue); err != nil {
		return b, err
	}
	defer func() { _, _ = qc.Drop(context.WithoutCancel(ctx), baselineQueue) }()
	// A pool of its own, so that every client holds a connection.
	cfg := db.pool.Config().Copy()
	cfg.MaxConns, cfg.MinConns = int32(clients), int32(clients)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return b, fmt.Errorf("opening the baseline pool: %w", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return b, fmt.Errorf("opening the baseline pool: %w", err)
	}

	db.pool.Reset() // its unreported counts are not the baseline's
	before, err := db.settledCounters(ctx)
	if err != nil {
		return b, err
	}
	cpuBefore := db.serverCPU(ctx)
	var (
		cycles atomic.Int64
		wg     sync.WaitGroup
		errMu  sync.Mutex
		errs   []error
	)
	runCtx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	began := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := baselineClient(runCtx, queue.NewClient(pool), &cycles); err != nil {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	cpuAfter := db.serverCPU(ctx)
	if err := errors.Join(errs...); err != nil {
		return b, fmt.Errorf("measuring the pgmq baseline: %w", err)
	}
	pool.Close()
	after, err := db.settledCounters(ctx)
	if err != nil {
		return b, err
	}
	cpu := cpuBetween(cpuBefore, cpuAfter)
	b.PGCPUSource = cpu.source
	b.DurationS = elapsed.Seconds()
	b.Cycles = cycles.Load()
	if b.DurationS > 0 {
		b.CyclesPerSec = float64(b.Cycles) / b.DurationS
	}
	if b.Cycles > 0 {
		n := float64(b.Cycles)
		b.CommitsPerCycle = float64(after.commits-before.commits) / n
		b.RowsWrittenPerCycle = float64(after.rows()-before.rows()) / n
		b.WALBytesPerCycle = float64(after.wal-before.wal) / n
		b.PGCPUMSPerCycle = ms(cpu.counted) / n
	}
	return b, nil
}

// baselineClient cycles until ctx ends. A read that finds nothing visible
// (the others hold every message) is not a cycle; the message sent stays for
// a later read.
func baselineClient(ctx context.Context, qc *queue.Client, cycles *atomic.Int64) error {
	body := []byte(`{"task_uuid": "00000000-0000-0000-0000-000000000000"}`)
	for ctx.Err() == nil {
		if _, err := qc.Send(ctx, baselineQueue, body, 0); err != nil {
			return ignoreEnd(ctx, err)
		}
		msgs, err := qc.Read(ctx, baselineQueue, 30*time.Second, 1)
		if err != nil {
			return ignoreEnd(ctx, err)
		}
		for _, m := range msgs {
			if _, err := qc.Delete(ctx, baselineQueue, m.ID); err != nil {
				return ignoreEnd(ctx, err)
			}
			cycles.Add(1)
		}
	}
	return nil
}

// ignoreEnd drops the error of an operation cut short by the end of the
// measurement.
func ignoreEnd(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
