package dashboard_test

// Browser tests: a real headless Chromium, driven by chromedp, against a
// node started in the test. They need Debian's chromium package (.ci/run
// installs it); without it they skip, saying so, except under CI, where
// they must run.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// chromium is the browser binary: TASKER_CHROMIUM, else the first of the
// usual names on PATH.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TASKER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "browser tests need Chromium: apt-get install chromium (or set TASKER_CHROMIUM to a Chromium or Chrome binary)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// tab is a browser tab of a test, on a browser of its own.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
}

// newTab starts a headless Chromium for the test, at width × height.
func newTab(t *testing.T, base string, width, height int) *tab {
	t.Helper()
	opts := append([]chromedp.ExecAllocatorOption{}, chromedp.DefaultExecAllocatorOptions[:]...)
	opts = append(opts, chromedp.ExecPath(chromium(t)), chromedp.WindowSize(width, height),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("hide-scrollbars", true))
	if os.Geteuid() == 0 {
		// Chromium's sandbox refuses to run as root.
		opts = append(opts, chromedp.NoSandbox)
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height))), "starting Chromium")
	return &tab{t: t, ctx: ctx, base: base}
}

// do runs actions within browserWait.
func (b *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	require.NoError(b.t, chromedp.Do(ctx, actions...), what)
}

// open navigates to path and returns the answer's status.
func (b *tab) open(path string) int {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(b.base+path))
	require.NoError(b.t, err, "opening %s", path)
	return int(resp.Status)
}

// submit clicks a form's button and returns the status of the page it
// leads to (after redirects).
func (b *tab) submit(sel string) int {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	require.NoError(b.t, err, "submitting %s", sel)
	return int(resp.Status)
}

// eval evaluates a JavaScript expression.
func eval[T any](b *tab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(b.t, err, expr)
	return v
}

// waitJS waits until a JavaScript condition holds on the page.
func (b *tab) waitJS(what, cond string) {
	b.t.Helper()
	testsupport.WaitFor(b.t, browserWait, what, func() (bool, error) {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("Boolean("+cond+")"))
		return ok, err
	})
}

// screenshot saves the whole page as name.png in the artefact folder:
// TASKER_SCREENSHOTS, else one under the system's temporary folder.
func (b *tab) screenshot(name string) { b.t.Helper(); b.shoot(name, chromedp.FullScreenshot(100)) }

// viewShot saves what the window shows.
func (b *tab) viewShot(name string) { b.t.Helper(); b.shoot(name, chromedp.CaptureScreenshot()) }

func (b *tab) shoot(name string, shot chromedp.Action[[]byte]) {
	b.t.Helper()
	dir := os.Getenv("TASKER_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "tasker-dashboard-screenshots")
	}
	require.NoError(b.t, os.MkdirAll(dir, 0o755))
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	png, err := chromedp.Run(ctx, shot)
	require.NoError(b.t, err)
	path := filepath.Join(dir, name+".png")
	require.NoError(b.t, os.WriteFile(path, png, 0o644))
	b.t.Logf("screenshot: %s", path)
}

// fitsWidth checks that the page does not scroll sideways: wide tables and
// drawings scroll inside their own boxes.
func (b *tab) fitsWidth(page string) {
	b.t.Helper()
	overflow := eval[float64](b, "document.documentElement.scrollWidth - window.innerWidth")
	require.LessOrEqual(b.t, overflow, 0.0, "%s is wider than the window", page)
}

