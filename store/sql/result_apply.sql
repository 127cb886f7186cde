-- Applying step results: the orchestration moves the step, releases what
-- became ready and finalizes the task.

-- name: result_read
-- Reads, without locking, what applying the results decides on: for each
-- (step, task), the task's state and correlation, the step, the outcome
-- waiting on it, and its children. A missing task or step reads as NULLs.
SELECT r.step_uuid, t.state, t.correlation_id, s.state, s.name, s.namespace, s.attempts, s.attempts_base,
    s.max_attempts, s.retryable, s.outcome_attempt, s.outcome_ok, s.error, s.retry_after_ms,
    s.backoff_base_ms, s.backoff_max_ms,
    COALESCE(s.children, '{}'), s.flow_groups IS NOT NULL
FROM unnest(@steps::uuid[], @tasks::uuid[]) AS r(step_uuid, task_uuid)
    -- Each row by its key: as subqueries (OFFSET 0 keeps them so) a plan
    -- made while the tables were empty cannot join them by walking a whole
    -- index instead.
    LEFT JOIN LATERAL (SELECT state, correlation_id FROM tasker.tasks WHERE task_uuid = r.task_uuid OFFSET 0) t ON true
    LEFT JOIN LATERAL (SELECT * FROM tasker.steps WHERE step_uuid = r.step_uuid AND task_uuid = r.task_uuid OFFSET 0) s
        ON true;

-- name: tasks_lock
-- Locks tasks in the order of their ids, the order every batch takes them
-- in, so two batches never wait on each other in a cycle.
SELECT FROM tasker.tasks WHERE task_uuid = ANY(@tasks::uuid[]) ORDER BY task_uuid FOR UPDATE;

