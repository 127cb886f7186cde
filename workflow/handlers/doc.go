// Package handlers holds the step handlers built into Tasker, usable from a
// template without writing Go: "http" calls a downstream service and maps its
// answer onto success, retry or permanent failure; "noop" and "sleep" serve
// demos and load tests. Register adds all three to a workflow.Registry.
//
// Every handler checks its step config strictly: a missing or malformed key,
// or a key it does not know, fails the step with a permanent "bad_config"
// error that names the key, so a typo in a template surfaces on the first
// attempt instead of being silently ignored.
//
// # The http handler
//
// Config keys:
//
//	method     GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS (any case).
//	           Defaults to POST when a body is configured, else GET.
//	url        Required; http or https.
//	headers    Table of header name to string value.
//	body       Any JSON value, sent as the request body.
//	body_from  "context", "parents" or "both": send the task context, the
//	           parents' results keyed by step name, or
//	           {"context": …, "parents": …}. Exclusive with body.
//	allowed_hosts
//	           List of destinations this step may call although the
//	           destination policy denies them (see below), added to the
//	           namespace's.
//
// There is no timeout key: the step's timeout reaches the call through ctx.
//
// The url, header values and strings inside body may contain placeholders:
// {{context.a.b}} is the value at a.b in the task context and
// {{parents.step.a.b}} the value at a.b in the result of parent step "step";
// a numeric segment indexes an array, and {{context}} or {{parents.step}}
// alone is the whole value. Strings render as they are, numbers and booleans
// as their JSON text, null as the empty string, objects and arrays as
// compact JSON. In the url the rendered value is escaped for where it sits
// (path before the first "?", query after); in the scheme or authority
// (user info, host, port) it is refused with the permanent "url_refused"
// when it contains @ : / ? # [ ], a space or a control character, so a
// placeholder cannot change the scheme, host or shape of the URL. When the
// template writes its host literally, the built URL's host must be that
// host. A body string that is exactly one
// placeholder is replaced by the value itself, keeping its JSON type. A
// placeholder that does not resolve is a "bad_config" error: the context
// and parents' results never change between attempts, so retrying would
// not help.
//
// Outcomes: 2xx is success with the response JSON as the result (a body
// that is not JSON gives {"status": N, "body": "<excerpt>"}, an empty one
// {"status": N}); 429 and 503 are retryable ("http_429", "http_503") with
// the delay of their Retry-After header; other 5xx are retryable
// "http_5xx"; network errors are retryable "network", or "timeout" when the
// step's deadline passed; other 4xx are permanent "http_4xx" carrying a
// body excerpt; up to 5 redirects are followed and a final 3xx (or a sixth
// redirect) is permanent "http_3xx".
//
// Destination policy: the handler connects directly (no proxy) and checks
// every address it connects to, after DNS resolution and on every redirect:
// loopback, link-local (169.254.169.254, the cloud metadata service,
// included), private (RFC 1918, fc00::/7), shared (100.64.0.0/10),
// unspecified, broadcast and multicast addresses are refused unless
// allowed_hosts lists them, as a host name (any address it resolves to),
// host:port, an IP, an IP and port, or a CIDR (see ParseAllowedHosts). A
// redirect from https to http, or to another scheme, is refused too. Each is
// the permanent "destination_refused", naming the host, the address, the
// rule and the setting that allows it. Each allowed_hosts list has its own
// connection pool, so a connection allowed for one namespace is never
// reused for another.
//
// Circuit breakers: the guard names the template's literal host[:port]
// (or the host alone when the port is a placeholder), so values from the
// task context do not make a breaker each; only a template whose host is a
// placeholder names the built URL's host.
package handlers
