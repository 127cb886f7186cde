package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"

	"github.com/tasker-run/tasker/store"
)

// Maintenance is what the maintenance actors need of persistence.
// *store.Store implements it.
type Maintenance interface {
	SchedulesFireDue(ctx context.Context) (store.FireReport, error)
	LeaseAcquire(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	LeaseRelease(ctx context.Context, name, holder string) error
	Prune(ctx context.Context, targets []store.PruneTarget, batchSize int, budget time.Duration, progress func(store.PruneTarget, store.PruneCount)) (store.PruneRun, error)
	VacuumDead(ctx context.Context, queues []string) ([]string, error)
}

// RetentionSettings configure the pruning actor.
type RetentionSettings struct {
	Policy store.RetentionPolicy
	// Queues lists the queues whose archives are pruned, asked at each run
	// (namespaces registered later have queues too).
	Queues    func() []string
	Interval  time.Duration
	BatchSize int
	Budget    time.Duration
	// Vacuum, on a server whose autovacuum is off, vacuums after each run
	// the tables with many dead rows (store.VacuumDead).
	Vacuum bool
}

// Kinds of the maintenance actors.
const (
	KindScheduler = "scheduler"
	KindRetention = "retention"
)

// Names of the maintenance actors.
const (
	schedulerName = "scheduler"
	retentionName = "retention"
	// RetentionLease is the lease the pruning node holds.
	RetentionLease = store.RetentionLease
)

// schedulerMaxWait is the longest the scheduler waits between two checks,
// so a schedule created, resumed or changed by another node is seen within
// it.
const schedulerMaxWait = time.Second

// maintenanceTimeout bounds one database call of a maintenance actor
// beside a pruning run's own budget.
const maintenanceTimeout = 10 * time.Second

// tick is a maintenance actor's timer.
type tick struct{ Gen int }

// timed is the timer shared by the maintenance actors.
type timed struct {
	gen    int
	cancel scheduler.CancelFunc
}

func (t *timed) after(ctx actor.Context, d time.Duration) {
	t.stop()
	t.gen++
	if d <= 0 {
		ctx.Send(ctx.Self(), tick{Gen: t.gen})
		return
	}
	t.cancel = scheduler.NewTimerScheduler(ctx).SendOnce(d, ctx.Self(), tick{Gen: t.gen})
}

func (t *timed) stop() {
	if t.cancel != nil {
		t.cancel()
		t.cancel = nil
	}
}

// scheduleChecker checks the schedules: at their soonest fire time, and at
// least every schedulerMaxWait. Every orchestration node runs one; the
// database lets one check send each fire (store.SchedulesFireDue).
type scheduleChecker struct {
	sys   *System
	path  string
	timer timed
	// failing is set from a failed check to the next that succeeds, so an
	// outage is logged once, not every second.
	failing bool
}

func (c *scheduleChecker) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		c.sys.tree.setStatus(c.path, StatusRunning)
		c.timer.after(ctx, 0)
	case *actor.Restarting:
		c.timer.stop()
		c.sys.tree.setStatus(c.path, StatusRestarting)
	case *actor.Stopping:
		c.timer.stop()
		c.sys.tree.setStatus(c.path, StatusStopped)
	case tick:
		if msg.Gen == c.timer.gen && !c.sys.stopping.Load() {
			c.timer.after(ctx, c.check())
		}
	}
}

// check sends the due fires and returns the wait until the next check.
func (c *scheduleChecker) check() time.Duration {
	cctx, cancel := context.WithTimeout(c.sys.handlerCtx, maintenanceTimeout)
	defer cancel()
	rep, err := c.sys.deps.Maintenance.SchedulesFireDue(cctx)
	if c.sys.deps.SchedulesChecked != nil {
		c.sys.deps.SchedulesChecked(rep, err)
	}
	if err != nil {
		if !c.failing {
			c.sys.log.Warn("checking schedules failed; trying again every second", "error", err)
		}
		c.failing = true
		c.sys.tree.setDetail(c.path, "last check failed: "+err.Error())
		return schedulerMaxWait
	}
	if c.failing {
		c.failing = false
		c.sys.log.Info("checking schedules again")
	}
	if rep.Sent+rep.Skipped+rep.Missed > 0 {
		c.sys.log.Info("schedules fired", "sent", rep.Sent, "skipped", rep.Skipped, "missed", rep.Missed)
	}
	detail := "no schedule"
	if !rep.Next.IsZero() {
		detail = "next fire " + rep.Next.UTC().Format(time.RFC3339Nano)
	}
	c.sys.tree.setDetail(c.path, detail)
	if rep.More {
		return 0
	}
	if rep.Next.IsZero() {
		return schedulerMaxWait
	}
	return min(max(time.Until(rep.Next), time.Millisecond), schedulerMaxWait)
}