-- name: decisions_apply
-- Moves steps as decided, one row of the arrays per step (of different
-- tasks), and everything that follows from each move, all hanging on the
-- step's compare-and-set (its state, attempt and waiting outcome as read,
-- its task in @task_state): the step's transition; when release, the
-- release of its children, enqueueing those with no parent left
-- (compare-and-set on @pending) with their transitions and their messages
-- (@children, @child_messages) to {{step_queue}}; when retry, its own
-- message, delayed by retry_delay_us; the wake-up of the namespace's
-- poller; and the acknowledgement of the result's message: msg_id of
-- {{result_queue}}, or for an outcome handed over in the node step_msg_id of
-- {{step_queue}} (either moved to its archive when archive, archive_reason
-- in its headers). A carried outcome (carried: recorded nowhere before the
-- move) is recorded with it: its result or error, retry_after_ms and
-- duration_ms, as step_outcome_record would have.
-- Returns each step moved with the number of children it enqueued, and
-- whether the move concerns flow control (the step is under a limit, or
-- a child of it was throttled).
WITH m AS (
    SELECT * FROM unnest(@steps::uuid[], @tasks::uuid[], @from_states::text[], @to_states::text[],
        @results::jsonb[], @errors::jsonb[], @next_attempt_ats::timestamptz[], @finished::bool[], @attempts::int[],
        @outcome_attempts::int[], @reasons::text[], @release::bool[], @release_reasons::text[], @retry::bool[],
        @retry_delays_us::bigint[], @retry_messages::jsonb[], @msg_ids::bigint[], @step_msg_ids::bigint[],
        @carried::bool[], @retry_after_ms::bigint[], @durations_ms::bigint[], @archive::bool[], @archive_reasons::text[])
        AS m(step_uuid, task_uuid, from_state, to_state, result, error, next_attempt_at, finished, attempt,
            outcome_attempt, reason, release, release_reason, retry, retry_delay_us, retry_message, msg_id,
            step_msg_id, carried, retry_after_ms, duration_ms, archive, archive_reason)
    ORDER BY step_uuid
), moved AS (
    UPDATE tasker.steps s SET state = m.to_state, outcome_attempt = NULL, outcome_ok = NULL,
        result = COALESCE(m.result, s.result),
        error = CASE WHEN m.carried AND m.error IS NULL THEN NULL ELSE COALESCE(m.error, s.error) END,
        retry_after_ms = CASE WHEN m.carried THEN m.retry_after_ms ELSE s.retry_after_ms END,
        duration_ms = CASE WHEN m.carried THEN m.duration_ms ELSE s.duration_ms END,
        next_attempt_at = m.next_attempt_at, finished_at = CASE WHEN m.finished THEN now() END
    FROM m
    WHERE s.step_uuid = ANY(@steps::uuid[]) AND s.step_uuid = m.step_uuid AND s.state = m.from_state
        AND s.attempts = m.attempt
        AND s.outcome_attempt IS NOT DISTINCT FROM m.outcome_attempt
        -- The task by its key alone: a state in the same WHERE would let the
        -- planner reach it through tasks_state_created.
        AND (SELECT t.state FROM tasker.tasks t WHERE t.task_uuid = m.task_uuid) = @task_state
    RETURNING m.step_uuid, m.task_uuid, m.from_state, m.to_state, m.attempt, m.reason, m.release,
        m.release_reason, m.retry, m.retry_delay_us, m.retry_message, m.msg_id, m.step_msg_id, m.archive,
        m.archive_reason, s.flow_groups IS NOT NULL AS limited, s.flow_groups
), moved_recorded AS (
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
    SELECT step_uuid, task_uuid, from_state, to_state, reason, attempt, @node_id FROM moved
    RETURNING id
), demand AS (
    -- The children under flow limits that the moves make ready, once per
    -- group they need, offered for admission at once (tasker.flow_direct,
    -- which counts the slots the moves give back as free; its policy_rated
    -- takes @policy_by_round, the groups only a round admits:
    -- workflow.FlowPolicy.Arrays).
    SELECT c.step_uuid, g.name, g.max, g.interval_us
    FROM tasker.steps c, unnest(c.flow_groups, c.flow_max, c.flow_interval_us) AS g(name, max, interval_us)
    WHERE c.step_uuid = ANY(@children::uuid[]) AND c.flow_groups IS NOT NULL AND c.state = @pending
        AND c.waiting_parents = 1
        AND (@child_parents::uuid[])[array_position(@children::uuid[], c.step_uuid)] IN
            (SELECT step_uuid FROM moved WHERE release)
), direct AS (
    SELECT d AS step_uuid FROM tasker.flow_direct(@namespace,
        (SELECT array_agg(step_uuid) FROM demand), (SELECT array_agg(name) FROM demand),
        (SELECT array_agg(max) FROM demand), (SELECT array_agg(interval_us) FROM demand),
        @policy_groups::text[], @policy_max::int[], @policy_by_round::bool[],
        ARRAY(SELECT g FROM moved mv, unnest(mv.flow_groups) g
            WHERE mv.from_state = ANY(@slot_states::text[]) AND mv.to_state <> ALL(@slot_states::text[]))) d
    WHERE EXISTS (SELECT FROM demand)
), released AS (
    -- The children by their key alone (@children; @child_parents holds the
    -- parent of each): a join planned while the tables were empty walks
    -- whole indexes instead. Each child has one parent among the moves (one
    -- result per task in a batch).
    -- A child under a flow limit (flow_groups set) not admitted at once
    -- (direct) is throttled instead of enqueued, and waits for its
    -- admission (sql/flow.sql).
    UPDATE tasker.steps c
    SET waiting_parents = c.waiting_parents - 1,
        state = CASE WHEN c.waiting_parents = 1 AND c.state = @pending
            THEN CASE WHEN c.flow_groups IS NULL OR c.step_uuid IN (SELECT step_uuid FROM direct)
                THEN @enqueued ELSE @throttled END
            ELSE c.state END,
        enqueued_at = CASE WHEN c.waiting_parents = 1 AND c.state = @pending
            AND (c.flow_groups IS NULL OR c.step_uuid IN (SELECT step_uuid FROM direct))
            THEN now() ELSE c.enqueued_at END
    WHERE c.step_uuid = ANY(@children::uuid[])
        AND (@child_parents::uuid[])[array_position(@children::uuid[], c.step_uuid)] IN
            (SELECT step_uuid FROM moved WHERE release)
    RETURNING c.step_uuid, (@child_parents::uuid[])[array_position(@children::uuid[], c.step_uuid)] AS parent,
        c.task_uuid, c.waiting_parents = 0 AND c.state = @enqueued AS ready,
        c.waiting_parents = 0 AND c.state = @throttled AS throttled
), released_recorded AS (
    -- Reading moved_recorded first orders the children's transitions after
    -- their parents'.
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
    SELECT r.step_uuid, r.task_uuid, @pending, CASE WHEN r.ready THEN @enqueued ELSE @throttled END,
        mv.release_reason, 0, @node_id
    FROM (SELECT count(*) FROM moved_recorded) parent, released r JOIN moved mv ON mv.step_uuid = r.parent
    WHERE r.ready OR r.throttled
), sent AS (
    -- Each with its task's trace context as its headers.
    INSERT INTO {{step_queue}} (vt, message, headers)
    SELECT clock_timestamp(), c.msg, (SELECT t.trace FROM tasker.tasks t WHERE t.task_uuid = r.task_uuid)
    FROM unnest(@children::uuid[], @child_messages::jsonb[]) AS c(step_uuid, msg)
        JOIN released r ON r.step_uuid = c.step_uuid AND r.ready
    UNION ALL
    SELECT clock_timestamp() + retry_delay_us * interval '1 microsecond', retry_message,
        (SELECT t.trace FROM tasker.tasks t WHERE t.task_uuid = moved.task_uuid)
    FROM moved WHERE retry
    RETURNING msg_id
), woke AS (
    SELECT pg_notify(@wake_channel, @wake_queue)
    FROM (SELECT FROM released WHERE ready
        UNION ALL SELECT FROM moved WHERE retry AND retry_delay_us = 0 LIMIT 1) r
), acked AS (
    DELETE FROM {{result_queue}} q USING moved mv WHERE q.msg_id = ANY(@msg_ids::bigint[]) AND q.msg_id = mv.msg_id
    RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.last_read_at, q.vt, q.message, q.headers, mv.archive,
        mv.archive_reason
), archived AS (
    INSERT INTO {{result_queue_archive}} (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
    SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message,
        COALESCE(CASE WHEN jsonb_typeof(headers) = 'object' THEN headers END, '{}'::jsonb)
            || jsonb_build_object('archive_reason', archive_reason, 'archived_by', @node_id::text)
    FROM acked WHERE archive
    RETURNING msg_id
), step_acked AS (
    DELETE FROM {{step_queue}} q USING moved mv WHERE q.msg_id = ANY(@step_msg_ids::bigint[]) AND q.msg_id = mv.step_msg_id
    RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.last_read_at, q.vt, q.message, q.headers, mv.archive,
        mv.archive_reason
), step_archived AS (
    INSERT INTO {{step_queue_archive}} (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
    SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message,
        COALESCE(CASE WHEN jsonb_typeof(headers) = 'object' THEN headers END, '{}'::jsonb)
            || jsonb_build_object('archive_reason', archive_reason, 'archived_by', @node_id::text)
    FROM step_acked WHERE archive
    RETURNING msg_id
)
SELECT mv.step_uuid, (SELECT count(*) FROM released r WHERE r.parent = mv.step_uuid AND r.ready),
    mv.limited OR EXISTS (SELECT FROM released r WHERE r.parent = mv.step_uuid AND r.throttled)
FROM moved mv, (SELECT count(*) FROM sent) s, (SELECT count(*) FROM woke) w, (SELECT count(*) FROM acked) a,
    (SELECT count(*) FROM archived) x, (SELECT count(*) FROM step_archived) y;

-- name: tasks_finalize
-- Ends each task of @tasks that is in the state at the same index of
-- @from_states when its steps say so (workflow.TaskVerdict): @complete_to
-- when every step is in a @satisfied state, @fail_to when a step is in
-- @failed_state and none is in an @in_flight state; with the transition.
-- Returns the tasks that moved and their new state.
WITH f AS (
    SELECT * FROM unnest(@tasks::uuid[], @from_states::text[]) AS f(task_uuid, from_state) ORDER BY task_uuid
), counts AS (
    SELECT f.task_uuid, f.from_state, c.*
    FROM f CROSS JOIN LATERAL (
        SELECT count(*) AS total,
            count(*) FILTER (WHERE s.state = ANY(@satisfied::text[])) AS satisfied,
            count(*) FILTER (WHERE s.state = ANY(@in_flight::text[])) AS in_flight,
            array_agg(s.name ORDER BY s.position) FILTER (WHERE s.state = @failed_state) AS failed
        FROM tasker.steps s WHERE s.task_uuid = f.task_uuid) c
), decided AS (
    SELECT task_uuid, from_state,
        CASE WHEN satisfied = total THEN @complete_to
            WHEN in_flight = 0 AND failed IS NOT NULL THEN @fail_to END AS to_state,
        CASE WHEN satisfied = total THEN @complete_reason
            ELSE @fail_prefix || array_to_string(failed, @fail_separator) || @fail_suffix END AS reason,
        CASE WHEN satisfied = total THEN @complete_terminal::bool ELSE @fail_terminal::bool END AS terminal
    FROM counts
), moved AS (
    UPDATE tasker.tasks t SET state = d.to_state, updated_at = now(),
        finished_at = CASE WHEN d.terminal THEN now() END
    FROM decided d
    -- IS TRUE keeps the state test out of index conditions, so the task is
    -- reached by its key whatever the statistics say.
    WHERE t.task_uuid = ANY(@tasks::uuid[]) AND t.task_uuid = d.task_uuid AND (t.state = d.from_state) IS TRUE
        AND d.to_state IS NOT NULL
    RETURNING t.task_uuid, d.from_state, t.state, d.reason
), recorded AS (
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id)
    SELECT task_uuid, from_state, state, reason, @node_id FROM moved
)
SELECT task_uuid, state FROM moved;

-- name: message_ack
-- Acknowledges messages of {{queue}}: deletes @msg_ids, moving those also in
-- @archive_ids to its archive with the reason at the same index of
-- @archive_reasons in their headers (archive_reason, archived_by).
WITH acked AS (
    DELETE FROM {{queue}} WHERE msg_id = ANY(@msg_ids::bigint[])
    RETURNING msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers
), archived AS (
    INSERT INTO {{queue_archive}} (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
    SELECT a.msg_id, a.read_ct, a.enqueued_at, a.last_read_at, a.vt, a.message,
        COALESCE(CASE WHEN jsonb_typeof(a.headers) = 'object' THEN a.headers END, '{}'::jsonb)
            || jsonb_build_object('archive_reason', x.reason, 'archived_by', @node_id::text)
    FROM acked a JOIN unnest(@archive_ids::bigint[], @archive_reasons::text[]) AS x(msg_id, reason) USING (msg_id)
    RETURNING msg_id
)
SELECT (SELECT count(*) FROM acked), (SELECT count(*) FROM archived);
