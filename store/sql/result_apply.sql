-- Applying step results: the orchestration moves the step, releases what
-- became ready and finalizes the task.

-- name: result_read
-- Reads, without locking, what applying the results decides on: for each
-- (step, task), the task's state and correlation, the step, the outcome
-- waiting on it, and its children. A missing task or step reads as NULLs.
SELECT r.step_uuid, t.state, t.correlation_id, s.state, s.name, s.namespace, s.attempts, s.attempts_base,
    s.max_attempts, s.retryable, s.outcome_attempt, s.outcome_ok, s.error, s.retry_after_ms,
    s.backoff_base_ms, s.backoff_max_ms,
    ARRAY(SELECT e.to_step FROM tasker.step_edges e WHERE e.from_step = s.step_uuid)
FROM unnest(@steps::uuid[], @tasks::uuid[]) AS r(step_uuid, task_uuid)
    LEFT JOIN tasker.tasks t ON t.task_uuid = r.task_uuid
    LEFT JOIN tasker.steps s ON s.step_uuid = r.step_uuid AND s.task_uuid = r.task_uuid;

-- name: tasks_lock
-- Locks tasks in the order of their ids, the order every batch takes them
-- in, so two batches never wait on each other in a cycle.
SELECT FROM tasker.tasks WHERE task_uuid = ANY(@tasks::uuid[]) ORDER BY task_uuid FOR UPDATE;

-- name: step_move
-- Moves one step as decided, and everything that follows from it, all
-- hanging on the step's compare-and-set (its state, attempt and waiting
-- outcome as read, its task in @task_state): the step's transition; when
-- @release, the release of its children, enqueueing those with no parent
-- left (compare-and-set on @pending) with their transitions and messages to
-- {{step_queue}}; when @retry, its own message, delayed; the wake-up of the
-- namespace's poller; and the acknowledgement of message @msg_id of
-- {{result_queue}} (moved to its archive when @archive, @archive_reason in
-- its headers).
WITH moved AS (
    UPDATE tasker.steps SET state = @to_state, outcome_attempt = NULL, outcome_ok = NULL,
        result = COALESCE(@result::jsonb, result), error = COALESCE(@error::jsonb, error),
        next_attempt_at = @next_attempt_at::timestamptz,
        finished_at = CASE WHEN @finished::bool THEN now() END
    WHERE step_uuid = @step AND state = @from_state AND attempts = @attempt
        AND outcome_attempt IS NOT DISTINCT FROM @outcome_attempt::int
        -- The task by its key alone: a state in the same WHERE would let the
        -- planner reach it through tasks_state_created.
        AND (SELECT state FROM tasker.tasks WHERE task_uuid = @task) = @task_state
    RETURNING step_uuid
), moved_recorded AS (
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
    SELECT step_uuid, @task, @from_state, @to_state, @reason, @attempt, @node_id FROM moved
    RETURNING id
), released AS (
    UPDATE tasker.steps c
    SET waiting_parents = c.waiting_parents - 1,
        state = CASE WHEN old.ready THEN @enqueued ELSE c.state END,
        enqueued_at = CASE WHEN old.ready THEN now() ELSE c.enqueued_at END
    FROM (
        SELECT c2.step_uuid, c2.waiting_parents = 1 AND c2.state = @pending AS ready
        FROM tasker.step_edges e JOIN tasker.steps c2 ON c2.step_uuid = e.to_step
        WHERE e.from_step = @step AND @release::bool AND EXISTS (SELECT FROM moved)
        FOR UPDATE OF c2
    ) old
    WHERE c.step_uuid = old.step_uuid
    RETURNING c.step_uuid, old.ready
), released_recorded AS (
    -- Reading moved_recorded first orders the children's transitions after
    -- their parent's.
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
    SELECT r.step_uuid, @task, @pending, @enqueued, @release_reason, 0, @node_id
    FROM (SELECT count(*) FROM moved_recorded) parent, released r WHERE r.ready
), sent AS (
    INSERT INTO {{step_queue}} (vt, message)
    SELECT clock_timestamp(), m.msg
    FROM unnest(@children::uuid[], @child_messages::jsonb[]) AS m(step_uuid, msg)
        JOIN released r ON r.step_uuid = m.step_uuid AND r.ready
    UNION ALL
    SELECT clock_timestamp() + @retry_delay_us::bigint * interval '1 microsecond', @retry_message::jsonb
    FROM moved WHERE @retry::bool
    RETURNING msg_id
), woke AS (
    SELECT pg_notify(@wake_channel, @wake_queue)
    FROM (SELECT FROM released WHERE ready
        UNION ALL SELECT FROM moved WHERE @retry::bool AND @retry_delay_us::bigint = 0 LIMIT 1) r
), acked AS (
    DELETE FROM {{result_queue}} WHERE msg_id = @msg_id::bigint AND EXISTS (SELECT FROM moved)
    RETURNING msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers
), archived AS (
    INSERT INTO {{result_queue_archive}} (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
    SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message,
        COALESCE(CASE WHEN jsonb_typeof(headers) = 'object' THEN headers END, '{}'::jsonb)
            || jsonb_build_object('archive_reason', @archive_reason::text, 'archived_by', @node_id::text)
    FROM acked WHERE @archive::bool
    RETURNING msg_id
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM released WHERE ready),
    (SELECT count(*) FROM sent), (SELECT count(*) FROM woke), (SELECT count(*) FROM acked),
    (SELECT count(*) FROM archived);

-- name: task_finalize
-- Ends a task in @from_state when its steps say so (workflow.TaskVerdict):
-- @complete_to when every step is in a @satisfied state, @fail_to when a
-- step is in @failed_state and none is in an @in_flight state; with the
-- transition. Returns the new state, or no row.
WITH counts AS (
    SELECT count(*) AS total,
        count(*) FILTER (WHERE state = ANY(@satisfied::text[])) AS satisfied,
        count(*) FILTER (WHERE state = ANY(@in_flight::text[])) AS in_flight,
        array_agg(name ORDER BY position) FILTER (WHERE state = @failed_state) AS failed
    FROM tasker.steps WHERE task_uuid = @task
), decided AS (
    SELECT CASE WHEN satisfied = total THEN @complete_to
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
    WHERE t.task_uuid = @task AND (t.state = @from_state) IS TRUE AND d.to_state IS NOT NULL
    RETURNING t.state, d.reason
), recorded AS (
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id)
    SELECT @task, @from_state, state, reason, @node_id FROM moved
)
SELECT state FROM moved;

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
