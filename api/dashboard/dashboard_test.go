package dashboard_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// client is a browser-like HTTP client: it keeps cookies and does not
// follow redirects, so a test sees each answer.
type client struct {
	t    *testing.T
	base string
	http *http.Client
}

func newClient(t *testing.T, base string) *client {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &client{t: t, base: base, http: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// answer is a response read whole.
type answer struct {
	code int
	body string
	hdr  http.Header
}

func (c *client) do(method, path string, form url.Values, header map[string]string) answer {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+path, body)
	require.NoError(c.t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return answer{code: resp.StatusCode, body: string(b), hdr: resp.Header}
}

func (c *client) get(path string) answer { return c.do(http.MethodGet, path, nil, nil) }

// post sends a form as a page of the dashboard would (same origin).
func (c *client) post(path string, form url.Values) answer {
	return c.do(http.MethodPost, path, form, map[string]string{"Origin": c.base, "Sec-Fetch-Site": "same-origin"})
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf reads the CSRF token of a page.
func csrf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(page)
	require.NotNil(t, m, "the page has a CSRF token")
	return m[1]
}

// TestDashboardToken: with a token, every page asks for it and every
// action needs the session cookie, the form's CSRF token and a request
// from the dashboard's own origin; a wrong token is counted, the API keeps
// its bearer token, and a sign-in never leads off the site.
func TestDashboardToken(t *testing.T) {
	t.Parallel()
	const token = "dashboard-test-token-0123456789"
	n := startDashNode(t, append(withFlaky(), testsupport.WithConfig(func(c *config.Config) { c.HTTP.APIToken = token }))...)
	id := n.submit("flaky", "fails_once", `{}`)
	n.waitState(id, workflow.TaskStateError)
	c := newClient(t, n.base)

	prompt := c.get("/tasks/" + id.String())
	require.Equal(t, http.StatusUnauthorized, prompt.code)
	require.Contains(t, prompt.body, `name="token"`)
	require.NotContains(t, prompt.body, "fails_once", "nothing of the task before signing in")
	require.Contains(t, prompt.hdr.Get("Content-Security-Policy"), "default-src 'none'")
	require.Equal(t, "DENY", prompt.hdr.Get("X-Frame-Options"))
	css := c.get("/assets/style.css")
	require.Equal(t, http.StatusOK, css.code, "the style sheet needs no session")
	require.Contains(t, css.hdr.Get("Content-Type"), "text/css")

	loginCSRF := csrf(t, prompt.body)
	require.Equal(t, http.StatusForbidden, c.post("/login", url.Values{"token": {token}}).code, "a sign-in without the form's CSRF token")
	wrong := c.post("/login", url.Values{"token": {"nope"}, "csrf": {loginCSRF}, "next": {"/tasks"}})
	require.Equal(t, http.StatusUnauthorized, wrong.code)
	require.Contains(t, wrong.body, "not the node&#39;s API token")

	ok := c.post("/login", url.Values{"token": {token}, "csrf": {loginCSRF}, "next": {"//evil.example/x"}})
	require.Equal(t, http.StatusSeeOther, ok.code)
	require.Equal(t, "/", ok.hdr.Get("Location"), "next never leads to another site")
	cookie := ok.hdr.Get("Set-Cookie")
	require.Contains(t, cookie, "tasker_session=")
	require.Contains(t, cookie, "HttpOnly")
	require.Contains(t, cookie, "SameSite=Strict")
	require.NotContains(t, cookie, token)

	page := c.get("/tasks/" + id.String())
	require.Equal(t, http.StatusOK, page.code)
	tok := csrf(t, page.body)
	require.NotEqual(t, loginCSRF, tok, "the session has a CSRF token of its own")
	retry := "/tasks/" + id.String() + "/retry"

	anon := newClient(t, n.base)
	require.Equal(t, http.StatusUnauthorized, anon.post(retry, url.Values{"csrf": {tok}}).code, "no session cookie")
	require.Equal(t, http.StatusForbidden, c.post(retry, url.Values{}).code, "no CSRF token")
	require.Equal(t, http.StatusForbidden, c.post(retry, url.Values{"csrf": {loginCSRF}}).code, "another session's CSRF token")
	require.Equal(t, http.StatusForbidden, c.do(http.MethodPost, retry, url.Values{"csrf": {tok}},
		map[string]string{"Sec-Fetch-Site": "cross-site"}).code, "a cross-site form")
	require.Equal(t, http.StatusForbidden, c.do(http.MethodPost, retry, url.Values{"csrf": {tok}},
		map[string]string{"Origin": "http://evil.example"}).code, "another origin")
	require.Equal(t, http.StatusForbidden, c.do(http.MethodPost, retry, url.Values{"csrf": {tok}},
		map[string]string{"Sec-Fetch-Site": "same-site"}).code, "another port of the same host is another origin")
	task, err := n.node.Store().TaskGet(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, workflow.TaskStateError, task.State, "every refused action changed nothing")

	done := c.post(retry, url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, done.code, done.body)
	require.Equal(t, "/tasks/"+id.String(), done.hdr.Get("Location"))
	n.waitState(id, workflow.TaskStateComplete)
	flash := c.get("/tasks/" + id.String())
	require.Contains(t, flash.body, "retried")

	require.Equal(t, http.StatusUnauthorized, c.get("/v1/tasks").code, "the session cookie does not open the API")

	// Sign out, then guess: past the burst, sign-ins wait.
	require.Equal(t, http.StatusSeeOther, c.post("/logout", url.Values{"csrf": {tok}}).code)
	require.Equal(t, http.StatusUnauthorized, c.get("/").code)
	var last answer
	for range 11 {
		last = c.post("/login", url.Values{"token": {"guess"}, "csrf": {loginCSRF}})
	}
	require.Equal(t, http.StatusTooManyRequests, last.code)
	require.NotEmpty(t, last.hdr.Get("Retry-After"))
}

// TestDashboardWithoutToken: without a token the dashboard answers loopback
// names only, as the API does, and still protects its actions.
func TestDashboardWithoutToken(t *testing.T) {
	t.Parallel()
	n := startDashNode(t, withFlaky()...)
	id := n.submit("flaky", "fails_once", `{}`)
	n.waitState(id, workflow.TaskStateError)
	c := newClient(t, n.base)

	require.Equal(t, http.StatusForbidden, c.do(http.MethodGet, "/", nil, map[string]string{"Host": "evil.example"}).code, "DNS rebinding")
	page := c.get("/tasks/" + id.String())
	require.Equal(t, http.StatusOK, page.code)
	require.NotContains(t, page.body, `action="/logout"`, "nothing to sign out of")
	tok := csrf(t, page.body)
	retry := "/tasks/" + id.String() + "/retry"
	require.Equal(t, http.StatusForbidden, c.post(retry, url.Values{}).code, "no CSRF token")
	require.Equal(t, http.StatusForbidden, c.do(http.MethodPost, retry, url.Values{"csrf": {tok}},
		map[string]string{"Origin": "http://localhost:9999"}).code, "a page on another port")
	require.Equal(t, http.StatusSeeOther, c.post(retry, url.Values{"csrf": {tok}}).code)
	n.waitState(id, workflow.TaskStateComplete)

	refused := c.post(retry, url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, refused.code)
	require.Contains(t, c.get("/tasks/"+id.String()).body, "Refused: ", "a refusal is shown on the page")
	require.Equal(t, http.StatusNotFound, c.get("/tasks/"+uuid.NewString()).code)
	require.Equal(t, http.StatusBadRequest, c.get("/tasks/not-a-uuid").code)
	require.Equal(t, http.StatusNotFound, c.get("/nowhere").code)
}

// TestDashboardBulk: a bulk action on every task a filter matches first
// says how many it will touch, then touches those.
func TestDashboardBulk(t *testing.T) {
	t.Parallel()
	n := startDashNode(t, withFlaky()...)
	var failed []uuid.UUID
	for range 3 {
		id := n.submit("flaky", "fails_once", `{}`)
		n.waitState(id, workflow.TaskStateError)
		failed = append(failed, id)
	}
	ok := n.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 2}`)
	n.waitState(ok, workflow.TaskStateComplete)
	c := newClient(t, n.base)
	list := c.get("/tasks?namespace=flaky")
	require.Equal(t, http.StatusOK, list.code)
	tok := csrf(t, list.body)

	filter := url.Values{"csrf": {tok}, "scope": {"filter"}, "action": {"retry"}, "back": {"/tasks?namespace=flaky"}}
	confirm := c.post("/bulk", filter)
	require.Equal(t, http.StatusOK, confirm.code, confirm.body)
	require.Contains(t, confirm.body, `data-count="3"`, "the confirmation counts the tasks in error")
	require.Contains(t, confirm.body, "retry 3 task(s)")
	asOf := regexp.MustCompile(`name="as_of" value="([^"]+)"`).FindStringSubmatch(confirm.body)
	require.NotNil(t, asOf)

	// The selection: the complete task and one in error.
	sel := c.post("/bulk", url.Values{"csrf": {tok}, "scope": {"selected"}, "action": {"retry"},
		"task": {failed[0].String(), ok.String()}, "confirm": {"1"}})
	require.Equal(t, http.StatusOK, sel.code, sel.body)
	require.Contains(t, sel.body, "<strong>1</strong> task(s) retried; <strong>1</strong> refused")
	n.waitState(failed[0], workflow.TaskStateComplete)

	// Confirmed for 3 when one of them is done: the other two.
	filter.Set("confirm", "1")
	filter.Set("count", "3")
	filter.Set("as_of", htmlUnescape(asOf[1]))
	done := c.post("/bulk", filter)
	require.Equal(t, http.StatusOK, done.code, done.body)
	require.Contains(t, done.body, "<strong>2</strong> task(s) retried")
	for _, id := range failed {
		n.waitState(id, workflow.TaskStateComplete)
	}

	none := c.post("/bulk", url.Values{"csrf": {tok}, "scope": {"filter"}, "action": {"retry"}, "namespace": {"flaky"}})
	require.Contains(t, none.body, "No task matching the filter can be retried")
	bad := c.post("/bulk", url.Values{"csrf": {tok}, "scope": {"filter"}, "action": {"retry"}, "state": {"bogus"}})
	require.Equal(t, http.StatusBadRequest, bad.code)
	require.Contains(t, bad.body, `state &#34;bogus&#34; is not a task state`)
	require.Equal(t, http.StatusBadRequest, c.post("/bulk", url.Values{"csrf": {tok}, "scope": {"everything"}, "action": {"retry"}}).code)
	require.Equal(t, http.StatusBadRequest, c.post("/bulk", url.Values{"csrf": {tok}, "scope": {"filter"}, "action": {"delete"}}).code)
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&#43;", "+", "&amp;", "&", "&#34;", `"`, "&#39;", "'").Replace(s)
}

