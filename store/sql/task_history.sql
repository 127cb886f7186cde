-- History: finished tasks written straight into the tables, to measure a
-- node on a database that has been in use, and the reads and clean-up of a
-- measured run (tasker bench). Not state changes of the workflow: whole
-- finished tasks, written and deleted set-based, before and after a node
-- runs. The states and reasons are the machines' and the store's, passed
-- in.

-- name: task_history_insert
-- Writes tasks @from to @to - 1 (0-based, oldest first) of a history of
-- @total tasks whose newest starts at @newest, task k at
-- @newest - (@total - 1 - k) × @spacing. The steps are those of a chain
-- template, each the child of the one before. A UUIDv7 is the milliseconds
-- of a time and the version nibble overlaid on a random UUID: the layout
-- the node uses for every id, so the history sits in the indexes where a
-- real history would.
WITH g AS MATERIALIZED (
    SELECT k, t0,
        overlay(overlay(replace(gen_random_uuid()::text, '-', '')
            placing lpad(to_hex((extract(epoch FROM t0) * 1000)::bigint), 12, '0') FROM 1 FOR 12)
            placing '7' FROM 13 FOR 1)::uuid AS task_uuid,
        overlay(overlay(replace(gen_random_uuid()::text, '-', '')
            placing lpad(to_hex((extract(epoch FROM t0) * 1000)::bigint), 12, '0') FROM 1 FOR 12)
            placing '7' FROM 13 FOR 1)::uuid AS request_id
    FROM generate_series(@from::int, @to::int - 1) AS k,
        LATERAL (SELECT @newest::timestamptz - (@total::int - 1 - k) * @spacing::interval AS t0) t
), s0 AS MATERIALIZED (
    SELECT g.k, g.t0, g.task_uuid, x.pos::int - 1 AS pos, x.name, x.handler, x.config, x.max_attempts,
        x.retryable, x.timeout_ms, x.backoff_base_ms, x.backoff_max_ms,
        overlay(overlay(replace(gen_random_uuid()::text, '-', '')
            placing lpad(to_hex((extract(epoch FROM g.t0) * 1000)::bigint), 12, '0') FROM 1 FOR 12)
            placing '7' FROM 13 FOR 1)::uuid AS step_uuid,
        g.t0 + (x.pos - 1) * @step_gap::interval AS ready_at
    FROM g CROSS JOIN unnest(@names::text[], @handlers::text[], @configs::text[], @max_attempts::int[],
        @retryable::bool[], @timeouts_ms::bigint[], @backoff_base_ms::bigint[], @backoff_max_ms::bigint[])
        WITH ORDINALITY
        AS x(name, handler, config, max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms, pos)
), s AS MATERIALIZED (
    SELECT s0.*, s0.ready_at + @start_after::interval AS started_at, s0.ready_at + @step_gap::interval AS finished_at,
        lag(step_uuid) OVER w AS parent_uuid, lag(name) OVER w AS parent_name, lead(step_uuid) OVER w AS child_uuid
    FROM s0 WINDOW w AS (PARTITION BY task_uuid ORDER BY pos)
), tasks AS (
    INSERT INTO tasker.tasks (task_uuid, request_id, correlation_id, template_id, namespace, name, version,
        state, context, priority, requested_by, created_at, updated_at, finished_at)
    SELECT g.task_uuid, g.request_id, g.request_id,
        (SELECT template_id FROM tasker.templates WHERE namespace = @namespace AND name = @name AND version = @version),
        @namespace, @name, @version,
        @task_complete, jsonb_build_object('bench_history', @mark::text), 0, @requested_by, g.t0, f.at, f.at
    FROM g, LATERAL (SELECT g.t0 + cardinality(@names::text[]) * @step_gap::interval AS at) f
    ORDER BY g.k
), steps AS (
    INSERT INTO tasker.steps (step_uuid, task_uuid, name, position, namespace, handler, config, state,
        attempts, attempts_base, max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms,
        waiting_parents, outcome_attempt, outcome_ok, result, error, retry_after_ms,
        enqueued_at, last_attempted_at, next_attempt_at, finished_at, duration_ms, parents, children)
    SELECT step_uuid, task_uuid, name, pos, @namespace, handler, config::jsonb, @step_complete,
        1, 0, max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms,
        0, NULL, NULL, '{}'::jsonb, NULL, NULL,
        ready_at, started_at, NULL, finished_at, 0,
        array_remove(ARRAY[parent_uuid], NULL), array_remove(ARRAY[child_uuid], NULL)
    FROM s ORDER BY k, pos
), task_moves AS (
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id, created_at)
    SELECT g.task_uuid, m.from_state, m.to_state, m.reason, @node_id, m.at
    FROM g CROSS JOIN LATERAL (VALUES
        (1, NULL::text, @task_pending::text, @reason_created::text, g.t0),
        (2, @task_pending::text, @task_in_progress::text, @reason_started::text, g.t0),
        (3, @task_in_progress::text, @task_complete::text, @reason_complete::text,
            g.t0 + cardinality(@names::text[]) * @step_gap::interval)
    ) AS m(n, from_state, to_state, reason, at)
    ORDER BY g.k, m.n
), step_moves AS (
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id, created_at)
    SELECT s.step_uuid, s.task_uuid, m.from_state, m.to_state, m.reason, m.attempt, @node_id, m.at
    FROM s CROSS JOIN LATERAL (VALUES
        (1, NULL::text, @step_pending::text, @reason_created::text, 0, s.t0),
        (2, @step_pending::text, @step_enqueued::text,
            CASE WHEN s.pos = 0 THEN @reason_ready::text ELSE @release_prefix::text || s.parent_name || @release_suffix::text END,
            0, s.ready_at),
        (3, @step_enqueued::text, @step_in_progress::text, @reason_taken::text, 1, s.started_at),
        (4, @step_in_progress::text, @step_complete::text, @reason_succeeded::text, 1, s.finished_at)
    ) AS m(n, from_state, to_state, reason, attempt, at)
    -- The order a run records them in: the task's creation (every step
    -- pending, the root enqueued), then each step started, completed, its
    -- child enqueued.
    ORDER BY s.k, m.at, s.pos, m.n
)
SELECT count(*) FROM g;

