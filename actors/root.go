package actors

import (
	"github.com/asynkron/protoactor-go/actor"
)

// rootActor supervises the orchestration actors and one supervisor per
// namespace. It has no work of its own.
type rootActor struct {
	sys *System
}

func (r *rootActor) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		r.spawnChildren(ctx)
		r.sys.tree.setStatus(rootName, StatusRunning)
		r.sys.rootStartedOnce.Do(func() { close(r.sys.rootStarted) })
	case *actor.Restarting:
		r.sys.tree.setStatus(rootName, StatusRestarting)
	case *actor.Stopping:
		r.sys.tree.setStatus(rootName, StatusStopped)
	}
}

func (r *rootActor) spawnChildren(ctx actor.Context) {
	s := r.sys
	if s.settings.Orchestration {
		spawn(ctx, s, taskRequestsName, KindTaskRequests, "", queueTaskRequests, func() actor.Actor {
			return newConsumer(s, rootName+"/"+taskRequestsName, queueTaskRequests, acceptRequest)
		}, nil)
		spawn(ctx, s, stepResultsName, KindStepResults, "", queueStepResults, func() actor.Actor {
			c := newConsumer(s, rootName+"/"+stepResultsName, queueStepResults, applyResult)
			c.due = applyDue
			return c
		}, nil)
		if s.deps.Maintenance != nil && s.settings.Schedules {
			spawn(ctx, s, schedulerName, KindScheduler, "", "", func() actor.Actor {
				return &scheduleChecker{sys: s, path: rootName + "/" + schedulerName}
			}, nil)
		}
		if s.deps.Flow != nil {
			spawn(ctx, s, admissionName, KindAdmission, "", "", func() actor.Actor {
				return &admission{sys: s, path: rootName + "/" + admissionName}
			}, nil)
		}
		if s.deps.Maintenance != nil && s.settings.Retention != nil {
			spawn(ctx, s, retentionName, KindRetention, "", "", func() actor.Actor {
				return &pruner{sys: s, path: rootName + "/" + retentionName, set: *s.settings.Retention}
			}, nil)
		}
	}
	for _, ns := range s.settings.Namespaces {
		if s.isGivenUp(NamespacePath(ns.Name)) {
			continue
		}
		ns := ns
		spawn(ctx, s, "ns-"+ns.Name, KindNamespace, ns.Name, "", func() actor.Actor {
			return &namespaceSupervisor{sys: s, ns: ns}
		}, &strategy{intensity: s.settings.Supervision, tree: s.tree, log: s.log.With("namespace", ns.Name), escalate: true})
	}
}

func (s *System) isGivenUp(path string) bool {
	s.gaveUpMu.Lock()
	defer s.gaveUpMu.Unlock()
	return s.gaveUp[path]
}

// spawn starts a named child of ctx and declares it in the tree. A child
// that supervises others gets sup as its strategy.
func spawn(ctx actor.Context, s *System, name, kind, namespace, queueName string, producer actor.Producer, sup actor.SupervisorStrategy) *actor.PID {
	path := ctx.Self().Id + "/" + name
	s.tree.declare(path, kind, namespace, queueName)
	opts := []actor.PropsOption{}
	if sup != nil {
		opts = append(opts, actor.WithSupervisor(sup))
	}
	pid, err := ctx.SpawnNamed(actor.PropsFromProducer(producer, opts...), name)
	if err != nil {
		// A name still taken means the previous incarnation has not
		// finished stopping; failing lets the supervisor retry.
		panic(err)
	}
	return pid
}
