package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Handler runs one attempt of a step. It returns the step's result as JSON,
// or an error. A *StepError (possibly wrapped) says whether the failure is
// retryable and may ask for a specific retry delay; any other error is
// treated as retryable (see AsStepError). Handlers must honour ctx: it
// carries the step's timeout and the node's shutdown.
type Handler interface {
	Handle(ctx context.Context, in StepInput) (json.RawMessage, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, in StepInput) (json.RawMessage, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, in StepInput) (json.RawMessage, error) {
	return f(ctx, in)
}

// StepInput is everything a handler gets to run one attempt of a step.
// Handlers must treat it as read-only.
type StepInput struct {
	TaskUUID  uuid.UUID
	StepUUID  uuid.UUID
	Namespace string
	TaskName  string
	StepName  string
	// Attempt counts from 1 (the first attempt).
	Attempt int
	// Context is the task's input, a JSON object.
	Context json.RawMessage
	// Config is the step's config table from the template, as a JSON object.
	Config json.RawMessage
	// Parents maps each dependency's step name to its result.
	Parents map[string]json.RawMessage
	// Trace is the trace context of the task's request; zero when it came
	// without one. The handler's context carries it too (TraceFrom).
	Trace Trace
}

// Error kinds set by the engine. Handlers may use any kind they like.
const (
	// KindError is a plain error returned by a handler.
	KindError = "error"
	// KindTimeout is a handler that ran past the step's timeout.
	KindTimeout = "timeout"
	// KindPanic is a handler that panicked.
	KindPanic = "panic"
	// KindResultTooLarge is a result above the node's limit (permanent).
	KindResultTooLarge = "result_too_large"
	// KindInvalidResult is a result that is not JSON (permanent).
	KindInvalidResult = "invalid_result"
)

// StepError is a failed attempt as the engine records it on the step.
type StepError struct {
	// Kind is a short machine-readable category, e.g. "timeout", "http_429".
	Kind string
	// Message is the human-readable description.
	Message string
	// Retryable says whether another attempt may succeed. A retryable error
	// still becomes permanent once the step's attempts are exhausted.
	Retryable bool
	// HTTPStatus is the downstream HTTP status, when there was one.
	HTTPStatus int
	// RetryAfter, when positive, replaces the computed backoff (capped by
	// the backoff policy's server ceiling).
	RetryAfter time.Duration
	// Metadata is extra detail stored with the error (a stack, a body).
	Metadata map[string]any

	cause error
}

// Error returns "kind: message".
func (e *StepError) Error() string {
	if e.Kind == "" {
		return e.Message
	}
	return e.Kind + ": " + e.Message
}

// Unwrap returns the error the StepError was built from, if any, so
// errors.Is(stepErr, context.DeadlineExceeded) keeps working.
func (e *StepError) Unwrap() error { return e.cause }

// Permanent returns a non-retryable StepError. The message is formatted
// with fmt.Errorf, so %w records a cause for errors.Is and errors.As.
func Permanent(kind, format string, args ...any) *StepError {
	return newStepError(kind, false, 0, format, args...)
}

// Retryable returns a retryable StepError. A positive retryAfter asks for
// that delay before the next attempt instead of the computed backoff. The
// message is formatted with fmt.Errorf, so %w records a cause.
func Retryable(kind string, retryAfter time.Duration, format string, args ...any) *StepError {
	return newStepError(kind, true, retryAfter, format, args...)
}

func newStepError(kind string, retryable bool, retryAfter time.Duration, format string, args ...any) *StepError {
	err := fmt.Errorf(format, args...)
	return &StepError{
		Kind:       kind,
		Message:    err.Error(),
		Retryable:  retryable,
		RetryAfter: retryAfter,
		cause:      errors.Unwrap(err),
	}
}

// AsStepError turns whatever a handler returned into a StepError: nil stays
// nil; a *StepError anywhere in the chain is returned as is; a deadline
// becomes a retryable "timeout"; anything else a retryable "error".
func AsStepError(err error) *StepError {
	if err == nil {
		return nil
	}
	if se, ok := errors.AsType[*StepError](err); ok {
		return se
	}
	kind := KindError
	if errors.Is(err, context.DeadlineExceeded) {
		kind = KindTimeout
	}
	return &StepError{Kind: kind, Message: err.Error(), Retryable: true, cause: err}
}

// MaxResultBytesDefault is the default limit on a step's result.
const MaxResultBytesDefault = 1 << 20

// CheckResult is the rule for what a handler may return as a step's result:
// one JSON value of at most maxBytes bytes (0: MaxResultBytesDefault). A
// result that breaks it fails the step for good, naming the cause: running
// the handler again would only repeat its side effects to the same end.
func CheckResult(handler string, result []byte, maxBytes int) *StepError {
	if maxBytes <= 0 {
		maxBytes = MaxResultBytesDefault
	}
	if len(result) > maxBytes {
		return Permanent(KindResultTooLarge, "handler %s returned %d bytes, more than the limit of %d (queue.max_result_bytes)",
			handler, len(result), maxBytes)
	}
	if d := JSONDepth(result); d > MaxJSONDepth {
		return Permanent(KindInvalidResult, "handler %s returned a result nested %d levels deep, more than the limit of %d", handler, d, MaxJSONDepth)
	}
	if !json.Valid(result) {
		return Permanent(KindInvalidResult, "handler %s returned a result that is not JSON: %s", handler, snippet(result))
	}
	return nil
}

// snippet shows the start of a refused result.
func snippet(b []byte) string {
	const n = 64
	if len(b) > n {
		return fmt.Sprintf("%q…", b[:n])
	}
	return fmt.Sprintf("%q", b)
}
