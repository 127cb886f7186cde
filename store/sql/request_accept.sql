-- Creating a task from a request, in one implicit transaction: the task row
-- first, then every other row only if that row is the one this transaction
-- inserted (a repeated request inserts nothing, and so creates nothing).

-- name: task_insert
INSERT INTO tasker.tasks (task_uuid, request_id, correlation_id, template_id, namespace, name,
    version, state, context, priority, requested_by, request_digest, trace)
VALUES (@task, @request_id, @correlation_id, @template_id, @namespace, @name, @version, @state,
    @context::jsonb, @priority, @requested_by, @digest, @trace::jsonb)
ON CONFLICT (request_id) DO NOTHING;

-- name: task_steps_insert
-- The flow columns come as text (flow_groups and its limits, one
-- PostgreSQL array literal per step, NULL for a step under no limit). A
-- root planned @throttled is admitted at once, @enqueued, where
-- tasker.flow_direct lets it (@policy_by_round, the groups only a round
-- admits, as workflow.FlowPolicy.Arrays gives them).
WITH x AS (
    SELECT * FROM unnest(@steps::uuid[], @names::text[], @positions::int[], @handlers::text[], @configs::text[],
        @states::text[], @max_attempts::int[], @retryable::bool[], @timeouts_ms::bigint[],
        @backoff_base_ms::bigint[], @backoff_max_ms::bigint[], @waiting::int[], @flow_groups::text[],
        @flow_max::text[], @flow_interval_us::text[], @flow_burst::text[], @flow_keys::text[])
        AS x(u, nm, p, h, c, st, m, r, t, bb, bm, w, fg, fm, fi, fb, fk)
), demand AS (
    SELECT x.u AS step_uuid, g.name, g.max, g.interval_us
    FROM x, unnest(x.fg::text[], x.fm::int[], x.fi::bigint[]) AS g(name, max, interval_us)
    WHERE x.st = @throttled
), direct AS (
    SELECT d AS step_uuid FROM tasker.flow_direct(@namespace,
        (SELECT array_agg(step_uuid) FROM demand), (SELECT array_agg(name) FROM demand),
        (SELECT array_agg(max) FROM demand), (SELECT array_agg(interval_us) FROM demand),
        @policy_groups::text[], @policy_max::int[], @policy_by_round::bool[], '{}') d
    WHERE EXISTS (SELECT FROM demand)
), y AS (
    SELECT x.*, CASE WHEN x.st = @throttled AND x.u IN (SELECT step_uuid FROM direct) THEN @enqueued ELSE x.st END AS state
    FROM x
)
INSERT INTO tasker.steps (step_uuid, task_uuid, name, position, namespace, handler, config, state,
    max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms, waiting_parents, enqueued_at,
    flow_groups, flow_max, flow_interval_us, flow_burst, flow_key)
SELECT u, @task, nm, p, @namespace, h, c::jsonb, state, m, r, t, bb, bm, w,
    CASE WHEN state = @enqueued THEN now() END, fg::text[], fm::int[], fi::bigint[], fb::int[], fk
FROM y
WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = @task);

-- name: task_edges_insert
INSERT INTO tasker.step_edges (task_uuid, from_step, to_step)
SELECT @task, f, t FROM unnest(@from_steps::uuid[], @to_steps::uuid[]) AS x(f, t)
WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = @task);

-- name: task_transitions_insert
INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id)
SELECT @task, NULLIF(f, ''), o, r, @node_id
FROM unnest(@from_states::text[], @to_states::text[], @reasons::text[]) WITH ORDINALITY AS x(f, o, r, n)
WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = @task)
ORDER BY n;

-- name: task_step_transitions_insert
-- A root planned to wait (@throttled) that task_steps_insert admitted at
-- once is recorded as enqueued, with @ready_reason.
INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
SELECT x.s, @task, NULLIF(x.f, ''), coalesce(a.state, x.o), CASE WHEN a.state IS NULL THEN x.r ELSE @ready_reason END,
    0, @node_id
FROM unnest(@steps::uuid[], @from_states::text[], @to_states::text[], @reasons::text[])
    WITH ORDINALITY AS x(s, f, o, r, n)
    LEFT JOIN LATERAL (SELECT st.state FROM tasker.steps st
        WHERE x.o = @throttled AND st.step_uuid = x.s AND st.state = @enqueued OFFSET 0) a ON true
WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = @task)
ORDER BY x.n;

-- name: task_roots_send
-- Sends the messages of the enqueued roots of @roots to {{step_queue}},
-- with the trace context
-- @trace as their headers, and wakes its poller, if the
-- task is new; deletes the request @msg_id from {{request_queue}} (none for
-- a task created without a message) if it created the task or repeats the
-- request that did (same digest; a task from before digests were kept
-- counts as the same); returns the task of the request and its digest.
WITH roots AS (
    -- The roots enqueued (not throttled) get a message.
    SELECT m.msg, m.n FROM unnest(@roots::uuid[], @messages::jsonb[]) WITH ORDINALITY AS m(step_uuid, msg, n)
    WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = @task)
        AND (SELECT st.state FROM tasker.steps st WHERE st.step_uuid = m.step_uuid) = @enqueued
), sent AS (
    INSERT INTO {{step_queue}} (vt, message, headers)
    SELECT clock_timestamp(), msg, @trace::jsonb FROM roots ORDER BY n
    RETURNING msg_id
), woke AS (
    SELECT pg_notify(@wake_channel, @wake_queue) WHERE EXISTS (SELECT FROM roots)
), acked AS (
    DELETE FROM {{request_queue}} WHERE msg_id = @msg_id::bigint
        AND EXISTS (SELECT FROM tasker.tasks WHERE request_id = @request_id
            AND (task_uuid = @task OR request_digest IS NULL OR request_digest = @digest::bytea))
    RETURNING msg_id
)
SELECT t.task_uuid, t.request_digest, (SELECT count(*) FROM sent), (SELECT count(*) FROM woke),
    (SELECT count(*) FROM acked)
FROM tasker.tasks t WHERE t.request_id = @request_id;

-- name: request_reject
-- Keeps a request that cannot be honoured where an operator can list it.
INSERT INTO tasker.rejected_requests (request_id, msg_id, payload, reason, node_id)
VALUES (@request_id, @msg_id, @payload, @reason, @node_id);

-- name: request_wait
-- Puts off request @msg_id of {{request_queue}} whose template is not
-- registered: it becomes visible again after @delay_us, but not after the
-- end of its grace period (@grace_us after it was sent). Its headers count
-- the waits (template_waits = @waits); its read count starts again, so
-- queue.max_deliveries counts only the deliveries that failed. No wait is
-- set once the grace period is over (visible_at NULL); no row means the
-- message is gone.
WITH m AS (
    SELECT msg_id, enqueued_at + @grace_us::bigint * interval '1 microsecond' AS deadline
    FROM {{request_queue}} WHERE msg_id = @msg_id
), waited AS (
    UPDATE {{request_queue}} q
    SET vt = least(clock_timestamp() + @delay_us::bigint * interval '1 microsecond', m.deadline),
        read_ct = 0,
        headers = COALESCE(CASE WHEN jsonb_typeof(q.headers) = 'object' THEN q.headers END, '{}'::jsonb)
            || jsonb_build_object('template_waits', @waits::int)
    FROM m WHERE q.msg_id = m.msg_id AND m.deadline > clock_timestamp()
    RETURNING q.vt
)
SELECT m.deadline, (SELECT vt FROM waited) FROM m;
