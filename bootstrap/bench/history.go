package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/workflow"
	"github.com/tasker-run/tasker/workflow/handlers"
)

// History: finished tasks put in the tables before a run (Options.History),
// to measure the node on a database that has been in use rather than on
// empty tables. They are the rows a node leaves for a completed task of the
// linear template: the task complete, four steps complete after one attempt
// each, three edges, three task transitions and sixteen step transitions,
// with times, UUIDv7 identities and transition order as a real run records
// them. They are written with set-based SQL, historyChunk tasks per
// statement and historyWriters statements at a time, then the tables are
// analyzed.
//
// Their requested_by is HistoryRequestedBy and their context holds
// {"bench_history": "<id of the run that wrote them>"}: the run counts only
// its own request ids, so they never enter a report, and the cleanup
// deletes the ones the run wrote (unless Keep).

// HistoryRequestedBy is the requested_by of the finished tasks written by
// Options.History.
const HistoryRequestedBy = "tasker-bench-history"

// historyPattern is the pattern of the history tasks.
const historyPattern = PatternLinear

// historyChunk is how many tasks one statement writes or deletes.
const historyChunk = 10_000

// History timing: task k of n starts historySpacing after task k-1, the
// newest historyAge before now; each step is ready historyStepGap after its
// parent became ready, starts historyStartAfter after being ready and
// completes when the next step is ready.
const (
	historySpacing    = 10 * time.Millisecond
	historyAge        = time.Minute
	historyStepGap    = 10 * time.Millisecond
	historyStartAfter = 4 * time.Millisecond
)

// historyNodeID is the node_id of the history's transitions.
const historyNodeID = "bench-history"

// sqlFinishedInNamespace counts the finished tasks of namespace $1.
const sqlFinishedInNamespace = `
	SELECT count(*) FROM tasker.tasks
	WHERE namespace = $1 AND state IN ('complete', 'error', 'cancelled', 'resolved_manually')`

const sqlTemplateID = `SELECT template_id FROM tasker.templates WHERE namespace = $1 AND name = $2 AND version = $3`

