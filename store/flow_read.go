package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// FlowNamespaceUsage is the flow control of one namespace now: its steps
// holding a slot and its steps waiting for their admission.
type FlowNamespaceUsage struct {
	Namespace string `json:"namespace"`
	InUse     int    `json:"in_use"`
	Waiting   int    `json:"waiting"`
	// OldestWait is when the longest-waiting step became ready; nil when
	// none waits.
	OldestWait *time.Time `json:"oldest_wait,omitempty"`
}

// FlowNamespaceUsage returns, per namespace with a step holding a slot or
// waiting, the counts of both, by namespace.
func (s *Store) FlowNamespaceUsage(ctx context.Context) ([]FlowNamespaceUsage, error) {
	rows, err := stmt("flow_namespace_usage").query(ctx, s.pool, nil)
	if err != nil {
		return nil, fmt.Errorf("reading flow usage by namespace: %w", translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (FlowNamespaceUsage, error) {
		var u FlowNamespaceUsage
		err := r.Scan(&u.Namespace, &u.InUse, &u.Waiting, &u.OldestWait)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading flow usage by namespace: %w", translate(err))
	}
	return out, nil
}

// FlowScopeSlots is the count of slots in use in a namespace's group, or
// in all the groups of one key scope together (Group "key:<scope>").
type FlowScopeSlots struct {
	Namespace string
	Group     string
	InUse     int
}

// FlowSlotsByScope returns the slots in use per namespace and group, the
// groups of a key scope counted as one: a bounded read for the metrics,
// whatever the number of keys.
func (s *Store) FlowSlotsByScope(ctx context.Context) ([]FlowScopeSlots, error) {
	rows, err := stmt("flow_scope_slots").query(ctx, s.pool, nil)
	if err != nil {
		return nil, fmt.Errorf("reading flow slots by scope: %w", translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (FlowScopeSlots, error) {
		var u FlowScopeSlots
		err := r.Scan(&u.Namespace, &u.Group, &u.InUse)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading flow slots by scope: %w", translate(err))
	}
	return out, nil
}

// FlowPause is a flow group paused by a Retry-After answer.
type FlowPause struct {
	Group string    `json:"group"`
	Until time.Time `json:"until"`
	// Step is the step whose answer set the pause; Reason says what it was.
	Step   uuid.UUID `json:"step_uuid"`
	Reason string    `json:"reason"`
}

// FlowPauses returns the pauses that have not ended, those ending last
// first, at most limit of them, and how many there are.
func (s *Store) FlowPauses(ctx context.Context, limit int) ([]FlowPause, int, error) {
	rows, err := stmt("flow_pauses_list").query(ctx, s.pool, args{"limit": limit})
	if err != nil {
		return nil, 0, fmt.Errorf("reading flow pauses: %w", translate(err))
	}
	var (
		out   []FlowPause
		p     FlowPause
		total int
	)
	_, err = pgx.ForEachRow(rows, []any{&p.Group, &p.Until, scanUUID(&p.Step), &p.Reason, &total}, func() error {
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("reading flow pauses: %w", translate(err))
	}
	return out, total, nil
}
