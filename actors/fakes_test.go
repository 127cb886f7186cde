package actors_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// memQueue is an in-memory actors.Queue: just enough pgmq for the actors
// (visibility timeouts, read counts) with a count of the messages taken and
// not yet acknowledged.
type memQueue struct {
	mu          sync.Mutex
	next        int64
	queues      map[string][]*memMsg
	inFlight    int
	maxInFlight int
}

type memMsg struct {
	id        int64
	body      []byte
	reads     int
	visibleAt time.Time
	taken     bool
}

func newMemQueue() *memQueue { return &memQueue{queues: map[string][]*memMsg{}} }

// pushSteps adds n step messages to the queue of namespace.
func (q *memQueue) pushSteps(t *testing.T, namespace string, n int) {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	name := queue.NamespaceQueue(namespace)
	for range n {
		body, err := queue.StepMessage{TaskUUID: uuid.New(), StepUUID: uuid.New(), CorrelationID: uuid.New()}.Encode()
		require.NoError(t, err)
		q.next++
		q.queues[name] = append(q.queues[name], &memMsg{id: q.next, body: body})
	}
}

func (q *memQueue) Read(_ context.Context, name string, vt time.Duration, qty int) ([]queue.Message, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	var out []queue.Message
	for _, m := range q.queues[name] {
		if len(out) == qty {
			break
		}
		if m.visibleAt.After(now) {
			continue
		}
		m.reads++
		m.visibleAt = now.Add(vt)
		if !m.taken {
			m.taken = true
			q.inFlight++
			q.maxInFlight = max(q.maxInFlight, q.inFlight)
		}
		out = append(out, queue.Message{ID: m.id, ReadCount: m.reads, VisibleAt: m.visibleAt, Body: m.body})
	}
	return out, nil
}

func (q *memQueue) remove(name string, id int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	msgs := q.queues[name]
	for i, m := range msgs {
		if m.id == id {
			if m.taken {
				q.inFlight--
			}
			q.queues[name] = append(msgs[:i:i], msgs[i+1:]...)
			return true
		}
	}
	return false
}

func (q *memQueue) Delete(_ context.Context, name string, id int64) (bool, error) {
	return q.remove(name, id), nil
}

func (q *memQueue) Archive(_ context.Context, name string, id int64) (bool, error) {
	return q.remove(name, id), nil
}

func (q *memQueue) SetVisibility(_ context.Context, name string, id int64, vt time.Duration) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range q.queues[name] {
		if m.id == id {
			m.visibleAt = time.Now().Add(vt)
		}
	}
	return nil
}

// length is how many messages are left in a queue.
func (q *memQueue) length(name string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queues[name])
}

// peakInFlight is the most messages that were taken and not acknowledged at
// once.
func (q *memQueue) peakInFlight() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.maxInFlight
}

// memStore is an actors.Store whose steps all run the handler "step" and
// whose outcomes acknowledge the step message, as the real store does.
type memStore struct {
	q *memQueue
}

func (s *memStore) RequestAccept(context.Context, queue.Message) (store.RequestOutcome, error) {
	return store.RequestOutcome{}, nil
}

func (s *memStore) ApplyFailed(context.Context, string, int64, int, error) error { return nil }

func (s *memStore) ApplyFailures(context.Context, string, int64) (int, string, error) {
	return 0, "", nil
}

func (s *memStore) RequestReject(context.Context, queue.Message, string) (store.RequestOutcome, error) {
	return store.RequestOutcome{Rejected: true}, nil
}

func (s *memStore) ResultApply(context.Context, queue.Message) (store.ResultOutcome, error) {
	return store.ResultOutcome{}, nil
}

func (s *memStore) ResultQuarantine(context.Context, queue.Message, string) (store.ResultOutcome, error) {
	return store.ResultOutcome{Ignored: true}, nil
}

func (s *memStore) OutcomeApply(_ context.Context, d store.OutcomeDue) (store.ResultOutcome, error) {
	s.q.remove(queue.NamespaceQueue(d.Namespace), d.MsgID)
	return store.ResultOutcome{}, nil
}

func (s *memStore) OutcomeQuarantine(_ context.Context, d store.OutcomeDue, _ string) (store.ResultOutcome, error) {
	s.q.remove(queue.NamespaceQueue(d.Namespace), d.MsgID)
	return store.ResultOutcome{Ignored: true}, nil
}

func (s *memStore) OutcomeForward(_ context.Context, d store.OutcomeDue) error {
	s.q.remove(queue.NamespaceQueue(d.Namespace), d.MsgID)
	return nil
}