// sqlHistoryInsert writes tasks $1 to $2-1 (0-based, oldest first) of a
// history of $3 tasks whose newest starts at $4, task k at $4 - ($3-1-k) × $5.
// The steps are those of a linear template: $6 names, $7 handlers, $8
// configs, $9 max_attempts, $10 retryable, $11 timeout_ms, $12
// backoff_base_ms, $13 backoff_max_ms, each step the child of the one
// before. $14 is the template, $15 namespace, $16 name, $17 version, $18
// requested_by, $19 the run's history id, $20 the node id; $21 the gap
// between one step's readiness and the next's, $22 the wait from readiness
// to start.
//
// uuid7 overlays the milliseconds of a time and the version nibble on a
// random UUID: the layout of uuid.NewV7, which the node uses for every id,
// so the history sits in the indexes where a real history would.
var sqlHistoryInsert = `
	WITH g AS MATERIALIZED (
		SELECT k, t0, ` + sqlUUID7("t0") + ` AS task_uuid, ` + sqlUUID7("t0") + ` AS request_id
		FROM generate_series($1::int, $2::int - 1) AS k,
			LATERAL (SELECT $4::timestamptz - ($3::int - 1 - k) * $5::interval AS t0) t
	), s0 AS MATERIALIZED (
		SELECT g.k, g.t0, g.task_uuid, x.pos::int - 1 AS pos, x.name, x.handler, x.config, x.max_attempts,
			x.retryable, x.timeout_ms, x.backoff_base_ms, x.backoff_max_ms,
			` + sqlUUID7("g.t0") + ` AS step_uuid,
			g.t0 + (x.pos - 1) * $21::interval AS ready_at
		FROM g CROSS JOIN unnest($6::text[], $7::text[], $8::text[], $9::int[], $10::bool[], $11::bigint[],
			$12::bigint[], $13::bigint[]) WITH ORDINALITY
			AS x(name, handler, config, max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms, pos)
	), s AS MATERIALIZED (
		SELECT s0.*, s0.ready_at + $22::interval AS started_at, s0.ready_at + $21::interval AS finished_at,
			lag(step_uuid) OVER w AS parent_uuid, lag(name) OVER w AS parent_name
		FROM s0 WINDOW w AS (PARTITION BY task_uuid ORDER BY pos)
	), tasks AS (
		INSERT INTO tasker.tasks (task_uuid, request_id, correlation_id, template_id, namespace, name, version,
			state, context, priority, requested_by, created_at, updated_at, finished_at)
		SELECT g.task_uuid, g.request_id, g.request_id, $14, $15, $16, $17,
			'complete', jsonb_build_object('bench_history', $19::text), 0, $18, g.t0, f.at, f.at
		FROM g, LATERAL (SELECT g.t0 + cardinality($6::text[]) * $21::interval AS at) f
		ORDER BY g.k
	), steps AS (
		INSERT INTO tasker.steps (step_uuid, task_uuid, name, position, namespace, handler, config, state,
			attempts, attempts_base, max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms,
			waiting_parents, outcome_attempt, outcome_ok, result, error, retry_after_ms,
			enqueued_at, last_attempted_at, next_attempt_at, finished_at, duration_ms)
		SELECT step_uuid, task_uuid, name, pos, $15, handler, config::jsonb, 'complete',
			1, 0, max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms,
			0, NULL, NULL, '{}'::jsonb, NULL, NULL,
			ready_at, started_at, NULL, finished_at, 0
		FROM s ORDER BY k, pos
	), edges AS (
		INSERT INTO tasker.step_edges (task_uuid, from_step, to_step)
		SELECT task_uuid, parent_uuid, step_uuid FROM s WHERE parent_uuid IS NOT NULL ORDER BY k, pos
	), task_moves AS (
		INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id, created_at)
		SELECT g.task_uuid, m.from_state, m.to_state, m.reason, $20, m.at
		FROM g CROSS JOIN LATERAL (VALUES
			(1, NULL, 'pending', 'task created', g.t0),
			(2, 'pending', 'in_progress', 'first steps enqueued', g.t0),
			(3, 'in_progress', 'complete', 'every step complete', g.t0 + cardinality($6::text[]) * $21::interval)
		) AS m(n, from_state, to_state, reason, at)
		ORDER BY g.k, m.n
	), step_moves AS (
		INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id, created_at)
		SELECT s.step_uuid, s.task_uuid, m.from_state, m.to_state, m.reason, m.attempt, $20, m.at
		FROM s CROSS JOIN LATERAL (VALUES
			(1, NULL, 'pending', 'task created', 0, s.t0),
			(2, 'pending', 'enqueued', CASE WHEN s.pos = 0 THEN 'ready' ELSE 'parent ' || s.parent_name || ' complete' END,
				0, s.ready_at),
			(3, 'enqueued', 'in_progress', 'worker took the message', 1, s.started_at),
			(4, 'in_progress', 'complete', 'handler succeeded', 1, s.finished_at)
		) AS m(n, from_state, to_state, reason, attempt, at)
		-- The order a run records them in: the task's creation (every step
		-- pending, the root enqueued), then each step started, completed,
		-- its child enqueued.
		ORDER BY s.k, m.at, s.pos, m.n
	)
	SELECT count(*) FROM g`

// sqlUUID7 is a UUIDv7 of the timestamptz expression at.
func sqlUUID7(at string) string {
	return `overlay(overlay(replace(gen_random_uuid()::text, '-', '')
		placing lpad(to_hex((extract(epoch FROM ` + at + `) * 1000)::bigint), 12, '0') FROM 1 FOR 12)
		placing '7' FROM 13 FOR 1)::uuid`
}