// TestBrowserOverviewTasksAndDiamond: the overview lists every namespace; a
// diamond task appears in the list and its page draws four nodes and four
// timeline bars; the pages fit a 375 px screen; the keyboard reaches the
// graph's nodes; the theme switches. It saves the screenshots the README
// shows.
func TestBrowserOverviewTasksAndDiamond(t *testing.T) {
	t.Parallel()
	chromium(t)
	n := startDashNode(t)
	mixed := n.submit(testsupport.MixedDAGNamespace, testsupport.MixedDAGName, `{"even_number": 2}`)
	diamond := n.submit(testsupport.DiamondNamespace, testsupport.DiamondName, `{"even_number": 4}`)
	n.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 3}`)
	n.waitState(diamond, workflow.TaskStateComplete)
	n.waitState(mixed, workflow.TaskStateComplete)
	b := newTab(t, n.base, 1280, 900)

	require.Equal(t, http.StatusOK, b.open("/"))
	b.do("the namespaces table", chromedp.WaitVisible(chromedp.CSS("#namespaces")))
	for _, ns := range []string{testsupport.LinearNamespace, testsupport.DiamondNamespace, testsupport.TreeNamespace,
		testsupport.MixedDAGNamespace, testsupport.FulfillmentNamespace} {
		require.True(t, eval[bool](b, fmt.Sprintf(`document.querySelector('#namespaces tr[data-namespace=%q]') !== null`, ns)),
			"the overview shows namespace %s", ns)
	}
	b.waitJS("the live toggle to show", `!document.getElementById('live-toggle').hidden`)
	b.screenshot("overview")

	require.Equal(t, http.StatusOK, b.open("/tasks"))
	row := fmt.Sprintf(`#task-list tr[data-task=%q]`, diamond)
	b.do("the diamond task in the list", chromedp.WaitVisible(chromedp.CSS(row)))
	b.screenshot("tasks")
	require.Equal(t, http.StatusOK, b.submit(row+" a"))
	b.do("the graph", chromedp.WaitVisible(chromedp.CSS("svg.dag")))
	require.Equal(t, 4.0, eval[float64](b, `document.querySelectorAll('svg.dag a.node').length`), "four nodes")
	require.Equal(t, 4.0, eval[float64](b, `document.querySelectorAll('svg.dag path.edge').length`), "four edges")
	require.Equal(t, 4.0, eval[float64](b, `document.querySelectorAll('svg.gantt g.attempt').length`), "four bars")
	require.Equal(t, 4.0, eval[float64](b, `document.querySelectorAll('svg.dag a.node.st-complete').length`))

	// The keyboard reaches a node of the graph, which leads to its step.
	require.True(t, eval[bool](b, `(document.activeElement && document.activeElement.blur(), true)`))
	reached := false
	for range 60 {
		b.do("tab", chromedp.KeyEvent("\t"))
		if eval[bool](b, `document.activeElement.matches('svg.dag a.node')`) {
			reached = true
			break
		}
	}
	require.True(t, reached, "Tab reaches the graph's nodes")

	// Zoom.
	width := eval[float64](b, `+document.querySelector('svg.dag').getAttribute('width')`)
	b.do("zoom in", chromedp.Click(chromedp.CSS(`button[data-zoom="in"]`)))
	require.Greater(t, eval[float64](b, `+document.querySelector('svg.dag').getAttribute('width')`), width)
	b.do("zoom out", chromedp.Click(chromedp.CSS(`button[data-zoom="out"]`)), chromedp.Click(chromedp.CSS(`button[data-zoom="out"]`)))
	require.Less(t, eval[float64](b, `+document.querySelector('svg.dag').getAttribute('width')`), width)

	// Dark and light.
	before := eval[string](b, `getComputedStyle(document.body).backgroundColor`)
	b.do("switch the theme", chromedp.Click(chromedp.ID("theme-toggle")))
	require.Equal(t, "dark", eval[string](b, `document.documentElement.dataset.theme`))
	require.NotEqual(t, before, eval[string](b, `getComputedStyle(document.body).backgroundColor`))
	b.viewShot("task-diamond-dark")
	b.do("switch the theme back", chromedp.Click(chromedp.ID("theme-toggle")))
	require.Equal(t, "light", eval[string](b, `document.documentElement.dataset.theme`))

	require.Equal(t, http.StatusOK, b.open("/tasks/"+mixed.String()))
	b.do("the mixed DAG", chromedp.WaitVisible(chromedp.CSS("svg.dag")))
	require.Equal(t, 7.0, eval[float64](b, `document.querySelectorAll('svg.dag a.node').length`))
	b.screenshot("task-mixed-dag")

	require.Equal(t, http.StatusOK, b.open("/templates"))
	b.do("the templates", chromedp.WaitVisible(chromedp.CSS("section.template svg.dag")))
	b.viewShot("templates")

	// A phone's width: nothing scrolls sideways but the boxes meant to.
	phone := newTab(t, n.base, 375, 812)
	for _, p := range []string{"/", "/tasks", "/tasks/" + mixed.String(), "/actors", "/templates", "/rejected"} {
		require.Equal(t, http.StatusOK, phone.open(p))
		phone.fitsWidth(p)
	}
	phone.open("/tasks/" + mixed.String())
	phone.screenshot("task-mixed-dag-375")
	phone.open("/")
	phone.screenshot("overview-375")
}

