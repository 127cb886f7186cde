package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tasker-run/tasker/backoff"
	"github.com/tasker-run/tasker/workflow"
)

// Error kinds of the http handler, besides KindBadConfig and
// workflow.KindTimeout (the step's deadline passed during the call).
const (
	KindHTTP429          = "http_429"           // retryable, honours Retry-After
	KindHTTP503          = "http_503"           // retryable, honours Retry-After
	KindHTTP5xx          = "http_5xx"           // retryable
	KindHTTP4xx          = "http_4xx"           // permanent, with a body excerpt
	KindHTTP3xx          = "http_3xx"           // permanent: a redirect not followed to its end
	KindHTTPStatus       = "http_status"        // permanent: a status outside 200–599
	KindNetwork          = "network"            // retryable: refused, reset, DNS…
	KindCanceled         = "canceled"           // retryable: the node is shutting down
	KindCircuitOpen      = "circuit_open"       // retryable: the host's breaker refused the call
	KindResponseTooLarge = "response_too_large" // permanent: a 2xx body above MaxBodyBytes
)

// MaxBodyBytesDefault is the default limit on a response body.
const MaxBodyBytesDefault int64 = 1 << 20

// excerptBytes bounds the part of a response body kept in an error or in the
// result of a 2xx that is not JSON.
const excerptBytes = 512

// maxRedirects is how many redirects the default policy follows, as
// net/http's own default does.
const maxRedirects = 10

// ErrHostOpen is what a HostGuard's refusal must match (errors.Is): the
// host's circuit breaker is open and the call was not made.
var ErrHostOpen = errors.New("circuit breaker open for host")

// errTooManyRedirects marks a redirect chain longer than maxRedirects, which
// net/http would report as an untyped error indistinguishable from a
// network failure.
var errTooManyRedirects = errors.New("too many redirects")

// HostGuard guards calls to a downstream host, typically with one circuit
// breaker per host. Run calls fn, or refuses without calling it by returning
// an error that matches ErrHostOpen. fn's error is a failure the guard should
// count: a network error, a timeout, a 429 or a 5xx; a 4xx or a 2xx is a
// success for the host even when it fails the step. If the refusal error has
// a method RetryAfter() time.Duration returning a positive delay (how long
// the breaker stays open), the step is retried after that delay. Run must
// call fn at most once, on the calling goroutine, and return after it.
// Redirects are followed inside fn, so they count against the first host.
type HostGuard interface {
	Run(host string, fn func() error) error
}

// HTTPOptions configure the http handler. The zero value is usable.
type HTTPOptions struct {
	// Client sends the requests. Its CheckRedirect, when nil, is replaced by
	// one following up to 10 redirects like net/http's default, but whose
	// failure is told apart from a network error. Defaults to a client on
	// http.DefaultTransport with no timeout: the step's timeout applies
	// through ctx.
	Client *http.Client
	// Guard, when set, wraps every call; the host given is the URL's
	// host[:port], lower-cased. Defaults to none.
	Guard HostGuard
	// Now is the clock used to read Retry-After dates. Defaults to time.Now.
	Now func() time.Time
	// MaxBodyBytes limits how much of a response is read; a 2xx body above
	// it fails the step. Defaults to 1 MiB.
	MaxBodyBytes int64
}

// NewHTTP returns the http handler; see the package documentation for its
// config and how responses map onto step outcomes.
func NewHTTP(opts HTTPOptions) workflow.Handler {
	client := &http.Client{}
	if opts.Client != nil {
		c := *opts.Client // a shallow copy shares the transport and its connections
		client = &c
	}
	if client.CheckRedirect == nil {
		client.CheckRedirect = checkRedirect
	}
	h := &httpHandler{
		client:  client,
		guard:   opts.Guard,
		now:     opts.Now,
		maxBody: opts.MaxBodyBytes,
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.maxBody <= 0 {
		h.maxBody = MaxBodyBytesDefault
	}
	return h
}

func checkRedirect(_ *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects: %w", len(via), errTooManyRedirects)
	}
	return nil
}

type httpHandler struct {
	client  *http.Client
	guard   HostGuard
	now     func() time.Time
	maxBody int64
}