// TestDashboardPages: every page answers, the task list filters and
// searches, and the rejected requests offer their replay.
func TestDashboardPages(t *testing.T) {
	t.Parallel()
	n := startDashNode(t)
	diamond := n.submit(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 4}`)
	n.waitState(diamond, workflow.TaskStateComplete)
	_, err := n.node.Pool().Exec(t.Context(), `SELECT pgmq.send('orchestration_task_requests', '{"request_id": "not a uuid"}')`)
	require.NoError(t, err)
	c := newClient(t, n.base)
	var rejected answer
	testsupport.WaitFor(t, browserWait, "the rejected request on its page", func() (bool, error) {
		rejected = c.get("/rejected")
		return strings.Contains(rejected.body, `action="/rejected/`), nil
	})

	for _, p := range []string{"/", "/tasks", "/tasks/" + diamond.String(), "/actors", "/templates", "/rejected"} {
		a := c.get(p)
		require.Equal(t, http.StatusOK, a.code, "%s: %s", p, a.body)
		require.Equal(t, "no-store", a.hdr.Get("Cache-Control"), p)
	}
	require.Contains(t, c.get("/tasks?q="+diamond.String()[:13]).body, fmt.Sprintf(`data-task="%s"`, diamond), "found by a prefix")
	require.NotContains(t, c.get("/tasks?state=error").body, fmt.Sprintf(`data-task="%s"`, diamond))
	short := c.get("/tasks?q=abc")
	require.Equal(t, http.StatusBadRequest, short.code)
	require.Contains(t, short.body, "at least 8 hex digits")

	tok := csrf(t, rejected.body)
	msg := regexp.MustCompile(`action="/rejected/(\d+)/replay"`).FindStringSubmatch(rejected.body)[1]
	replay := c.post("/rejected/"+msg+"/replay", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, replay.code, replay.body)
	require.Contains(t, c.get("/rejected").body, "sent again as message")
	again := c.post("/rejected/"+msg+"/replay", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, again.code)
	require.Contains(t, c.get("/rejected").body, "Refused: ")
}

