package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// SchedulePage is a list of schedules.
type SchedulePage struct {
	Schedules []store.ScheduleInfo `json:"schedules"`
}

// ScheduleDetail is a schedule with its latest fires.
type ScheduleDetail struct {
	store.ScheduleInfo
	Fires []store.ScheduleFire `json:"fires"`
}

// ScheduleFiresShown is how many latest fires a schedule's detail shows.
const ScheduleFiresShown = 20

// ParseScheduleName checks a schedule name from a path or an argument.
func ParseScheduleName(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > workflow.MaxScheduleNameLen || !workflow.ValidIdent(s) {
		return "", invalidf("%q is not a schedule name (%s, at most %d characters)", s, workflow.IdentPattern, workflow.MaxScheduleNameLen)
	}
	return s, nil
}

// Schedules lists every schedule with its next fire times and its last
// fire's task.
func (o Operator) Schedules(ctx context.Context) (SchedulePage, error) {
	l, err := o.Store.ScheduleList(ctx)
	return SchedulePage{Schedules: nonNil(l)}, err
}

// Schedule shows one schedule and its latest fires.
func (o Operator) Schedule(ctx context.Context, name string) (ScheduleDetail, error) {
	si, err := o.Store.ScheduleGet(ctx, name)
	if err != nil {
		return ScheduleDetail{}, err
	}
	fires, err := o.Store.ScheduleFires(ctx, name, ScheduleFiresShown)
	return ScheduleDetail{ScheduleInfo: si, Fires: nonNil(fires)}, err
}

// CreateSchedule creates a schedule; a wrong definition is refused naming
// the field, a taken name with a conflict.
func (o Operator) CreateSchedule(ctx context.Context, s workflow.Schedule) (store.ScheduleInfo, error) {
	if err := s.Normalize(); err != nil {
		var se *workflow.ScheduleError
		if errors.As(err, &se) {
			return store.ScheduleInfo{}, invalidf("%s: %s", se.Field, se.Problem)
		}
		return store.ScheduleInfo{}, err
	}
	return o.Store.ScheduleCreate(ctx, s)
}

// PauseSchedule pauses (or, with !paused, resumes) a schedule.
func (o Operator) PauseSchedule(ctx context.Context, name string, paused bool) (store.ScheduleInfo, error) {
	return o.Store.SchedulePause(ctx, name, paused)
}

// TriggerSchedule sends one fire of a schedule now.
func (o Operator) TriggerSchedule(ctx context.Context, name string) (store.ScheduleFire, error) {
	return o.Store.ScheduleTrigger(ctx, name)
}

// ScheduleDeleted answers a deletion.
type ScheduleDeleted struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
}

// DeleteSchedule deletes a schedule and its fire history; the tasks it
// started stay.
func (o Operator) DeleteSchedule(ctx context.Context, name string) (ScheduleDeleted, error) {
	if err := o.Store.ScheduleDelete(ctx, name); err != nil {
		return ScheduleDeleted{Name: name}, err
	}
	return ScheduleDeleted{Name: name, Deleted: true}, nil
}

// PrunePreview is what retention would delete of one target.
type PrunePreview struct {
	Target string           `json:"target"`
	Cutoff time.Time        `json:"cutoff"`
	Count  store.PruneCount `json:"count"`
}

// PrunePlan counts, target by target, what the policy would delete now
// from the archives of queues and the tables, deleting nothing.
func (o Operator) PrunePlan(ctx context.Context, p store.RetentionPolicy, queues []string) ([]PrunePreview, error) {
	var out []PrunePreview
	for _, t := range p.Targets(o.now(), queues) {
		c, err := o.Store.PrunePreview(ctx, t)
		if err != nil {
			return out, err
		}
		out = append(out, PrunePreview{Target: t.Label(), Cutoff: t.Cutoff, Count: c})
	}
	return nonNil(out), nil
}

// PruneBusyError says another holder has the retention lease.
type PruneBusyError struct{ Lease store.Lease }

func (e *PruneBusyError) Error() string {
	return fmt.Sprintf("node %s is pruning (it holds the retention lease until %s); try again later",
		e.Lease.Holder, e.Lease.ExpiresAt.Local().Format(time.DateTime))
}

// PruneNow deletes, once and to the end, what the policy no longer keeps
// of the tables and the archives of queues, holding the retention lease as
// holder (a node pruning meanwhile refuses it).
func (o Operator) PruneNow(ctx context.Context, p store.RetentionPolicy, queues []string, batchSize int, holder string) (store.PruneRun, error) {
	ok, err := o.Store.LeaseAcquire(ctx, store.RetentionLease, holder, time.Minute)
	if err != nil {
		return store.PruneRun{}, err
	}
	if !ok {
		l, err := o.Store.LeaseGet(ctx, store.RetentionLease)
		if err != nil {
			return store.PruneRun{}, err
		}
		return store.PruneRun{}, &PruneBusyError{Lease: l}
	}
	defer func() { _ = o.Store.LeaseRelease(context.WithoutCancel(ctx), store.RetentionLease, holder) }()
	return o.Store.Prune(ctx, p.Targets(o.now(), queues), batchSize, 0, nil)
}
