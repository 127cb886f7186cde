package actors

import (
	"context"
	"time"
)

// Probing the database while a breaker that guards it is open: one
// goroutine for the whole tree pings the database every probeInterval
// while any of those breakers is open, and tells each open one how the
// ping went (Breaker.probeAnswered). A breaker therefore goes half-open as
// soon as the database answers again, not only once its delay has passed;
// the delay stays the longest wait. Host breakers are not probed: what
// they guard is not the database.
const (
	// probeInterval is the time between two pings while a breaker is open.
	probeInterval = 150 * time.Millisecond
	// probeTimeout bounds one ping.
	probeTimeout = time.Second
)

// dbProbe pings the database for the breakers that guard it.
type dbProbe struct {
	ping     func(ctx context.Context) error
	breakers []*Breaker
	stop     chan struct{}
	done     chan struct{}
}

// startProbe starts probing for breakers; nil when ping is nil (the tree
// then relies on the breakers' delays alone).
func startProbe(ping func(ctx context.Context) error, breakers []*Breaker) *dbProbe {
	if ping == nil || len(breakers) == 0 {
		return nil
	}
	p := &dbProbe{ping: ping, breakers: breakers, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *dbProbe) run() {
	defer close(p.done)
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		var open []*Breaker
		for _, b := range p.breakers {
			if b.current().IsOpen() {
				open = append(open, b)
			}
		}
		if len(open) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		err := p.ping(ctx)
		cancel()
		for _, b := range open {
			b.probeAnswered(err == nil)
		}
	}
}

// close stops the probe and waits for it. Safe on a nil probe.
func (p *dbProbe) close() {
	if p == nil {
		return
	}
	close(p.stop)
	<-p.done
}
