package backoff

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func fixedRand(v float64) func() float64 { return func() float64 { return v } }

func TestDelay(t *testing.T) {
	noJitter := Policy{Base: time.Second, Max: 5 * time.Minute, Multiplier: 2}
	tests := []struct {
		name    string
		policy  Policy
		attempt int
		want    time.Duration
	}{
		{"first attempt is base", noJitter, 1, time.Second},
		{"second attempt doubles", noJitter, 2, 2 * time.Second},
		{"fifth attempt", noJitter, 5, 16 * time.Second},
		{"attempt zero is treated as one", noJitter, 0, time.Second},
		{"negative attempt is treated as one", noJitter, -7, time.Second},
		{"capped at max", noJitter, 10, 5 * time.Minute},
		{"huge attempt saturates at max", noJitter, math.MaxInt, 5 * time.Minute},
		{"attempt beyond float range saturates", noJitter, 100_000, 5 * time.Minute},
		{"zero policy uses defaults", Policy{}, 3, 4 * time.Second},
		{"multiplier below one is constant", Policy{Base: 3 * time.Second, Multiplier: 0.5}, 4, 3 * time.Second},
		{"multiplier 1.5", Policy{Base: 2 * time.Second, Multiplier: 1.5}, 3, 4500 * time.Millisecond},
		{"max below base caps base", Policy{Base: time.Minute, Max: 10 * time.Second}, 1, 10 * time.Second},
		{"huge max and multiplier do not overflow", Policy{Base: time.Hour, Max: time.Duration(math.MaxInt64), Multiplier: 1e6}, 50, time.Duration(math.MaxInt64)},
		{"jitter rand 0 is minus jitter", Policy{Base: 10 * time.Second, Jitter: 0.1, Rand: fixedRand(0)}, 1, 9 * time.Second},
		{"jitter rand 1 is plus jitter", Policy{Base: 10 * time.Second, Jitter: 0.1, Rand: fixedRand(1)}, 1, 11 * time.Second},
		{"jitter rand 0.5 is exact", Policy{Base: 10 * time.Second, Jitter: 0.1, Rand: fixedRand(0.5)}, 1, 10 * time.Second},
		{"jitter never exceeds max", Policy{Base: time.Second, Max: 8 * time.Second, Jitter: 0.5, Rand: fixedRand(1)}, 10, 8 * time.Second},
		{"jitter at max can go below", Policy{Base: time.Second, Max: 8 * time.Second, Jitter: 0.5, Rand: fixedRand(0)}, 10, 4 * time.Second},
		{"jitter above one is clamped", Policy{Base: 10 * time.Second, Jitter: 3, Rand: fixedRand(0)}, 1, 0},
		{"negative jitter is none", Policy{Base: 10 * time.Second, Jitter: -1, Rand: fixedRand(0)}, 1, 10 * time.Second},
		{"rand out of range is clamped", Policy{Base: 10 * time.Second, Jitter: 0.1, Rand: fixedRand(7)}, 1, 11 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.policy.Delay(tt.attempt))
		})
	}
}

func TestDelayJitterBounds(t *testing.T) {
	p := Default()
	for i := range 1000 {
		r := float64(i) / 1000
		p.Rand = fixedRand(r)
		for attempt := 1; attempt <= 12; attempt++ {
			exact := Policy{Base: p.Base, Max: p.Max, Multiplier: p.Multiplier}.Delay(attempt)
			got := p.Delay(attempt)
			lo := time.Duration(float64(exact) * (1 - p.Jitter))
			hi := min(time.Duration(float64(exact)*(1+p.Jitter)), p.Max)
			require.GreaterOrEqual(t, got, lo, "attempt %d rand %v", attempt, r)
			require.LessOrEqual(t, got, hi, "attempt %d rand %v", attempt, r)
		}
	}
}

func TestDefault(t *testing.T) {
	p := Default()
	require.Equal(t, time.Second, p.Base)
	require.Equal(t, 5*time.Minute, p.Max)
	require.Equal(t, 2.0, p.Multiplier)
	require.Equal(t, 0.1, p.Jitter)
	require.Equal(t, time.Hour, p.MaxServerDelay)
}

func TestNext(t *testing.T) {
	p := Policy{Base: time.Second, Max: time.Minute, Multiplier: 2, MaxServerDelay: 10 * time.Minute}
	tests := []struct {
		name      string
		attempt   int
		requested time.Duration
		want      time.Duration
	}{
		{"no request uses computed", 3, 0, 4 * time.Second},
		{"negative request uses computed", 3, -time.Second, 4 * time.Second},
		{"request replaces computed", 3, 90 * time.Second, 90 * time.Second},
		{"request may be shorter than computed", 6, time.Second, time.Second},
		{"request above max is allowed up to server cap", 1, 5 * time.Minute, 5 * time.Minute},
		{"request capped at max server delay", 1, 48 * time.Hour, 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, p.Next(tt.attempt, tt.requested))
		})
	}
	require.Equal(t, time.Hour, Policy{}.Next(1, 5*time.Hour), "default server cap is 1h")
}

func TestWithOverrides(t *testing.T) {
	p := Default()
	require.Equal(t, p, p.WithOverrides(0, 0))
	o := p.WithOverrides(5*time.Second, 0)
	require.Equal(t, 5*time.Second, o.Base)
	require.Equal(t, p.Max, o.Max)
	o = p.WithOverrides(0, time.Minute)
	require.Equal(t, p.Base, o.Base)
	require.Equal(t, time.Minute, o.Max)
	require.Equal(t, time.Second, p.Base, "original is unchanged")
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, time.March, 4, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		value  string
		want   time.Duration
		wantOK bool
	}{
		{"seconds", "120", 2 * time.Minute, true},
		{"zero seconds", "0", 0, true},
		{"seconds with spaces", "  7 ", 7 * time.Second, true},
		{"huge seconds saturate", "99999999999999999999999", time.Duration(math.MaxInt64), true},
		{"seconds just over duration range saturate", "9223372037", time.Duration(math.MaxInt64), true},
		{"http date", "Tue, 04 Mar 2025 10:00:30 GMT", 30 * time.Second, true},
		{"rfc 850 date", "Tuesday, 04-Mar-25 10:01:00 GMT", time.Minute, true},
		{"asctime date", "Tue Mar  4 10:00:05 2025", 5 * time.Second, true},
		{"date in the past", "Tue, 04 Mar 2025 09:59:00 GMT", 0, true},
		{"date equal to now", "Tue, 04 Mar 2025 10:00:00 GMT", 0, true},
		{"empty", "", 0, false},
		{"negative seconds", "-5", 0, false},
		{"fractional seconds", "1.5", 0, false},
		{"garbage", "soon", 0, false},
		{"duration string is not retry-after", "5s", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.value, now)
			require.Equal(t, tt.wantOK, ok)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestPolicyRetryAfterUsesInjectedClock(t *testing.T) {
	now := time.Date(2025, time.March, 4, 10, 0, 0, 0, time.UTC)
	p := Policy{Now: func() time.Time { return now }, MaxServerDelay: time.Minute}
	d, ok := p.RetryAfter("Tue, 04 Mar 2025 10:05:00 GMT")
	require.True(t, ok)
	require.Equal(t, 5*time.Minute, d)
	require.Equal(t, time.Minute, p.Next(1, d), "requested delay capped by MaxServerDelay")
}
