package bootstrap

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/store"
)

// Metrics are the node's Prometheus metrics. Counters count what this node
// did; gauges that describe shared state (queue depth) are read from the
// database at scrape time.
type Metrics struct {
	Registry *prometheus.Registry

	tasks        *prometheus.CounterVec
	steps        *prometheus.CounterVec
	attempts     *prometheus.CounterVec
	stepDuration *prometheus.HistogramVec
	breaker      *prometheus.GaugeVec
	requests     *prometheus.CounterVec
	held         *prometheus.CounterVec
	fires        *prometheus.CounterVec
	pruned       *prometheus.CounterVec
	pruneRuns    *prometheus.CounterVec
	pruneSeconds prometheus.Histogram
	throttled    *prometheus.CounterVec
	admitted     *prometheus.CounterVec
	admitErrors  prometheus.Counter
	flowDrift    *prometheus.CounterVec
	checkErrors  prometheus.Counter
}

// breakerValue maps a breaker state to the gauge value.
var breakerValue = map[string]float64{"closed": 0, "half-open": 1, "open": 2}

// NewMetrics registers the node's metrics in a fresh registry (with the Go
// and process collectors).
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_tasks_finished_total",
			Help: "Tasks this node moved to a terminal state, by state.",
		}, []string{"namespace", "state"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_steps_total",
			Help: "Step results this node applied, by the state they moved the step to (complete, error, waiting_for_retry).",
		}, []string{"state"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_step_attempts_total",
			Help: "Step attempts run by this node's workers, by namespace and outcome.",
		}, []string{"namespace", "outcome"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tasker_step_duration_seconds",
			Help:    "Handler run time of step attempts.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"namespace"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tasker_circuit_breaker_state",
			Help: "Circuit breaker state per component: 0 closed, 1 half-open, 2 open.",
		}, []string{"component"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_task_requests_total",
			Help: "Task requests this node handled, by outcome (created, duplicate, rejected, waiting: put off for its template).",
		}, []string{"outcome"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_held_messages_total",
			Help: "Messages this node held through a database failure, by queue and outcome: handled once the database answered, or released to redelivery.",
		}, []string{"queue", "outcome"}),
		fires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_schedule_fires_total",
			Help: "Schedule fire times this node's checks handled, by outcome (sent, skipped: the previous task still ran, missed: due while no node checked).",
		}, []string{"outcome"}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_pruned_rows_total",
			Help: "Rows this node's retention deleted, by target (tasks_complete, archive:<queue>, …) and table (rows: the target's own, steps, transitions).",
		}, []string{"target", "table"}),
		pruneRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_prune_runs_total",
			Help: "Retention runs on this node, by result (done, budget: the time budget ran out first, failed).",
		}, []string{"result"}),
		pruneSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tasker_prune_run_seconds",
			Help:    "Duration of this node's retention runs.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_steps_throttled_total",
			Help: "Throttled steps this node's admissions left waiting for the first time, or by another kind of limit than before, by namespace and reason (slots: a concurrency limit, rate: a rate limit, pause: a key or host paused by a Retry-After answer).",
		}, []string{"namespace", "reason"}),
		admitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_steps_admitted_total",
			Help: "Throttled steps this node's admissions let through under their flow limits, by namespace.",
		}, []string{"namespace"}),
		admitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasker_flow_admission_errors_total",
			Help: "Admission rounds of a namespace on this node that failed (the database did not answer, say); the next round tries again.",
		}),
		flowDrift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasker_flow_drift_repaired_total",
			Help: "What this node's checks of the flow tables set right because it disagreed with the steps' states, by table (flow_counts: by how much the slot counts were off, flow_waiting: waits counted wrong, dropped or added).",
		}, []string{"table"}),
		checkErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasker_flow_check_errors_total",
			Help: "Checks of the flow tables against the steps' states (one a minute on each orchestration node) that failed; the next check tries again.",
		}),
	}
	for _, table := range []string{"flow_counts", "flow_waiting"} {
		m.flowDrift.WithLabelValues(table)
	}
	m.Registry.MustRegister(m.tasks, m.steps, m.attempts, m.stepDuration, m.breaker, m.requests, m.held,
		m.fires, m.pruned, m.pruneRuns, m.pruneSeconds, m.throttled, m.admitted, m.admitErrors, m.flowDrift, m.checkErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) schedulesChecked(rep store.FireReport, err error) {
	if err != nil {
		return
	}
	m.fires.WithLabelValues("sent").Add(float64(rep.Sent))
	m.fires.WithLabelValues("skipped").Add(float64(rep.Skipped))
	m.fires.WithLabelValues("missed").Add(float64(rep.Missed))
}

