package actors

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tasker-run/tasker/queue"
)

// namespaceSupervisor owns one namespace's subtree: its poller and its
// workers (the breaker lives in the System so its state outlives restarts).
// Strategy: one-for-one; past the restart intensity it escalates to the
// root, which restarts the whole subtree.
type namespaceSupervisor struct {
	sys *System
	ns  NamespaceSettings
}

func (n *namespaceSupervisor) Receive(ctx actor.Context) {
	path := ctx.Self().Id
	switch ctx.Message().(type) {
	case *actor.Started:
		n.spawnChildren(ctx)
		n.sys.tree.setStatus(path, StatusRunning)
	case *actor.Restarting:
		n.sys.tree.setStatus(path, StatusRestarting)
	case *actor.Stopping:
		n.sys.tree.setStatus(path, StatusStopped)
	}
}

func (n *namespaceSupervisor) spawnChildren(ctx actor.Context) {
	s := n.sys
	q := queue.NamespaceQueue(n.ns.Name)
	self := ctx.Self().Id
	// The producer runs again for every restart of the poller; only a
	// restarted poller asks the workers, which exist by then. On the first
	// start they are spawned just after it and say so themselves: a message
	// to a PID whose spawn has not finished races with protoactor setting
	// up its mailbox.
	incarnations := 0
	poller := spawn(ctx, s, "poller", KindPoller, n.ns.Name, q, func() actor.Actor {
		incarnations++
		return &poller{
			loop: pollLoop{sys: s, path: self + "/poller", queue: q, interval: n.ns.PollInterval,
				vt: n.ns.VisibilityTimeout, breaker: s.Breakers()[n.ns.Name]},
			ns:        n.ns,
			workers:   workerPIDs(ctx.Self(), n.ns.Workers),
			restarted: incarnations > 1,
		}
	}, nil)
	s.registerWaker(q, poller)
	tails := make(chan struct{}, max(n.ns.Workers, 1))
	for i := 0; i < n.ns.Workers; i++ {
		i := i
		spawn(ctx, s, workerName(i), KindWorker, n.ns.Name, "", func() actor.Actor {
			return &worker{sys: s, ns: n.ns, index: i, poller: poller, path: self + "/" + workerName(i), tails: tails}
		}, nil)
	}
}

func workerName(i int) string { return fmt.Sprintf("worker-%d", i) }

// workerPIDs names the workers of a namespace supervisor. Workers keep their
// PID across restarts, so the poller can address them by name.
func workerPIDs(sup *actor.PID, n int) []*actor.PID {
	out := make([]*actor.PID, n)
	for i := range out {
		out[i] = actor.NewPID(sup.Address, sup.Id+"/"+workerName(i))
	}
	return out
}
