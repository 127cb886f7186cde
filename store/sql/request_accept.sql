-- Creating the tasks of a batch of requests, in one implicit transaction
-- and one statement per kind of row for the whole batch: the task rows
-- first, then every other row only if its task is one this transaction
-- inserted (a repeated request inserts nothing, and so creates nothing;
-- task ids are new, so a task that exists is one inserted here). Each row
-- looks its task up by key: OFFSET 0 keeps the EXISTS a subquery, which a
-- plan made while the tables were empty would otherwise turn into a join
-- walking the whole of tasks_pkey.

-- name: tasks_insert
-- In the order of the request ids, the order every batch inserts them in,
-- so two batches holding the same requests never wait on each other in a
-- cycle.
INSERT INTO tasker.tasks (task_uuid, request_id, correlation_id, template_id, namespace, name,
    version, state, context, priority, requested_by, request_digest, trace)
SELECT x.task_uuid, x.request_id, x.correlation_id, x.template_id, x.namespace, x.name, x.version, x.state,
    x.context::jsonb, x.priority, x.requested_by, x.digest, x.trace
FROM unnest(@tasks::uuid[], @request_ids::uuid[], @correlation_ids::uuid[], @template_ids::bigint[],
    @namespaces::text[], @names::text[], @versions::text[], @states::text[], @contexts::text[],
    @priorities::int[], @requested_by::text[], @digests::bytea[], @traces::jsonb[])
    AS x(task_uuid, request_id, correlation_id, template_id, namespace, name, version, state, context,
        priority, requested_by, digest, trace)
ORDER BY x.request_id
ON CONFLICT (request_id) DO NOTHING;

-- name: tasks_steps_insert
-- One row of the arrays per step, with its task and namespace. The flow
-- columns come as text (flow_groups and its limits, one PostgreSQL array
-- literal per step, NULL for a step under no limit). A root under a flow
-- limit comes as pending: task_roots_admit admits the batch's together.
-- The edges come as pairs (@edge_from, @edge_to), in the template's order,
-- and go into the parents and children of their steps.
WITH x AS (
    SELECT * FROM unnest(@steps::uuid[], @tasks::uuid[], @namespaces::text[], @names::text[], @positions::int[],
        @handlers::text[], @configs::text[], @states::text[], @max_attempts::int[], @retryable::bool[],
        @timeouts_ms::bigint[], @backoff_base_ms::bigint[], @backoff_max_ms::bigint[], @waiting::int[],
        @flow_groups::text[], @flow_max::text[], @flow_interval_us::text[], @flow_burst::text[], @flow_keys::text[])
        WITH ORDINALITY AS x(u, task, ns, nm, p, h, c, st, m, r, t, bb, bm, w, fg, fm, fi, fb, fk, n)
), e AS (
    SELECT * FROM unnest(@edge_from::uuid[], @edge_to::uuid[]) WITH ORDINALITY AS e(f, t, n)
), up AS (
    SELECT t AS u, array_agg(f ORDER BY n) AS parents FROM e GROUP BY t
), down AS (
    SELECT f AS u, array_agg(t ORDER BY n) AS children FROM e GROUP BY f
)
INSERT INTO tasker.steps (step_uuid, task_uuid, name, position, namespace, handler, config, state,
    max_attempts, retryable, timeout_ms, backoff_base_ms, backoff_max_ms, waiting_parents, enqueued_at,
    flow_groups, flow_max, flow_interval_us, flow_burst, flow_key, parents, children)
SELECT x.u, task, nm, p, ns, h, c::jsonb, st, m, r, t, bb, bm, w,
    CASE WHEN st = @enqueued THEN now() END, fg::text[], fm::int[], fi::bigint[], fb::int[], fk,
    COALESCE(up.parents, '{}'), COALESCE(down.children, '{}')
FROM x LEFT JOIN up ON up.u = x.u LEFT JOIN down ON down.u = x.u
WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = x.task OFFSET 0)
ORDER BY x.n;

-- name: tasks_transitions_insert
-- In the order given, each task's in the order of its moves.
INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id)
SELECT x.task, NULLIF(x.f, ''), x.o, x.r, @node_id
FROM unnest(@tasks::uuid[], @from_states::text[], @to_states::text[], @reasons::text[])
    WITH ORDINALITY AS x(task, f, o, r, n)
WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = x.task OFFSET 0)
ORDER BY x.n;

-- name: tasks_step_transitions_insert
-- In the order given, each task's in the order of its moves.
INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
SELECT x.s, x.task, NULLIF(x.f, ''), x.o, x.r, 0, @node_id
FROM unnest(@steps::uuid[], @tasks::uuid[], @from_states::text[], @to_states::text[], @reasons::text[])
    WITH ORDINALITY AS x(s, task, f, o, r, n)
WHERE EXISTS (SELECT FROM tasker.tasks WHERE task_uuid = x.task OFFSET 0)
ORDER BY x.n;

