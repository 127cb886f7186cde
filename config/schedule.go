package config

import (
	"encoding/json"
	"fmt"

	"github.com/tasker-run/tasker/workflow"
)

// Workflow returns the entry as a schedule definition, normalized (its
// defaults filled in); the error names the field that is wrong.
func (s Schedule) Workflow() (workflow.Schedule, error) {
	out := workflow.Schedule{
		Name: s.Name, Namespace: s.Namespace, Template: s.Template, Version: s.Version,
		Cron: s.Cron, TimeZone: s.TimeZone, Priority: s.Priority,
		Overlap: workflow.OverlapPolicy(s.Overlap), CatchUp: workflow.CatchUpPolicy(s.CatchUp), CatchUpLimit: s.CatchUpLimit,
	}
	if s.Context != nil {
		b, err := json.Marshal(s.Context)
		if err != nil {
			return out, &workflow.ScheduleError{Schedule: s.Name, Field: "context", Problem: fmt.Sprintf("cannot be JSON: %v", err)}
		}
		out.Context = b
	}
	err := out.Normalize()
	return out, err
}

// ScheduleDefinitions returns the [[schedules]] entries as definitions.
// The configuration must be valid.
func (c *Config) ScheduleDefinitions() []workflow.Schedule {
	out := make([]workflow.Schedule, 0, len(c.Schedules))
	for _, s := range c.Schedules {
		if w, err := s.Workflow(); err == nil {
			out = append(out, w)
		}
	}
	return out
}

// fillDefaults writes the defaults of the fields left empty, so the
// effective configuration shows them. The entry must be valid.
func (s *Schedule) fillDefaults() {
	w, err := s.Workflow()
	if err != nil {
		return
	}
	s.TimeZone, s.Overlap, s.CatchUp, s.CatchUpLimit = w.TimeZone, string(w.Overlap), string(w.CatchUp), w.CatchUpLimit
	if s.Context == nil {
		s.Context = map[string]any{}
	}
}
