package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// tracker knows the run's requests and counts, as the node reports them,
// what became of them. The counts drive the progress line and tell when to
// ask the database whether the run is over; the report itself is read from
// the database.
type tracker struct {
	mu     sync.Mutex
	sentAt map[uuid.UUID]time.Time // request id → send time (database clock)
	ids    []uuid.UUID
	// params holds ids as the [16]byte pgx encodes natively: a uuid.UUID is
	// encoded through its text form, which costs the process noticeable CPU
	// for tens of thousands of ids.
	params [][16]byte

	// sending is true until every request of the run has been sent.
	sending atomic.Bool

	created  atomic.Int64
	rejected atomic.Int64
	finished atomic.Int64
	steps    atomic.Int64
}

func newTracker() *tracker {
	t := &tracker{sentAt: map[uuid.UUID]time.Time{}}
	t.sending.Store(true)
	return t
}

// sent records requests sent at at.
func (t *tracker) sent(ids []uuid.UUID, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		t.sentAt[id] = at
	}
	t.ids = append(t.ids, ids...)
	for _, id := range ids {
		t.params = append(t.params, id)
	}
}

// requestIDs returns the ids sent so far, as a query parameter.
func (t *tracker) requestIDs() [][16]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.params[:len(t.params):len(t.params)]
}

// sentAtCopy returns a copy of the send times by request id.
func (t *tracker) sentAtCopy() map[uuid.UUID]time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[uuid.UUID]time.Time, len(t.sentAt))
	for k, v := range t.sentAt {
		out[k] = v
	}
	return out
}

func (t *tracker) submitted() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int64(len(t.ids))
}

func (t *tracker) ours(id uuid.UUID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.sentAt[id]
	return ok
}

// done counts the run's requests the node has finished with, as far as it
// has told.
func (t *tracker) done() int64 { return t.finished.Load() + t.rejected.Load() }

// observedStore passes everything to the node's store and counts the
// outcomes that concern the run.
type observedStore struct {
	actors.Store
	t *tracker
}

func (s observedStore) RequestAccept(ctx context.Context, msg queue.Message) (store.RequestOutcome, error) {
	out, err := s.Store.RequestAccept(ctx, msg)
	s.request(out, err)
	return out, err
}

func (s observedStore) RequestReject(ctx context.Context, msg queue.Message, reason string) (store.RequestOutcome, error) {
	out, err := s.Store.RequestReject(ctx, msg, reason)
	s.request(out, err)
	return out, err
}

func (s observedStore) request(out store.RequestOutcome, err error) {
	if err != nil || !s.t.ours(out.RequestID) {
		return
	}
	switch {
	case out.Rejected:
		s.t.rejected.Add(1)
	case out.Created:
		s.t.created.Add(1)
	}
}

func (s observedStore) ResultApply(ctx context.Context, msg queue.Message) (store.ResultOutcome, error) {
	out, err := s.Store.ResultApply(ctx, msg)
	s.result(out, err)
	return out, err
}

func (s observedStore) ResultQuarantine(ctx context.Context, msg queue.Message, reason string) (store.ResultOutcome, error) {
	out, err := s.Store.ResultQuarantine(ctx, msg, reason)
	s.result(out, err)
	return out, err
}

// OutcomeApply and OutcomeQuarantine are the same for an outcome a worker
// of the node handed over in the process, the way most results arrive.
func (s observedStore) OutcomeApply(ctx context.Context, d store.OutcomeDue) (store.ResultOutcome, error) {
	out, err := s.Store.OutcomeApply(ctx, d)
	s.result(out, err)
	return out, err
}

func (s observedStore) OutcomeQuarantine(ctx context.Context, d store.OutcomeDue, reason string) (store.ResultOutcome, error) {
	out, err := s.Store.OutcomeQuarantine(ctx, d, reason)
	s.result(out, err)
	return out, err
}

func (s observedStore) result(out store.ResultOutcome, err error) {
	if err != nil || out.Ignored || out.Namespace != Namespace {
		return
	}
	if out.StepState == workflow.StepStateComplete {
		s.t.steps.Add(1)
	}
	if out.TaskState.Terminal() {
		s.t.finished.Add(1)
	}
}