// flowAdmitted counts what one admission round of namespace did.
func (m *Metrics) flowAdmitted(namespace string, r store.FlowRound, err error) {
	if err != nil {
		m.admitErrors.Inc()
		return
	}
	if r.Admitted > 0 {
		m.admitted.WithLabelValues(namespace).Add(float64(r.Admitted))
	}
	for kind, n := range r.NewlyHeld {
		if n > 0 {
			m.throttled.WithLabelValues(namespace, kind).Add(float64(n))
		}
	}
}

// flowRepaired counts the rows a check of the flow tables removed, or the
// check's failure.
func (m *Metrics) flowRepaired(d store.FlowDrift, err error) {
	if err != nil {
		m.checkErrors.Inc()
		return
	}
	m.flowDrift.WithLabelValues("flow_counts").Add(float64(d.Slots))
	m.flowDrift.WithLabelValues("flow_waiting").Add(float64(d.Waiting))
}

func (m *Metrics) prunedBatch(t store.PruneTarget, c store.PruneCount) {
	label := t.Label()
	m.pruned.WithLabelValues(label, "rows").Add(float64(c.Rows))
	if c.Steps+c.Transitions > 0 {
		m.pruned.WithLabelValues(label, "steps").Add(float64(c.Steps))
		m.pruned.WithLabelValues(label, "transitions").Add(float64(c.Transitions))
	}
}

func (m *Metrics) pruneRan(run store.PruneRun, d time.Duration, err error) {
	result := "done"
	switch {
	case err != nil:
		result = "failed"
	case !run.Done:
		result = "budget"
	}
	m.pruneRuns.WithLabelValues(result).Inc()
	m.pruneSeconds.Observe(d.Seconds())
}

func (m *Metrics) breakerChanged(component, state string) {
	m.breaker.WithLabelValues(component).Set(breakerValue[state])
}

// breakerRemoved drops the series of a breaker dropped from the host cap.
func (m *Metrics) breakerRemoved(component string) {
	m.breaker.DeleteLabelValues(component)
}

func (m *Metrics) stepFinished(namespace string, ok bool, d time.Duration) {
	outcome := "success"
	if !ok {
		outcome = "failure"
	}
	m.attempts.WithLabelValues(namespace, outcome).Inc()
	m.stepDuration.WithLabelValues(namespace).Observe(d.Seconds())
}

func (m *Metrics) messageHeld(queue string, handled bool) {
	outcome := "handled"
	if !handled {
		outcome = "released"
	}
	m.held.WithLabelValues(queue, outcome).Inc()
}

func (m *Metrics) requestHandled(out store.RequestOutcome) {
	switch {
	case out.Rejected:
		m.requests.WithLabelValues("rejected").Inc()
	case out.Waiting:
		m.requests.WithLabelValues("waiting").Inc()
	case out.Created:
		m.requests.WithLabelValues("created").Inc()
	default:
		m.requests.WithLabelValues("duplicate").Inc()
	}
}

func (m *Metrics) resultApplied(out store.ResultOutcome) {
	if out.Ignored {
		m.steps.WithLabelValues("ignored").Inc()
		return
	}
	m.steps.WithLabelValues(string(out.StepState)).Inc()
	if out.TaskState.Terminal() {
		m.tasks.WithLabelValues(out.Namespace, string(out.TaskState)).Inc()
	}
}