-- name: task_roots_admit
-- Admits the roots under flow limits of a batch's new tasks of @namespace
-- (@roots, still pending; those of a repeated request were never inserted)
-- in one statement: @enqueued where tasker.flow_direct lets them
-- (@policy_by_round, the groups only a round admits, as
-- workflow.FlowPolicy.Arrays gives them), with their messages
-- (@messages) to {{step_queue}} and the wake-up of its poller, else
-- @throttled to wait for a round; each with its transition. Returns, per
-- task, how many of its roots were enqueued and how many wait.
WITH demand AS (
    SELECT s.step_uuid, g.name, g.max, g.interval_us
    FROM tasker.steps s, unnest(s.flow_groups, s.flow_max, s.flow_interval_us) AS g(name, max, interval_us)
    WHERE s.step_uuid = ANY(@roots::uuid[]) AND s.state = @pending
), direct AS (
    SELECT d AS step_uuid FROM tasker.flow_direct(@namespace,
        (SELECT array_agg(step_uuid) FROM demand), (SELECT array_agg(name) FROM demand),
        (SELECT array_agg(max) FROM demand), (SELECT array_agg(interval_us) FROM demand),
        @policy_groups::text[], @policy_max::int[], @policy_by_round::bool[], '{}') d
    WHERE EXISTS (SELECT FROM demand)
), moved AS (
    UPDATE tasker.steps s
    SET state = CASE WHEN s.step_uuid IN (SELECT step_uuid FROM direct) THEN @enqueued ELSE @throttled END,
        enqueued_at = CASE WHEN s.step_uuid IN (SELECT step_uuid FROM direct) THEN now() END
    WHERE s.step_uuid = ANY(@roots::uuid[]) AND s.state = @pending AND s.waiting_parents = 0
    RETURNING s.step_uuid, s.task_uuid, s.state
), recorded AS (
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
    SELECT step_uuid, task_uuid, @pending, state,
        CASE WHEN state = @enqueued THEN @ready_reason ELSE @throttled_reason END, 0, @node_id
    FROM moved
), sent AS (
    INSERT INTO {{step_queue}} (vt, message, headers)
    SELECT clock_timestamp(), m.msg, (SELECT t.trace FROM tasker.tasks t WHERE t.task_uuid = mv.task_uuid)
    FROM unnest(@roots::uuid[], @messages::jsonb[]) WITH ORDINALITY AS m(step_uuid, msg, n)
        JOIN moved mv ON mv.step_uuid = m.step_uuid AND mv.state = @enqueued
    ORDER BY m.n
    RETURNING msg_id
), woke AS (
    SELECT pg_notify(@wake_channel, @wake_queue) WHERE EXISTS (SELECT FROM moved WHERE state = @enqueued)
)
SELECT mv.task_uuid, count(*) FILTER (WHERE mv.state = @enqueued), count(*) FILTER (WHERE mv.state = @throttled)
FROM moved mv, (SELECT count(*) FROM sent) s, (SELECT count(*) FROM woke) w
GROUP BY mv.task_uuid;

-- name: tasks_roots_send
-- Sends the messages (@messages) of the enqueued roots of @roots, new
-- tasks' roots of one namespace, to {{step_queue}}, each with its task's
-- trace context as its headers, and wakes its poller; a root of a task not
-- inserted here was never inserted either, and sends nothing. Returns, per
-- task, how many it sent.
WITH roots AS (
    -- Each root by its key (OFFSET 0 keeps the look-up a subquery).
    SELECT m.msg, m.n, r.task_uuid
    FROM unnest(@roots::uuid[], @messages::jsonb[]) WITH ORDINALITY AS m(step_uuid, msg, n)
        CROSS JOIN LATERAL (SELECT st.task_uuid FROM tasker.steps st
            WHERE st.step_uuid = m.step_uuid AND st.state = @enqueued OFFSET 0) r
), sent AS (
    INSERT INTO {{step_queue}} (vt, message, headers)
    SELECT clock_timestamp(), msg, (SELECT t.trace FROM tasker.tasks t WHERE t.task_uuid = roots.task_uuid)
    FROM roots ORDER BY n
    RETURNING msg_id
), woke AS (
    SELECT pg_notify(@wake_channel, @wake_queue) WHERE EXISTS (SELECT FROM roots)
)
SELECT task_uuid, count(*) FROM roots, (SELECT count(*) FROM sent) s, (SELECT count(*) FROM woke) w
GROUP BY task_uuid;

-- name: requests_ack
-- For each request of the batch (@request_ids, with the task it would have
-- made, its message and its digest), returns the task of its request id
-- and that task's digest; deletes its message from {{request_queue}} (none
-- for a task created without a message) if it created the task or repeats
-- the request that did (same digest; a task from before digests were kept
-- counts as the same).
WITH r AS (
    SELECT r.request_id, r.task_uuid, r.msg_id, r.digest, t.task_uuid AS made, t.request_digest AS stored
    FROM unnest(@request_ids::uuid[], @tasks::uuid[], @msg_ids::bigint[], @digests::bytea[])
            WITH ORDINALITY AS r(request_id, task_uuid, msg_id, digest, n)
        -- The task by its request id alone (OFFSET 0 keeps it a subquery).
        LEFT JOIN LATERAL (SELECT task_uuid, request_digest FROM tasker.tasks
            WHERE request_id = r.request_id OFFSET 0) t ON true
), acked AS (
    -- The task this request made has its digest, so a digest that matches
    -- (or none kept) covers both.
    DELETE FROM {{request_queue}} WHERE msg_id = ANY(@msg_ids::bigint[]) AND msg_id IN (SELECT msg_id FROM r
        WHERE made IS NOT NULL AND (stored IS NULL OR stored = digest))
    RETURNING msg_id
)
SELECT request_id, made, stored FROM r, (SELECT count(*) FROM acked) a;

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
