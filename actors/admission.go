package actors

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tasker-run/tasker/store"
)

// Flow is what the admission actor needs of persistence. *store.Store
// implements it.
type Flow interface {
	FlowSignal() <-chan struct{}
	FlowNamespaces(ctx context.Context) ([]string, error)
	FlowAdmit(ctx context.Context, namespace string) (store.FlowRound, error)
	FlowRepair(ctx context.Context) (store.FlowDrift, error)
}

// KindAdmission is the kind of the admission actor.
const KindAdmission = "admission"

const admissionName = "admission"

// admissionMaxWait is the longest the admission waits between two rounds:
// a slot given back on another node (whose own admission runs then) or by
// a statement that does not signal is seen within it.
const admissionMaxWait = time.Second

// flowRepairEvery is how often the admission checks the flow tables
// against the steps' states.
const flowRepairEvery = time.Minute

// flowWake is the store's signal that a throttled step may go through.
type flowWake struct{}

// admission lets throttled steps through under their flow limits: when the
// store signals a change (a step throttled, a slot given back), when a
// rate's next token is due, and at least every admissionMaxWait. Every
// orchestration node runs one; the namespace's lock makes them take turns.
type admission struct {
	sys   *System
	path  string
	timer timed
	// ack lets the forwarder send the next wake once a round ran, so at
	// most one waits in the mailbox.
	ack       chan struct{}
	stop      context.CancelFunc
	failing   bool
	repairdue time.Time
}

func (a *admission) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.sys.tree.setStatus(a.path, StatusRunning)
		a.ack = make(chan struct{}, 1)
		fctx, cancel := context.WithCancel(a.sys.handlerCtx)
		a.stop = cancel
		go a.forward(fctx, ctx.Self())
		a.repairdue = time.Now().Add(flowRepairEvery)
		a.timer.after(ctx, 0)
	case *actor.Restarting:
		a.halt()
		a.sys.tree.setStatus(a.path, StatusRestarting)
	case *actor.Stopping:
		a.halt()
		a.sys.tree.setStatus(a.path, StatusStopped)
	case flowWake:
		a.round(ctx)
		select {
		case a.ack <- struct{}{}:
		default:
		}
	case tick:
		if msg.Gen == a.timer.gen {
			a.round(ctx)
		}
	}
}

func (a *admission) halt() {
	a.timer.stop()
	if a.stop != nil {
		a.stop()
	}
}

// forward turns the store's signals into wakes of the actor, one at a
// time.
func (a *admission) forward(ctx context.Context, self *actor.PID) {
	sig := a.sys.deps.Flow.FlowSignal()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		}
		a.sys.system.Root.Send(self, flowWake{})
		select {
		case <-ctx.Done():
			return
		case <-a.ack:
		}
	}
}

// round admits what it can in every namespace with throttled steps, and
// sets the timer for the next round.
func (a *admission) round(ctx actor.Context) {
	if a.sys.stopping.Load() {
		return
	}
	f := a.sys.deps.Flow
	next := admissionMaxWait
	cctx, cancel := context.WithTimeout(a.sys.handlerCtx, maintenanceTimeout)
	defer cancel()
	if time.Now().After(a.repairdue) {
		a.repairdue = time.Now().Add(flowRepairEvery)
		drift, err := f.FlowRepair(cctx)
		switch {
		case err != nil:
			a.sys.log.Warn("checking the flow tables failed", "error", err)
		case drift.Slots+drift.Waiting > 0:
			a.sys.log.Warn("flow tables repaired: they disagreed with the steps' states",
				"slots_given_back", drift.Slots, "waiting_rows_dropped", drift.Waiting)
		}
		if a.sys.deps.FlowRepaired != nil {
			a.sys.deps.FlowRepaired(drift, err)
		}
	}
	namespaces, err := f.FlowNamespaces(cctx)
	if err != nil {
		a.failed(err)
		a.timer.after(ctx, next)
		return
	}
	var parts []string
	ok := true
	for _, ns := range namespaces {
		r, err := f.FlowAdmit(cctx, ns)
		if a.sys.deps.FlowAdmitted != nil {
			a.sys.deps.FlowAdmitted(ns, r, err)
		}
		if err != nil {
			a.failed(err)
			ok = false
			continue
		}
		held := 0
		for _, n := range r.Held {
			held += n
		}
		if r.Admitted > 0 && r.Admitted+held >= store.FlowWindow {
			next = 0 // more may wait beyond the window
		}
		if r.RetryIn > 0 {
			next = min(next, max(r.RetryIn, time.Millisecond))
		}
		part := fmt.Sprintf("%s: %d admitted, %d waiting for slots, %d for tokens",
			ns, r.Admitted, r.Held[store.HeldBySlots], r.Held[store.HeldByRate])
		if n := r.Held[store.HeldByPause]; n > 0 {
			part += fmt.Sprintf(", %d for a pause to end", n)
		}
		parts = append(parts, part)
	}
	if !ok {
		a.timer.after(ctx, next)
		return
	}
	if a.failing {
		a.failing = false
		a.sys.log.Info("admitting throttled steps again")
	}
	detail := "no step throttled"
	if len(parts) > 0 {
		slices.Sort(parts)
		detail = "last round " + strings.Join(parts, "; ")
	}
	a.sys.tree.setDetail(a.path, detail)
	a.timer.after(ctx, next)
}

// failed logs an outage once, not every round.
func (a *admission) failed(err error) {
	if !a.failing {
		a.sys.log.Warn("admitting throttled steps failed; trying again every second", "error", err)
	}
	a.failing = true
	a.sys.tree.setDetail(a.path, "last round failed: "+err.Error())
}