-- name: task_history_delete
-- Deletes up to @limit history tasks with their steps and transitions,
-- set-based (none of them has a foreign key to cascade from the tasks).
WITH doomed AS MATERIALIZED (
    SELECT task_uuid FROM tasker.tasks
    WHERE namespace = @namespace AND requested_by = @requested_by AND context->>'bench_history' = @mark
    LIMIT @limit
), step_moves AS (
    DELETE FROM tasker.step_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed)
), task_moves AS (
    DELETE FROM tasker.task_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed)
), steps AS (
    DELETE FROM tasker.steps WHERE task_uuid IN (SELECT task_uuid FROM doomed)
), tasks AS (
    DELETE FROM tasker.tasks WHERE task_uuid IN (SELECT task_uuid FROM doomed)
    RETURNING 1
)
SELECT count(*) FROM tasks;

-- name: task_count
-- The finished and unfinished tasks of a namespace.
SELECT count(*) FILTER (WHERE state = ANY(@finished::text[])),
    count(*) FILTER (WHERE state <> ALL(@finished::text[]))
FROM tasker.tasks WHERE namespace = @namespace;

-- name: requests_finished_count
-- The requests that are done with: a task in a finished state, or a
-- rejection.
SELECT (SELECT count(*) FROM tasker.tasks WHERE request_id = ANY(@ids::uuid[]) AND state = ANY(@finished::text[]))
    + (SELECT count(DISTINCT request_id) FROM tasker.rejected_requests WHERE request_id = ANY(@ids::uuid[]));

-- name: requests_rejected_count
SELECT count(DISTINCT request_id) FROM tasker.rejected_requests WHERE request_id = ANY(@ids::uuid[]);

-- name: request_tasks
SELECT request_id, state, created_at, finished_at FROM tasker.tasks WHERE request_id = ANY(@ids::uuid[]);

-- name: request_steps
-- The steps of the tasks of the requests with the moment each became
-- ready, first started and completed (the transitions' clock_timestamp()).
WITH run AS (
    SELECT task_uuid, created_at FROM tasker.tasks WHERE request_id = ANY(@ids::uuid[])
), moves AS (
    SELECT x.step_uuid,
        min(x.created_at) FILTER (WHERE x.to_state = @started_state) AS started,
        min(x.created_at) FILTER (WHERE x.to_state = @completed_state) AS completed
    FROM tasker.step_transitions x JOIN run USING (task_uuid)
    GROUP BY x.step_uuid
), parents AS (
    SELECT s.step_uuid, count(*) AS total, count(m.completed) AS done, max(m.completed) AS done_at
    FROM tasker.steps s JOIN run USING (task_uuid) CROSS JOIN LATERAL unnest(s.parents) AS e(from_step)
        LEFT JOIN moves m ON m.step_uuid = e.from_step
    GROUP BY s.step_uuid
)
SELECT s.name, s.position, s.state, s.attempts, p.step_uuid IS NULL AS root,
    CASE WHEN p.step_uuid IS NULL THEN run.created_at
        WHEN p.done = p.total THEN p.done_at END AS ready_at,
    m.started, m.completed
FROM tasker.steps s
    JOIN run USING (task_uuid)
    LEFT JOIN moves m USING (step_uuid)
    LEFT JOIN parents p USING (step_uuid);

-- name: request_messages_delete
-- Deletes the requests still in {{queue}}. The queue tables' layout is
-- part of the pgmq contract.
DELETE FROM {{queue}} WHERE message->>'request_id' = ANY(@ids::text[]);

-- name: request_task_messages_delete
-- Deletes the step and result messages of the requests' tasks still in
-- {{queue}}.
DELETE FROM {{queue}} WHERE message->>'task_uuid' IN
    (SELECT task_uuid::text FROM tasker.tasks WHERE request_id = ANY(@ids::uuid[]));

-- name: request_tasks_delete
-- Deletes the requests' tasks with their steps and transitions (none of
-- which has a foreign key to cascade from the tasks).
WITH doomed AS (
    SELECT task_uuid FROM tasker.tasks WHERE request_id = ANY(@ids::uuid[])
), step_moves AS (
    DELETE FROM tasker.step_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed)
), task_moves AS (
    DELETE FROM tasker.task_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed)
), steps AS (
    DELETE FROM tasker.steps WHERE task_uuid IN (SELECT task_uuid FROM doomed)
)
DELETE FROM tasker.tasks WHERE task_uuid IN (SELECT task_uuid FROM doomed);

-- name: request_rejections_delete
DELETE FROM tasker.rejected_requests WHERE request_id = ANY(@ids::uuid[]);
