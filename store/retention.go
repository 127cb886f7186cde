package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// Retention: what is older than it is kept is deleted in small batches,
// each its own short transaction, so pruning never holds many locks nor a
// long snapshot. Finished tasks go with their steps and transitions; then
// the rejected requests, the queues' archives and the schedules' fire
// history.

// PruneKind is one thing retention deletes.
type PruneKind string

// What retention deletes.
const (
	// PruneComplete: tasks complete or resolved by an operator.
	PruneComplete PruneKind = "tasks_complete"
	// PruneFailed: tasks in error.
	PruneFailed PruneKind = "tasks_error"
	// PruneCancelled: tasks cancelled.
	PruneCancelled PruneKind = "tasks_cancelled"
	// PruneRejected: rejected task requests.
	PruneRejected PruneKind = "rejected_requests"
	// PruneArchive: the messages of one queue's archive.
	PruneArchive PruneKind = "archive"
	// PruneFires: the schedules' fire history.
	PruneFires PruneKind = "schedule_fires"
)

// taskStates are the task states each task kind prunes.
var pruneStates = map[PruneKind][]string{
	PruneComplete:  {string(workflow.TaskStateComplete), string(workflow.TaskStateResolvedManually)},
	PruneFailed:    {string(workflow.TaskStateError)},
	PruneCancelled: {string(workflow.TaskStateCancelled)},
}

// PruneTarget is one kind of row older than Cutoff; Queue names the queue
// of an archive.
type PruneTarget struct {
	Kind   PruneKind `json:"kind"`
	Queue  string    `json:"queue,omitempty"`
	Cutoff time.Time `json:"cutoff"`
}

// Label names the target in logs, metrics and reports.
func (t PruneTarget) Label() string {
	if t.Kind == PruneArchive {
		return string(t.Kind) + ":" + t.Queue
	}
	return string(t.Kind)
}

// PruneCount is what one batch deleted, or what a preview would delete.
type PruneCount struct {
	// Rows is the target's own rows: tasks, requests, messages or fires.
	Rows int64 `json:"rows"`
	// Steps and Transitions go with pruned tasks.
	Steps       int64 `json:"steps,omitempty"`
	Transitions int64 `json:"transitions,omitempty"`
}

// Total is every row the count covers.
func (c PruneCount) Total() int64 { return c.Rows + c.Steps + c.Transitions }

// Add sums two counts.
func (c PruneCount) Add(o PruneCount) PruneCount {
	return PruneCount{Rows: c.Rows + o.Rows, Steps: c.Steps + o.Steps, Transitions: c.Transitions + o.Transitions}
}

// PruneBatch deletes up to limit rows of the target (for tasks, limit
// tasks with everything that belongs to them) in one transaction.
func (s *Store) PruneBatch(ctx context.Context, t PruneTarget, limit int) (PruneCount, error) {
	return s.prune(ctx, t, limit, false)
}

// PrunePreview counts what pruning the target would delete, all batches
// together, deleting nothing.
func (s *Store) PrunePreview(ctx context.Context, t PruneTarget) (PruneCount, error) {
	return s.prune(ctx, t, 0, true)
}

func (s *Store) prune(ctx context.Context, t PruneTarget, limit int, preview bool) (PruneCount, error) {
	var (
		c    PruneCount
		name string
		a    = args{"cutoff": t.Cutoff}
		st   *statement
		err  error
	)
	if !preview {
		a["limit"] = limit
	}
	suffix := ""
	if preview {
		suffix = "_count"
	}
	switch t.Kind {
	case PruneComplete, PruneFailed, PruneCancelled:
		a["states"] = pruneStates[t.Kind]
		name = "prune_tasks" + suffix
		err = stmt(name).queryRow(ctx, s.pool, a).Scan(&c.Rows, &c.Steps, &c.Transitions)
	case PruneRejected:
		name = "prune_rejected" + suffix
		err = stmt(name).queryRow(ctx, s.pool, a).Scan(&c.Rows)
	case PruneFires:
		name = "prune_fires" + suffix
		err = stmt(name).queryRow(ctx, s.pool, a).Scan(&c.Rows)
	case PruneArchive:
		name = "prune_archive" + suffix
		if st, err = stmt(name).forQueues("queue", t.Queue); err == nil {
			err = st.queryRow(ctx, s.pool, a).Scan(&c.Rows)
		}
	default:
		return c, fmt.Errorf("pruning: unknown kind %q", t.Kind)
	}
	if err != nil {
		return PruneCount{}, fmt.Errorf("pruning %s: %w", t.Label(), translate(err))
	}
	return c, nil
}

