package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// Bulk actions: retry or cancel many tasks, chosen one by one or as every
// task a filter matches. Each task goes through the same action, in its
// own transaction, as when it is acted on alone: a bulk action is a loop,
// not another way to change a task's state.

// BulkLimit is the most tasks one bulk action touches; a filter matching
// more is acted on again for the rest.
const BulkLimit = 1000

// Bulk actions.
const (
	BulkRetry  = "retry"
	BulkCancel = "cancel"
)

// bulkEvents are the task events of the bulk actions.
var bulkEvents = map[string]workflow.TaskEvent{
	BulkRetry:  workflow.TaskEventRetry,
	BulkCancel: workflow.TaskEventCancel,
}

// BulkTarget is what a bulk action applies to: the tasks named, or, when
// none is, the tasks Filter matches that the action applies to (those in
// the states it is allowed from), created by AsOf, whose since counts
// back from AsOf. Pinning AsOf makes the tasks a confirmation counted the
// tasks the action then touches, less those that changed meanwhile.
type BulkTarget struct {
	Tasks  []uuid.UUID
	Filter TaskFilter
	AsOf   time.Time
	// Limit caps the tasks touched: at most BulkLimit, and a confirmed
	// count keeps the action to what was confirmed. Defaults to BulkLimit.
	Limit int
}

// BulkPlan is the tasks a bulk action will touch, newest first.
type BulkPlan struct {
	Action string      `json:"action"`
	Tasks  []uuid.UUID `json:"tasks"`
	// More says the filter matches more tasks than the limit.
	More bool `json:"more,omitempty"`
	// AsOf is the target's AsOf, or now for a filter without one.
	AsOf time.Time `json:"as_of"`
	// Allowed are the task states the action applies to.
	Allowed []workflow.TaskState `json:"allowed"`
}

// BulkRefusal is a task a bulk action could not act on, and why.
type BulkRefusal struct {
	TaskUUID uuid.UUID `json:"task_uuid"`
	Reason   string    `json:"reason"`
}

// BulkResult is what a bulk action did.
type BulkResult struct {
	Action  string         `json:"action"`
	Done    []ActionResult `json:"done"`
	Refused []BulkRefusal  `json:"refused"`
}

// PlanBulk returns the tasks action would touch in target.
func (o Operator) PlanBulk(ctx context.Context, action string, target BulkTarget) (BulkPlan, error) {
	ev, ok := bulkEvents[action]
	if !ok {
		return BulkPlan{}, invalidf("bulk action %q is not %s or %s", action, BulkRetry, BulkCancel)
	}
	limit := target.Limit
	switch {
	case limit == 0:
		limit = BulkLimit
	case limit < 0 || limit > BulkLimit:
		return BulkPlan{}, invalidf("a bulk action touches 1 to %d tasks, not %d", BulkLimit, limit)
	}
	plan := BulkPlan{Action: action, AsOf: target.AsOf, Allowed: workflow.TaskStatesAllowing(ev)}
	if len(target.Tasks) > 0 {
		seen := map[uuid.UUID]bool{}
		for _, id := range target.Tasks {
			if !seen[id] {
				seen[id] = true
				plan.Tasks = append(plan.Tasks, id)
			}
		}
		if len(plan.Tasks) > limit {
			return BulkPlan{}, invalidf("%d tasks chosen; a bulk action touches at most %d", len(plan.Tasks), limit)
		}
		return plan, nil
	}
	if plan.AsOf.IsZero() {
		plan.AsOf = o.now()
	}
	f := target.Filter
	f.Before, f.Limit = "", 0
	p, err := f.params(plan.AsOf)
	if err != nil {
		return BulkPlan{}, err
	}
	p.States, p.CreatedBefore, p.Limit = plan.Allowed, plan.AsOf, limit+1
	tasks, err := o.Store.TaskList(ctx, p)
	if err != nil {
		return BulkPlan{}, err
	}
	if len(tasks) > limit {
		tasks, plan.More = tasks[:limit], true
	}
	plan.Tasks = make([]uuid.UUID, len(tasks))
	for i, t := range tasks {
		plan.Tasks[i] = t.TaskUUID
	}
	return plan, nil
}

// ApplyBulk runs action on each task of the plan, one after the other. A
// task the action is refused for (its state changed, it is gone) is
// listed with the reason and the others go on; any other error stops the
// loop and is returned with what was done until then.
func (o Operator) ApplyBulk(ctx context.Context, plan BulkPlan) (BulkResult, error) {
	res := BulkResult{Action: plan.Action, Done: []ActionResult{}, Refused: []BulkRefusal{}}
	if _, ok := bulkEvents[plan.Action]; !ok {
		return res, invalidf("bulk action %q is not %s or %s", plan.Action, BulkRetry, BulkCancel)
	}
	if len(plan.Tasks) > BulkLimit {
		return res, invalidf("%d tasks; a bulk action touches at most %d", len(plan.Tasks), BulkLimit)
	}
	for _, id := range plan.Tasks {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		var (
			r   ActionResult
			err error
		)
		if plan.Action == BulkRetry {
			r, err = o.Retry(ctx, id)
		} else {
			r, err = o.Cancel(ctx, id, fmt.Sprintf("cancelled by operator (bulk, %d tasks)", len(plan.Tasks)))
		}
		switch {
		case err == nil:
			res.Done = append(res.Done, r)
		case Refusal(err):
			res.Refused = append(res.Refused, BulkRefusal{TaskUUID: id, Reason: err.Error()})
		default:
			return res, err
		}
	}
	return res, nil
}

// Refusal reports whether err refuses an operator action for a reason of
// the task's own (its state, a concurrent change, no such task), rather
// than failing.
func Refusal(err error) bool {
	var (
		refused *store.RefusedError
		trans   *workflow.TransitionError
	)
	return errors.As(err, &refused) || errors.As(err, &trans) || errors.Is(err, store.ErrStale) || errors.Is(err, store.ErrNotFound)
}