// TestDashboardGaveUp: a namespace given up after a crash loop is
// announced at the top of the actor tree and of the overview, and its row
// says so.
func TestDashboardGaveUp(t *testing.T) {
	t.Parallel()
	faults := testsupport.NewFaults()
	n := startDashNode(t, testsupport.WithFaults(faults), testsupport.WithConfig(func(c *config.Config) {
		c.Supervision = config.Supervision{MaxRestarts: 1, Window: config.Duration(time.Minute)}
	}))
	faults.Panic(testsupport.OpRead(queue.NamespaceQueue(testsupport.TreeNamespace)), "injected crash loop", 0)
	c := newClient(t, n.base)
	var tree answer
	testsupport.WaitFor(t, browserWait, "the actor tree to announce the namespace given up", func() (bool, error) {
		tree = c.get("/actors")
		return strings.Contains(tree.body, `id="gave-up"`), nil
	})
	require.Contains(t, tree.body, "root/ns-"+testsupport.TreeNamespace)
	require.Contains(t, tree.body, `data-status="gave_up"`)
	overview := c.get("/")
	require.Contains(t, overview.body, `class="alarm"`)
	require.Contains(t, overview.body, fmt.Sprintf(`<tr data-namespace=%q class="gave-up">`, testsupport.TreeNamespace))
	require.Contains(t, overview.body, `id="health-status">unhealthy`)
}