// RetentionLease is the lease a pruning node (or tasker prune) holds, so
// one prunes at a time.
const RetentionLease = "retention"

// LeaseAcquire takes the lease name for holder for ttl, or extends it when
// holder has it already; false when another holder has it and it has not
// expired.
func (s *Store) LeaseAcquire(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	var until time.Time
	err := stmt("lease_acquire").queryRow(ctx, s.pool, args{"name": name, "holder": holder, "ttl_ms": ttl.Milliseconds()}).Scan(&until)
	if errors.Is(translate(err), ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("taking lease %s: %w", name, translate(err))
	}
	return true, nil
}

// LeaseRelease gives the lease back if holder has it.
func (s *Store) LeaseRelease(ctx context.Context, name, holder string) error {
	if _, err := stmt("lease_release").exec(ctx, s.pool, args{"name": name, "holder": holder}); err != nil {
		return fmt.Errorf("releasing lease %s: %w", name, translate(err))
	}
	return nil
}

// Lease is who holds a lease until when.
type Lease struct {
	Holder    string    `json:"holder"`
	ExpiresAt time.Time `json:"expires_at"`
}

// LeaseGet returns the lease name; ErrNotFound when nobody took it.
func (s *Store) LeaseGet(ctx context.Context, name string) (Lease, error) {
	var l Lease
	err := stmt("lease_get").queryRow(ctx, s.pool, args{"name": name}).Scan(&l.Holder, &l.ExpiresAt)
	if err != nil {
		return l, fmt.Errorf("reading lease %s: %w", name, translate(err))
	}
	return l, nil
}

// RetentionPolicy is how long each kind of row is kept after it finished
// (tasks), was refused (requests), archived (messages) or recorded (fires);
// 0 keeps it forever.
type RetentionPolicy struct {
	Complete, Failed, Cancelled, Rejected, Archives, Fires time.Duration
}

// Targets are the targets of p at now, archives of queues included.
func (p RetentionPolicy) Targets(now time.Time, queues []string) []PruneTarget {
	var out []PruneTarget
	add := func(kind PruneKind, keep time.Duration, q string) {
		if keep > 0 {
			out = append(out, PruneTarget{Kind: kind, Queue: q, Cutoff: now.Add(-keep)})
		}
	}
	add(PruneComplete, p.Complete, "")
	add(PruneFailed, p.Failed, "")
	add(PruneCancelled, p.Cancelled, "")
	add(PruneRejected, p.Rejected, "")
	for _, q := range queues {
		add(PruneArchive, p.Archives, q)
	}
	add(PruneFires, p.Fires, "")
	return out
}

// PruneRun is what one pruning run deleted, by target label.
type PruneRun struct {
	Deleted map[string]PruneCount
	// Batches is how many transactions it took.
	Batches int
	// Done is set when every target was pruned to its cutoff; otherwise
	// the time budget ran out first.
	Done bool
}

// Prune deletes the targets' rows in batches of batchSize, one target
// after the other, until each is done or budget has passed; progress, when
// set, is told of every batch that deleted rows.
func (s *Store) Prune(ctx context.Context, targets []PruneTarget, batchSize int, budget time.Duration, progress func(PruneTarget, PruneCount)) (PruneRun, error) {
	run := PruneRun{Deleted: map[string]PruneCount{}}
	deadline := time.Now().Add(budget)
	for _, t := range targets {
		for {
			if budget > 0 && !time.Now().Before(deadline) {
				return run, nil
			}
			c, err := s.PruneBatch(ctx, t, batchSize)
			if err != nil {
				return run, err
			}
			run.Batches++
			if c.Rows > 0 {
				run.Deleted[t.Label()] = run.Deleted[t.Label()].Add(c)
				if progress != nil {
					progress(t, c)
				}
			}
			if c.Rows < int64(batchSize) {
				break
			}
		}
	}
	run.Done = true
	return run, nil
}
