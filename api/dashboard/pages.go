package dashboard

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// signInData is the sign-in page's.
type signInData struct {
	Next    string
	Problem string
}

func (h *Handler) signInPage(w http.ResponseWriter, r *http.Request) {
	if !h.auth.required() || h.auth.signedIn(r) {
		redirect(w, r, r.URL.Query().Get("next"))
		return
	}
	h.render(w, r, page{name: "login", title: "Sign in", data: signInData{Next: localPath(r.URL.Query().Get("next"))}})
}

// signIn checks the typed token and, when it is the node's, keeps the
// session in the cookie.
func (h *Handler) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.failPage(w, r, http.StatusBadRequest, "The form could not be read: "+err.Error())
		return
	}
	next := localPath(r.PostFormValue("next"))
	if !h.auth.required() {
		redirect(w, r, next)
		return
	}
	if err := h.auth.checkPost(r); err != nil {
		h.refuse(w, r, http.StatusForbidden, err.Error())
		return
	}
	if ok, wait := h.auth.limiter.allow(h.d.Now()); !ok {
		h.d.Logger.Warn("dashboard sign-in refused: too many failures", "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		h.render(w, r, page{name: "login", title: "Sign in", status: http.StatusTooManyRequests,
			data: signInData{Next: next, Problem: fmt.Sprintf("Too many wrong tokens; try again in %s.", ageText(wait))}})
		return
	}
	if !h.auth.checkToken(r.PostFormValue("token")) {
		h.auth.limiter.failed()
		h.d.Logger.Warn("dashboard sign-in refused: wrong token", "remote", r.RemoteAddr)
		h.render(w, r, page{name: "login", title: "Sign in", status: http.StatusUnauthorized,
			data: signInData{Next: next, Problem: "That is not the node's API token (http.api_token)."}})
		return
	}
	h.auth.setSession(w, r)
	redirect(w, r, next)
}

func (h *Handler) signOut(w http.ResponseWriter, r *http.Request) error {
	clearSession(w, r)
	redirect(w, r, "/login")
	return nil
}

// --- Overview ---

type overviewData struct {
	Health        api.Health
	GaveUp        []string
	Namespaces    []namespaceRow
	Orchestration []api.QueueDepth
	Breakers      []breakerRow
	Counts        []store.TaskStateCount
	CountsCap     int
	Rejected      []store.RejectedRequest
	Steps         barChart
	Latency       lineChart
	Since         time.Time
	Recording     bool
	CountsError   string
}

type namespaceRow struct {
	Name      string
	Queue     *api.QueueDepth
	Spark     barChart
	Completed int64
	Failed    int64
	Breaker   *breakerRow
	GaveUp    bool
}

type breakerRow struct {
	Name      string
	State     string
	ChangedAt *time.Time
}

func (h *Handler) overview(r *http.Request) (page, error) {
	ctx := r.Context()
	hl := h.d.Health(ctx, true)
	d := overviewData{Health: hl, GaveUp: hl.GaveUp, CountsCap: store.TaskStateCountsCap, Recording: h.d.Activity != nil}
	var snap ActivitySnapshot
	if h.d.Activity != nil {
		snap = h.d.Activity.Snapshot()
		d.Since = snap.Since
	}
	queues := map[string]api.QueueDepth{}
	for _, q := range hl.Queues {
		queues[q.Queue] = q
	}
	for _, name := range []string{queue.TaskRequestsQueue, queue.StepResultsQueue} {
		if q, ok := queues[name]; ok {
			d.Orchestration = append(d.Orchestration, q)
		}
	}
	breakers := map[string]*breakerRow{}
	for _, n := range slices.Sorted(maps.Keys(hl.Breakers)) {
		b := &breakerRow{Name: n, State: hl.Breakers[n]}
		if c, ok := snap.Breakers[n]; ok {
			b.ChangedAt = &c.At
		}
		breakers[n] = b
		d.Breakers = append(d.Breakers, *b)
	}
	gaveUp := map[string]bool{}
	var walk func(ns []actors.Node)
	walk = func(ns []actors.Node) {
		for _, a := range ns {
			if a.Kind == actors.KindNamespace && a.Status == actors.StatusGaveUp {
				gaveUp[a.Namespace] = true
			}
			walk(a.Children)
		}
	}
	walk(h.d.Actors())
	for _, ns := range h.d.Namespaces {
		row := namespaceRow{Name: ns, Breaker: breakers[ns], GaveUp: gaveUp[ns]}
		if q, ok := queues[queue.NamespaceQueue(ns)]; ok {
			row.Queue = &q
		}
		act := snap.Namespaces[ns]
		if act.Completed == nil {
			act.Completed = make([]int64, sparkMinutes)
		}
		for i := range act.Completed {
			row.Completed += act.Completed[i]
			if act.Failed != nil {
				row.Failed += act.Failed[i]
			}
		}
		row.Spark = sparkline(act.Completed, snap.Minutes[len(snap.Minutes)-sparkMinutes:], ns)
		d.Namespaces = append(d.Namespaces, row)
	}
	var err error
	if d.Counts, err = h.d.Operator.TaskCounts(ctx); err != nil {
		// The database may be what the overview is read to diagnose.
		d.CountsError = err.Error()
	}
	if rej, err := h.d.Operator.Rejected(ctx, 5); err == nil {
		d.Rejected = rej.Rejected
	}
	if len(snap.Minutes) > 0 {
		d.Steps, d.Latency = activityCharts(snap.Minutes)
	}
	return page{name: "overview", title: "Overview", nav: "overview", live: true, data: d}, nil
}

