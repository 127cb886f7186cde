package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// History: finished tasks written straight into the tables, to measure a
// node on a database that has been in use rather than on empty tables, and
// the reads and clean-up of a measured run (the bench). These are not
// state changes of the workflow: they write and delete whole finished
// tasks set-based, and are used only before and after a node runs.

// TaskHistoryInsertParams describe one chunk of a history of finished
// tasks.
type TaskHistoryInsertParams struct {
	// Template is the tasks' template, registered already; its steps must
	// form a chain, each step the child of the one before.
	Template *workflow.Template
	// From and To are the chunk: tasks From to To-1 (0-based, oldest
	// first) of Total.
	From, To, Total int64
	// Newest is when the newest task of the history starts; task k starts
	// Spacing × (Total-1-k) before it.
	Newest  time.Time
	Spacing time.Duration
	// StepGap is the time from one step's readiness to the next's;
	// StartAfter the wait from a step's readiness to its start.
	StepGap, StartAfter time.Duration
	// RequestedBy is the tasks' requested_by; Mark goes into their context
	// as {"bench_history": Mark}, so TaskHistoryDelete finds them again.
	RequestedBy, Mark string
	// NodeID is the node_id of their transitions.
	NodeID string
}

// TaskHistoryInsert writes the chunk p describes: for each task, the rows
// a node leaves for a completed task of a chain template (the task
// complete, each step complete after one attempt, the edges, three task
// transitions and four per step), with times, UUIDv7 identities and
// transition order as a real run records them. It returns how many tasks
// it wrote.
func (s *Store) TaskHistoryInsert(ctx context.Context, p TaskHistoryInsertParams) (int64, error) {
	t := p.Template
	n := len(t.Steps)
	names, handlerNames, configs := make([]string, n), make([]string, n), make([]string, n)
	maxAttempts, retryable := make([]int32, n), make([]bool, n)
	timeouts, backoffBase, backoffMax := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, st := range t.Steps {
		want := []string(nil)
		if i > 0 {
			want = []string{t.Steps[i-1].Name}
		}
		if !slices.Equal(st.DependsOn, want) {
			return 0, fmt.Errorf("task history: template %s is not a chain (step %s depends on %v)", t.Name, st.Name, st.DependsOn)
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
	var wrote int64
	err := s.pool.QueryRow(ctx, sqlHistoryInsert, p.From, p.To, p.Total, p.Newest, p.Spacing,
		names, handlerNames, configs, maxAttempts, retryable, timeouts, backoffBase, backoffMax,
		t.Namespace, t.Name, t.Version, p.RequestedBy, p.Mark, p.NodeID,
		p.StepGap, p.StartAfter).Scan(&wrote)
	if err != nil {
		return 0, fmt.Errorf("writing task history (tasks %d to %d of %d): %w", p.From, p.To, p.Total, translate(err))
	}
	return wrote, nil
}

// TaskHistoryDeleteParams select history tasks to delete.
type TaskHistoryDeleteParams struct {
	// Namespace, RequestedBy and Mark are those the tasks were written
	// with.
	Namespace, RequestedBy, Mark string
	// Limit is the most tasks one call deletes.
	Limit int
}

// TaskHistoryDelete deletes up to p.Limit history tasks with their steps,
// edges and transitions, and returns how many it deleted.
func (s *Store) TaskHistoryDelete(ctx context.Context, p TaskHistoryDeleteParams) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, sqlHistoryDelete, p.Namespace, p.RequestedBy, p.Mark, p.Limit).Scan(&n); err != nil {
		return 0, fmt.Errorf("deleting task history: %w", translate(err))
	}
	return n, nil
}

// TaskCounts are the tasks of a namespace by whether they are finished.
type TaskCounts struct {
	Finished, Unfinished int64
}

// TaskCount counts the tasks of namespace.
func (s *Store) TaskCount(ctx context.Context, namespace string) (TaskCounts, error) {
	var c TaskCounts
	if err := s.pool.QueryRow(ctx, sqlTaskCount, namespace).Scan(&c.Finished, &c.Unfinished); err != nil {
		return c, fmt.Errorf("counting the tasks of namespace %s: %w", namespace, translate(err))
	}
	return c, nil
}

