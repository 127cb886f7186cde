package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/workflow"
)

// Report is what a bench run measured. Times are in milliseconds, rates per
// second; the JSON names say so.
type Report struct {
	Mode              string  `json:"mode"`
	Pattern           string  `json:"pattern"`
	StepsPerTask      int     `json:"steps_per_task"`
	Workers           int     `json:"workers"`
	Tasks             int     `json:"tasks,omitempty"`
	Rate              float64 `json:"rate,omitempty"`
	DurationS         float64 `json:"duration_s,omitempty"`
	HandlerDurationMS float64 `json:"handler_duration_ms"`
	FailureRate       float64 `json:"failure_rate"`
	// Database is "embedded" or "url", with the database's name and server
	// version.
	Database        string    `json:"database"`
	DatabaseName    string    `json:"database_name"`
	PostgresVersion string    `json:"postgres_version"`
	StartedAt       time.Time `json:"started_at"`
	// HistoryTasks is the number of finished tasks of the bench namespace
	// in the tables when the run started: the history Options.History
	// wrote, and earlier runs' tasks that were kept. The run's figures do
	// not count them.
	HistoryTasks int64 `json:"history_tasks"`
	// Complete is false when the run stopped (timeout, interrupt) before
	// every task finished; the figures then cover what finished.
	Complete bool `json:"complete"`

	TasksSubmitted int64 `json:"tasks_submitted"`
	TasksCreated   int64 `json:"tasks_created"`
	TasksComplete  int64 `json:"tasks_complete"`
	TasksError     int64 `json:"tasks_error"`
	TasksRejected  int64 `json:"tasks_rejected"`
	Steps          int64 `json:"steps"`
	StepsComplete  int64 `json:"steps_complete"`
	// Attempts counts step attempts: more than StepsComplete when failures
	// were retried.
	Attempts int64 `json:"attempts"`

	// ElapsedS is the wall time from starting the node to seeing the last
	// task finished. WindowS is the database's view: from the first task
	// created to the last task finished; the rates divide by it.
	ElapsedS    float64 `json:"elapsed_s"`
	WindowS     float64 `json:"window_s"`
	TasksPerSec float64 `json:"tasks_per_sec"`
	StepsPerSec float64 `json:"steps_per_sec"`
	// SubmitRate is the rate a steady run achieved sending requests.
	SubmitRate float64 `json:"submit_rate,omitempty"`

	// SubmitToComplete runs from sending the request to the task's end;
	// CreatedToComplete from the task's creation to its end. In a burn-down
	// the first includes the wait in the backlog.
	SubmitToComplete  Percentiles `json:"submit_to_complete_ms"`
	CreatedToComplete Percentiles `json:"created_to_complete_ms"`
	// Dispatch runs from a step being ready (its parents complete; a root:
	// its task created) to its first attempt starting, over every step;
	// DispatchByStep splits it by step.
	Dispatch       Percentiles     `json:"dispatch_ms"`
	DispatchByStep []StepLatencies `json:"dispatch_by_step_ms"`
	// StartToComplete runs from a step's first attempt starting to its
	// completion being applied: the handler, recording the outcome, the
	// wait in the result queue and applying it.
	StartToComplete Percentiles `json:"start_to_complete_ms"`

	// Commits is the database's xact_commit delta over the node's run (every
	// client of the database counts, the bench's own few reads included).
	Commits        int64   `json:"pg_commits"`
	CommitsPerStep float64 `json:"pg_commits_per_step"`
	// CPUSeconds is this process's CPU time (user+system) while the node
	// ran; the process hosts the node (and the bench's light bookkeeping),
	// not PostgreSQL.
	CPUSeconds           float64 `json:"cpu_seconds"`
	CPUSecondsPer1KSteps float64 `json:"cpu_seconds_per_1k_steps"`
	// PeakRSSBytes is the process's peak resident set from its start
	// (submitting and any --history fill included) until the last task
	// finished, before the report reads the run's steps back.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
	// AllocsPerStep and AllocBytesPerStep are the heap allocations of this
	// process (runtime.MemStats Mallocs and TotalAlloc deltas) over the
	// same window as CPUSeconds, divided by StepsComplete. The process hosts
	// the node, so they include the node's start-up and the bench's own
	// goroutines: the progress and completion checks and, in a steady run,
	// the submitter.
	AllocsPerStep     float64 `json:"allocs_per_step"`
	AllocBytesPerStep float64 `json:"alloc_bytes_per_step"`
	// NodeCPUMSPerStep is CPUSeconds per complete step, in milliseconds.
	NodeCPUMSPerStep float64 `json:"node_cpu_ms_per_step"`

	// PostgreSQL's side of the node's run, from before the node started
	// to after it stopped. Rows are pg_stat_user_tables' row counts of the
	// tables of Tasker's and pgmq's schemas (every client of the database
	// counts): inserted, updated, deleted and their sum; TablesWritten
	// splits them by table, the busiest first. WAL is the server's, every
	// database's.
	RowsInserted       int64         `json:"pg_rows_inserted"`
	RowsUpdated        int64         `json:"pg_rows_updated"`
	RowsDeleted        int64         `json:"pg_rows_deleted"`
	RowsWritten        int64         `json:"pg_rows_written"`
	InsertsPerStep     float64       `json:"pg_inserts_per_step"`
	UpdatesPerStep     float64       `json:"pg_updates_per_step"`
	DeletesPerStep     float64       `json:"pg_deletes_per_step"`
	RowsWrittenPerStep float64       `json:"pg_rows_written_per_step"`
	TablesWritten      []TableWrites `json:"pg_tables_written"`
	WALBytes           int64         `json:"pg_wal_bytes"`
	WALBytesPerStep    float64       `json:"pg_wal_bytes_per_step"`
	// PGCPUSource says what PGCPUMS measures, over the same window as
	// CPUSeconds: "pg_stat_statements statement time" (planning and
	// execution time of this database's statements: time, not CPU), else
	// "server processes" (the CPU of this database's sessions, of the
	// server's background processes and of the postmaster, from /proc
	// when the server runs on this machine), else "unavailable: <why>".
	PGCPUSource    string  `json:"pg_cpu_source"`
	PGCPUMS        float64 `json:"pg_cpu_ms"`
	PGCPUMSPerStep float64 `json:"pg_cpu_ms_per_step"`
	// With the server processes, the CPU not counted in PGCPUMS: other
	// databases' sessions, and sessions that ended during the run (whose
	// they were is not known).
	PGCPUOtherDatabasesMS float64 `json:"pg_cpu_other_databases_ms,omitempty"`
	PGCPUEndedSessionsMS  float64 `json:"pg_cpu_ended_sessions_ms,omitempty"`
	// Statistics is what the planner knew of the tasks, steps and queue
	// tables when the node started; Autovacuum whether autovacuum was on.
	Statistics []TableStatistics `json:"pg_statistics"`
	Autovacuum bool              `json:"pg_autovacuum"`
	// OtherClients are the sessions, other than the bench's and its
	// node's, seen active in ActivitySamples looks at pg_stat_activity
	// while the node ran, on this database and on others of the server.
	ActivitySamples int            `json:"pg_activity_samples"`
	OtherClients    []OtherClients `json:"pg_other_clients"`

	Baseline *Baseline `json:"baseline,omitempty"`
	// BaselineRatio is StepsPerSec divided by the baseline's cycles per
	// second.
	BaselineRatio float64 `json:"baseline_ratio,omitempty"`
}