// call is one prepared request.
type call struct {
	method string
	url    *url.URL
	header http.Header
	host   string // Host header override, if configured
	body   []byte // nil: no body
}

// target names the call in messages without its query, fragment or user
// info, which may hold credentials.
func (c *call) target() string {
	u := url.URL{Scheme: c.url.Scheme, Host: c.url.Host, Path: c.url.Path, RawPath: c.url.RawPath}
	return c.method + " " + u.String()
}

// Handle runs one attempt: builds the request from the config, calls the
// host through the guard and maps the outcome.
func (h *httpHandler) Handle(ctx context.Context, in workflow.StepInput) (json.RawMessage, error) {
	c, err := buildCall(in)
	if err != nil {
		return nil, err
	}
	if h.guard == nil {
		res, serr, _ := h.do(ctx, in, c)
		return res, nilIfNone(serr)
	}

	var (
		res    json.RawMessage
		serr   *workflow.StepError
		called bool
	)
	gerr := h.guard.Run(strings.ToLower(c.url.Host), func() error {
		called = true
		var hostFailed bool
		res, serr, hostFailed = h.do(ctx, in, c)
		if hostFailed {
			return serr
		}
		return nil
	})
	switch {
	case called:
		return res, nilIfNone(serr)
	case errors.Is(gerr, ErrHostOpen):
		var delay time.Duration
		if ra, ok := errors.AsType[interface {
			error
			RetryAfter() time.Duration
		}](gerr); ok {
			delay = max(ra.RetryAfter(), 0)
		}
		return nil, workflow.Retryable(KindCircuitOpen, delay, "%s: not called: %w", c.target(), gerr)
	case gerr != nil:
		return nil, workflow.Retryable(workflow.KindError, 0, "%s: host guard: %w", c.target(), gerr)
	default:
		return nil, workflow.Retryable(workflow.KindError, 0, "%s: host guard neither made the call nor refused it", c.target())
	}
}

// nilIfNone avoids returning a typed nil *StepError as a non-nil error.
func nilIfNone(e *workflow.StepError) error {
	if e == nil {
		return nil
	}
	return e
}

// do sends the request and maps the response. hostFailed says whether the
// outcome counts against the host for its guard.
func (h *httpHandler) do(ctx context.Context, in workflow.StepInput, c *call) (res json.RawMessage, serr *workflow.StepError, hostFailed bool) {
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.url.String(), body)
	if err != nil {
		return nil, workflow.Permanent(KindBadConfig, "url: building request: %v", err), false
	}
	req.Header = c.header.Clone()
	if c.host != "" {
		req.Host = c.host
	}
	// Set last so a template cannot spoof them.
	req.Header.Set("X-Tasker-Task", in.TaskUUID.String())
	req.Header.Set("X-Tasker-Step", in.StepUUID.String())
	req.Header.Set("X-Tasker-Attempt", strconv.Itoa(in.Attempt))

	resp, err := h.client.Do(req)
	if err != nil {
		return transportError(ctx, c, "calling", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, h.maxBody+1))
	if err != nil {
		return transportError(ctx, c, "reading response of", err)
	}
	tooLarge := int64(len(data)) > h.maxBody
	if tooLarge {
		data = data[:h.maxBody]
	}

	code := resp.StatusCode
	status := fmt.Sprintf("%d %s", code, http.StatusText(code))
	switch {
	case code >= 200 && code < 300:
		if tooLarge {
			return nil, workflow.Permanent(KindResponseTooLarge, "%s: %s: response body is larger than %d bytes",
				c.target(), status, h.maxBody), false
		}
		return successResult(code, data), nil, false
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		var delay time.Duration
		if d, ok := backoff.ParseRetryAfter(resp.Header.Get("Retry-After"), h.now()); ok {
			delay = d
		}
		kind := KindHTTP429
		if code == http.StatusServiceUnavailable {
			kind = KindHTTP503
		}
		e := workflow.Retryable(kind, delay, "%s: %s", c.target(), status)
		return nil, withResponse(e, code, data), true
	case code >= 500 && code < 600:
		e := workflow.Retryable(KindHTTP5xx, 0, "%s: %s", c.target(), status)
		return nil, withResponse(e, code, data), true
	case code >= 400 && code < 500:
		e := workflow.Permanent(KindHTTP4xx, "%s: %s", c.target(), status)
		if ex, _ := excerpt(data); ex != "" {
			e.Message += ": " + ex
		}
		return nil, withResponse(e, code, data), false
	case code >= 300 && code < 400:
		e := workflow.Permanent(KindHTTP3xx, "%s: %s (redirect not followed, Location %q)",
			c.target(), status, resp.Header.Get("Location"))
		return nil, withResponse(e, code, data), false
	default:
		e := workflow.Permanent(KindHTTPStatus, "%s: unexpected status %s", c.target(), status)
		return nil, withResponse(e, code, data), false
	}
}

