package actors

import (
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
}

// newBreaker builds the breaker of component, shown in the tree at path.
func newBreaker(component, path string, s BreakerSettings, tree *Tree, log *slog.Logger, onChange func(string, string)) *Breaker {
	b := &Breaker{component: component, path: path, tree: tree, log: log, onChange: onChange}
	b.Configure(s)
	return b
}

// Configure replaces the breaker's settings.
func (b *Breaker) Configure(s BreakerSettings) {
	builder := circuitbreaker.NewBuilder[any]().
		WithDelay(s.Delay).
		WithSuccessThreshold(uint(max(s.SuccessThreshold, 1))).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			m := e.Metrics()
			b.log.Warn("circuit breaker changed state", "component", b.component,
				"from", e.OldState.String(), "to", e.NewState.String(),
				"failures", m.Failures(), "successes", m.Successes(), "executions", m.Executions())
			b.tree.setBreaker(b.path, e.NewState.String())
			if b.onChange != nil {
				b.onChange(b.component, e.NewState.String())
			}
		})
	if s.FailureRatio > 0 {
		builder = builder.WithFailureRateThreshold(s.FailureRatio, uint(max(s.MinExecutions, 1)), s.Window)
	} else {
		builder = builder.WithFailureThresholdPeriod(uint(max(s.FailureThreshold, 1)), s.Window)
	}
	cb := builder.Build()
	b.mu.Lock()
	b.cb, b.settings = cb, s
	b.mu.Unlock()
	b.tree.setBreaker(b.path, cb.State().String())
	if b.onChange != nil {
		b.onChange(b.component, cb.State().String())
	}
}

func (b *Breaker) current() circuitbreaker.CircuitBreaker[any] {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.cb
}

// Component is the breaker's name: "task_requests", a namespace, or
// "http:<host>".
func (b *Breaker) Component() string { return b.component }

// State is "closed", "open" or "half-open".
func (b *Breaker) State() string { return b.current().State().String() }

// Run calls fn if the breaker lets it through and records its outcome. It
// returns circuitbreaker.ErrOpen without calling fn when the breaker is open.
func (b *Breaker) Run(fn func() error) error {
	cb := b.current()
	if !cb.TryAcquirePermit() {
		return circuitbreaker.ErrOpen
	}
	err := fn()
	if err != nil {
		cb.RecordFailure()
	} else {
		cb.RecordSuccess()
	}
	return err
}

// RemainingDelay is how long an open breaker stays open; 0 otherwise.
func (b *Breaker) RemainingDelay() time.Duration { return b.current().RemainingDelay() }
