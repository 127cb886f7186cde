package bootstrap

import (
	"log/slog"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/backoff"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
)

// The translation of the configuration into the settings of the packages
// it configures, in one place.

// BackoffPolicy is the retry policy of cfg.
func BackoffPolicy(cfg config.Backoff) backoff.Policy {
	return backoff.Policy{
		Base:           cfg.Base.Duration(),
		Max:            cfg.Max.Duration(),
		Multiplier:     cfg.Multiplier,
		Jitter:         cfg.Jitter,
		MaxServerDelay: cfg.MaxServerDelay.Duration(),
	}
}

// storeOptions are the store's options for a node (or a client) nodeID.
func storeOptions(cfg *config.Config, nodeID string, log *slog.Logger) store.Options {
	return store.Options{
		NodeID:          nodeID,
		Backoff:         BackoffPolicy(cfg.Backoff),
		MaxRequestBytes: cfg.Queue.MaxRequestBytes,
		TemplateGrace:   cfg.Queue.TemplateGrace.Duration(),
		Logger:          log,
	}
}

// actorSettings are the actor tree's settings for the node nodeID serving
// namespaces. Host breakers are made on demand, from live: the
// configuration in force when a host is first called.
func actorSettings(cfg *config.Config, nodeID string, namespaces []string, live func() *config.Config) actors.Settings {
	s := actors.Settings{
		NodeID:                    nodeID,
		Orchestration:             cfg.Node.RunsOrchestration(),
		OrchestrationPollInterval: cfg.OrchestrationPollInterval(),
		OrchestrationVisibility:   cfg.Queue.VisibilityTimeout.Duration(),
		OrchestrationBreaker:      breakerSettings(cfg.Breaker(config.ComponentOrchestration)),
		BatchSize:                 cfg.Queue.BatchSize,
		MaxDeliveries:             cfg.Queue.MaxDeliveries,
		MaxResultBytes:            cfg.Queue.MaxResultBytes,
		Supervision:               actors.Intensity{MaxRestarts: cfg.Supervision.MaxRestarts, Window: cfg.Supervision.Window.Duration()},
		HostBreaker: func(host string) actors.BreakerSettings {
			return breakerSettings(live().Breaker(config.HTTPComponent(host)))
		},
		MaxHostBreakers: cfg.CircuitBreakers.MaxHosts,
		Schedules:       true,
	}
	if r := cfg.Retention; r.Enabled {
		queues := RetentionQueues(namespaces)
		s.Retention = &actors.RetentionSettings{
			Policy: RetentionPolicy(r), Queues: func() []string { return queues },
			Interval: r.Interval.Duration(), BatchSize: r.BatchSize, Budget: r.TimeBudget.Duration(), Vacuum: r.Vacuum,
		}
	}
	for _, name := range namespaces {
		if !cfg.Node.RunsNamespace(name) || cfg.Namespace(name).External {
			continue
		}
		ns := cfg.Namespace(name)
		s.Namespaces = append(s.Namespaces, actors.NamespaceSettings{
			Name:              name,
			Workers:           ns.Workers,
			PollInterval:      ns.PollInterval.Duration(),
			VisibilityTimeout: ns.VisibilityTimeout.Duration(),
			Breaker:           breakerSettings(cfg.Breaker(name)),
		})
	}
	return s
}

func breakerSettings(b config.BreakerConfig) actors.BreakerSettings {
	return actors.BreakerSettings{
		FailureThreshold: b.FailureThreshold,
		FailureRatio:     b.FailureRatio,
		MinExecutions:    b.MinExecutions,
		Window:           b.Window.Duration(),
		Delay:            b.Delay.Duration(),
		SuccessThreshold: b.SuccessThreshold,
	}
}

func workerNamespaces(s actors.Settings) []string {
	out := make([]string, 0, len(s.Namespaces))
	for _, ns := range s.Namespaces {
		out = append(out, ns.Name)
	}
	return out
}

// externalNamespaces are those of namespaces whose steps programs outside
// the node run (namespace.external).
func externalNamespaces(cfg *config.Config, namespaces []string) []string {
	out := []string{}
	for _, name := range namespaces {
		if cfg.Namespace(name).External {
			out = append(out, name)
		}
	}
	return out
}

// RetentionPolicy is the store's form of [retention].
func RetentionPolicy(r config.Retention) store.RetentionPolicy {
	return store.RetentionPolicy{
		Complete: r.CompleteTasks.Duration(), Failed: r.FailedTasks.Duration(), Cancelled: r.CancelledTasks.Duration(),
		Rejected: r.RejectedRequests.Duration(), Archives: r.Archives.Duration(), Fires: r.ScheduleFires.Duration(),
	}
}

// RetentionQueues are the queues whose archives retention prunes: the
// orchestration queues and those of the namespaces given. Queues of other
// programs sharing the database are left alone.
func RetentionQueues(namespaces []string) []string {
	out := []string{queue.TaskRequestsQueue, queue.StepResultsQueue}
	for _, ns := range namespaces {
		out = append(out, queue.NamespaceQueue(ns))
	}
	return out
}
