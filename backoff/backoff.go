// Package backoff computes retry delays. It holds the one formula the whole
// system uses, so a step retried by a worker, a poller backing off from a
// failing queue and an operator-visible "next attempt at" all agree:
//
//	delay = Base × Multiplier^(attempt−1), capped at Max, then ±Jitter
//
// A delay requested by the other side (an HTTP Retry-After header or an
// explicit hint from a step handler) replaces the computed delay, capped at
// MaxServerDelay so a misbehaving server cannot park a step for a week.
//
// Everything here is pure: the clock and the random source are injected.
package backoff

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Defaults used for zero-valued Policy fields.
const (
	BaseDefault           = 1 * time.Second
	MaxDefault            = 5 * time.Minute
	MultiplierDefault     = 2.0
	JitterDefault         = 0.1
	MaxServerDelayDefault = 1 * time.Hour
)

// maxDuration is the largest representable time.Duration.
const maxDuration = time.Duration(math.MaxInt64)

// Policy describes how long to wait before the next attempt. The zero value
// is usable; see each field for what a zero means. Policy is a small value:
// copy it freely.
type Policy struct {
	// Base is the delay after the first failed attempt. Defaults to 1s.
	Base time.Duration
	// Max caps the computed delay (jitter included). Defaults to 5m.
	Max time.Duration
	// Multiplier grows the delay per attempt. Defaults to 2. Values between
	// 0 and 1 are treated as 1 (a constant delay): a shrinking backoff is
	// never what anyone wants.
	Multiplier float64
	// Jitter is the fraction by which the computed delay is spread, up and
	// down: 0.1 gives a delay in [0.9d, 1.1d]. Zero means no jitter (a
	// legitimate choice, so zero is not replaced); use Default for 0.1.
	// Values above 1 are treated as 1.
	Jitter float64
	// MaxServerDelay caps a delay requested by the server or the handler.
	// Defaults to 1h.
	MaxServerDelay time.Duration
	// Now is the clock used to interpret Retry-After dates. Defaults to
	// time.Now.
	Now func() time.Time
	// Rand returns a number in [0, 1) used for jitter. Defaults to
	// math/rand/v2.Float64.
	Rand func() float64
}

// Default returns the policy with every documented default, including
// Jitter 0.1.
func Default() Policy {
	return Policy{
		Base:           BaseDefault,
		Max:            MaxDefault,
		Multiplier:     MultiplierDefault,
		Jitter:         JitterDefault,
		MaxServerDelay: MaxServerDelayDefault,
	}
}

// WithOverrides returns a copy of p with Base and Max replaced by the
// per-step overrides of a template; a zero override keeps p's value.
func (p Policy) WithOverrides(base, max time.Duration) Policy {
	if base > 0 {
		p.Base = base
	}
	if max > 0 {
		p.Max = max
	}
	return p
}

// normalized fills defaults for zero fields and clamps out-of-range ones.
func (p Policy) normalized() Policy {
	if p.Base <= 0 {
		p.Base = BaseDefault
	}
	if p.Max <= 0 {
		p.Max = MaxDefault
	}
	switch {
	case p.Multiplier == 0 || math.IsNaN(p.Multiplier):
		p.Multiplier = MultiplierDefault
	case p.Multiplier < 1:
		p.Multiplier = 1
	}
	switch {
	case p.Jitter < 0 || math.IsNaN(p.Jitter):
		p.Jitter = 0
	case p.Jitter > 1:
		p.Jitter = 1
	}
	if p.MaxServerDelay <= 0 {
		p.MaxServerDelay = MaxServerDelayDefault
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Rand == nil {
		p.Rand = rand.Float64
	}
	return p
}

// Delay is the computed delay after the given attempt failed. Attempts count
// from 1 (the first attempt), so Delay(1) is about Base; an attempt of zero or
// less is treated as 1. Large attempts saturate at Max instead of overflowing.
// The result is never above Max and never negative.
func (p Policy) Delay(attempt int) time.Duration {
	p = p.normalized()
	if attempt < 1 {
		attempt = 1
	}
	// Computed in float64: math.Pow saturates to +Inf rather than wrapping,
	// and the comparison with Max below catches it.
	d := float64(p.Base) * math.Pow(p.Multiplier, float64(attempt-1))
	if d > float64(p.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(p.Max)
	}
	if p.Jitter > 0 {
		r := min(max(p.Rand(), 0), 1)
		d *= 1 + p.Jitter*(2*r-1)
	}
	// Jitter is applied before the final cap so Max stays a hard ceiling.
	if d >= float64(p.Max) {
		return p.Max
	}
	return time.Duration(max(d, 0))
}

// Next is the delay to use after the given attempt failed. A requested delay
// (from Retry-After or a handler hint) greater than zero replaces the computed
// one, capped at MaxServerDelay and without jitter: the server asked for that
// time. A requested delay of zero or less means "no request" and the computed
// delay is used, so a Retry-After in the past never causes a hot retry loop.
func (p Policy) Next(attempt int, requested time.Duration) time.Duration {
	if requested > 0 {
		return min(requested, p.normalized().MaxServerDelay)
	}
	return p.Delay(attempt)
}

// RetryAfter parses a Retry-After value against the policy's clock. See
// ParseRetryAfter.
func (p Policy) RetryAfter(v string) (time.Duration, bool) {
	return ParseRetryAfter(v, p.normalized().Now())
}

// httpDateLayouts are the three forms RFC 9110 §5.6.7 says a recipient must
// accept (the same list net/http.ParseTime uses, without importing net/http
// into a pure package).
var httpDateLayouts = []string{
	"Mon, 02 Jan 2006 15:04:05 GMT", // IMF-fixdate
	time.RFC850,                     // obsolete RFC 850 form
	time.ANSIC,                      // asctime
}

// ParseRetryAfter parses an HTTP Retry-After value: either a non-negative
// integer number of seconds or an HTTP date. A date in the past yields 0 and
// true. It reports false when v is neither. Huge second counts saturate
// instead of overflowing; callers cap them with Next.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(maxDuration/time.Second) {
			// Only a range error is possible for a digit string.
			return maxDuration, true
		}
		return time.Duration(secs) * time.Second, true
	}
	for _, layout := range httpDateLayouts {
		t, err := time.Parse(layout, v)
		if err != nil {
			continue
		}
		if d := t.Sub(now); d > 0 {
			return d, true
		}
		return 0, true
	}
	return 0, false
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