// sqlHistoryDelete deletes up to $4 history tasks the run $3 wrote in
// namespace $1 with requested_by $2, with their steps, edges and
// transitions: the children first, set-based, so that the cascades find
// nothing left to do.
const sqlHistoryDelete = `
	WITH doomed AS MATERIALIZED (
		SELECT task_uuid FROM tasker.tasks
		WHERE namespace = $1 AND requested_by = $2 AND context->>'bench_history' = $3
		LIMIT $4
	), step_moves AS (
		DELETE FROM tasker.step_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed)
	), task_moves AS (
		DELETE FROM tasker.task_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed)
	), edges AS (
		DELETE FROM tasker.step_edges WHERE task_uuid IN (SELECT task_uuid FROM doomed)
	), steps AS (
		DELETE FROM tasker.steps WHERE task_uuid IN (SELECT task_uuid FROM doomed)
	), tasks AS (
		DELETE FROM tasker.tasks WHERE task_uuid IN (SELECT task_uuid FROM doomed)
		RETURNING 1
	)
	SELECT count(*) FROM tasks`

// sqlAnalyzeTables analyzes the tables the history writes, so that the
// planner sees their new size. (A VACUUM would also spare the run an
// autovacuum of the new rows, but it more than doubles the time the
// history takes to write.)
const sqlAnalyzeTables = `ANALYZE tasker.tasks, tasker.steps, tasker.step_edges, tasker.task_transitions, tasker.step_transitions`

// history writes the finished tasks Options.History asks for.
type history struct {
	db *database
	o  Options
	// id marks the tasks this run writes.
	id string
	// present is the number of finished tasks of the namespace once the
	// history is written; written how many this run wrote.
	present, written int64
	// writing is set once the run starts writing: from then on, the
	// cleanup looks for the run's history.
	writing bool
}

func newHistory(db *database, o Options) (*history, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	return &history{db: db, o: o, id: id.String()}, nil
}

// count reads how many finished tasks the namespace holds.
func (h *history) count(ctx context.Context) (int64, error) {
	var n int64
	if err := h.db.pool.QueryRow(ctx, sqlFinishedInNamespace, Namespace).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting finished bench tasks: %w", err)
	}
	return n, nil
}

// fill writes finished tasks until the namespace holds Options.History of
// them, then analyzes the tables, and sets present.
func (h *history) fill(ctx context.Context) error {
	present, err := h.count(ctx)
	if err != nil {
		return err
	}
	h.present = present
	missing := int64(h.o.History) - present
	if missing <= 0 {
		return nil
	}
	began := time.Now()
	tmpl, templateID, err := h.template(ctx)
	if err != nil {
		return err
	}
	n := len(tmpl.Steps)
	names, handlerNames, configs := make([]string, n), make([]string, n), make([]string, n)
	maxAttempts, retryable := make([]int32, n), make([]bool, n)
	timeouts, backoffBase, backoffMax := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, st := range tmpl.Steps {
		want := []string(nil)
		if i > 0 {
			want = []string{tmpl.Steps[i-1].Name}
		}
		if !slices.Equal(st.DependsOn, want) {
			return fmt.Errorf("bench history: template %s is not a chain (step %s depends on %v)", tmpl.Name, st.Name, st.DependsOn)
		}
		names[i], handlerNames[i] = st.Name, st.Handler
		configs[i] = string(st.Config)
		if configs[i] == "" {
			configs[i] = "{}"
		}
		maxAttempts[i], retryable[i] = int32(st.Retry.MaxAttempts), st.Retry.Retryable
		timeouts[i] = st.Timeout.Milliseconds()
		backoffBase[i], backoffMax[i] = st.Retry.BackoffBase.Milliseconds(), st.Retry.BackoffMax.Milliseconds()
	}

	var newest time.Time
	if err := h.db.pool.QueryRow(ctx, sqlNow).Scan(&newest); err != nil {
		return err
	}
	newest = newest.Add(-historyAge)
	write := func(ctx context.Context, from, to int64) (int64, error) {
		var wrote int64
		err := h.db.pool.QueryRow(ctx, sqlHistoryInsert, from, to, missing, newest, historySpacing,
			names, handlerNames, configs, maxAttempts, retryable, timeouts, backoffBase, backoffMax,
			templateID, Namespace, tmpl.Name, tmpl.Version, HistoryRequestedBy, h.id, historyNodeID,
			historyStepGap, historyStartAfter).Scan(&wrote)
		if err != nil {
			return 0, fmt.Errorf("writing bench history (tasks %d to %d of %d): %w", from, to, missing, err)
		}
		return wrote, nil
	}
	h.writing = true
	err = inChunks(ctx, missing, write, func(n int64) { h.written += n })
	if err != nil {
		return err
	}
	if _, err := h.db.pool.Exec(ctx, sqlAnalyzeTables); err != nil {
		return fmt.Errorf("analyzing the tables: %w", err)
	}
	if h.present, err = h.count(ctx); err != nil {
		return err
	}
	fmt.Fprintf(h.o.LogOutput, "bench: wrote %d finished %s tasks of history in %s; %d finished tasks in namespace %s\n",
		h.written, tmpl.Name, time.Since(began).Round(time.Millisecond), h.present, Namespace)
	return nil
}

