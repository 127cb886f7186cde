package bootstrap

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/workflow/handlers"
)

// hostGuard gives the http handler one circuit breaker per downstream host,
// as the handler names it (the template's literal host where it has one),
// capped by circuit_breakers.max_hosts.
// The handler registry is built before the actor tree, so the tree is bound
// once it runs; no step can run before then.
type hostGuard struct {
	sys atomic.Pointer[actors.System]
}

var _ handlers.HostGuard = (*hostGuard)(nil)

func (g *hostGuard) Run(host string, fn func() error) error {
	sys := g.sys.Load()
	if sys == nil {
		return fn()
	}
	b := sys.HostBreaker(host)
	err := b.Run(fn)
	if errors.Is(err, circuitbreaker.ErrOpen) {
		return &hostOpenError{host: host, wait: b.RemainingDelay()}
	}
	return err
}

// hostOpenError is a refusal by an open host breaker; RetryAfter tells the
// handler how long the breaker stays open.
type hostOpenError struct {
	host string
	wait time.Duration
}

func (e *hostOpenError) Error() string {
	return fmt.Sprintf("circuit breaker open for host %s", e.host)
}

func (e *hostOpenError) Is(target error) bool { return target == handlers.ErrHostOpen }

func (e *hostOpenError) RetryAfter() time.Duration { return e.wait }
