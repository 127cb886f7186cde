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
	"sync"
	"time"
	"unicode"
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
	// KindURLRefused is permanent: a placeholder value would change the
	// URL's scheme or authority, or the built URL's host is not the
	// template's literal host.
	KindURLRefused = "url_refused"
	// KindDestinationRefused is permanent: the destination (or a redirect's)
	// is in a denied range and not in allowed_hosts, or a redirect goes from
	// https to http or to another scheme.
	KindDestinationRefused = "destination_refused"
)

// MaxBodyBytesDefault is the default limit on a response body.
const MaxBodyBytesDefault int64 = 1 << 20

// excerptBytes bounds the part of a response body kept in an error or in the
// result of a 2xx that is not JSON.
const excerptBytes = 512

// maxRedirects is how many redirects are followed.
const maxRedirects = 5

// ErrHostOpen is what a HostGuard's refusal must match (errors.Is): the
// host's circuit breaker is open and the call was not made.
var ErrHostOpen = errors.New("circuit breaker open for host")

// errTooManyRedirects marks a redirect chain longer than maxRedirects, told
// apart from a network failure.
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
// A destination the policy refuses says nothing about the host's health: fn
// returns nil, as for a 4xx.
type HostGuard interface {
	Run(host string, fn func() error) error
}

// HTTPOptions configure the http handler. The zero value is usable.
type HTTPOptions struct {
	// Transport is the base of the transports that send the requests (TLS
	// settings, pools, timeouts): it is cloned once per allowed_hosts list,
	// with its dialer replaced by the destination policy's and no proxy (a
	// proxy would hide the destination from the policy). Defaults to a clone
	// of http.DefaultTransport. There is no client timeout: the step's
	// timeout applies through ctx.
	Transport *http.Transport
	// AllowedHosts gives a namespace's allowed_hosts entries (see
	// ParseAllowedHosts); they add to the step config's own. Defaults to
	// none.
	AllowedHosts func(namespace string) []string
	// Guard, when set, wraps every call; the host given is the template's
	// host[:port] when the template names it literally, else the URL's,
	// lower-cased. Defaults to none.
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
	base := opts.Transport
	if base == nil {
		base = http.DefaultTransport.(*http.Transport)
	}
	h := &httpHandler{
		base:    base,
		allowed: opts.AllowedHosts,
		clients: map[string]*http.Client{},
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

type httpHandler struct {
	base    *http.Transport
	allowed func(namespace string) []string
	guard   HostGuard
	now     func() time.Time
	maxBody int64

	// clients holds one client per allowed_hosts list, so a connection
	// dialled under one list is never reused under another.
	clientsMu sync.Mutex
	clients   map[string]*http.Client
}

// client returns the client applying the policy of allowed.
func (h *httpHandler) client(allowed *AllowedHosts) *http.Client {
	key := allowed.key()
	h.clientsMu.Lock()
	defer h.clientsMu.Unlock()
	if c, ok := h.clients[key]; ok {
		return c
	}
	t := h.base.Clone()
	t.Proxy = nil
	t.Dial = nil    //nolint:staticcheck // cleared so DialContext, the policy's, is the only dialer
	t.DialTLS = nil //nolint:staticcheck // as Dial
	t.DialTLSContext = nil
	t.DialContext = allowed.dialer()
	c := &http.Client{Transport: t, CheckRedirect: allowed.checkRedirect}
	h.clients[key] = c
	return c
}

// call is one prepared request.
type call struct {
	method string
	url    *url.URL
	header http.Header
	host   string // Host header override, if configured
	body   []byte // nil: no body
	// guardHost names the host to its guard: the template's literal
	// host[:port], or the URL's when the template's host is a placeholder.
	guardHost string
	allowed   *AllowedHosts // the step config's allowed_hosts
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
	if h.allowed != nil {
		ns, err := ParseAllowedHosts(h.allowed(in.Namespace))
		if err != nil {
			return nil, workflow.Permanent(KindBadConfig, "namespaces.%s.allowed_hosts%v", in.Namespace, err)
		}
		c.allowed = c.allowed.union(ns)
	}
	client := h.client(c.allowed)
	if h.guard == nil {
		res, serr, _ := h.do(ctx, client, in, c)
		return res, nilIfNone(serr)
	}

	var (
		res    json.RawMessage
		serr   *workflow.StepError
		called bool
	)
	gerr := h.guard.Run(c.guardHost, func() error {
		called = true
		var hostFailed bool
		res, serr, hostFailed = h.do(ctx, client, in, c)
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
func (h *httpHandler) do(ctx context.Context, client *http.Client, in workflow.StepInput, c *call) (res json.RawMessage, serr *workflow.StepError, hostFailed bool) {
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
	// The task request's trace context goes on to the service called, so
	// its spans join the caller's trace.
	if tr := in.Trace; !tr.IsZero() {
		req.Header.Set("Traceparent", tr.Parent)
		req.Header.Del("Tracestate")
		if tr.State != "" {
			req.Header.Set("Tracestate", tr.State)
		}
	}

	resp, err := client.Do(req)
	if err != nil {
		return transportError(ctx, in, c, "calling", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, h.maxBody+1))
	if err != nil {
		return transportError(ctx, in, c, "reading response of", err)
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
// about the host; a refused destination or redirect is permanent and says
// nothing about the host either.
func transportError(ctx context.Context, in workflow.StepInput, c *call, doing string, err error) (json.RawMessage, *workflow.StepError, bool) {
	// url.Error repeats the full URL, query included; keep only its cause.
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	if de, ok := errors.AsType[*DestinationError](err); ok {
		return nil, workflow.Permanent(KindDestinationRefused,
			"%s %s: %w; to call it, list %q in allowed_hosts of [namespaces.%s] in the configuration or of the step's config",
			doing, c.target(), de, de.suggestion(), in.Namespace), false
	}
	if re, ok := errors.AsType[*RedirectError](err); ok {
		return nil, workflow.Permanent(KindDestinationRefused, "%s %s: %w", doing, c.target(), re), false
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
	out, err := workflow.MarshalJSON(map[string]any{"status": code, "body": ex})
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
	cfg, err := configKeys(in.Config, "method", "url", "headers", "body", "body_from", "allowed_hosts")
	if err != nil {
		return nil, err
	}
	r := workflow.NewPlaceholders(in)
	c := &call{header: make(http.Header)}

	// body / body_from
	rawBody, hasBody := cfg["body"]
	rawFrom, hasFrom := cfg["body_from"]
	switch {
	case hasBody && hasFrom:
		return nil, bad("body and body_from are exclusive: set one")
	case hasBody:
		v, err := workflow.DecodeJSON(rawBody)
		if err != nil {
			return nil, bad("body: %v", err)
		}
		v, err = r.ExpandValue(v, "body")
		if err != nil {
			return nil, bad("%v", err)
		}
		if c.body, err = workflow.MarshalJSON(v); err != nil {
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
		if c.body, err = workflow.MarshalJSON(v); err != nil {
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
	expanded, err := r.Expand(tmpl, escapeURL)
	if err != nil {
		if ue, ok := errors.AsType[*urlValueError](err); ok {
			return nil, workflow.Permanent(KindURLRefused, "url: %v", ue)
		}
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
	c.guardHost = strings.ToLower(u.Host)
	if th := templateHost(tmpl); th.literal {
		if !strings.EqualFold(u.Hostname(), th.name()) {
			return nil, workflow.Permanent(KindURLRefused, "url: the built URL's host %q is not the template's host %q", u.Hostname(), th.name())
		}
		c.guardHost = strings.ToLower(th.hostport())
	}

	// allowed_hosts
	if raw, ok := cfg["allowed_hosts"]; ok {
		var entries []string
		if err := json.Unmarshal(raw, &entries); err != nil {
			return nil, bad(`allowed_hosts must be a list of strings such as ["127.0.0.1", "internal.example:8080", "10.0.0.0/8"], got %s`, raw)
		}
		if c.allowed, err = ParseAllowedHosts(entries); err != nil {
			return nil, bad("allowed_hosts%v", err)
		}
	}

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
			v, err := r.Expand(v, nil)
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

// escapeURL escapes a placeholder value for its place in the URL: in the
// scheme or authority it is refused if it holds a character that would
// change their shape (see urlValueError); as a path segment before the
// first "?" and a query component after it, it is escaped. The URL built so
// far holds only checked or escaped values, so a "://", "/", "?" or "#" in
// it is the template's own.
func escapeURL(built, placeholder, value string) (string, error) {
	if inAuthority(built) {
		for i, r := range value {
			if strings.ContainsRune("@:/?#[]", r) || unicode.IsSpace(r) || unicode.IsControl(r) {
				return "", &urlValueError{placeholder: placeholder, char: r, at: i}
			}
		}
		return value, nil
	}
	if strings.Contains(built, "?") {
		return url.QueryEscape(value), nil
	}
	return url.PathEscape(value), nil
}

// inAuthority reports whether a value appended to built lands in the URL's
// scheme or authority: before "://", or after it and before the path, query
// or fragment.
func inAuthority(built string) bool {
	_, rest, found := strings.Cut(built, "://")
	return !found || !strings.ContainsAny(rest, "/?#")
}

// urlValueError is a placeholder value refused in the URL's scheme or
// authority. The value itself is not shown: it may be a credential.
type urlValueError struct {
	placeholder string
	char        rune
	at          int
}

func (e *urlValueError) Error() string {
	return fmt.Sprintf("placeholder %s is in the scheme or authority of the URL and its value contains %q at byte %d; "+
		"values there may not contain @ : / ? # [ ], spaces or control characters", e.placeholder, string(e.char), e.at)
}

// urlTemplateHost is where a URL template names its host.
type urlTemplateHost struct {
	host    string // as written, brackets of an IPv6 literal included
	port    string // literal port, "" when absent or a placeholder
	literal bool   // the host holds no placeholder
}

// name is the host without brackets and with escapes decoded, as
// url.URL.Hostname returns it.
func (t urlTemplateHost) name() string {
	h := strings.TrimSuffix(strings.TrimPrefix(t.host, "["), "]")
	if u, err := url.PathUnescape(h); err == nil {
		return u
	}
	return h
}

func (t urlTemplateHost) hostport() string {
	if t.port == "" {
		return t.host
	}
	return t.host + ":" + t.port
}

// templateHost locates the host of a URL template the way url.Parse reads
// an authority (after "://", up to the first "/", "?" or "#", after the last
// "@", before the port), each placeholder an opaque block.
func templateHost(tmpl string) urlTemplateHost {
	mask := []byte(tmpl)
	for i := 0; i < len(tmpl); {
		start := strings.Index(tmpl[i:], "{{")
		if start < 0 {
			break
		}
		start += i
		end := len(tmpl)
		if e := strings.Index(tmpl[start:], "}}"); e >= 0 {
			end = start + e + 2
		}
		for j := start; j < end; j++ {
			mask[j] = 0
		}
		i = end
	}
	m := string(mask)
	k := strings.Index(m, "://")
	if k < 0 {
		return urlTemplateHost{}
	}
	a := k + 3
	end := len(m)
	if e := strings.IndexAny(m[a:], "/?#"); e >= 0 {
		end = a + e
	}
	if at := strings.LastIndexByte(m[a:end], '@'); at >= 0 {
		a += at + 1
	}
	hp := m[a:end]
	hostEnd := len(hp)
	if strings.HasPrefix(hp, "[") {
		if r := strings.IndexByte(hp, ']'); r >= 0 {
			hostEnd = r + 1
		}
	} else if c := strings.IndexByte(hp, ':'); c >= 0 {
		hostEnd = c
	}
	t := urlTemplateHost{host: tmpl[a : a+hostEnd], literal: !strings.ContainsRune(hp[:hostEnd], 0)}
	if port, ok := strings.CutPrefix(hp[hostEnd:], ":"); ok && port != "" && !strings.ContainsRune(port, 0) {
		t.port = tmpl[a+hostEnd+1 : end]
	}
	return t
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