// scrapeCollector reads what the database knows at scrape time: queue depth
// per queue, flow slots in use and steps waiting, and restarts per actor
// from the tree.
type scrapeCollector struct{ n *Node }

var (
	queueDepthDesc = prometheus.NewDesc("tasker_queue_depth", "Messages in a queue (visible or not).", []string{"queue"}, nil)
	queueVisDesc   = prometheus.NewDesc("tasker_queue_visible", "Messages a read could take now.", []string{"queue"}, nil)
	restartsDesc   = prometheus.NewDesc("tasker_actor_restarts_total", "Restarts of each actor since the node started.", []string{"actor", "kind"}, nil)
	horizonAgeDesc = prometheus.NewDesc("tasker_xmin_horizon_age_seconds",
		"How long the oldest holder of the database's xmin horizon (a session's snapshot or transaction, a prepared transaction) has held it; 0 when nothing does or the holder is a replication slot.", nil, nil)
	horizonXidDesc = prometheus.NewDesc("tasker_xmin_horizon_age_xids",
		"Age in transactions of the database's xmin horizon, as held by its oldest holder (0 when nothing holds it).", nil, nil)
	// The groups of a key scope are one series (key:<scope>), so that a
	// key per customer does not make a series per customer.
	slotsDesc = prometheus.NewDesc("tasker_slots_in_use",
		"Flow slots held across every node (steps between their admission and their end), by namespace and group; the groups of a concurrency key count together as key:<scope>.", []string{"namespace", "group"}, nil)
	waitingDesc = prometheus.NewDesc("tasker_steps_waiting",
		"Throttled steps waiting for their admission across every node, by namespace.", []string{"namespace"}, nil)
)

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- queueVisDesc
	ch <- restartsDesc
	ch <- horizonAgeDesc
	ch <- horizonXidDesc
	ch <- slotsDesc
	ch <- waitingDesc
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, d := range c.n.queueDepths(ctx) {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(d.Length), d.Queue)
		ch <- prometheus.MustNewConstMetric(queueVisDesc, prometheus.GaugeValue, float64(d.Visible), d.Queue)
	}
	if hh, ok, err := store.OldestHorizonHolder(ctx, c.n.pool); err == nil {
		var age, xids float64
		if ok {
			age, xids = hh.Age.Seconds(), float64(hh.XidAge)
		}
		ch <- prometheus.MustNewConstMetric(horizonAgeDesc, prometheus.GaugeValue, age)
		ch <- prometheus.MustNewConstMetric(horizonXidDesc, prometheus.GaugeValue, xids)
	}
	c.collectFlow(ctx, ch)
	if c.n.system != nil {
		for _, node := range c.n.system.Tree().All() {
			if node.Kind == actors.KindBreaker {
				continue
			}
			ch <- prometheus.MustNewConstMetric(restartsDesc, prometheus.CounterValue, float64(node.Restarts), node.PID, node.Kind)
		}
	}
}

// collectFlow reads the flow slots in use and the steps waiting; every
// namespace of the node has a waiting series, 0 when none waits.
func (c *scrapeCollector) collectFlow(ctx context.Context, ch chan<- prometheus.Metric) {
	if slots, err := c.n.store.FlowSlotsByScope(ctx); err == nil {
		for _, s := range slots {
			ch <- prometheus.MustNewConstMetric(slotsDesc, prometheus.GaugeValue, float64(s.InUse), s.Namespace, s.Group)
		}
	}
	usage, err := c.n.store.FlowNamespaceUsage(ctx)
	if err != nil {
		return
	}
	waiting := map[string]int{}
	for _, ns := range c.n.namespaces() {
		waiting[ns] = 0
	}
	for _, u := range usage {
		waiting[u.Namespace] = u.Waiting
	}
	for ns, n := range waiting {
		ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(n), ns)
	}
}
