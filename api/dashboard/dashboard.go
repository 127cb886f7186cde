// Package dashboard is the node's web dashboard: server-rendered pages of
// the node's health and namespaces, the tasks (with filters, cursor pages
// and bulk actions), a task's DAG, timeline, steps and history, the live
// actor tree, the templates and the rejected requests, with the operator
// actions as forms. It reads and acts through api.Operator, as the HTTP API
// and the CLI do, so the three accept the same input and refuse with the
// same reasons.
//
// Everything it serves is in the binary (go:embed): the HTML templates, one
// style sheet and a small script, which polls the page for its live parts
// (pausable), zooms the DAG and switches between dark and light. Without
// the script every page and action still works; nothing is loaded from
// elsewhere.
package dashboard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/store"
)

// Deps are what the dashboard reads of the node that mounts it.
type Deps struct {
	// NodeID and Mode describe the node.
	NodeID string
	Mode   string
	// Namespaces are the node's namespaces.
	Namespaces []string
	// Operator reads and acts on tasks, templates and rejected requests.
	Operator api.Operator
	// Health computes the node's health; detail adds queue depths.
	Health func(ctx context.Context, detail bool) api.Health
	// Actors is a snapshot of the node's actor tree.
	Actors func() []actors.Node
	// Activity is the node's record of its last hour. Optional.
	Activity *Activity
	// Token, when set, must be typed once to use the dashboard.
	Token string
	// Logger records refused actions and internal errors.
	Logger *slog.Logger
	// Now is the clock of ages on the pages. Defaults to time.Now.
	Now func() time.Time
}

//go:embed assets templates
var files embed.FS

// Handler serves the dashboard.
type Handler struct {
	d      Deps
	auth   *auth
	mux    *http.ServeMux
	pages  map[string]*template.Template
	assets map[string]asset
}

// asset is an embedded static file with its digest, which names its
// version in the pages' links so it can be cached for good.
type asset struct {
	body        []byte
	contentType string
	version     string
}

// New returns the dashboard of a node.
func New(d Deps) *Handler {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{d: d, auth: newAuth(d.Token), mux: http.NewServeMux(), assets: loadAssets()}
	h.pages = h.loadPages()
	h.routes()
	return h
}

func loadAssets() map[string]asset {
	out := map[string]asset{}
	entries, err := fs.ReadDir(files, "assets")
	if err != nil {
		panic(err)
	}
	types := map[string]string{".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
	for _, e := range entries {
		b, err := files.ReadFile("assets/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		out[e.Name()] = asset{body: b, contentType: types[path.Ext(e.Name())], version: hex.EncodeToString(sum[:6])}
	}
	return out
}

// ServeHTTP adds the headers every answer carries, then routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) routes() {
	m := h.mux
	m.HandleFunc("GET /assets/{name}", h.serveAsset)
	m.HandleFunc("GET /login", h.signInPage)
	m.HandleFunc("POST /login", h.signIn)
	m.HandleFunc("POST /logout", h.post(h.signOut))
	m.HandleFunc("GET /{$}", h.get(h.overview))
	m.HandleFunc("GET /tasks", h.get(h.tasks))
	m.HandleFunc("GET /tasks/{id}", h.get(h.task))
	m.HandleFunc("POST /tasks/{id}/{action}", h.post(h.taskAction))
	m.HandleFunc("POST /bulk", h.post(h.bulk))
	m.HandleFunc("GET /actors", h.get(h.actorTree))
	m.HandleFunc("GET /templates", h.get(h.templates))
	m.HandleFunc("GET /rejected", h.get(h.rejected))
	m.HandleFunc("POST /rejected/{msg_id}/replay", h.post(h.replay))
	m.HandleFunc("GET /schedules", h.get(h.schedules))
	m.HandleFunc("POST /schedules/{name}/{action}", h.post(h.scheduleAction))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.failPage(w, r, http.StatusNotFound, fmt.Sprintf("No page %s %s.", r.Method, r.URL.Path))
	})
}

func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.contentType)
	if r.URL.Query().Get("v") == a.version {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	_, _ = w.Write(a.body)
}

// assetURL is the link of an asset, with its version.
func (h *Handler) assetURL(name string) string {
	return "/assets/" + name + "?v=" + h.assets[name].version
}

// page is what a page handler returns: the template to render, its data,
// and its status (200 when zero).
type page struct {
	name   string
	title  string
	nav    string
	status int
	// live marks a page whose live parts the script refreshes.
	live bool
	data any
}

