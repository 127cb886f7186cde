package actors_test

import (
	"errors"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow/handlers"
)

// A panic inside Breaker.Run counts as a failure. Unrecorded, each one kept
// a permit of the half-open breaker, and a half-open breaker out of permits
// refused every call for good.
func TestBreakerPanicCountsAsFailure(t *testing.T) {
	t.Parallel()
	ft := startFakeTree(t, actors.Intensity{MaxRestarts: 10, Window: time.Minute}, handlers.Noop())
	// Host breakers: threshold 1, delay 50ms, two trials when half-open.
	b := ft.sys.HostBreaker("example.test")
	require.Error(t, b.Run(func() error { return errors.New("down") }))
	require.Equal(t, "open", b.State())

	for range 2 {
		testsupport.WaitFor(t, 5*time.Second, "the breaker's delay to pass", func() (bool, error) {
			return b.RemainingDelay() == 0, nil
		})
		require.Panics(t, func() { _ = b.Run(func() error { panic("handler bug") }) })
		require.Equal(t, "open", b.State(), "a panicking trial reopens the breaker")
	}
	testsupport.WaitFor(t, 5*time.Second, "the breaker to let a call through again", func() (bool, error) {
		err := b.Run(func() error { return nil })
		if errors.Is(err, circuitbreaker.ErrOpen) {
			return false, nil
		}
		return err == nil, err
	})
}

// Reconfiguring a breaker (a config reload) takes effect at once: the new
// threshold applies and the breaker starts closed.
func TestBreakerConfigure(t *testing.T) {
	t.Parallel()
	ft := startFakeTree(t, actors.Intensity{MaxRestarts: 10, Window: time.Minute}, handlers.Noop())
	b := ft.sys.HostBreaker("example.test")
	fail := func() error { return errors.New("down") }
	require.Error(t, b.Run(fail))
	require.Equal(t, "open", b.State())

	b.Configure(actors.BreakerSettings{FailureThreshold: 3, Window: time.Minute, Delay: time.Minute, SuccessThreshold: 1})
	require.Equal(t, "closed", b.State())
	require.Equal(t, "closed", ft.node("root/http:example.test").BreakerState)
	for range 2 {
		require.Error(t, b.Run(fail))
		require.Equal(t, "closed", b.State())
	}
	require.Error(t, b.Run(fail))
	require.Equal(t, "open", b.State())
	require.Equal(t, "open", ft.node("root/http:example.test").BreakerState)
	require.ErrorIs(t, b.Run(func() error { return nil }), circuitbreaker.ErrOpen)
}
