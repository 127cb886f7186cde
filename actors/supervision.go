package actors

import (
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Intensity is a supervisor's restart intensity: at most MaxRestarts
// restarts of one child within Window.
type Intensity struct {
	MaxRestarts int
	Window      time.Duration
}

// strategy is one-for-one with a restart intensity. Within the intensity it
// restarts the failed child alone. Past it, an inner supervisor escalates
// (it fails itself, so its parent decides), while the root stops the child
// for good and marks it given up: escalating from the root would take the
// whole node down for one namespace's sake.
type strategy struct {
	intensity Intensity
	tree      *Tree
	log       *slog.Logger
	// escalate is false at the root.
	escalate bool
	// gaveUp is called when the root stops a child for good.
	gaveUp func(child string)
}

var _ actor.SupervisorStrategy = (*strategy)(nil)

func (s *strategy) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason any, _ any) {
	rs.Fail()
	if rs.NumberOfFailures(s.intensity.Window) <= s.intensity.MaxRestarts {
		s.log.Warn("actor failed; restarting it", "actor", child.Id, "error", reason,
			"failures_in_window", rs.NumberOfFailures(s.intensity.Window))
		s.tree.recordFailure(child.Id, reason, StatusRestarting)
		sup.RestartChildren(child)
		return
	}
	rs.Reset()
	if s.escalate {
		s.log.Error("actor failed past its restart intensity; escalating", "actor", child.Id, "error", reason,
			"max_restarts", s.intensity.MaxRestarts, "window", s.intensity.Window)
		s.tree.recordFailure(child.Id, reason, StatusRestarting)
		sup.EscalateFailure(reason, nil)
		return
	}
	s.log.Error("actor failed past its restart intensity; giving up on it", "actor", child.Id, "error", reason,
		"max_restarts", s.intensity.MaxRestarts, "window", s.intensity.Window)
	s.tree.recordFailure(child.Id, reason, StatusGaveUp)
	sup.StopChildren(child)
	if s.gaveUp != nil {
		s.gaveUp(child.Id)
	}
}
