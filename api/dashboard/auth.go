package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Who may use the dashboard, and how its actions are kept from other
// sites.
//
// With http.api_token set, the dashboard asks for the token once (the
// sign-in page) and keeps, in an HttpOnly, SameSite=Strict cookie, a value
// derived from it: the cookie proves the token was typed without being
// the token, and changing the token signs every browser out. Without a
// token the node serves the dashboard only to loopback names, as the API
// (the API's guard checks that before the dashboard sees the request).
//
// Every action is a POST that must pass Go's cross-origin protection
// (Sec-Fetch-Site, else Origin against Host: a page of another origin
// cannot post, even one on the same site, such as another port of
// localhost, which SameSite does not tell apart) and carry the form's CSRF
// token, an HMAC of the session under a key of the node's.

const (
	// sessionCookie holds the session value.
	sessionCookie = "tasker_session"
	// sessionMaxAge is how long a browser stays signed in.
	sessionMaxAge = 7 * 24 * time.Hour
	// csrfField is the form field of the CSRF token.
	csrfField = "csrf"
)

// auth checks sessions and CSRF tokens.
type auth struct {
	token string
	// session is the cookie value of a signed-in browser; empty without a
	// token.
	session string
	// csrfKey signs CSRF tokens: derived from the token, so pages stay
	// valid across a restart, or random without one.
	csrfKey []byte
	origin  *http.CrossOriginProtection
	limiter signInLimiter
}

func newAuth(token string) *auth {
	a := &auth{token: token, origin: http.NewCrossOriginProtection()}
	if token != "" {
		a.session = hex.EncodeToString(mac([]byte(token), "tasker dashboard session v1"))
		a.csrfKey = mac([]byte(token), "tasker dashboard csrf v1")
	} else {
		a.csrfKey = make([]byte, 32)
		_, _ = rand.Read(a.csrfKey)
	}
	return a
}

func mac(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// required says whether a token protects the dashboard.
func (a *auth) required() bool { return a.token != "" }

// signedIn reports whether r carries the session cookie (always, without a
// token).
func (a *auth) signedIn(r *http.Request) bool {
	if !a.required() {
		return true
	}
	c, err := r.Cookie(sessionCookie)
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(a.session)) == 1
}

// csrf is the CSRF token of r's session: that of the session cookie when
// signed in, else that of no session (the sign-in form's).
func (a *auth) csrf(r *http.Request) string {
	s := ""
	if a.signedIn(r) {
		s = a.session
	}
	return hex.EncodeToString(mac(a.csrfKey, "csrf:"+s))
}

// checkPost refuses a POST from another origin, or without the CSRF token
// of its session. The form must be parsed.
func (a *auth) checkPost(r *http.Request) error {
	if err := a.origin.Check(r); err != nil {
		return fmt.Errorf("refused: the request comes from another origin (%v)", err)
	}
	got := r.PostFormValue(csrfField)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(a.csrf(r))) != 1 {
		return fmt.Errorf("refused: the form's CSRF token is missing or not this session's; reload the page and try again")
	}
	return nil
}

// checkToken compares a typed token with the node's.
func (a *auth) checkToken(typed string) bool {
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(typed)), []byte(a.token)) == 1
}

// setSession signs the browser in.
func (a *auth) setSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: a.session, Path: "/", MaxAge: int(sessionMaxAge.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

// clearSession signs the browser out.
func clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

// localPath returns next when it is a path of this site, else "/": the
// page to return to after signing in must not lead elsewhere.
func localPath(next string) string {
	u, err := url.Parse(next)
	if err != nil || next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") ||
		strings.Contains(next, `\`) || u.Scheme != "" || u.Host != "" {
		return "/"
	}
	return next
}

// signInLimiter slows a guesser down: after signInBurst failed sign-ins
// within signInWindow, sign-ins are refused until the window has passed.
// It counts every client together, so that many addresses cannot guess
// faster than one.
type signInLimiter struct {
	mu       sync.Mutex
	windowAt time.Time
	failures int
}

const (
	signInBurst  = 10
	signInWindow = time.Minute
)

// allow reports whether a sign-in may be tried now, and if not, for how
// long it may not.
func (l *signInLimiter) allow(now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.windowAt) >= signInWindow {
		l.windowAt, l.failures = now, 0
	}
	if l.failures >= signInBurst {
		return false, l.windowAt.Add(signInWindow).Sub(now)
	}
	return true, 0
}

func (l *signInLimiter) failed() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures++
}