// pruner deletes what retention no longer keeps, on the node that holds
// the retention lease, once per interval, within a time budget.
type pruner struct {
	sys   *System
	path  string
	set   RetentionSettings
	timer timed
	// holding is set while this node holds the lease.
	holding bool
}

func (p *pruner) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		p.sys.tree.setStatus(p.path, StatusRunning)
		p.sys.tree.setDetail(p.path, "first run in "+p.set.Interval.String())
		p.timer.after(ctx, p.set.Interval)
	case *actor.Restarting:
		p.timer.stop()
		p.sys.tree.setStatus(p.path, StatusRestarting)
	case *actor.Stopping:
		p.timer.stop()
		if p.holding {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = p.sys.deps.Maintenance.LeaseRelease(rctx, RetentionLease, p.sys.settings.NodeID)
			cancel()
		}
		p.sys.tree.setStatus(p.path, StatusStopped)
	case tick:
		if msg.Gen == p.timer.gen && !p.sys.stopping.Load() {
			p.run()
			p.timer.after(ctx, p.set.Interval)
		}
	}
}

// run prunes once if this node holds (or takes) the lease. The lease
// outlives two intervals, so the holder keeps it from run to run and
// another node takes over only when the holder stopped running.
func (p *pruner) run() {
	m := p.sys.deps.Maintenance
	lctx, cancel := context.WithTimeout(p.sys.handlerCtx, maintenanceTimeout)
	ok, err := m.LeaseAcquire(lctx, RetentionLease, p.sys.settings.NodeID, 2*p.set.Interval+p.set.Budget)
	cancel()
	if err != nil {
		p.holding = false
		p.sys.log.Warn("taking the retention lease failed; trying at the next run", "error", err)
		p.sys.tree.setDetail(p.path, "taking the lease failed: "+err.Error())
		return
	}
	p.holding = ok
	if !ok {
		p.sys.tree.setDetail(p.path, "standing by: another node holds the retention lease")
		return
	}
	var queues []string
	if p.set.Queues != nil {
		queues = p.set.Queues()
	}
	targets := p.set.Policy.Targets(time.Now(), queues)
	rctx, cancel := context.WithTimeout(p.sys.handlerCtx, p.set.Budget+maintenanceTimeout)
	defer cancel()
	began := time.Now()
	run, err := m.Prune(rctx, targets, p.set.BatchSize, p.set.Budget, p.sys.deps.Pruned)
	took := time.Since(began)
	if p.sys.deps.PruneRan != nil {
		p.sys.deps.PruneRan(run, took, err)
	}
	var total int64
	for _, c := range run.Deleted {
		total += c.Total()
	}
	detail := fmt.Sprintf("holds the lease; last run %s: %d rows deleted in %d batches, %s", began.UTC().Format(time.RFC3339), total, run.Batches, took.Round(time.Millisecond))
	switch {
	case err != nil:
		p.sys.log.Warn("pruning failed; trying at the next run", "error", err, "deleted", total)
		detail += ", failed: " + err.Error()
	case !run.Done:
		detail += ", more to delete at the next run"
	}
	if total > 0 {
		p.sys.log.Info("pruned", "rows", total, "batches", run.Batches, "took", took.Round(time.Millisecond), "done", run.Done)
	}
	if p.set.Vacuum && err == nil {
		vctx, vcancel := context.WithTimeout(p.sys.handlerCtx, maintenanceTimeout+p.set.Budget)
		vacuumed, verr := m.VacuumDead(vctx, queues)
		vcancel()
		switch {
		case verr != nil:
			p.sys.log.Warn("vacuuming after pruning failed", "error", verr)
			detail += ", vacuum failed: " + verr.Error()
		case len(vacuumed) > 0:
			p.sys.log.Info("vacuumed (the server's autovacuum is off)", "tables", vacuumed)
			detail += fmt.Sprintf(", vacuumed %d tables (autovacuum is off)", len(vacuumed))
		}
	}
	p.sys.tree.setDetail(p.path, detail)
}
