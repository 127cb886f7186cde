package testsupport

import (
	"testing"
	"time"
)

// pollEvery is how often WaitFor looks again. Short, because the things tests
// wait for are fast; the timeout is what bounds a failure.
const pollEvery = 5 * time.Millisecond

// WaitFor calls cond until it reports true, and fails the test if that does
// not happen within timeout. An error from cond ends the wait at once.
// what describes the awaited condition for the failure message.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollEvery)
	defer ticker.Stop()
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-ticker.C
	}
}
