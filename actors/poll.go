package actors

import (
	"context"
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/tasker-run/tasker/queue"
)

// pollLoop is the reading half shared by every poller: timed ticks, reads
// through the breaker, and a pause while the breaker is open.
type pollLoop struct {
	sys      *System
	path     string
	queue    string
	interval time.Duration
	vt       time.Duration
	breaker  *Breaker

	gen    int
	cancel scheduler.CancelFunc
}

// readTimeout bounds one read. A read takes milliseconds; one that hangs
// (a database that stopped answering) must fail soon enough for the breaker
// to open within seconds, not after several visibility timeouts.
const readTimeout = 2 * time.Second

// minPause keeps an open breaker from being asked again in a tight loop.
const minPause = 10 * time.Millisecond

// schedule arranges the next tick after d, replacing any pending one.
func (p *pollLoop) schedule(ctx actor.Context, d time.Duration) {
	p.stopTimer()
	p.gen++
	if d <= 0 {
		ctx.Send(ctx.Self(), pollTick{Gen: p.gen})
		return
	}
	p.cancel = scheduler.NewTimerScheduler(ctx).SendOnce(d, ctx.Self(), pollTick{Gen: p.gen})
}

func (p *pollLoop) stopTimer() {
	if p.cancel != nil {
		p.cancel()
		p.cancel = nil
	}
}

// current reports whether a tick is the latest one scheduled.
func (p *pollLoop) current(t pollTick) bool { return t.Gen == p.gen }

// read takes up to qty messages through the breaker. It returns the
// messages, the end of their lease by this node's clock (they were made
// invisible for vt after the read began), and, when nothing should be read
// right now, how long to wait.
func (p *pollLoop) read(qty int) ([]queue.Message, time.Time, time.Duration) {
	var msgs []queue.Message
	lease, wait := p.through(func(ctx context.Context) error {
		var err error
		msgs, err = p.sys.deps.Queue.Read(ctx, p.queue, p.vt, qty)
		return err
	})
	return msgs, lease, wait
}

// through runs one read of the queue (fn) through the breaker, within
// readTimeout. It returns the end of the lease of what fn read, and, when
// nothing should be read right now (stopping, the breaker open, the read
// failed), how long to wait; fn's results are then to be ignored.
func (p *pollLoop) through(fn func(ctx context.Context) error) (time.Time, time.Duration) {
	if p.sys.stopping.Load() {
		return time.Time{}, 0
	}
	lease := time.Now().Add(p.vt)
	err := p.breaker.Run(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		defer cancel()
		return fn(ctx)
	})
	p.sys.tree.polled(p.path, p.breaker.State())
	if errors.Is(err, circuitbreaker.ErrOpen) {
		return time.Time{}, max(p.breaker.RemainingDelay(), minPause)
	}
	if err != nil {
		p.sys.log.Warn("reading queue failed", "queue", p.queue, "error", err)
		return time.Time{}, p.interval
	}
	return lease, 0
}