// barChart is a bar chart drawn in SVG user units.
type barChart struct {
	W, H int
	Bars []chartBar
	// Max is the value of the full height, as printed.
	Max string
}

type chartBar struct {
	X, Y, W, H float64
	Title      string
}

// lineChart has two lines (p50, p99) as SVG polyline points, with a dot
// at each point (a single minute draws no line).
type lineChart struct {
	W, H     int
	P50, P99 string
	Dots     []chartDot
	Max      string
	Empty    bool
}

type chartDot struct {
	X, Y  float64
	Class string
	Title string
}

// sparkline draws a namespace's completions per minute.
func sparkline(counts []int64, minutes []MinuteStats, ns string) barChart {
	const w, h = 90, 22
	c := barChart{W: w, H: h}
	peak := max(int64(1), slices.Max(counts))
	bw := float64(w) / float64(len(counts))
	for i, n := range counts {
		bh := float64(h-2) * float64(n) / float64(peak)
		at := ""
		if i < len(minutes) {
			at = minutes[i].At.Local().Format("15:04")
		}
		c.Bars = append(c.Bars, chartBar{X: float64(i) * bw, Y: float64(h) - 1 - bh, W: bw - 1, H: max(bh, 0.5),
			Title: fmt.Sprintf("%s %s: %d completed", ns, at, n)})
	}
	c.Max = thousands(peak)
	return c
}

// activityCharts draws steps/s per minute as bars, and the p50 and p99 of
// creation to completion as lines.
func activityCharts(minutes []MinuteStats) (barChart, lineChart) {
	const w, h = 600, 110
	steps := barChart{W: w, H: h}
	var peak float64
	var peakLat time.Duration
	for _, m := range minutes {
		peak = max(peak, m.StepsPerSecond)
		peakLat = max(peakLat, m.P99)
	}
	bw := float64(w) / float64(len(minutes))
	for i, m := range minutes {
		bh := 0.0
		if peak > 0 {
			bh = float64(h-4) * m.StepsPerSecond / peak
		}
		steps.Bars = append(steps.Bars, chartBar{X: float64(i) * bw, Y: float64(h) - bh, W: bw - 1, H: max(bh, 0.5),
			Title: fmt.Sprintf("%s: %.1f steps/s", m.At.Local().Format("15:04"), m.StepsPerSecond)})
	}
	steps.Max = strconv.FormatFloat(peak, 'f', 1, 64) + " steps/s"
	lat := lineChart{W: w, H: h, Empty: peakLat == 0, Max: roundDuration(peakLat)}
	var p50, p99 []string
	for i, m := range minutes {
		if m.Completed == 0 || peakLat == 0 {
			continue
		}
		x := float64(i)*bw + bw/2
		y50 := float64(h) - 2 - float64(h-6)*float64(m.P50)/float64(peakLat)
		y99 := float64(h) - 2 - float64(h-6)*float64(m.P99)/float64(peakLat)
		p50 = append(p50, fmt.Sprintf("%.1f,%.1f", x, y50))
		p99 = append(p99, fmt.Sprintf("%.1f,%.1f", x, y99))
		at := m.At.Local().Format("15:04")
		lat.Dots = append(lat.Dots,
			chartDot{X: x, Y: y99, Class: "p99", Title: fmt.Sprintf("%s: p99 %s (%d tasks)", at, roundDuration(m.P99), m.Completed)},
			chartDot{X: x, Y: y50, Class: "p50", Title: fmt.Sprintf("%s: p50 %s (%d tasks)", at, roundDuration(m.P50), m.Completed)})
	}
	lat.P50, lat.P99 = strings.Join(p50, " "), strings.Join(p99, " ")
	return steps, lat
}

