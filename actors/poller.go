package actors

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
)

// poller reads its namespace's queue and hands each message to an idle
// worker, with its step's attempt started in the read's transaction
// (store.StepsTake). It reads only as many messages as it has idle workers,
// so a message is never taken before someone can run it (its visibility
// timeout starts when it is read).
type poller struct {
	loop    pollLoop
	ns      NamespaceSettings
	workers []*actor.PID
	idle    []bool
	// known marks the workers this incarnation has heard from. A worker
	// that was busy when the poller restarted answers twice, once when its
	// job ends and once to the announce queued behind that job; by then the
	// poller may have given it a new job, so only the first answer counts.
	known []bool
	// epoch identifies this incarnation; announce replies to an earlier
	// one are stale.
	epoch uint64
	// restarted is set on every incarnation but the first.
	restarted bool
}

func (p *poller) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		p.idle = make([]bool, len(p.workers))
		p.known = make([]bool, len(p.workers))
		p.epoch = p.loop.sys.pollerEpoch.Add(1)
		p.loop.sys.tree.setStatus(p.loop.path, StatusRunning)
		// Workers say they are free when they start and when asked; a
		// restarted poller has forgotten which are.
		if p.restarted {
			for _, w := range p.workers {
				ctx.Send(w, announce{Epoch: p.epoch})
			}
		}
	case *actor.Restarting:
		p.loop.stopTimer()
		p.loop.sys.tree.setStatus(p.loop.path, StatusRestarting)
	case *actor.Stopping:
		p.loop.stopTimer()
		p.loop.sys.tree.setStatus(p.loop.path, StatusStopped)
	case workerFree:
		i := msg.Index
		if i < 0 || i >= len(p.idle) {
			return
		}
		if msg.Announce && (msg.Epoch != p.epoch || p.known[i]) {
			// Stale: the worker already said it was free (and may hold a
			// job since), or it answers a previous incarnation.
			return
		}
		p.idle[i], p.known[i] = true, true
		// Read after the messages already in the mailbox: when several
		// workers come free together, one read serves them all.
		p.loop.schedule(ctx, 0)
	case wake:
		p.loop.schedule(ctx, 0)
	case pollTick:
		if p.loop.current(msg) {
			p.poll(ctx)
		}
	}
}

func (p *poller) idleCount() int {
	n := 0
	for _, ok := range p.idle {
		if ok {
			n++
		}
	}
	return n
}

// poll takes up to one message per idle worker, starting their steps in
// the same round trip, and dispatches them, then schedules the next read.
func (p *poller) poll(ctx actor.Context) {
	free := p.idleCount()
	if free == 0 {
		// The next workerFree polls again.
		p.loop.stopTimer()
		return
	}
	qty := min(free, p.loop.sys.settings.BatchSize)
	var taken []store.TakenStep
	lease, wait := p.loop.through(func(rctx context.Context) error {
		var err error
		taken, err = p.loop.sys.deps.Store.StepsTake(rctx, p.ns.Name, p.loop.vt, qty)
		return err
	})
	if p.loop.sys.stopping.Load() {
		return
	}
	if wait > 0 {
		p.loop.schedule(ctx, wait)
		return
	}
	for _, t := range taken {
		p.dispatch(ctx, t, lease)
	}
	if len(taken) == qty && p.idleCount() > 0 {
		// The queue may hold more: read again at once.
		p.loop.schedule(ctx, 0)
		return
	}
	p.loop.schedule(ctx, p.loop.interval)
}

func (p *poller) dispatch(ctx actor.Context, t store.TakenStep, lease time.Time) {
	m := t.Message
	job := stepJob{MsgID: m.ID, ReadCount: m.ReadCount, Lease: lease, Started: t.Started}
	if t.Started.Attempt > 0 {
		job.TaskUUID, job.StepUUID = t.Started.TaskUUID, t.Started.StepUUID
	} else if step, err := queue.DecodeStepMessage(m.Body); err == nil {
		job.TaskUUID, job.StepUUID = step.TaskUUID, step.StepUUID
	} else {
		job.Undecodable = err.Error()
	}
	for i, ok := range p.idle {
		if ok {
			p.idle[i] = false
			ctx.Send(p.workers[i], job)
			return
		}
	}
}