// TablesAnalyze refreshes the planner's statistics of the task tables.
func (s *Store) TablesAnalyze(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, "ANALYZE "+strings.Join(taskTables, ", ")); err != nil {
		return fmt.Errorf("analyzing the task tables: %w", translate(err))
	}
	return nil
}

// TablesVacuum reclaims the dead rows of the task tables and of the tables
// of queues, and refreshes their statistics.
func (s *Store) TablesVacuum(ctx context.Context, queues []string) error {
	tables := slices.Clone(taskTables)
	for _, q := range queues {
		t, err := queue.Table(q)
		if err != nil {
			return err
		}
		tables = append(tables, t)
	}
	if _, err := s.pool.Exec(ctx, "VACUUM (ANALYZE) "+strings.Join(tables, ", ")); err != nil {
		return fmt.Errorf("vacuuming the task tables: %w", translate(err))
	}
	return nil
}

// Request ids are passed as [16]byte, which pgx encodes natively: a
// uuid.UUID is encoded through its text form, which costs noticeable CPU
// for tens of thousands of ids.

// RequestsFinishedCount counts the requests of ids that are done with: a
// task in a terminal state, or a rejection.
func (s *Store) RequestsFinishedCount(ctx context.Context, ids [][16]byte) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, sqlRequestsFinished, ids).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting finished requests: %w", translate(err))
	}
	return n, nil
}

// RequestsRejectedCount counts the requests of ids that were rejected.
func (s *Store) RequestsRejectedCount(ctx context.Context, ids [][16]byte) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, sqlRequestsRejected, ids).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting rejected requests: %w", translate(err))
	}
	return n, nil
}

// RequestTask is the task of a request, with its times. Its fields are in
// the order of sqlRequestTasks's columns.
type RequestTask struct {
	RequestID  [16]byte
	State      workflow.TaskState
	CreatedAt  time.Time
	FinishedAt *time.Time
}

// RequestTasks lists the tasks of the requests ids.
func (s *Store) RequestTasks(ctx context.Context, ids [][16]byte) ([]RequestTask, error) {
	rows, err := s.pool.Query(ctx, sqlRequestTasks, ids)
	if err != nil {
		return nil, fmt.Errorf("reading the tasks of requests: %w", translate(err))
	}
	tasks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[RequestTask])
	if err != nil {
		return nil, fmt.Errorf("reading the tasks of requests: %w", translate(err))
	}
	return tasks, nil
}

// RequestStep is a step of a request's task with the moment it became
// ready (a root: its task's creation; any other step: its last parent's
// completion), first started and completed. Its fields are in the order
// of sqlRequestSteps's columns.
type RequestStep struct {
	Name      string
	Position  int
	State     workflow.StepState
	Attempts  int
	Root      bool
	ReadyAt   *time.Time
	StartedAt *time.Time
	DoneAt    *time.Time
}

// RequestSteps lists the steps of the tasks of the requests ids.
func (s *Store) RequestSteps(ctx context.Context, ids [][16]byte) ([]RequestStep, error) {
	rows, err := s.pool.Query(ctx, sqlRequestSteps, ids)
	if err != nil {
		return nil, fmt.Errorf("reading the steps of requests: %w", translate(err))
	}
	steps, err := pgx.CollectRows(rows, pgx.RowToStructByPos[RequestStep])
	if err != nil {
		return nil, fmt.Errorf("reading the steps of requests: %w", translate(err))
	}
	return steps, nil
}

// RequestsDelete deletes, in one transaction, the requests ids still in
// the task request queue, the messages of their tasks still in
// taskQueues, their tasks (steps, edges and transitions go with them) and
// their rejections.
func (s *Store) RequestsDelete(ctx context.Context, ids [][16]byte, taskQueues []string) error {
	texts := make([]string, len(ids))
	for i, id := range ids {
		texts[i] = uuidText(id)
	}
	requests, err := queue.Table(queue.TaskRequestsQueue)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf(sqlDeleteRequestMessages, requests), texts); err != nil {
			return err
		}
		for _, q := range taskQueues {
			table, err := queue.Table(q)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf(sqlDeleteTaskMessages, table), ids); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, sqlDeleteRequestTasks, ids); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, sqlDeleteRequestRejections, ids)
		return err
	})
}