// --- Tasks ---

type tasksData struct {
	Filter     api.TaskFilter
	Limit      int
	Tasks      []store.Task
	Problem    string
	States     []workflow.TaskState
	Namespaces []string
	Names      []string
	// NextURL is the older page; FirstURL the newest, when not on it.
	NextURL, FirstURL string
	// Back is this page's URL, to return to after a bulk action.
	Back        string
	BulkActions []string
	BulkLimit   int
}

// taskFilter reads the list's filter from a query or a form.
func taskFilter(v url.Values) api.TaskFilter {
	return api.TaskFilter{
		State: v.Get("state"), Namespace: v.Get("namespace"), Name: v.Get("name"),
		Since: v.Get("since"), Search: strings.TrimSpace(v.Get("q")), Before: v.Get("before"),
	}
}

func (h *Handler) tasks(r *http.Request) (page, error) {
	q := r.URL.Query()
	f := taskFilter(q)
	d := tasksData{Filter: f, States: workflow.AllTaskStates(), Back: r.URL.RequestURI(),
		BulkActions: []string{api.BulkRetry, api.BulkCancel}, BulkLimit: api.BulkLimit}
	p := page{name: "tasks", title: "Tasks", nav: "tasks", data: &d}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			d.Problem = fmt.Sprintf("limit %q is not a number", s)
			p.status = http.StatusBadRequest
			return p, nil
		}
		f.Limit = n
	}
	d.Limit = cmp.Or(f.Limit, api.ListLimitDefault)
	if tp, err := h.d.Operator.Templates(r.Context()); err == nil {
		seen := map[string]bool{}
		for _, t := range tp.Templates {
			if !seen["ns:"+t.Namespace] {
				d.Namespaces, seen["ns:"+t.Namespace] = append(d.Namespaces, t.Namespace), true
			}
			if !seen["n:"+t.Name] {
				d.Names, seen["n:"+t.Name] = append(d.Names, t.Name), true
			}
		}
		slices.Sort(d.Names)
	}
	page, err := h.d.Operator.Tasks(r.Context(), f)
	if err != nil {
		var invalid *api.InvalidError
		if errors.As(err, &invalid) {
			d.Problem = invalid.Msg
			p.status = http.StatusBadRequest
			return p, nil
		}
		return p, err
	}
	d.Tasks = page.Tasks
	if page.NextCursor != "" {
		nq := cloneValues(q)
		nq.Set("before", page.NextCursor)
		d.NextURL = "/tasks?" + nq.Encode()
	}
	if f.Before != "" {
		fq := cloneValues(q)
		fq.Del("before")
		d.FirstURL = "/tasks?" + fq.Encode()
	}
	return p, nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// --- Task detail ---

type taskData struct {
	Task            store.TaskDetail
	DAG             dagDrawing
	Timeline        timeline
	Steps           []stepRow
	Context         string
	ContextNote     string
	CanRetry        bool
	CanCancel       bool
	CanResolve      bool
	TaskTransitions []store.Transition
	StepTransitions []store.Transition
	// Hidden counts the step transitions left out of a long history.
	Hidden int
	Took   string
}

type stepRow struct {
	store.Step
	Result     string
	ResultNote string
	Err        *stepError
	Waited     string
	CanResolve bool
	Blocked    bool
}

// stepError is steps.error as the page shows it.
type stepError struct {
	Kind         string         `json:"kind"`
	Message      string         `json:"message"`
	Retryable    bool           `json:"retryable"`
	HTTPStatus   int            `json:"http_status"`
	RetryAfterMS int64          `json:"retry_after_ms"`
	Attempt      int            `json:"attempt"`
	Metadata     map[string]any `json:"metadata"`
	Stack        string         `json:"-"`
	Extra        string         `json:"-"`
}

// shownTransitions bounds the step history drawn on a page.
const shownTransitions = 500