// TestBrowserFailedStepRetried: a task with a failed step shows that node
// in the error colour and the branch it holds up; Retry on the page
// completes it, and the page follows it live.
func TestBrowserFailedStepRetried(t *testing.T) {
	t.Parallel()
	chromium(t)
	n := startDashNode(t, withFlaky()...)
	id := n.submit("flaky", "fails_once", `{}`)
	n.waitState(id, workflow.TaskStateError)
	b := newTab(t, n.base, 1280, 900)

	require.Equal(t, http.StatusOK, b.open("/tasks/"+id.String()))
	b.do("the graph", chromedp.WaitVisible(chromedp.CSS("svg.dag")))
	errorColour := eval[string](b, `(() => { const p = document.createElement('span');
		p.style.color = 'var(--st-error)'; document.body.append(p);
		const c = getComputedStyle(p).color; p.remove(); return c; })()`)
	fill := func(step string) string {
		return eval[string](b, fmt.Sprintf(`getComputedStyle(document.querySelector('svg.dag a.node[data-step=%q] rect')).fill`, step))
	}
	require.Equal(t, errorColour, fill("shaky"), "the failed node is in the error colour")
	for _, step := range []string{"start", "steady", "finish"} {
		require.NotEqual(t, errorColour, fill(step), "step %s is not in the error colour", step)
	}
	require.True(t, eval[bool](b, `document.querySelector('svg.dag a.node[data-step="finish"]').classList.contains('blocked')`),
		"the step after the failure is marked blocked")
	require.Equal(t, 1.0, eval[float64](b, `document.querySelectorAll('svg.dag path.edge-failed').length`), "the failed branch")
	require.Contains(t, eval[string](b, `document.querySelector('#step-shaky').textContent`), "fails on its first attempt")
	b.screenshot("task-failed")

	require.Equal(t, http.StatusOK, b.submit("#retry-task"), "retry from the page")
	require.Contains(t, eval[string](b, `document.querySelector('.flash').textContent`), "retried")
	b.waitJS("the page to show the task complete, live", `document.querySelector('svg.dag a.node[data-step="finish"]').dataset.state === 'complete'`)
	n.waitState(id, workflow.TaskStateComplete)
	require.Equal(t, 0.0, eval[float64](b, `document.querySelectorAll('svg.dag a.node.st-error').length`))
	require.Equal(t, 5.0, eval[float64](b, `document.querySelectorAll('svg.gantt g.attempt').length`), "shaky ran twice")
}

