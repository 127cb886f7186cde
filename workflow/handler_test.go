package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStepErrorConstructors(t *testing.T) {
	p := Permanent("validation", "even_number must be even, got %d", 7)
	require.Equal(t, "validation", p.Kind)
	require.Equal(t, "even_number must be even, got 7", p.Message)
	require.False(t, p.Retryable)
	require.Zero(t, p.RetryAfter)
	require.EqualError(t, p, "validation: even_number must be even, got 7")

	r := Retryable("http_429", 30*time.Second, "calling %s: %w", "payments", io.ErrUnexpectedEOF)
	require.True(t, r.Retryable)
	require.Equal(t, 30*time.Second, r.RetryAfter)
	require.Equal(t, "calling payments: unexpected EOF", r.Message)
	require.ErrorIs(t, r, io.ErrUnexpectedEOF, "%w keeps the cause")

	require.Equal(t, "bare", (&StepError{Message: "bare"}).Error())
}

func TestAsStepError(t *testing.T) {
	perm := Permanent("bad_input", "nope")
	tests := []struct {
		name      string
		err       error
		same      bool // want the identical pointer
		kind      string
		retryable bool
	}{
		{name: "nil", err: nil},
		{name: "step error", err: perm, same: true, kind: "bad_input", retryable: false},
		{name: "wrapped step error", err: fmt.Errorf("outer: %w", perm), same: true, kind: "bad_input", retryable: false},
		{name: "deadline", err: context.DeadlineExceeded, kind: KindTimeout, retryable: true},
		{name: "wrapped deadline", err: fmt.Errorf("calling: %w", context.DeadlineExceeded), kind: KindTimeout, retryable: true},
		{name: "plain error", err: errors.New("boom"), kind: KindError, retryable: true},
		{name: "cancelled", err: context.Canceled, kind: KindError, retryable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AsStepError(tt.err)
			if tt.err == nil {
				require.Nil(t, got)
				return
			}
			require.NotNil(t, got)
			require.Equal(t, tt.kind, got.Kind)
			require.Equal(t, tt.retryable, got.Retryable)
			if tt.same {
				require.Same(t, perm, got)
				return
			}
			require.Equal(t, tt.err.Error(), got.Message)
			require.ErrorIs(t, got, tt.err, "the original error stays in the chain")
		})
	}
}

func TestRegistry(t *testing.T) {
	ok := HandlerFunc(func(context.Context, StepInput) (json.RawMessage, error) {
		return json.RawMessage(`{"ok":true}`), nil
	})
	var r Registry // the zero value is usable
	require.NoError(t, r.Register("demo.math", ok))
	require.NoError(t, r.Register("http", ok))
	require.EqualError(t, r.Register("", ok), "registering handler: empty name")
	require.EqualError(t, r.Register("demo.math", ok), `registering handler "demo.math": already registered`)
	require.EqualError(t, r.Register("with space", ok), `registering handler "with space": name contains a space or control character`)
	require.EqualError(t, r.Register("nil", nil), `registering handler "nil": nil handler`)

	h, found := r.Lookup("demo.math")
	require.True(t, found)
	out, err := h.Handle(t.Context(), StepInput{})
	require.NoError(t, err)
	require.JSONEq(t, `{"ok":true}`, string(out))
	_, found = r.Lookup("missing")
	require.False(t, found)
	require.Equal(t, []string{"demo.math", "http"}, r.Names())

	var nilReg *Registry
	_, found = nilReg.Lookup("x")
	require.False(t, found)
	require.Empty(t, nilReg.Names())
}

func TestRegistryConcurrent(t *testing.T) {
	r := NewRegistry()
	h := HandlerFunc(func(context.Context, StepInput) (json.RawMessage, error) { return nil, nil })
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins = map[string]int{}
	)
	for i := range 64 {
		wg.Go(func() {
			name := fmt.Sprintf("h%d", i%8)
			if r.Register(name, h) == nil {
				mu.Lock()
				wins[name]++
				mu.Unlock()
			}
			r.Lookup(name)
			r.Names()
		})
	}
	wg.Wait()
	require.Len(t, r.Names(), 8)
	for name, n := range wins {
		require.Equal(t, 1, n, "%s registered once", name)
	}
}

func TestCheckResult(t *testing.T) {
	require.Nil(t, CheckResult("h", []byte(`{"a": 1}`), 0))
	require.Nil(t, CheckResult("h", []byte(`null`), 4))
	se := CheckResult("h", []byte(`"abcdef"`), 4)
	require.NotNil(t, se)
	require.Equal(t, KindResultTooLarge, se.Kind)
	require.False(t, se.Retryable)
	se = CheckResult("h", []byte(`{"a": `), 0)
	require.NotNil(t, se)
	require.Equal(t, KindInvalidResult, se.Kind)
	require.False(t, se.Retryable)
	require.Contains(t, se.Message, `{\"a\": `)
}