// transportError maps a failure to get or read a response. A deadline is the
// step's timeout; a cancellation is the node stopping, which says nothing
// about the host.
func transportError(ctx context.Context, c *call, doing string, err error) (json.RawMessage, *workflow.StepError, bool) {
	// url.Error repeats the full URL, query included; keep only its cause.
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	switch {
	case errors.Is(err, errTooManyRedirects):
		return nil, workflow.Permanent(KindHTTP3xx, "%s %s: %w", doing, c.target(), err), false
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return nil, workflow.Retryable(KindCanceled, 0, "%s %s: %w", doing, c.target(), err), false
	case errors.Is(err, context.DeadlineExceeded):
		return nil, workflow.Retryable(workflow.KindTimeout, 0, "%s %s: %w", doing, c.target(), err), true
	default:
		return nil, workflow.Retryable(KindNetwork, 0, "%s %s: %w", doing, c.target(), err), true
	}
}

// successResult is the step result of a 2xx response.
func successResult(code int, data []byte) json.RawMessage {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return json.RawMessage(`{"status":` + strconv.Itoa(code) + `}`)
	}
	if json.Valid(trimmed) {
		return json.RawMessage(bytes.Clone(trimmed))
	}
	ex, _ := excerpt(data)
	out, err := marshalJSON(map[string]any{"status": code, "body": ex})
	if err != nil { // cannot happen: an int and a valid UTF-8 string
		return json.RawMessage(`{"status":` + strconv.Itoa(code) + `}`)
	}
	return out
}

// withResponse records the status and a body excerpt on a failed call.
func withResponse(e *workflow.StepError, code int, data []byte) *workflow.StepError {
	e.HTTPStatus = code
	if ex, truncated := excerpt(data); ex != "" {
		e.Metadata = map[string]any{"body": ex}
		if truncated {
			e.Metadata["body_truncated"] = true
		}
	}
	return e
}