// TestBrowserActorTreeShowsRestart: the actor tree page, left open, shows a
// worker's restart after a panic is injected into it.
func TestBrowserActorTreeShowsRestart(t *testing.T) {
	t.Parallel()
	chromium(t)
	faults := testsupport.NewFaults()
	n := startDashNode(t, testsupport.WithFaults(faults))
	b := newTab(t, n.base, 1280, 900)
	require.Equal(t, http.StatusOK, b.open("/actors"))
	b.do("the tree", chromedp.WaitVisible(chromedp.CSS("#tree")))
	require.Equal(t, "0", eval[string](b, `document.getElementById('restart-total').textContent`))
	require.Positive(t, eval[float64](b, `document.querySelectorAll('#tree li[data-kind="worker"]').length`))

	faults.Panic(testsupport.OpStepStart, "injected worker panic", 1)
	id := n.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 2}`)
	b.waitJS("the page to show a worker restarted", `document.querySelector('#tree li[data-kind="worker"][data-restarts="1"]')`)
	require.Contains(t, eval[string](b, `document.querySelector('#tree li[data-kind="worker"][data-restarts="1"] .failure').textContent`),
		"injected worker panic")
	require.Equal(t, "1", eval[string](b, `document.getElementById('restart-total').textContent`))
	n.waitState(id, workflow.TaskStateComplete)
	b.screenshot("actors")

	// The updates pause, and resume.
	b.do("pause", chromedp.Click(chromedp.ID("live-toggle")))
	require.Equal(t, "false", eval[string](b, `document.getElementById('live-toggle').getAttribute('aria-pressed')`))
	require.Equal(t, "updates paused", eval[string](b, `document.getElementById('live-status').textContent`))
	b.do("resume", chromedp.Click(chromedp.ID("live-toggle")))
	b.waitJS("an update after resuming", `document.getElementById('live-status').textContent.startsWith('updated')`)
}

// TestBrowserToken: with a token, the dashboard asks for it, keeps the
// session in an HttpOnly, SameSite=Strict cookie, and refuses an action
// made without the cookie.
func TestBrowserToken(t *testing.T) {
	t.Parallel()
	chromium(t)
	const token = "browser-test-token-0123456789"
	n := startDashNode(t, append(withFlaky(), testsupport.WithConfig(func(c *config.Config) { c.HTTP.APIToken = token }))...)
	id := n.submit("flaky", "fails_once", `{}`)
	n.waitState(id, workflow.TaskStateError)
	b := newTab(t, n.base, 1280, 900)

	require.Equal(t, http.StatusUnauthorized, b.open("/tasks/"+id.String()), "the token prompt")
	b.do("the prompt", chromedp.WaitVisible(chromedp.ID("token")))
	b.do("a wrong token", chromedp.SendKeys(chromedp.ID("token"), "not-the-token"))
	require.Equal(t, http.StatusUnauthorized, b.submit("#login-form button"))
	require.Contains(t, eval[string](b, `document.querySelector('.problem').textContent`), "not the node's API token")

	b.do("the token", chromedp.SendKeys(chromedp.ID("token"), token))
	require.Equal(t, http.StatusOK, b.submit("#login-form button"), "signed in, back on the task")
	b.do("the task page", chromedp.WaitVisible(chromedp.ID("retry-task")))
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{n.base}})
	require.NoError(t, err)
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "tasker_session" {
			session = c
		}
	}
	require.NotNil(t, session, "the session cookie")
	require.True(t, session.HTTPOnly)
	require.Equal(t, network.CookieSameSiteStrict, session.SameSite)
	require.NotContains(t, session.Value, token, "the cookie is not the token itself")
	require.False(t, eval[bool](b, `document.cookie.includes('tasker_session')`), "scripts cannot read it")

	// The same click without the cookie is refused, and changes nothing.
	_, err = chromedp.Call(ctx, network.DeleteCookies, network.DeleteCookiesParams{Name: "tasker_session", URL: n.base})
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, b.submit("#retry-task"))
	require.Contains(t, eval[string](b, `document.querySelector('.problem').textContent`), "sign in first")
	task, err := n.node.Store().TaskGet(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, workflow.TaskStateError, task.State, "the refused retry changed nothing")
	require.Equal(t, strconv.Itoa(http.StatusUnauthorized), strconv.Itoa(b.open("/")), "signed out again")
	require.True(t, strings.Contains(eval[string](b, `document.title`), "Sign in"))
}
