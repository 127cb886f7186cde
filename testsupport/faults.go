package testsupport

// Fault injection for resilience tests, at three depths:
//
//   - the database: BreakQueue makes every read of one queue fail;
//   - the actors' seams: Faults, with FaultyStore and FaultyQueue installed
//     through bootstrap.Options.WrapStore and WrapQueue (WithFaults), makes
//     chosen store or queue calls panic, fail or block, switched at run time;
//   - the handlers: handlers that panic, hang or fail, a Gate that holds a
//     step until the test lets it go, and a ScriptedServer whose answers
//     (status, Retry-After) are scripted per request.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// BreakQueue makes every read of queueName fail at once with a database
// error until restore is called (or the test ends): a statement-level
// BEFORE UPDATE trigger on the queue table raises an exception, and a pgmq
// read is an UPDATE (it sets vt and read_ct), so it fails even when no row
// would match, while sends, deletes and archives keep working. The fault
// therefore stays with the queue's consumer, which is what a namespace's
// breaker guards.
//
// Why not the alternatives: a LOCK TABLE held open makes reads hang rather
// than fail (the node's reads have no lock_timeout), holding the poller
// actor; renaming the table breaks the senders too, and they are the
// orchestration actors, shared by every namespace — that is an outage of
// part of the bus, a different fault.
//
// restore is idempotent. pool must be on the test's database.
func BreakQueue(t testing.TB, pool *pgxpool.Pool, queueName string) (restore func()) {
	t.Helper()
	table := pgx.Identifier{"pgmq", "q_" + strings.ToLower(queueName)}.Sanitize()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pool.Exec(ctx, `
		CREATE OR REPLACE FUNCTION pgmq.tasker_test_broken_queue() RETURNS trigger
		LANGUAGE plpgsql AS $fn$
		BEGIN
			RAISE EXCEPTION 'queue table %.% is broken by a test fault', TG_TABLE_SCHEMA, TG_TABLE_NAME
				USING ERRCODE = 'XX000';
		END
		$fn$`)
	if err != nil {
		t.Fatalf("breaking queue %s: %v", queueName, err)
	}
	if _, err := pool.Exec(ctx, `CREATE TRIGGER tasker_test_broken BEFORE UPDATE ON `+table+
		` FOR EACH STATEMENT EXECUTE FUNCTION pgmq.tasker_test_broken_queue()`); err != nil {
		t.Fatalf("breaking queue %s: %v", queueName, err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := pool.Exec(ctx, `DROP TRIGGER IF EXISTS tasker_test_broken ON `+table); err != nil {
				t.Errorf("restoring queue %s: %v", queueName, err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}

// ErrInjected is the error a Fault returns when it names none.
var ErrInjected = errors.New("injected fault")

// Operations FaultyStore intercepts, by method name.
const (
	OpRequestAccept     = "RequestAccept"
	OpRequestReject     = "RequestReject"
	OpResultApply       = "ResultApply"
	OpResultQuarantine  = "ResultQuarantine"
	OpStepStart         = "StepStart"
	OpStepOutcomeRecord = "StepOutcomeRecord"
)

// OpRead, OpDelete, OpArchive and OpSetVisibility name the FaultyQueue
// operations on one queue. OpRead of a step queue names FaultyStore's
// StepsTake too, the poller's read of it.
func OpRead(queueName string) string          { return "Read " + queueName }
func OpDelete(queueName string) string        { return "Delete " + queueName }
func OpArchive(queueName string) string       { return "Archive " + queueName }
func OpSetVisibility(queueName string) string { return "SetVisibility " + queueName }

// Fault is what an intercepted call does. Before runs first (to signal the
// test, or to block on a gate); then the call panics with Panic when it is
// not nil, else returns Err when it is not nil, else goes through.
type Fault struct {
	Before func()
	Panic  any
	Err    error
	// Times is how many calls the fault hits before it clears itself; 0
	// means every call until Clear.
	Times int
}

// Faults is a set of faults keyed by operation, switched while the node
// runs, and a count of every call made to each operation. It is safe for
// concurrent use.
type Faults struct {
	mu     sync.Mutex
	active map[string]*activeFault
	calls  sync.Map // op → *atomic.Int64
	// starting is held for reading by a step queue read that decided,
	// without a fault on OpStepStart, to start steps itself, until it
	// returns; Set of OpStepStart takes it for writing, so that no read
	// decided before the fault can start the step of a message sent after.
	starting sync.RWMutex
}

type activeFault struct {
	Fault
	left int
}

// NewFaults returns an empty set: every call goes through.
func NewFaults() *Faults { return &Faults{active: map[string]*activeFault{}} }

// Set installs f on op, replacing any fault there. A fault on OpStepStart
// is installed once no step queue read that starts steps is in flight.
func (f *Faults) Set(op string, fault Fault) {
	if op == OpStepStart {
		f.starting.Lock()
		defer f.starting.Unlock()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active[op] = &activeFault{Fault: fault, left: fault.Times}
}

// Panic makes the next times calls of op panic with v (0: every call).
func (f *Faults) Panic(op string, v any, times int) { f.Set(op, Fault{Panic: v, Times: times}) }

// Fail makes the next times calls of op return err, or ErrInjected when err
// is nil (0: every call).
func (f *Faults) Fail(op string, err error, times int) {
	if err == nil {
		err = ErrInjected
	}
	f.Set(op, Fault{Err: err, Times: times})
}

// Held is the next call of an operation, stopped by Hold until Release.
type Held struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

// Hold stops the next call of op until Release, which also runs at the
// test's cleanup; WaitEntered waits for the call to arrive.
func (f *Faults) Hold(t testing.TB, op string) *Held {
	h := &Held{entered: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(h.Release)
	f.Set(op, Fault{Times: 1, Before: func() {
		close(h.entered)
		<-h.release
	}})
	return h
}

// WaitEntered waits up to timeout for the held call to arrive, failing t
// with what otherwise.
func (h *Held) WaitEntered(t testing.TB, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-h.entered:
	case <-time.After(timeout):
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Release lets the held call go on. It is idempotent.
func (h *Held) Release() { h.once.Do(func() { close(h.release) }) }

// Clear removes the fault on op.
func (f *Faults) Clear(op string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.active, op)
}

// Active reports whether a fault is installed on op (one with Times left).
func (f *Faults) Active(op string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.active[op]
	return ok
}

// Calls is how many calls of op were made, whether a fault hit them or not.
func (f *Faults) Calls(op string) int64 {
	c, ok := f.calls.Load(op)
	if !ok {
		return 0
	}
	return c.(*atomic.Int64).Load()
}

// intercept counts a call of op and applies its fault, if any.
func (f *Faults) intercept(op string) error {
	c, _ := f.calls.LoadOrStore(op, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	f.mu.Lock()
	a, ok := f.active[op]
	var fault Fault
	if ok {
		fault = a.Fault
		if a.Times > 0 {
			a.left--
			if a.left <= 0 {
				delete(f.active, op)
			}
		}
	}
	f.mu.Unlock()
	if !ok {
		return nil
	}
	if fault.Before != nil {
		fault.Before()
	}
	if fault.Panic != nil {
		panic(fault.Panic)
	}
	return fault.Err
}

// WithFaults installs f on a test node: the actors use the store and the
// queue through a FaultyStore and a FaultyQueue driven by f.
func WithFaults(f *Faults) NodeOption {
	return WithOptions(func(opts *bootstrap.Options) {
		opts.WrapStore = func(s actors.Store) actors.Store { return &FaultyStore{Store: s, Faults: f} }
		opts.WrapQueue = func(q actors.Queue) actors.Queue { return &FaultyQueue{Queue: q, Faults: f} }
	})
}

// FaultyStore is an actors.Store whose calls Faults can make panic, fail or
// block, by method name (OpStepStart, …).
type FaultyStore struct {
	actors.Store
	Faults *Faults
}

var _ actors.Store = (*FaultyStore)(nil)

func (s *FaultyStore) RequestAccept(ctx context.Context, msg queue.Message) (store.RequestOutcome, error) {
	if err := s.Faults.intercept(OpRequestAccept); err != nil {
		return store.RequestOutcome{}, err
	}
	return s.Store.RequestAccept(ctx, msg)
}

func (s *FaultyStore) RequestReject(ctx context.Context, msg queue.Message, reason string) (store.RequestOutcome, error) {
	if err := s.Faults.intercept(OpRequestReject); err != nil {
		return store.RequestOutcome{}, err
	}
	return s.Store.RequestReject(ctx, msg, reason)
}

func (s *FaultyStore) ResultApply(ctx context.Context, msg queue.Message) (store.ResultOutcome, error) {
	if err := s.Faults.intercept(OpResultApply); err != nil {
		return store.ResultOutcome{}, err
	}
	return s.Store.ResultApply(ctx, msg)
}

func (s *FaultyStore) ResultQuarantine(ctx context.Context, msg queue.Message, reason string) (store.ResultOutcome, error) {
	if err := s.Faults.intercept(OpResultQuarantine); err != nil {
		return store.ResultOutcome{}, err
	}
	return s.Store.ResultQuarantine(ctx, msg, reason)
}

// OutcomeApply applies a result too: OpResultApply's faults apply to it,
// and to a carried outcome, which it records as well, OpStepOutcomeRecord's
// first.
func (s *FaultyStore) OutcomeApply(ctx context.Context, d store.OutcomeDue) (store.ResultOutcome, error) {
	if d.Carried {
		if err := s.Faults.intercept(OpStepOutcomeRecord); err != nil {
			return store.ResultOutcome{}, err
		}
	}
	if err := s.Faults.intercept(OpResultApply); err != nil {
		return store.ResultOutcome{}, err
	}
	return s.Store.OutcomeApply(ctx, d)
}

// OutcomeQuarantine quarantines a result too: OpResultQuarantine's faults
// apply to it.
func (s *FaultyStore) OutcomeQuarantine(ctx context.Context, d store.OutcomeDue, reason string) (store.ResultOutcome, error) {
	if err := s.Faults.intercept(OpResultQuarantine); err != nil {
		return store.ResultOutcome{}, err
	}
	return s.Store.OutcomeQuarantine(ctx, d, reason)
}

// OutcomeForward records an outcome's result message: OpStepOutcomeRecord's
// faults apply to it.
func (s *FaultyStore) OutcomeForward(ctx context.Context, d store.OutcomeDue) error {
	if err := s.Faults.intercept(OpStepOutcomeRecord); err != nil {
		return err
	}
	return s.Store.OutcomeForward(ctx, d)
}

func (s *FaultyStore) StepStart(ctx context.Context, step uuid.UUID) (store.StepWork, error) {
	if err := s.Faults.intercept(OpStepStart); err != nil {
		return store.StepWork{}, err
	}
	return s.Store.StepStart(ctx, step)
}

// StepsTake is a poller's read of a step queue: the faults of OpRead of that
// queue apply to it. While a fault waits on OpStepStart, a store with a
// queue client (a *store.Store) only reads the messages, as a read did
// before it started steps, so that each worker starts its step itself and
// meets the fault. A read that starts steps holds off the installing of
// such a fault until it returns (see Faults.Set).
func (s *FaultyStore) StepsTake(ctx context.Context, namespace string, vt time.Duration, qty int) ([]store.TakenStep, error) {
	q := queue.NamespaceQueue(namespace)
	if err := s.Faults.intercept(OpRead(q)); err != nil {
		return nil, err
	}
	s.Faults.starting.RLock()
	defer s.Faults.starting.RUnlock()
	if r, ok := s.Store.(interface{ Queue() *queue.Client }); ok && s.Faults.Active(OpStepStart) {
		msgs, err := r.Queue().Read(ctx, q, vt, qty)
		taken := make([]store.TakenStep, len(msgs))
		for i, m := range msgs {
			taken[i].Message = m
		}
		return taken, err
	}
	return s.Store.StepsTake(ctx, namespace, vt, qty)
}

func (s *FaultyStore) StepOutcomeRecord(ctx context.Context, o store.Outcome) error {
	if err := s.Faults.intercept(OpStepOutcomeRecord); err != nil {
		return err
	}
	return s.Store.StepOutcomeRecord(ctx, o)
}

// FaultyQueue is an actors.Queue whose calls Faults can make panic, fail or
// block, per method and queue (OpRead(q), …).
type FaultyQueue struct {
	actors.Queue
	Faults *Faults
}

var _ actors.Queue = (*FaultyQueue)(nil)

func (q *FaultyQueue) Read(ctx context.Context, queueName string, vt time.Duration, qty int) ([]queue.Message, error) {
	if err := q.Faults.intercept(OpRead(queueName)); err != nil {
		return nil, err
	}
	return q.Queue.Read(ctx, queueName, vt, qty)
}

func (q *FaultyQueue) Delete(ctx context.Context, queueName string, id int64) (bool, error) {
	if err := q.Faults.intercept(OpDelete(queueName)); err != nil {
		return false, err
	}
	return q.Queue.Delete(ctx, queueName, id)
}

func (q *FaultyQueue) Archive(ctx context.Context, queueName string, id int64) (bool, error) {
	if err := q.Faults.intercept(OpArchive(queueName)); err != nil {
		return false, err
	}
	return q.Queue.Archive(ctx, queueName, id)
}

func (q *FaultyQueue) SetVisibility(ctx context.Context, queueName string, id int64, vt time.Duration) error {
	if err := q.Faults.intercept(OpSetVisibility(queueName)); err != nil {
		return err
	}
	return q.Queue.SetVisibility(ctx, queueName, id, vt)
}

// PanicHandler returns a handler that panics with v.
func PanicHandler(v any) workflow.Handler {
	return workflow.HandlerFunc(func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		panic(v)
	})
}

// ErrorHandler returns a handler that fails with err (a *workflow.StepError
// chooses the kind, retryability and Retry-After).
func ErrorHandler(err error) workflow.Handler {
	return workflow.HandlerFunc(func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		return nil, err
	})
}

// HangHandler returns a handler that ignores its context and returns only
// when release is closed: a handler that does not honour its deadline.
func HangHandler(release <-chan struct{}) workflow.Handler {
	return workflow.HandlerFunc(func(context.Context, workflow.StepInput) (json.RawMessage, error) {
		<-release
		return json.RawMessage(`{}`), nil
	})
}

// BlockHandler returns a handler that waits for its context to end and
// returns its error: a slow handler that honours its deadline.
func BlockHandler() workflow.Handler {
	return workflow.HandlerFunc(func(ctx context.Context, _ workflow.StepInput) (json.RawMessage, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

// ByAttempt returns a handler that runs hs[attempt-1], and the last of hs
// for every later attempt: ByAttempt(PanicHandler("boom"), handlers.Noop())
// panics once, then succeeds.
func ByAttempt(hs ...workflow.Handler) workflow.Handler {
	if len(hs) == 0 {
		panic("testsupport.ByAttempt: no handlers")
	}
	return workflow.HandlerFunc(func(ctx context.Context, in workflow.StepInput) (json.RawMessage, error) {
		i := min(max(in.Attempt, 1), len(hs)) - 1
		return hs[i].Handle(ctx, in)
	})
}

// Gate holds steps until the test releases them: its handler reports each
// step it is given on Entered, then waits for Release (or its context) and
// succeeds with {}.
type Gate struct {
	entered chan workflow.StepInput
	release chan struct{}
	once    sync.Once
}

// NewGate returns a closed gate. Entered buffers up to 64 arrivals.
func NewGate() *Gate {
	return &Gate{entered: make(chan workflow.StepInput, 64), release: make(chan struct{})}
}

// Handler is the gate's handler.
func (g *Gate) Handler() workflow.Handler {
	return workflow.HandlerFunc(func(ctx context.Context, in workflow.StepInput) (json.RawMessage, error) {
		select {
		case g.entered <- in:
		default:
		}
		select {
		case <-g.release:
			return json.RawMessage(`{}`), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// Entered delivers the input of every step that reached the gate.
func (g *Gate) Entered() <-chan workflow.StepInput { return g.entered }

// Release opens the gate for good. It is idempotent.
func (g *Gate) Release() { g.once.Do(func() { close(g.release) }) }

// Reply is one scripted answer of a ScriptedServer.
type Reply struct {
	// Status defaults to 200.
	Status int
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter string
	// Body defaults to {}.
	Body string
}

// ScriptedServer is an HTTP server answering request n with the n-th reply
// of its script, the last reply repeating; it records when each request
// came.
type ScriptedServer struct {
	*httptest.Server
	mu     sync.Mutex
	script []Reply
	offset int // requests answered before the script was last set
	times  []time.Time
}

// NewScriptedServer starts a server answering with script (an empty script
// answers 200 {}); it is closed when the test ends. It listens on
// 127.0.0.1, which the http handler calls only when the namespace's (or the
// step's) allowed_hosts lists it.
func NewScriptedServer(t testing.TB, script ...Reply) *ScriptedServer {
	t.Helper()
	s := &ScriptedServer{script: script}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *ScriptedServer) serve(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	n := len(s.times)
	s.times = append(s.times, time.Now())
	r := Reply{}
	if len(s.script) > 0 {
		r = s.script[min(n-s.offset, len(s.script)-1)]
	}
	s.mu.Unlock()
	if r.Status == 0 {
		r.Status = http.StatusOK
	}
	if r.Body == "" {
		r.Body = "{}"
	}
	if r.RetryAfter != "" {
		w.Header().Set("Retry-After", r.RetryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.Status)
	_, _ = fmt.Fprint(w, r.Body)
}

// SetScript replaces the script: the next request gets its first reply.
func (s *ScriptedServer) SetScript(script ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script, s.offset = script, len(s.times)
}

// Requests is how many requests the server received.
func (s *ScriptedServer) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.times)
}

// RequestTimes are the arrival times of the requests, in order.
func (s *ScriptedServer) RequestTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

// Host is the server's host:port, as the http handler names its breaker
// ("http:" + Host()).
func (s *ScriptedServer) Host() string { return strings.TrimPrefix(s.URL, "http://") }