func (s *memStore) StepStart(_ context.Context, step uuid.UUID) (store.StepWork, error) {
	return store.StepWork{
		StepAttempt: store.StepAttempt{TaskUUID: uuid.New(), StepUUID: step, StepName: "step", Handler: "step",
			Attempt: 1, MaxAttempts: 3, Timeout: 30 * time.Second},
		Context: json.RawMessage(`{}`), Config: json.RawMessage(`{}`),
	}, nil
}

// StepsTake reads the messages and starts none of their steps: each worker
// starts its own (StepStart).
func (s *memStore) StepsTake(ctx context.Context, namespace string, vt time.Duration, qty int) ([]store.TakenStep, error) {
	msgs, err := s.q.Read(ctx, queue.NamespaceQueue(namespace), vt, qty)
	taken := make([]store.TakenStep, len(msgs))
	for i, m := range msgs {
		taken[i].Message = m
	}
	return taken, err
}

func (s *memStore) StepOutcomeRecord(_ context.Context, o store.Outcome) error {
	if !o.Direct {
		s.q.remove(queue.NamespaceQueue(o.Namespace), o.MsgID)
	}
	return nil
}

func (s *memStore) MessageArchive(_ context.Context, queueName string, id int64, _ string) error {
	s.q.remove(queueName, id)
	return nil
}

// fakeTree is an actor tree on in-memory fakes, wrapped in fault injectors.
type fakeTree struct {
	sys    *actors.System
	q      *memQueue
	faults *testsupport.Faults

	mu      sync.Mutex
	changes []string // "component state", in order
}

// namespace returns the settings of a namespace with fast polls and a
// breaker that will not open unless a test asks it to.
func namespace(name string, workers int) actors.NamespaceSettings {
	return actors.NamespaceSettings{
		Name: name, Workers: workers, PollInterval: 5 * time.Millisecond, VisibilityTimeout: 30 * time.Second,
		Breaker: actors.BreakerSettings{FailureThreshold: 1000, Window: time.Minute, Delay: 100 * time.Millisecond, SuccessThreshold: 1},
	}
}

// startFakeTree starts a tree of the given namespaces (no orchestration
// actors) whose steps run handler. It stops when the test ends.
func startFakeTree(t *testing.T, sup actors.Intensity, handler workflow.Handler, namespaces ...actors.NamespaceSettings) *fakeTree {
	t.Helper()
	return startFakeTreeWith(t, nil, sup, handler, namespaces...)
}

// startFakeTreeWith is startFakeTree with deps changed by with (when not nil).
func startFakeTreeWith(t *testing.T, with func(*actors.Deps), sup actors.Intensity, handler workflow.Handler, namespaces ...actors.NamespaceSettings) *fakeTree {
	t.Helper()
	ft := &fakeTree{q: newMemQueue(), faults: testsupport.NewFaults()}
	reg := workflow.NewRegistry()
	require.NoError(t, reg.Register("step", handler))
	logs := &testWriter{t: t}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	settings := actors.Settings{
		NodeID:        "test",
		Namespaces:    namespaces,
		BatchSize:     10,
		MaxDeliveries: 5,
		Supervision:   sup,
		HostBreaker: func(string) actors.BreakerSettings {
			return actors.BreakerSettings{FailureThreshold: 1, Window: time.Minute, Delay: 50 * time.Millisecond, SuccessThreshold: 2}
		},
	}
	deps := actors.Deps{
		Store:    &testsupport.FaultyStore{Store: &memStore{q: ft.q}, Faults: ft.faults},
		Queue:    &testsupport.FaultyQueue{Queue: ft.q, Faults: ft.faults},
		Handlers: reg,
		Logger:   log,
		BreakerChanged: func(component, state string) {
			ft.mu.Lock()
			ft.changes = append(ft.changes, component+" "+state)
			ft.mu.Unlock()
		},
	}
	if with != nil {
		with(&deps)
	}
	sys, err := actors.Start(settings, deps)
	require.NoError(t, err)
	ft.sys = sys
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, sys.Stop(ctx))
		logs.close()
	})
	return ft
}

// changesTo counts the breaker changes of component to state.
func (ft *fakeTree) changesTo(component, state string) int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	n := 0
	for _, c := range ft.changes {
		if c == component+" "+state {
			n++
		}
	}
	return n
}

// node returns the tree node at path; a node not declared yet (its parent
// spawns it asynchronously) is the zero Node.
func (ft *fakeTree) node(path string) actors.Node {
	n, _ := ft.sys.Tree().Find(path)
	return n
}

// restarted lists the actors with restarts, as "path=count", sorted.
func (ft *fakeTree) restarted() []string {
	var out []string
	for _, n := range ft.sys.Tree().All() {
		if n.Restarts > 0 {
			out = append(out, n.PID+"="+strconv.Itoa(n.Restarts))
		}
	}
	sort.Strings(out)
	return out
}

// testWriter sends log lines to the test log until closed.
type testWriter struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