// historyWriters is how many chunks are written at once. The node is not
// running yet, and PostgreSQL spends the time on per-row work (foreign key
// checks, index entries) that its backends do in parallel.
const historyWriters = 4

// inChunks calls write for [from, to) ranges of historyChunk tasks out of
// total, historyWriters at a time, and done (serialised) with what each
// wrote. It stops at the first error.
func inChunks(ctx context.Context, total int64, write func(ctx context.Context, from, to int64) (int64, error), done func(int64)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	starts := make(chan int64)
	go func() {
		defer close(starts)
		for from := int64(0); from < total; from += historyChunk {
			select {
			case starts <- from:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range historyWriters {
		wg.Go(func() {
			for from := range starts {
				n, err := write(ctx, from, min(from+historyChunk, total))
				mu.Lock()
				if err != nil && first == nil {
					first = err
					cancel()
				}
				done(n)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// template registers the bench templates, as the node will when it starts
// (the same files, so the node finds them unchanged), and returns the
// history's template with its id.
func (h *history) template(ctx context.Context) (*workflow.Template, int64, error) {
	reg := workflow.NewRegistry()
	if err := reg.Register(handlers.NameNoop, handlers.Noop()); err != nil {
		return nil, 0, err
	}
	if err := reg.Register(HandlerName, Handler(h.o.HandlerDuration, h.o.FailureRate)); err != nil {
		return nil, 0, err
	}
	ts, err := workflow.LoadDir(Templates(handlerFor(h.o)), reg)
	if err != nil {
		return nil, 0, fmt.Errorf("loading the bench templates: %w", err)
	}
	var tmpl *workflow.Template
	for _, t := range ts {
		if _, err := h.db.client.Store.TemplateRegister(ctx, t); err != nil {
			return nil, 0, err
		}
		if t.Name == historyPattern {
			tmpl = t
		}
	}
	if tmpl == nil {
		return nil, 0, fmt.Errorf("bench history: no %s template", historyPattern)
	}
	var id int64
	if err := h.db.pool.QueryRow(ctx, sqlTemplateID, tmpl.Namespace, tmpl.Name, tmpl.Version).Scan(&id); err != nil {
		return nil, 0, fmt.Errorf("reading the %s template's id: %w", tmpl.Name, err)
	}
	return tmpl, id, nil
}

// remove deletes the tasks this run wrote, historyChunk per statement, and
// analyzes the tables again.
func (h *history) remove(ctx context.Context) error {
	if !h.writing {
		return nil
	}
	began := time.Now()
	var deleted int64
	for {
		var n int64
		if err := h.db.pool.QueryRow(ctx, sqlHistoryDelete, Namespace, HistoryRequestedBy, h.id, historyChunk).Scan(&n); err != nil {
			return fmt.Errorf("deleting the bench history: %w", err)
		}
		if n == 0 {
			break
		}
		deleted += n
	}
	h.writing = false
	if _, err := h.db.pool.Exec(ctx, sqlAnalyzeTables); err != nil {
		return fmt.Errorf("analyzing the tables: %w", err)
	}
	fmt.Fprintf(h.o.LogOutput, "bench: deleted the %d tasks of history the run wrote in %s\n", deleted, time.Since(began).Round(time.Millisecond))
	return nil
}
