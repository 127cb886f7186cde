package actors_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
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

// startHostBreakers starts an empty tree whose host breakers are capped at
// max (threshold 1, a minute open) and returns it with the components
// removed so far.
func startHostBreakers(t *testing.T, max int) (*actors.System, func() []string) {
	t.Helper()
	var (
		mu      sync.Mutex
		removed []string
	)
	sys, err := actors.Start(actors.Settings{
		NodeID:          "test",
		MaxHostBreakers: max,
		HostBreaker: func(string) actors.BreakerSettings {
			return actors.BreakerSettings{FailureThreshold: 1, Window: time.Minute, Delay: time.Minute, SuccessThreshold: 1}
		},
	}, actors.Deps{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		BreakerRemoved: func(component string) {
			mu.Lock()
			removed = append(removed, component)
			mu.Unlock()
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, sys.Stop(ctx))
	})
	return sys, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), removed...)
	}
}

// hostBreakerNodes lists the host breakers in the tree, sorted.
func hostBreakerNodes(sys *actors.System) []string {
	var out []string
	for _, n := range sys.Tree().All() {
		if strings.HasPrefix(n.Name, "http:") {
			out = append(out, n.Name)
		}
	}
	sort.Strings(out)
	return out
}

func TestHostBreakersCappedLRU(t *testing.T) {
	t.Parallel()
	sys, removed := startHostBreakers(t, 3)
	a := sys.HostBreaker("a.test")
	sys.HostBreaker("b.test")
	sys.HostBreaker("c.test")
	require.Same(t, a, sys.HostBreaker("a.test"), "a use makes a.test the most recent")
	require.Equal(t, []string{"http:a.test", "http:b.test", "http:c.test"}, hostBreakerNodes(sys))

	sys.HostBreaker("d.test")
	require.Equal(t, []string{"http:b.test"}, removed(), "the least recently used goes")
	require.Equal(t, []string{"http:a.test", "http:c.test", "http:d.test"}, hostBreakerNodes(sys))
	_, ok := sys.Breaker("http:b.test")
	require.False(t, ok)

	// An open breaker is kept while a closed one can go.
	c, _ := sys.Breaker("http:c.test")
	require.Error(t, c.Run(func() error { return errors.New("down") }))
	require.Equal(t, "open", c.State())
	sys.HostBreaker("e.test") // LRU order now: c (open), a, d, e
	require.Equal(t, []string{"http:b.test", "http:a.test"}, removed(), "the open c.test is skipped")
	require.Equal(t, "open", sys.Breakers()["http:c.test"].State())

	// A dropped breaker still running publishes nothing: its node stays gone.
	d, _ := sys.Breaker("http:d.test")
	sys.HostBreaker("f.test")
	sys.HostBreaker("g.test")
	require.Contains(t, removed(), "http:d.test")
	require.Error(t, d.Run(func() error { return errors.New("down") }))
	_, ok = sys.Tree().Find("root/http:d.test")
	require.False(t, ok, "a dropped breaker does not come back to the tree")

	// Recreated on the next call, closed.
	require.NotSame(t, d, sys.HostBreaker("d.test"))
	require.Equal(t, "closed", sys.Breakers()["http:d.test"].State())
	require.Len(t, hostBreakerNodes(sys), 3)
}

// When every breaker is open the cap still holds: the least recently used
// goes anyway.
func TestHostBreakersCappedAllOpen(t *testing.T) {
	t.Parallel()
	sys, removed := startHostBreakers(t, 2)
	for _, h := range []string{"a.test", "b.test"} {
		require.Error(t, sys.HostBreaker(h).Run(func() error { return errors.New("down") }))
	}
	sys.HostBreaker("c.test")
	require.Equal(t, []string{"http:a.test"}, removed())
	require.Equal(t, []string{"http:b.test", "http:c.test"}, hostBreakerNodes(sys))
	require.Equal(t, "closed", sys.HostBreaker("a.test").State(), "the dropped host starts afresh")
}
