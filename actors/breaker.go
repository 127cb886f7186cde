package actors

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

// BreakerSettings configure one circuit breaker.
type BreakerSettings struct {
	// FailureThreshold failures within Window open the breaker, unless
	// FailureRatio is set.
	FailureThreshold int
	// FailureRatio, when above 0, opens the breaker when this fraction of at
	// least MinExecutions executions within Window failed.
	FailureRatio     float64
	MinExecutions    int
	Window           time.Duration
	Delay            time.Duration
	SuccessThreshold int
}

// Breaker is a named circuit breaker whose state changes are logged once
// each and shown in the tree. Its settings can be replaced while it runs
// (a config reload): the replacement starts closed.
type Breaker struct {
	component string
	path      string
	tree      *Tree
	log       *slog.Logger

	mu       sync.RWMutex
	cb       circuitbreaker.CircuitBreaker[any]
	settings BreakerSettings
	onChange func(component string, state string)
	// publishMu orders publish calls.
	publishMu sync.Mutex
	// retired, under publishMu, stops publishing once the breaker is
	// dropped, so its tree node and metric series stay gone.
	retired bool

	// changed is closed and replaced on every state change, so a caller
	// holding a message can wait for the breaker to let it try again.
	changedMu sync.Mutex
	changed   chan struct{}
	// onReady, when set, is called whenever the breaker is not open after a
	// change: the pollers it paused read again at once.
	onReady func()

	// probeMu guards the early trial of a breaker guarding the database
	// (see probeAnswered).
	probeMu sync.Mutex
	// earlyOK allows the next successful probe to end the open state: set
	// when the breaker opens from closed and whenever a probe fails (the
	// database was seen away, so its answer is news); cleared when an early
	// trial fails while the database answered, so a fault the database's
	// answer says nothing about (a broken queue table) waits out Delay.
	earlyOK bool
	// early marks a half-open state entered on a probe's answer.
	early bool
}

// newBreaker builds the breaker of component, shown in the tree at path.
func newBreaker(component, path string, s BreakerSettings, tree *Tree, log *slog.Logger, onChange func(string, string)) *Breaker {
	b := &Breaker{component: component, path: path, tree: tree, log: log, onChange: onChange, changed: make(chan struct{})}
	b.Configure(s)
	return b
}

// Configure replaces the breaker's settings.
func (b *Breaker) Configure(s BreakerSettings) {
	var cb circuitbreaker.CircuitBreaker[any]
	builder := circuitbreaker.NewBuilder[any]().
		WithDelay(s.Delay).
		WithSuccessThreshold(uint(max(s.SuccessThreshold, 1))).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			// failsafe-go calls this with the breaker unlocked, so the
			// event's metrics (the old state's counters, still written by
			// concurrent calls) are not safe to read; the breaker's own
			// accessors lock.
			m := cb.Metrics()
			b.log.Log(context.Background(), changeLevel(e.OldState, e.NewState), "circuit breaker changed state",
				"component", b.component, "from", e.OldState.String(), "to", e.NewState.String(),
				"failures", m.Failures(), "successes", m.Successes(), "executions", m.Executions())
			b.noteChange(e.OldState, e.NewState)
			b.publish()
		})
	if s.FailureRatio > 0 {
		builder = builder.WithFailureRateThreshold(s.FailureRatio, uint(max(s.MinExecutions, 1)), s.Window)
	} else {
		builder = builder.WithFailureThresholdPeriod(uint(max(s.FailureThreshold, 1)), s.Window)
	}
	cb = builder.Build()
	b.mu.Lock()
	b.cb, b.settings = cb, s
	b.mu.Unlock()
	b.probeMu.Lock()
	b.earlyOK, b.early = false, false
	b.probeMu.Unlock()
	b.publish()
}