func uuidText(id [16]byte) string { return uuid.UUID(id).String() }

// taskTables are the tables a task's rows live in.
var taskTables = []string{"tasker.tasks", "tasker.steps", "tasker.step_edges", "tasker.task_transitions", "tasker.step_transitions"}

// The history's SQL. The other engineer's move of SQL into .sql files
// will take these too.

// sqlHistoryInsert writes tasks $1 to $2-1 (0-based, oldest first) of a
// history of $3 tasks whose newest starts at $4, task k at $4 - ($3-1-k) × $5.
// The steps are those of a chain template: $6 names, $7 handlers, $8
// configs, $9 max_attempts, $10 retryable, $11 timeout_ms, $12
// backoff_base_ms, $13 backoff_max_ms, each step the child of the one
// before. $14 is the namespace, $15 name, $16 version (the template's id
// is looked up from them), $17 requested_by, $18 the mark, $19 the node
// id; $20 the gap between one step's readiness and the next's, $21 the
// wait from readiness to start.
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
			g.t0 + (x.pos - 1) * $20::interval AS ready_at
		FROM g CROSS JOIN unnest($6::text[], $7::text[], $8::text[], $9::int[], $10::bool[], $11::bigint[],
			$12::bigint[], $13::bigint[]) WITH ORDINALITY
			AS x(name, handler, config, max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms, pos)
	), s AS MATERIALIZED (
		SELECT s0.*, s0.ready_at + $21::interval AS started_at, s0.ready_at + $20::interval AS finished_at,
			lag(step_uuid) OVER w AS parent_uuid, lag(name) OVER w AS parent_name
		FROM s0 WINDOW w AS (PARTITION BY task_uuid ORDER BY pos)
	), tasks AS (
		INSERT INTO tasker.tasks (task_uuid, request_id, correlation_id, template_id, namespace, name, version,
			state, context, priority, requested_by, created_at, updated_at, finished_at)
		SELECT g.task_uuid, g.request_id, g.request_id, (SELECT template_id FROM tasker.templates WHERE namespace = $14 AND name = $15 AND version = $16),
			$14, $15, $16,
			'complete', jsonb_build_object('bench_history', $18::text), 0, $17, g.t0, f.at, f.at
		FROM g, LATERAL (SELECT g.t0 + cardinality($6::text[]) * $20::interval AS at) f
		ORDER BY g.k
	), steps AS (
		INSERT INTO tasker.steps (step_uuid, task_uuid, name, position, namespace, handler, config, state,
			attempts, attempts_base, max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms,
			waiting_parents, outcome_attempt, outcome_ok, result, error, retry_after_ms,
			enqueued_at, last_attempted_at, next_attempt_at, finished_at, duration_ms)
		SELECT step_uuid, task_uuid, name, pos, $14, handler, config::jsonb, 'complete',
			1, 0, max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms,
			0, NULL, NULL, '{}'::jsonb, NULL, NULL,
			ready_at, started_at, NULL, finished_at, 0
		FROM s ORDER BY k, pos
	), edges AS (
		INSERT INTO tasker.step_edges (task_uuid, from_step, to_step)
		SELECT task_uuid, parent_uuid, step_uuid FROM s WHERE parent_uuid IS NOT NULL ORDER BY k, pos
	), task_moves AS (
		INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id, created_at)
		SELECT g.task_uuid, m.from_state, m.to_state, m.reason, $19, m.at
		FROM g CROSS JOIN LATERAL (VALUES
			(1, NULL, 'pending', 'task created', g.t0),
			(2, 'pending', 'in_progress', 'first steps enqueued', g.t0),
			(3, 'in_progress', 'complete', 'every step complete', g.t0 + cardinality($6::text[]) * $20::interval)
		) AS m(n, from_state, to_state, reason, at)
		ORDER BY g.k, m.n
	), step_moves AS (
		INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id, created_at)
		SELECT s.step_uuid, s.task_uuid, m.from_state, m.to_state, m.reason, m.attempt, $19, m.at
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

