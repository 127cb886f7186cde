package api

import (
	"context"
	"maps"
	"slices"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// LimitsPage is the flow control in force: the limits the configuration
// sets, and the use of them now.
type LimitsPage struct {
	// Namespaces and Handlers are the configured limits, by name.
	Namespaces []ConfiguredLimit `json:"namespaces"`
	Handlers   []ConfiguredLimit `json:"handlers"`
	// AgingInterval is flow.aging_interval; empty when aging is off.
	AgingInterval string `json:"aging_interval,omitempty"`
	// Usage counts, per namespace with a step under a limit, its slots in
	// use and its steps waiting.
	Usage []store.FlowNamespaceUsage `json:"usage"`
	// Groups are the groups with a step holding a slot or waiting, those
	// with the most steps waiting (then in use) first, at most the limit
	// asked; GroupsTotal counts them all.
	Groups      []store.FlowGroupUsage `json:"groups"`
	GroupsTotal int                    `json:"groups_total"`
	// Pauses are the keys and hosts a Retry-After answer paused and whose
	// pause has not ended, those ending last first, at most the limit
	// asked; PausesTotal counts them all.
	Pauses      []store.FlowPause `json:"pauses"`
	PausesTotal int               `json:"pauses_total"`
}

// ConfiguredLimit is one limit of the configuration: of a namespace
// (namespaces.<ns>) or of a handler (flow.handlers.<name>).
type ConfiguredLimit struct {
	Name        string `json:"name"`
	MaxInFlight int    `json:"max_in_flight,omitempty"`
	Rate        string `json:"rate,omitempty"`
	Burst       int    `json:"burst,omitempty"`
	// RetryAfterPauses is what a Retry-After answer pauses in a namespace
	// (namespaces.<ns>.retry_after_pauses): "key", "host" or empty.
	RetryAfterPauses string `json:"retry_after_pauses,omitempty"`
}

// configuredLimits lists limits by name, with the pauses of the names
// that have one (namespaces only).
func configuredLimits(m map[string]workflow.Limit, pauses map[string]workflow.PauseScope) []ConfiguredLimit {
	names := slices.Sorted(maps.Keys(m))
	for name := range pauses {
		if _, ok := m[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	out := make([]ConfiguredLimit, 0, len(names))
	for _, name := range names {
		l := m[name]
		out = append(out, ConfiguredLimit{Name: name, MaxInFlight: l.MaxInFlight, Rate: l.Rate.String(), Burst: l.Burst,
			RetryAfterPauses: string(pauses[name])})
	}
	return out
}

// Limits shows the configured flow limits and their use: every namespace's
// counts, the busiest limit groups and the pauses in force, at most limit
// of each (defaults to ListLimitDefault).
func (o Operator) Limits(ctx context.Context, limit int) (LimitsPage, error) {
	limit, err := checkLimit(limit)
	if err != nil {
		return LimitsPage{}, err
	}
	policy := o.Store.FlowPolicy()
	page := LimitsPage{Namespaces: configuredLimits(policy.Namespaces, policy.Pauses), Handlers: configuredLimits(policy.Handlers, nil)}
	if policy.Aging > 0 {
		page.AgingInterval = policy.Aging.String()
	}
	usage, err := o.Store.FlowNamespaceUsage(ctx)
	if err != nil {
		return LimitsPage{}, err
	}
	page.Usage = nonNil(usage)
	groups, total, err := o.Store.FlowUsage(ctx, limit)
	if err != nil {
		return LimitsPage{}, err
	}
	page.Groups, page.GroupsTotal = nonNil(groups), total
	pauses, total, err := o.Store.FlowPauses(ctx, limit)
	if err != nil {
		return LimitsPage{}, err
	}
	page.Pauses, page.PausesTotal = nonNil(pauses), total
	return page, nil
}