// view is what every page template sees.
type view struct {
	Title    string
	Nav      string
	NodeID   string
	Mode     string
	CSRF     string
	Flash    *flash
	Live     bool
	SignedIn bool
	Token    bool
	CSS, JS  string
	ThemeJS  string
	Now      time.Time
	Data     any
}

// get serves a page to a signed-in browser, and the sign-in page to any
// other (401).
func (h *Handler) get(fn func(r *http.Request) (page, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !h.auth.signedIn(r) {
			h.render(w, r, page{name: "login", title: "Sign in", status: http.StatusUnauthorized, data: signInData{Next: r.URL.RequestURI()}})
			return
		}
		p, err := fn(r)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		h.render(w, r, p)
	}
}

// post runs an action for a signed-in browser whose form passes the
// cross-origin and CSRF checks; anything else is refused and logged.
func (h *Handler) post(fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			h.failPage(w, r, http.StatusBadRequest, "The form could not be read: "+err.Error())
			return
		}
		if !h.auth.signedIn(r) {
			h.refuse(w, r, http.StatusUnauthorized, "refused: sign in first (the dashboard's session cookie is missing or out of date)")
			return
		}
		if err := h.auth.checkPost(r); err != nil {
			h.refuse(w, r, http.StatusForbidden, err.Error())
			return
		}
		if err := fn(w, r); err != nil {
			h.fail(w, r, err)
		}
	}
}

// maxFormBytes bounds a form, as the API bounds an action's body.
const maxFormBytes = 1 << 20

// refuse answers a refused POST, which the node's log records.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h.d.Logger.Warn("dashboard action refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr,
		"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"), "reason", msg)
	h.failPage(w, r, code, msg)
}

// fail answers an error of a page or an action: the operator's input
// errors and refusals with their message, anything else as internal.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var invalid *api.InvalidError
	switch {
	case errors.As(err, &invalid):
		h.failPage(w, r, http.StatusBadRequest, err.Error())
	case errors.Is(err, store.ErrNotFound):
		h.failPage(w, r, http.StatusNotFound, err.Error())
	case api.Refusal(err):
		h.failPage(w, r, http.StatusConflict, err.Error())
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
	default:
		h.d.Logger.Error("dashboard request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		h.failPage(w, r, http.StatusInternalServerError, "Internal error; the node's log has the details.")
	}
}

func (h *Handler) failPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h.render(w, r, page{name: "error", title: http.StatusText(code), status: code, data: msg})
}

// render writes a page: into a buffer first, so a template error is a 500
// rather than half a page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, p page) {
	t, ok := h.pages[p.name]
	if !ok {
		panic("dashboard: no page template " + p.name)
	}
	v := view{
		Title: p.title, Nav: p.nav, NodeID: h.d.NodeID, Mode: h.d.Mode, CSRF: h.auth.csrf(r),
		Live: p.live, SignedIn: h.auth.signedIn(r), Token: h.auth.required(),
		CSS: h.assetURL("style.css"), JS: h.assetURL("app.js"), ThemeJS: h.assetURL("theme.js"), Now: h.d.Now(), Data: p.data,
	}
	if r.Header.Get("X-Tasker-Live") == "" {
		v.Flash = takeFlash(w, r)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		h.d.Logger.Error("dashboard page failed to render", "page", p.name, "error", err)
		http.Error(w, "internal error rendering the page; the node's log has the details", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(cmpStatus(p.status))
	_, _ = w.Write(buf.Bytes())
}

func cmpStatus(code int) int {
	if code == 0 {
		return http.StatusOK
	}
	return code
}

// flash is a message an action leaves for the page it leads to.
type flash struct {
	OK   bool
	Text string
}

const flashCookie = "tasker_flash"

// setFlash leaves a message for the next page.
func setFlash(w http.ResponseWriter, r *http.Request, ok bool, text string) {
	kind := "error"
	if ok {
		kind = "ok"
	}
	http.SetCookie(w, &http.Cookie{
		Name: flashCookie, Value: base64.RawURLEncoding.EncodeToString([]byte(kind + "|" + text)), Path: "/", MaxAge: 60,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

// takeFlash reads and clears the message left by an action.
func takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return nil
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	b, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return nil
	}
	kind, text, ok := strings.Cut(string(b), "|")
	if !ok {
		return nil
	}
	return &flash{OK: kind == "ok", Text: text}
}

// redirect sends the browser to a page after an action (303: a GET).
func redirect(w http.ResponseWriter, r *http.Request, to string) {
	http.Redirect(w, r, localPath(to), http.StatusSeeOther)
}