// Percentiles summarise a latency distribution in milliseconds
// (nearest-rank percentiles).
type Percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// StepLatencies are the dispatch latencies of one step of the pattern.
type StepLatencies struct {
	Step string `json:"step"`
	Root bool   `json:"root"`
	Percentiles
}

func newReport(o Options, db *database) *Report {
	r := &Report{
		Mode: o.Mode, Pattern: o.Pattern, StepsPerTask: StepsPerTask(o.Pattern),
		HandlerDurationMS: ms(o.HandlerDuration), FailureRate: o.FailureRate,
		Database: db.kind, DatabaseName: db.name, PostgresVersion: db.version,
		StartedAt: time.Now().UTC().Truncate(time.Second),
	}
	if o.Mode == ModeBurnDown {
		r.Tasks = o.Tasks
	} else {
		r.Rate, r.DurationS = o.Rate, o.Duration.Seconds()
	}
	return r
}

// percentiles summarises samples (in milliseconds); it sorts them.
func percentiles(samples []float64) Percentiles {
	if len(samples) == 0 {
		return Percentiles{}
	}
	slices.Sort(samples)
	rank := func(p float64) float64 {
		// Nearest rank: the smallest sample with at least p of them at or
		// below it.
		i := int(p*float64(len(samples))+0.999999999) - 1
		return samples[max(0, min(i, len(samples)-1))]
	}
	return Percentiles{N: len(samples), P50: rank(0.50), P95: rank(0.95), P99: rank(0.99), Max: samples[len(samples)-1]}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// collect reads the run's outcome from the database into rep.
func (r *run) collect(ctx context.Context, rep *Report) error {
	ids := r.t.requestIDs()
	rep.Workers = r.workers
	rep.HistoryTasks = r.h.present
	rep.Complete = !r.timedOut && r.steadyErr == nil
	rep.TasksSubmitted = int64(len(ids))
	rep.ElapsedS = r.ended.Sub(r.began).Seconds()
	if d := r.steadyEnded.Sub(r.steadyBegan).Seconds(); r.o.Mode == ModeSteady && d > 0 {
		rep.SubmitRate = float64(len(ids)) / d
	}

	var err error
	if rep.TasksRejected, err = r.db.client.Store.RequestsRejectedCount(ctx, ids); err != nil {
		return err
	}
	var (
		first, last       time.Time
		submit, createdTo []float64
		sentAt            = r.t.sentAtCopy()
	)
	tasks, err := r.db.client.Store.RequestTasks(ctx, ids)
	if err != nil {
		return err
	}
	for _, t := range tasks {
		rep.TasksCreated++
		switch t.State {
		case workflow.TaskStateComplete:
			rep.TasksComplete++
		case workflow.TaskStateError:
			rep.TasksError++
		}
		if first.IsZero() || t.CreatedAt.Before(first) {
			first = t.CreatedAt
		}
		if t.FinishedAt == nil {
			continue
		}
		if t.FinishedAt.After(last) {
			last = *t.FinishedAt
		}
		createdTo = append(createdTo, ms(t.FinishedAt.Sub(t.CreatedAt)))
		if at, ok := sentAt[uuid.UUID(t.RequestID)]; ok {
			submit = append(submit, ms(t.FinishedAt.Sub(at)))
		}
	}
	rep.SubmitToComplete = percentiles(submit)
	rep.CreatedToComplete = percentiles(createdTo)

	var (
		all, runs []float64
		byStep    = map[string]*stepSamples{}
	)
	steps, err := r.db.client.Store.RequestSteps(ctx, ids)
	if err != nil {
		return err
	}
	for _, st := range steps {
		rep.Steps++
		rep.Attempts += int64(st.Attempts)
		if st.State == workflow.StepStateComplete {
			rep.StepsComplete++
		}
		if st.StartedAt != nil && st.DoneAt != nil {
			runs = append(runs, max(0, ms(st.DoneAt.Sub(*st.StartedAt))))
		}
		if st.ReadyAt == nil || st.StartedAt == nil {
			continue
		}
		// Clocks of different statements: a start cannot precede readiness
		// by more than rounding, but keep the sample non-negative.
		d := max(0, ms(st.StartedAt.Sub(*st.ReadyAt)))
		all = append(all, d)
		s := byStep[st.Name]
		if s == nil {
			s = &stepSamples{name: st.Name, position: st.Position, root: st.Root}
			byStep[st.Name] = s
		}
		s.samples = append(s.samples, d)
	}
	rep.Dispatch = percentiles(all)
	rep.StartToComplete = percentiles(runs)
	samples := make([]*stepSamples, 0, len(byStep))
	for _, s := range byStep {
		samples = append(samples, s)
	}
	slices.SortFunc(samples, func(a, b *stepSamples) int { return cmp.Compare(a.position, b.position) })
	for _, s := range samples {
		rep.DispatchByStep = append(rep.DispatchByStep, StepLatencies{Step: s.name, Root: s.root, Percentiles: percentiles(s.samples)})
	}

	if !first.IsZero() && last.After(first) {
		rep.WindowS = last.Sub(first).Seconds()
		rep.TasksPerSec = float64(rep.TasksComplete+rep.TasksError) / rep.WindowS
		rep.StepsPerSec = float64(rep.StepsComplete) / rep.WindowS
	}
	perStep := func(v float64) float64 {
		if rep.StepsComplete == 0 {
			return 0
		}
		return v / float64(rep.StepsComplete)
	}
	rep.Commits = r.countersEnd.commits - r.countersBegan.commits
	rep.CommitsPerStep = perStep(float64(rep.Commits))
	rep.CPUSeconds = (r.cpuEnd - r.cpuBegan).Seconds()
	rep.CPUSecondsPer1KSteps = perStep(rep.CPUSeconds) * 1000
	rep.NodeCPUMSPerStep = perStep(rep.CPUSeconds * 1000)

	rep.TablesWritten = r.countersEnd.writesSince(r.countersBegan)
	for _, t := range rep.TablesWritten {
		rep.RowsInserted += t.Inserts
		rep.RowsUpdated += t.Updates
		rep.RowsDeleted += t.Deletes
	}
	rep.RowsWritten = rep.RowsInserted + rep.RowsUpdated + rep.RowsDeleted
	rep.InsertsPerStep = perStep(float64(rep.RowsInserted))
	rep.UpdatesPerStep = perStep(float64(rep.RowsUpdated))
	rep.DeletesPerStep = perStep(float64(rep.RowsDeleted))
	rep.RowsWrittenPerStep = perStep(float64(rep.RowsWritten))
	rep.WALBytes = r.countersEnd.wal - r.countersBegan.wal
	rep.WALBytesPerStep = perStep(float64(rep.WALBytes))
	cpu := cpuBetween(r.serverBegan, r.serverEnd)
	rep.PGCPUSource = cpu.source
	rep.PGCPUMS = ms(cpu.counted)
	rep.PGCPUMSPerStep = perStep(rep.PGCPUMS)
	rep.PGCPUOtherDatabasesMS, rep.PGCPUEndedSessionsMS = ms(cpu.others), ms(cpu.ended)
	rep.Statistics, rep.Autovacuum = r.statistics, r.autovacuum
	rep.ActivitySamples, rep.OtherClients, err = r.activity.report(rep.DatabaseName)
	if err != nil {
		return err
	}
	rep.PeakRSSBytes = r.peakRSS
	if rep.StepsComplete > 0 {
		rep.AllocsPerStep = float64(r.mallocsEnd-r.mallocsBegan) / float64(rep.StepsComplete)
		rep.AllocBytesPerStep = float64(r.allocEnd-r.allocBegan) / float64(rep.StepsComplete)
	}
	if rep.Baseline != nil && rep.Baseline.CyclesPerSec > 0 {
		rep.BaselineRatio = rep.StepsPerSec / rep.Baseline.CyclesPerSec
	}
	return nil
}

type stepSamples struct {
	name     string
	position int
	root     bool
	samples  []float64
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteText writes the report for a reader.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	switch rep.Mode {
	case ModeBurnDown:
		fmt.Fprintf(&b, "tasker bench: burn-down of %d %s tasks (%d steps each), %d workers", rep.Tasks, rep.Pattern, rep.StepsPerTask, rep.Workers)
	default:
		fmt.Fprintf(&b, "tasker bench: steady %g tasks/s for %gs, %s tasks (%d steps each), %d workers", rep.Rate, rep.DurationS, rep.Pattern, rep.StepsPerTask, rep.Workers)
	}
	handler := "noop handler"
	if rep.HandlerDurationMS > 0 || rep.FailureRate > 0 {
		handler = fmt.Sprintf("bench handler %gms, failure rate %g", rep.HandlerDurationMS, rep.FailureRate)
	}
	fmt.Fprintf(&b, ", %s\n", handler)
	fmt.Fprintf(&b, "database: %s (%s, PostgreSQL %s)\n", rep.DatabaseName, rep.Database, rep.PostgresVersion)
	if rep.HistoryTasks > 0 {
		fmt.Fprintf(&b, "history:    %d finished tasks in the tables at the start (not counted below)\n", rep.HistoryTasks)
	}
	if !rep.Complete {
		b.WriteString("INCOMPLETE: the run stopped before every task finished; the figures cover what finished\n")
	}
	fmt.Fprintf(&b, "tasks:      %d submitted, %d created, %d complete, %d error, %d rejected\n",
		rep.TasksSubmitted, rep.TasksCreated, rep.TasksComplete, rep.TasksError, rep.TasksRejected)
	fmt.Fprintf(&b, "steps:      %d, %d complete, %d attempts\n", rep.Steps, rep.StepsComplete, rep.Attempts)
	fmt.Fprintf(&b, "time:       %.2fs first task created → last finished (%.2fs wall from node start)\n", rep.WindowS, rep.ElapsedS)
	fmt.Fprintf(&b, "throughput: %.1f tasks/s, %.1f steps/s", rep.TasksPerSec, rep.StepsPerSec)
	if rep.SubmitRate > 0 {
		fmt.Fprintf(&b, " (submitted at %.1f tasks/s)", rep.SubmitRate)
	}
	b.WriteString("\n")
	if rep.Baseline != nil {
		bl := rep.Baseline
		fmt.Fprintf(&b, "baseline:   raw pgmq send+read+delete, %d clients, %.1fs: %.1f cycles/s, %.2f commits/cycle; tasker steps/s = %.2f × baseline\n",
			bl.Clients, bl.DurationS, bl.CyclesPerSec, bl.CommitsPerCycle, rep.BaselineRatio)
		fmt.Fprintf(&b, "            per cycle: %.2f rows written, WAL %.1f kB, PostgreSQL %s\n",
			bl.RowsWrittenPerCycle, bl.WALBytesPerCycle/1000, pgCPUPer(bl.PGCPUSource, bl.PGCPUMSPerCycle))
	}
	fmt.Fprintf(&b, "postgres:   %d commits, %.2f per step; %.2f rows written per step (%.2f inserts, %.2f updates, %.2f deletes); WAL %.1f kB per step\n",
		rep.Commits, rep.CommitsPerStep, rep.RowsWrittenPerStep, rep.InsertsPerStep, rep.UpdatesPerStep, rep.DeletesPerStep, rep.WALBytesPerStep/1000)
	fmt.Fprintf(&b, "cpu/step:   node %.3f ms, PostgreSQL %s\n", rep.NodeCPUMSPerStep, rep.pgCPUText())
	fmt.Fprintf(&b, "statistics: %s\n", rep.statisticsText())
	if w := rep.otherClientsText(); w != "" {
		fmt.Fprintf(&b, "WARNING:    %s\n", w)
	}
	fmt.Fprintf(&b, "node:       %.2f CPU s, %.3f CPU s per 1,000 steps, peak RSS %.1f MiB\n",
		rep.CPUSeconds, rep.CPUSecondsPer1KSteps, float64(rep.PeakRSSBytes)/(1<<20))
	fmt.Fprintf(&b, "allocs:     %.0f allocations, %.1f KiB per step (the whole process: node and bench)\n",
		rep.AllocsPerStep, rep.AllocBytesPerStep/1024)
	b.WriteString("\nlatency (ms)\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tn\tp50\tp95\tp99\tmax\t")
	row := func(label string, p Percentiles) {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t\n", label, p.N, p.P50, p.P95, p.P99, p.Max)
	}
	row("submit → complete", rep.SubmitToComplete)
	row("created → complete", rep.CreatedToComplete)
	row("dispatch, all steps", rep.Dispatch)
	for _, s := range rep.DispatchByStep {
		label := "dispatch, " + s.Step
		if s.Root {
			label += " (root)"
		}
		row(label, s.Percentiles)
	}
	row("step start → complete", rep.StartToComplete)
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("dispatch: a step ready (parents complete; a root: task created) → its first attempt started\n")
	b.WriteString("step start → complete: handler, outcome recorded, wait in the result queue, result applied\n")
	if len(rep.TablesWritten) > 0 {
		b.WriteString("\nrows written per step, by table\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tinserts\tupdates\tdeletes\ttotal\t")
		per := func(n int64) float64 { return float64(n) / float64(max(1, rep.StepsComplete)) }
		for _, t := range rep.TablesWritten {
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t\n", t.Table, per(t.Inserts), per(t.Updates), per(t.Deletes), per(t.Rows()))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// pgCPUText is PostgreSQL's CPU per step with its source, and what the
// figure leaves out.
func (rep *Report) pgCPUText() string {
	if strings.HasPrefix(rep.PGCPUSource, "unavailable") {
		return rep.PGCPUSource
	}
	s := strings.TrimSuffix(pgCPUPer(rep.PGCPUSource, rep.PGCPUMSPerStep), ")")
	if rep.PGCPUOtherDatabasesMS > 0 || rep.PGCPUEndedSessionsMS > 0 {
		s += fmt.Sprintf("; not counted: %.0f ms of other databases' sessions, %.0f ms of sessions that ended during the run",
			rep.PGCPUOtherDatabasesMS, rep.PGCPUEndedSessionsMS)
	}
	return s + ")"
}

// pgCPUPer is PostgreSQL's CPU (or statement time) per unit, v ms, with
// its source.
func pgCPUPer(source string, v float64) string {
	if strings.HasPrefix(source, "unavailable") {
		return source
	}
	what := "CPU"
	if source == cpuSourceStatements {
		what = "statement time"
	}
	return fmt.Sprintf("%.3f ms %s (%s)", v, what, source)
}

// statisticsText says what the planner knew of each table when the node
// started, and whether autovacuum was on.
func (rep *Report) statisticsText() string {
	parts := make([]string, 0, len(rep.Statistics))
	for _, s := range rep.Statistics {
		switch {
		case !s.Analyzed:
			parts = append(parts, fmt.Sprintf("%s never analyzed (%d live rows)", s.Table, s.LiveRows))
		case s.Reltuples == 0:
			parts = append(parts, fmt.Sprintf("%s analyzed while empty (reltuples 0, %d live rows)", s.Table, s.LiveRows))
		default:
			parts = append(parts, fmt.Sprintf("%s analyzed (reltuples %.0f, %d live rows)", s.Table, s.Reltuples, s.LiveRows))
		}
	}
	av := "autovacuum off"
	if rep.Autovacuum {
		av = "autovacuum on"
	}
	return strings.Join(append(parts, av), ", ")
}

// otherClientsText warns of other clients seen active during the run, or
// is empty.
func (rep *Report) otherClientsText() string {
	if len(rep.OtherClients) == 0 {
		return ""
	}
	parts := make([]string, 0, len(rep.OtherClients))
	for _, c := range rep.OtherClients {
		name := cmp.Or(c.ApplicationName, "(no application_name)")
		where := "this database"
		if c.Database != rep.DatabaseName {
			where = "database " + cmp.Or(c.Database, "(none)")
		}
		sessions := "1 session"
		if c.Sessions != 1 {
			sessions = fmt.Sprintf("%d sessions", c.Sessions)
		}
		parts = append(parts, fmt.Sprintf("%s on %s (%s, active in %d of %d samples)", name, where, sessions, c.Samples, rep.ActivitySamples))
	}
	return "other clients were active on the server during the run; the PostgreSQL figures may include their work: " +
		strings.Join(parts, ", ")
}

// Write writes the report as text to stdout, or with asJSON as JSON to
// stdout and the text to stderr; and as JSON to the file outPath when it is
// set.
func (rep *Report) Write(stdout, stderr io.Writer, asJSON bool, outPath string) error {
	text := stdout
	if asJSON {
		text = stderr
	}
	if err := rep.WriteText(text); err != nil {
		return err
	}
	if asJSON {
		if err := rep.WriteJSON(stdout); err != nil {
			return err
		}
	}
	if outPath == "" {
		return nil
	}
	f, err := os.Create(outPath)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := rep.WriteJSON(f); err != nil {
		_ = f.Close() // the write's error is the one to report
		return fmt.Errorf("--out: %w", err)
	}
	return f.Close()
}
