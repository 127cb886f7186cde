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
}

// newBreaker builds the breaker of component, shown in the tree at path.
func newBreaker(component, path string, s BreakerSettings, tree *Tree, log *slog.Logger, onChange func(string, string)) *Breaker {
	b := &Breaker{component: component, path: path, tree: tree, log: log, onChange: onChange}
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
	b.publish()
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