// noteChange keeps the early-trial marks of a state change.
func (b *Breaker) noteChange(from, to circuitbreaker.State) {
	b.probeMu.Lock()
	defer b.probeMu.Unlock()
	switch {
	case from == circuitbreaker.ClosedState && to == circuitbreaker.OpenState:
		b.earlyOK = true
	case from == circuitbreaker.HalfOpenState && to == circuitbreaker.OpenState:
		if b.early {
			b.earlyOK = false
		}
		b.early = false
	case to == circuitbreaker.ClosedState:
		b.earlyOK, b.early = false, false
	}
}

// probeAnswered is told the outcome of a probe of the database while the
// breaker is open. When the database answers (and the early trial is
// allowed) the breaker goes half-open at once instead of waiting out its
// delay: the trials start as soon as the database is back.
func (b *Breaker) probeAnswered(ok bool) {
	cb := b.current()
	b.probeMu.Lock()
	if !ok {
		b.earlyOK = true
		b.probeMu.Unlock()
		return
	}
	if !b.earlyOK || !cb.IsOpen() {
		b.probeMu.Unlock()
		return
	}
	b.early = true
	b.probeMu.Unlock()
	b.log.Debug("database answers; trying the circuit breaker early", "component", b.component)
	cb.HalfOpen()
}

// changeLevel is the log level of a state change. Opening from closed and
// closing again are what an operator needs to see; the trials in between
// (open → half-open → open again, every delay while a fault lasts) are
// debug detail, or a long outage would fill the log with them.
func changeLevel(from, to circuitbreaker.State) slog.Level {
	switch {
	case from == circuitbreaker.ClosedState && to == circuitbreaker.OpenState:
		return slog.LevelWarn
	case to == circuitbreaker.ClosedState:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

// publish shows the breaker's state in the tree and tells onChange. State
// listeners run outside failsafe-go's lock, so two transitions on two
// goroutines can get here in either order: publish reports the state as it
// is now, one call at a time, so the last call leaves the truth instead of
// whichever event came last.
func (b *Breaker) publish() {
	b.publishMu.Lock()
	defer b.publishMu.Unlock()
	if b.retired {
		return
	}
	state := b.State()
	b.tree.setBreaker(b.path, state)
	if b.onChange != nil {
		b.onChange(b.component, state)
	}
	b.changedMu.Lock()
	close(b.changed)
	b.changed = make(chan struct{})
	b.changedMu.Unlock()
	if b.onReady != nil && state != circuitbreaker.OpenState.String() {
		b.onReady()
	}
}

// changes returns a channel closed at the breaker's next state change.
func (b *Breaker) changes() <-chan struct{} {
	b.changedMu.Lock()
	defer b.changedMu.Unlock()
	return b.changed
}

// retire removes the breaker's tree node and tells removed; it publishes
// nothing afterwards.
func (b *Breaker) retire(removed func(component string)) {
	b.publishMu.Lock()
	defer b.publishMu.Unlock()
	b.retired = true
	b.tree.remove(b.path)
	if removed != nil {
		removed(b.component)
	}
}

func (b *Breaker) current() circuitbreaker.CircuitBreaker[any] {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.cb
}

// Component is the breaker's name: "orchestration", a namespace, or
// "http:<host>".
func (b *Breaker) Component() string { return b.component }

// State is "closed", "open" or "half-open".
func (b *Breaker) State() string { return b.current().State().String() }

// Run calls fn if the breaker lets it through and records its outcome. It
// returns circuitbreaker.ErrOpen without calling fn when the breaker is open.
// A panic in fn counts as a failure and is re-raised: unrecorded, it would
// keep the permit a half-open breaker lent, and a half-open breaker out of
// permits refuses everything for good.
func (b *Breaker) Run(fn func() error) error {
	cb := b.current()
	if !cb.TryAcquirePermit() {
		return circuitbreaker.ErrOpen
	}
	recorded := false
	defer func() {
		if !recorded {
			cb.RecordFailure()
		}
	}()
	err := fn()
	recorded = true
	if err != nil {
		cb.RecordFailure()
	} else {
		cb.RecordSuccess()
	}
	return err
}

// RemainingDelay is how long an open breaker stays open; 0 otherwise.
func (b *Breaker) RemainingDelay() time.Duration { return b.current().RemainingDelay() }