func (h *Handler) task(r *http.Request) (page, error) {
	id, err := api.ParseTaskID(r.PathValue("id"))
	if err != nil {
		return page{}, err
	}
	t, err := h.d.Operator.Task(r.Context(), id)
	if err != nil {
		return page{}, err
	}
	now := h.d.Now()
	d := taskData{
		Task: t, TaskTransitions: t.TaskTransitions, StepTransitions: t.StepTransitions,
		CanRetry:   slices.Contains(workflow.TaskStatesAllowing(workflow.TaskEventRetry), t.State),
		CanCancel:  slices.Contains(workflow.TaskStatesAllowing(workflow.TaskEventCancel), t.State),
		CanResolve: slices.Contains(workflow.TaskStatesAllowing(workflow.TaskEventResolve), t.State),
	}
	if n := len(d.StepTransitions); n > shownTransitions {
		d.Hidden = n - shownTransitions
		d.StepTransitions = d.StepTransitions[n-shownTransitions:]
	}
	if t.FinishedAt != nil {
		d.Took = roundDuration(t.FinishedAt.Sub(t.CreatedAt))
	}
	d.Context, d.ContextNote = prettyJSON(t.Context)
	steps := make([]dagStep, len(t.Steps))
	resolvable := workflow.StepStatesAllowing(workflow.StepEventResolve)
	for i, st := range t.Steps {
		steps[i] = dagStep{Name: st.Name, DependsOn: st.DependsOn, State: st.State, Href: "#step-" + st.Name,
			Detail: strings.ReplaceAll(string(st.State), "_", " "), Note: st.ThrottledReason}
		if st.Attempts > 1 {
			steps[i].Detail += fmt.Sprintf(" · %d attempts", st.Attempts)
		}
		row := stepRow{Step: st, CanResolve: slices.Contains(resolvable, st.State)}
		row.Result, row.ResultNote = prettyJSON(st.Result)
		if len(st.Error) > 0 {
			var e stepError
			if json.Unmarshal(st.Error, &e) == nil {
				if s, ok := e.Metadata["stack"].(string); ok {
					e.Stack = s
					delete(e.Metadata, "stack")
				}
				if len(e.Metadata) > 0 {
					b, _ := json.Marshal(e.Metadata)
					e.Extra, _ = prettyJSON(b)
				}
			} else {
				e.Message = string(st.Error)
			}
			row.Err = &e
		}
		if st.EnqueuedAt != nil && st.LastAttemptedAt != nil && !st.LastAttemptedAt.Before(*st.EnqueuedAt) {
			row.Waited = roundDuration(st.LastAttemptedAt.Sub(*st.EnqueuedAt))
		}
		d.Steps = append(d.Steps, row)
	}
	d.DAG = layoutDAG(steps)
	for i, n := range d.DAG.Nodes {
		for j := range d.Steps {
			if d.Steps[j].Name == n.Name {
				d.Steps[j].Blocked = strings.Contains(d.DAG.Nodes[i].Class, "blocked")
			}
		}
	}
	d.Timeline = layoutTimeline(t, now)
	return page{name: "task", title: "Task " + t.TaskUUID.String(), nav: "tasks", live: true, data: d}, nil
}

// taskAction runs retry, cancel or resolve (of the task, or of one step
// with a result) from the task's page, and returns to it.
func (h *Handler) taskAction(w http.ResponseWriter, r *http.Request) error {
	id, err := api.ParseTaskID(r.PathValue("id"))
	if err != nil {
		return err
	}
	var res api.ActionResult
	op := h.d.Operator
	switch action := r.PathValue("action"); action {
	case "retry":
		res, err = op.Retry(r.Context(), id)
	case "cancel":
		res, err = op.Cancel(r.Context(), id, strings.TrimSpace(r.PostFormValue("reason")))
	case "resolve":
		var result json.RawMessage
		if s := strings.TrimSpace(r.PostFormValue("result")); s != "" {
			result = json.RawMessage(s)
		}
		res, err = op.Resolve(r.Context(), id, r.PostFormValue("step"), result)
	default:
		return fmt.Errorf("%w: no action %q (retry, cancel or resolve)", store.ErrNotFound, action)
	}
	back := "/tasks/" + id.String()
	var invalid *api.InvalidError
	switch {
	case err == nil:
		msg := fmt.Sprintf("Task %s %s; it is now %s.", res.TaskUUID, api.PastTense(res.Action), res.State)
		if res.Step != "" {
			msg = fmt.Sprintf("Step %s of task %s resolved; the task is now %s.", res.Step, res.TaskUUID, res.State)
		}
		if res.Enqueued != nil {
			msg += fmt.Sprintf(" %d step(s) sent back to work.", *res.Enqueued)
		}
		setFlash(w, r, true, msg)
	case errors.As(err, &invalid), api.Refusal(err):
		setFlash(w, r, false, "Refused: "+err.Error())
	default:
		return err
	}
	redirect(w, r, back)
	return nil
}

