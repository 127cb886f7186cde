package actors

import (
	"errors"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

// A message read before the database failed is held in process and tried
// again as soon as its breaker lets calls through, rather than left
// invisible until its visibility timeout: a short outage then costs about
// its own length. Holding never acknowledges anything the database did not
// record, so delivery stays at-least-once; a try that repeats one the
// database did apply (its answer lost with the connection) meets the
// store's compare-and-set and changes nothing.
//
// A held message is released to redelivery when its lease ends (the queue
// hands it out again then, perhaps to another node), when heldFailures
// tries have run and failed (a fault of the message rather than of the
// database must not hold it for the whole lease, nor count against the
// breaker in a loop), or when the node stops (an outcome is tried on
// through the shutdown timeout unless its breaker is open).
const (
	heldFailures = 5
	// heldPauseMin and heldPauseMax bound the wait after a failed try; a
	// try refused by the open breaker waits for the breaker instead.
	heldPauseMin = 50 * time.Millisecond
	heldPauseMax = time.Second
)

// heldTry says how runHeld should go about one message.
type heldTry struct {
	breaker *Breaker
	// lease is when the message becomes visible to other readers.
	lease func() time.Time
	// untilShutdown keeps trying while the node stops, until the shutdown
	// timeout, unless the breaker is open: for an outcome whose handler
	// already ran.
	untilShutdown bool
	// queue names the message's queue for Deps.MessageHeld.
	queue string
}

// runHeld runs fn through the breaker until it succeeds or the message
// must be released (see above). It returns fn's last error, or the
// breaker's refusal, when it gives up; nil once fn succeeded.
func (s *System) runHeld(h heldTry, fn func() error) error {
	pause := heldPauseMin
	failures := 0
	held := false
	report := func(handled bool) {
		if held && s.deps.MessageHeld != nil {
			s.deps.MessageHeld(h.queue, handled)
		}
	}
	for {
		changed := h.breaker.changes()
		err := h.breaker.Run(fn)
		if err == nil {
			report(true)
			return nil
		}
		refused := errors.Is(err, circuitbreaker.ErrOpen)
		if !refused {
			failures++
		}
		wait := pause
		if refused {
			// Until the breaker changes (the probe sees the database
			// answer), or its delay ends.
			wait = max(h.breaker.RemainingDelay(), heldPauseMin)
		}
		// A node that stops releases what it holds, but an outcome while
		// the database may still answer (its breaker not open).
		stopped := s.handlerCtx.Err() != nil || (s.stopping.Load() && (!h.untilShutdown || refused))
		left := time.Until(h.lease())
		if failures >= heldFailures || stopped || left <= 0 {
			report(false)
			return err
		}
		wait = min(wait, left)
		held = true
		timer := time.NewTimer(wait)
		select {
		case <-changed:
		case <-timer.C:
		case <-s.handlerCtx.Done():
		}
		timer.Stop()
		if !refused {
			pause = min(2*pause, heldPauseMax)
		}
	}
}