// excerpt is the start of a body as valid UTF-8 text of at most
// excerptBytes bytes, surrounding space trimmed.
func excerpt(data []byte) (string, bool) {
	data = bytes.TrimSpace(data)
	truncated := len(data) > excerptBytes
	if truncated {
		data = data[:excerptBytes]
		// Drop a rune cut in half rather than turn it into U+FFFD.
		for i := 0; i < utf8.UTFMax && len(data) > 0; i++ {
			if r, size := utf8.DecodeLastRune(data); r != utf8.RuneError || size != 1 {
				break
			}
			data = data[:len(data)-1]
		}
	}
	s := strings.ToValidUTF8(string(data), "\uFFFD")
	for len(s) > excerptBytes { // replacement characters can grow it
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s, truncated
}

// methods are the request methods a template may use.
var methods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// buildCall reads the step config and expands its placeholders. Every error
// is a permanent KindBadConfig naming the key.
func buildCall(in workflow.StepInput) (*call, error) {
	bad := func(format string, args ...any) error {
		return workflow.Permanent(KindBadConfig, format, args...)
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(in.Config, &probe) == nil && probe["timeout"] != nil {
		return nil, bad("timeout is not an http config key: set the step's timeout, which applies to the call")
	}
	cfg, err := configKeys(in.Config, "method", "url", "headers", "body", "body_from")
	if err != nil {
		return nil, err
	}
	r := newResolver(in)
	c := &call{header: make(http.Header)}

	// body / body_from
	rawBody, hasBody := cfg["body"]
	rawFrom, hasFrom := cfg["body_from"]
	switch {
	case hasBody && hasFrom:
		return nil, bad("body and body_from are exclusive: set one")
	case hasBody:
		v, err := decodeJSON(rawBody)
		if err != nil {
			return nil, bad("body: %v", err)
		}
		v, err = r.expandValue(v, "body")
		if err != nil {
			return nil, bad("%v", err)
		}
		if c.body, err = marshalJSON(v); err != nil {
			return nil, bad("body: encoding: %v", err)
		}
	case hasFrom:
		var from string
		if err := json.Unmarshal(rawFrom, &from); err != nil {
			return nil, bad(`body_from must be "context", "parents" or "both", got %s`, rawFrom)
		}
		ctxDoc := orEmptyObject(in.Context)
		parents := make(map[string]json.RawMessage, len(in.Parents))
		for name, res := range in.Parents {
			parents[name] = orNull(res)
		}
		var v any
		switch from {
		case "context":
			v = ctxDoc
		case "parents":
			v = parents
		case "both":
			v = map[string]any{"context": ctxDoc, "parents": parents}
		default:
			return nil, bad(`body_from must be "context", "parents" or "both", got %q`, from)
		}
		if c.body, err = marshalJSON(v); err != nil {
			return nil, bad("body_from: encoding %s: %v", from, err)
		}
	}

	// method
	c.method = http.MethodGet
	if c.body != nil {
		c.method = http.MethodPost
	}
	if raw, ok := cfg["method"]; ok {
		var m string
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, bad("method must be a string, got %s", raw)
		}
		c.method = strings.ToUpper(m)
		if !slices.Contains(methods, c.method) {
			return nil, bad("method %q is not one of %s", m, strings.Join(methods, ", "))
		}
	}

	// url
	raw, ok := cfg["url"]
	if !ok {
		return nil, bad("url is required")
	}
	var tmpl string
	if err := json.Unmarshal(raw, &tmpl); err != nil {
		return nil, bad("url must be a string, got %s", raw)
	}
	if tmpl == "" {
		return nil, bad("url is required")
	}
	expanded, err := r.expand(tmpl, escapeURL)
	if err != nil {
		return nil, bad("url: %v", err)
	}
	u, err := url.Parse(expanded)
	if err != nil {
		return nil, bad("url: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, bad("url %q must be http or https", tmpl)
	}
	if u.Host == "" {
		return nil, bad("url %q has no host", tmpl)
	}
	c.url = u

	// headers
	if c.body != nil {
		c.header.Set("Content-Type", "application/json")
	}
	c.header.Set("Accept", "application/json")
	if raw, ok := cfg["headers"]; ok {
		var hs map[string]json.RawMessage
		if err := json.Unmarshal(raw, &hs); err != nil {
			return nil, bad("headers must be a table of strings, got %s", raw)
		}
		for _, name := range slices.Sorted(maps.Keys(hs)) {
			var v string
			if err := json.Unmarshal(hs[name], &v); err != nil {
				return nil, bad("headers.%s must be a string, got %s", name, hs[name])
			}
			if !validHeaderName(name) {
				return nil, bad("headers.%s: %q is not a valid header name", name, name)
			}
			v, err := r.expand(v, nil)
			if err != nil {
				return nil, bad("headers.%s: %v", name, err)
			}
			if !validHeaderValue(v) {
				return nil, bad("headers.%s: value contains a control character", name)
			}
			if strings.EqualFold(name, "Host") {
				c.host = v
				continue
			}
			c.header.Set(name, v)
		}
	}
	return c, nil
}

// escapeURL escapes a placeholder value for its place in the URL: as a path
// segment before the first "?", as a query component after it. The URL built
// so far holds only escaped values, so a "?" in it is the template's own.
func escapeURL(built, value string) string {
	if strings.Contains(built, "?") {
		return url.QueryEscape(value)
	}
	return url.PathEscape(value)
}

func orEmptyObject(raw json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage(`{}`)
	}
	return raw
}

func orNull(raw json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage(`null`)
	}
	return raw
}

// validHeaderName reports whether name is an RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue rejects control characters other than tab, which would
// let a value from the task context inject headers.
func validHeaderValue(v string) bool {
	for _, c := range []byte(v) {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
