-- Reading tasks for operators, the API and the CLI.

-- name: task_get
-- A task by its uuid or by the request id that created it.
SELECT task_uuid, request_id, correlation_id, namespace, name, version, state, context, trace,
    priority, requested_by, created_at, updated_at, finished_at
FROM tasker.tasks WHERE task_uuid = @id
UNION ALL
SELECT task_uuid, request_id, correlation_id, namespace, name, version, state, context, trace,
    priority, requested_by, created_at, updated_at, finished_at
FROM tasker.tasks WHERE request_id = @id
LIMIT 1;

-- name: task_steps
-- A task's steps in template order, with the names of their parents and,
-- for a throttled step, why and since when it waits (its row of
-- tasker.flow_waiting, by its key).
SELECT s.step_uuid, s.name, s.handler, s.state, s.attempts, s.attempts_base + s.max_attempts,
    COALESCE((SELECT array_agg(p.name ORDER BY p.position) FROM unnest(s.parents) AS e(from_step)
        JOIN tasker.steps p ON p.step_uuid = e.from_step), '{}'),
    s.result, s.error, s.enqueued_at, s.last_attempted_at, s.next_attempt_at, s.finished_at, s.duration_ms,
    COALESCE(w.reason, ''), w.since
FROM tasker.steps s
    LEFT JOIN LATERAL (SELECT reason, since FROM tasker.flow_waiting WHERE step_uuid = s.step_uuid) w ON true
WHERE s.task_uuid = @task ORDER BY s.position;

-- name: task_transitions
SELECT '', COALESCE(from_state, ''), to_state, reason, 0, node_id, created_at
FROM tasker.task_transitions WHERE task_uuid = @task ORDER BY id;

-- name: task_step_transitions
SELECT s.name, COALESCE(x.from_state, ''), x.to_state, x.reason, x.attempt, x.node_id, x.created_at
FROM tasker.step_transitions x JOIN tasker.steps s ON s.step_uuid = x.step_uuid
WHERE x.task_uuid = @task ORDER BY x.id;

-- name: task_list
-- Tasks newest first (ties in the order of their uuids), after the task
-- @before when given (a cursor: the last task of the previous page); an
-- empty filter does not filter (@states empty: every state). A list row
-- carries no context: that is the task's detail.
SELECT task_uuid, request_id, correlation_id, namespace, name, version, state, NULL::jsonb, NULL::jsonb,
    priority, requested_by, created_at, updated_at, finished_at
FROM tasker.tasks
WHERE (cardinality(@states::text[]) = 0 OR state = ANY(@states::text[]))
    AND (@namespace = '' OR namespace = @namespace) AND (@name = '' OR name = @name)
    AND (@created_after::timestamptz IS NULL OR created_at > @created_after)
    AND (@created_before::timestamptz IS NULL OR created_at <= @created_before)
    AND (@before::uuid IS NULL
        OR (created_at, task_uuid) < (SELECT created_at, task_uuid FROM tasker.tasks WHERE task_uuid = @before))
ORDER BY created_at DESC, task_uuid DESC LIMIT @limit;

-- name: task_search
-- task_list for the tasks whose task uuid, request id or correlation id lies
-- in [@lo, @hi] (the UUIDs a typed prefix stands for): the search drives,
-- through each column's index, and the filters apply to what it found.
WITH hits AS (
    SELECT task_uuid FROM tasker.tasks WHERE task_uuid BETWEEN @lo AND @hi
    UNION SELECT task_uuid FROM tasker.tasks WHERE request_id BETWEEN @lo AND @hi
    UNION SELECT task_uuid FROM tasker.tasks WHERE correlation_id BETWEEN @lo AND @hi
)
SELECT t.task_uuid, t.request_id, t.correlation_id, t.namespace, t.name, t.version, t.state, NULL::jsonb, NULL::jsonb,
    t.priority, t.requested_by, t.created_at, t.updated_at, t.finished_at
FROM hits JOIN tasker.tasks t USING (task_uuid)
WHERE (cardinality(@states::text[]) = 0 OR t.state = ANY(@states::text[]))
    AND (@namespace = '' OR t.namespace = @namespace) AND (@name = '' OR t.name = @name)
    AND (@created_after::timestamptz IS NULL OR t.created_at > @created_after)
    AND (@created_before::timestamptz IS NULL OR t.created_at <= @created_before)
    AND (@before::uuid IS NULL
        OR (t.created_at, t.task_uuid) < (SELECT created_at, task_uuid FROM tasker.tasks WHERE task_uuid = @before))
ORDER BY t.created_at DESC, t.task_uuid DESC LIMIT @limit;

-- name: task_state_counts
-- How many tasks are in each of @states, each count stopping at @cap: an
-- overview for operators, which should not cost a scan of every finished
-- task each time it is drawn.
SELECT s.state, (SELECT count(*) FROM (SELECT FROM tasker.tasks t WHERE t.state = s.state LIMIT @cap) c)
FROM unnest(@states::text[]) WITH ORDINALITY AS s(state, n) ORDER BY s.n;

-- name: rejected_list
SELECT id, request_id, msg_id, payload, reason, node_id, rejected_at, replayed_msg_id, replayed_at
FROM tasker.rejected_requests ORDER BY id DESC LIMIT @limit;

-- name: request_rejection
-- The latest rejection of a request that was not replayed (a replayed one
-- may yet be accepted).
SELECT id, request_id, msg_id, payload, reason, node_id, rejected_at, replayed_msg_id, replayed_at
FROM tasker.rejected_requests WHERE request_id = @request_id AND replayed_at IS NULL
ORDER BY id DESC LIMIT 1;

-- name: rejected_get
SELECT id, request_id, msg_id, payload, reason, node_id, rejected_at, replayed_msg_id, replayed_at
FROM tasker.rejected_requests WHERE id = @id;

-- name: queue_wake
-- Announces a send to a queue at commit (see WakeChannel).
SELECT pg_notify(@channel, @queue);