// --- Bulk actions ---

type bulkData struct {
	Action string
	// Scope is "selected" or "filter".
	Scope  string
	Filter api.TaskFilter
	Plan   api.BulkPlan
	// Shown are the first tasks of the plan, listed.
	Shown  []uuid.UUID
	Result *api.BulkResult
	Back   string
	Limit  int
}

// bulk shows what a bulk action would touch and asks to confirm it; the
// confirmation (confirm=1, with the count confirmed and the plan's time)
// runs it on that many at most.
func (h *Handler) bulk(w http.ResponseWriter, r *http.Request) error {
	f := r.PostForm
	action, scope := f.Get("action"), f.Get("scope")
	d := bulkData{Action: action, Scope: scope, Filter: taskFilter(f), Back: localPath(f.Get("back")), Limit: api.BulkLimit}
	d.Filter.Before = ""
	target := api.BulkTarget{}
	switch scope {
	case "selected":
		for _, s := range f["task"] {
			id, err := api.ParseTaskID(s)
			if err != nil {
				return err
			}
			target.Tasks = append(target.Tasks, id)
		}
		if len(target.Tasks) == 0 {
			setFlash(w, r, false, "No task was selected: tick the tasks to "+action+" first.")
			redirect(w, r, d.Back)
			return nil
		}
	case "filter":
		target.Filter = d.Filter
	default:
		return &api.InvalidError{Msg: fmt.Sprintf("scope %q is not selected or filter", scope)}
	}
	confirm := f.Get("confirm") == "1"
	if confirm && scope == "filter" {
		at, err := time.Parse(time.RFC3339Nano, f.Get("as_of"))
		if err != nil {
			return &api.InvalidError{Msg: fmt.Sprintf("as_of %q is not a time", f.Get("as_of"))}
		}
		n, err := strconv.Atoi(f.Get("count"))
		if err != nil || n <= 0 {
			return &api.InvalidError{Msg: fmt.Sprintf("count %q is not a positive number", f.Get("count"))}
		}
		target.AsOf, target.Limit = at, n
	}
	plan, err := h.d.Operator.PlanBulk(r.Context(), action, target)
	if err != nil {
		return err
	}
	d.Plan = plan
	d.Shown = plan.Tasks[:min(len(plan.Tasks), 20)]
	if confirm && len(plan.Tasks) > 0 {
		res, err := h.d.Operator.ApplyBulk(r.Context(), plan)
		if err != nil {
			return err
		}
		d.Result = &res
		h.d.Logger.Info("dashboard bulk action", "action", action, "scope", scope, "done", len(res.Done), "refused", len(res.Refused))
	}
	h.render(w, r, page{name: "bulk", title: "Bulk " + action, nav: "tasks", data: d})
	return nil
}

// --- Actor tree ---

type actorsData struct {
	Tree     []actors.Node
	GaveUp   []string
	Actors   int
	Restarts int
	Open     []string
	Failing  []actors.Node
}

func (h *Handler) actorTree(r *http.Request) (page, error) {
	d := actorsData{Tree: h.d.Actors()}
	var walk func(ns []actors.Node)
	walk = func(ns []actors.Node) {
		for _, a := range ns {
			d.Actors++
			d.Restarts += a.Restarts
			if a.Status == actors.StatusGaveUp {
				d.GaveUp = append(d.GaveUp, a.PID)
			}
			if a.Kind == actors.KindBreaker && a.BreakerState == "open" {
				d.Open = append(d.Open, a.PID)
			}
			walk(a.Children)
		}
	}
	walk(d.Tree)
	return page{name: "actors", title: "Actor tree", nav: "actors", live: true, data: d}, nil
}

// --- Templates ---

type templateView struct {
	store.TemplateDetail
	DAG dagDrawing
	// Latest is the newest version of its name.
	Latest bool
	Rows   []templateStepView
}

type templateStepView struct {
	store.TemplateStep
	Config string
}