// sqlHistoryDelete deletes up to $4 history tasks marked $3 in
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

// finishedStates is the SQL list of the terminal task states.
var finishedStates = func() string {
	var quoted []string
	for _, st := range workflow.AllTaskStates() {
		if st.Terminal() {
			quoted = append(quoted, "'"+string(st)+"'")
		}
	}
	return strings.Join(quoted, ", ")
}()

// sqlTaskCount counts the finished and unfinished tasks of namespace $1.
var sqlTaskCount = `
	SELECT count(*) FILTER (WHERE state IN (` + finishedStates + `)),
		count(*) FILTER (WHERE state NOT IN (` + finishedStates + `))
	FROM tasker.tasks WHERE namespace = $1`

// sqlRequestsFinished counts the requests $1 that are done with: a task in
// a terminal state, or a rejection.
var sqlRequestsFinished = `
	SELECT (SELECT count(*) FROM tasker.tasks
			WHERE request_id = ANY($1) AND state IN (` + finishedStates + `))
		+ (SELECT count(DISTINCT request_id) FROM tasker.rejected_requests WHERE request_id = ANY($1))`

const sqlRequestsRejected = `SELECT count(DISTINCT request_id) FROM tasker.rejected_requests WHERE request_id = ANY($1)`

const sqlRequestTasks = `
	SELECT request_id, state, created_at, finished_at
	FROM tasker.tasks WHERE request_id = ANY($1)`

// sqlRequestSteps lists the steps of the tasks of requests $1 with the
// moment each became ready, first started and completed (the transitions'
// clock_timestamp()).
const sqlRequestSteps = `
	WITH run AS (
		SELECT task_uuid, created_at FROM tasker.tasks WHERE request_id = ANY($1)
	), moves AS (
		SELECT x.step_uuid,
			min(x.created_at) FILTER (WHERE x.to_state = 'in_progress') AS started,
			min(x.created_at) FILTER (WHERE x.to_state = 'complete') AS completed
		FROM tasker.step_transitions x JOIN run USING (task_uuid)
		GROUP BY x.step_uuid
	), parents AS (
		SELECT e.to_step AS step_uuid, count(*) AS total, count(m.completed) AS done, max(m.completed) AS done_at
		FROM tasker.step_edges e JOIN run USING (task_uuid) LEFT JOIN moves m ON m.step_uuid = e.from_step
		GROUP BY e.to_step
	)
	SELECT s.name, s.position, s.state, s.attempts, p.step_uuid IS NULL AS root,
		CASE WHEN p.step_uuid IS NULL THEN run.created_at
			WHEN p.done = p.total THEN p.done_at END AS ready_at,
		m.started, m.completed
	FROM tasker.steps s
		JOIN run USING (task_uuid)
		LEFT JOIN moves m USING (step_uuid)
		LEFT JOIN parents p USING (step_uuid)`

// sqlDeleteRequestMessages deletes the requests $1 still in the request
// queue table %[1]s, and sqlDeleteTaskMessages the step and result
// messages of their tasks still in queue table %[1]s. Both address the
// queue tables, whose layout is part of the pgmq contract.
const (
	sqlDeleteRequestMessages = `DELETE FROM %[1]s WHERE message->>'request_id' = ANY($1::text[])`
	sqlDeleteTaskMessages    = `DELETE FROM %[1]s WHERE message->>'task_uuid' IN
		(SELECT task_uuid::text FROM tasker.tasks WHERE request_id = ANY($1))`
)

// sqlDeleteRequestTasks deletes the tasks of requests $1; steps, edges and
// transitions go with them (ON DELETE CASCADE).
const sqlDeleteRequestTasks = `DELETE FROM tasker.tasks WHERE request_id = ANY($1)`

const sqlDeleteRequestRejections = `DELETE FROM tasker.rejected_requests WHERE request_id = ANY($1)`
