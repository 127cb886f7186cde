package backoff

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseRetryAfter: any header value parses without panicking to a
// non-negative delay, the same on every call; a rejected value gives 0;
// whole seconds give that many seconds (saturating).
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2025, time.March, 4, 10, 0, 0, 0, time.UTC)
	for _, seed := range []string{
		"120", "0", "  7 ", "-5", "1.5", "soon", "", "99999999999999999999999", "9223372037",
		"Tue, 04 Mar 2025 10:00:30 GMT", "Tuesday, 04-Mar-25 10:01:00 GMT", "Tue Mar  4 10:00:05 2025",
		"Mon, 01 Jan 0001 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "+5", "0x10", "\u0660",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ParseRetryAfter(v, now)
		d2, ok2 := ParseRetryAfter(v, now)
		if d != d2 || ok != ok2 {
			t.Fatalf("%q: %v %v then %v %v", v, d, ok, d2, ok2)
		}
		if d < 0 {
			t.Fatalf("%q: negative delay %v", v, d)
		}
		if !ok && d != 0 {
			t.Fatalf("%q: rejected with delay %v", v, d)
		}
		if s := strings.TrimSpace(v); isDigits(s) {
			if !ok {
				t.Fatalf("%q: digits rejected", v)
			}
			if n, err := strconv.ParseInt(s, 10, 64); err == nil && n <= int64(maxDuration/time.Second) && d != time.Duration(n)*time.Second {
				t.Fatalf("%q: %v, want %ds", v, d, n)
			}
		}
	})
}