func (h *Handler) templates(r *http.Request) (page, error) {
	list, err := h.d.Operator.Templates(r.Context())
	if err != nil {
		return page{}, err
	}
	var out []templateView
	seen := map[string]bool{}
	for _, ti := range list.Templates {
		td, err := h.d.Operator.Template(r.Context(), ti.ID)
		if err != nil {
			return page{}, err
		}
		key := ti.Namespace + "/" + ti.Name
		v := templateView{TemplateDetail: td, Latest: !seen[key]}
		seen[key] = true
		steps := make([]dagStep, len(td.StepList))
		for i, st := range td.StepList {
			steps[i] = dagStep{Name: st.Name, DependsOn: st.DependsOn, Detail: st.Handler, Href: fmt.Sprintf("#t%d-%s", ti.ID, st.Name)}
			sv := templateStepView{TemplateStep: st}
			if len(st.Config) > 0 && string(st.Config) != "null" {
				sv.Config, _ = prettyJSON(st.Config)
			}
			v.Rows = append(v.Rows, sv)
		}
		v.DAG = layoutDAG(steps)
		out = append(out, v)
	}
	return page{name: "templates", title: "Templates", nav: "templates", data: out}, nil
}

// --- Rejected requests ---

type rejectedData struct {
	Rows  []rejectedRow
	Limit int
	More  string
}

type rejectedRow struct {
	store.RejectedRequest
	Shown string
	Cut   bool
}

// shownPayloadBytes bounds a rejected request's body shown on the page.
const shownPayloadBytes = 4 << 10

func (h *Handler) rejected(r *http.Request) (page, error) {
	limit := api.ListLimitDefault
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return page{}, &api.InvalidError{Msg: fmt.Sprintf("limit %q is not a number", s)}
		}
		limit = n
	}
	list, err := h.d.Operator.Rejected(r.Context(), limit)
	if err != nil {
		return page{}, err
	}
	d := rejectedData{Limit: limit}
	for _, rr := range list.Rejected {
		row := rejectedRow{RejectedRequest: rr, Shown: rr.Payload}
		if len(row.Shown) > shownPayloadBytes {
			row.Shown, row.Cut = row.Shown[:shownPayloadBytes], true
		}
		d.Rows = append(d.Rows, row)
	}
	if len(list.Rejected) == limit && limit < api.ListLimitMax {
		d.More = fmt.Sprintf("/rejected?limit=%d", min(limit*4, api.ListLimitMax))
	}
	return page{name: "rejected", title: "Rejected requests", nav: "rejected", live: true, data: d}, nil
}

func (h *Handler) replay(w http.ResponseWriter, r *http.Request) error {
	id, err := api.ParseMsgID(r.PathValue("msg_id"))
	if err != nil {
		return err
	}
	rr, err := h.d.Operator.Replay(r.Context(), id)
	switch {
	case err == nil:
		msg := fmt.Sprintf("Request of message %d sent again", id)
		if rr.ReplayedMsgID != nil {
			msg += fmt.Sprintf(" as message %d", *rr.ReplayedMsgID)
		}
		setFlash(w, r, true, msg+".")
	case api.Refusal(err):
		setFlash(w, r, false, "Refused: "+err.Error())
	default:
		return err
	}
	redirect(w, r, "/rejected")
	return nil
}

// --- Schedules ---

func (h *Handler) schedules(r *http.Request) (page, error) {
	list, err := h.d.Operator.Schedules(r.Context())
	if err != nil {
		return page{}, err
	}
	return page{name: "schedules", title: "Schedules", nav: "schedules", live: true, data: list.Schedules}, nil
}

// scheduleActions are what the schedules page's buttons do.
var scheduleActions = map[string]string{"pause": "paused", "resume": "resumed", "trigger": "fired"}

func (h *Handler) scheduleAction(w http.ResponseWriter, r *http.Request) error {
	name, err := api.ParseScheduleName(r.PathValue("name"))
	if err != nil {
		return err
	}
	action := r.PathValue("action")
	done, ok := scheduleActions[action]
	if !ok {
		return &api.InvalidError{Msg: fmt.Sprintf("%q is not an action on a schedule (pause, resume or trigger)", action)}
	}
	switch action {
	case "trigger":
		_, err = h.d.Operator.TriggerSchedule(r.Context(), name)
	default:
		_, err = h.d.Operator.PauseSchedule(r.Context(), name, action == "pause")
	}
	switch {
	case err == nil:
		setFlash(w, r, true, fmt.Sprintf("Schedule %s %s.", name, done))
	case api.Refusal(err):
		setFlash(w, r, false, "Refused: "+err.Error())
	default:
		return err
	}
	redirect(w, r, "/schedules")
	return nil
}
