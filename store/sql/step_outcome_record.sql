-- Recording what workers report of their attempts.

-- name: step_outcome_record
-- Records outcomes on steps (compare-and-set: the step in a state that takes
-- an outcome, on the attempt reported, no outcome waiting) and, for those
-- recorded and not direct (handed over in the node), sends the result
-- messages to {{result_queue}}, deletes the step messages from
-- {{step_queue}} (moving those marked archive to its archive, the step's
-- error as the reason in their headers) and wakes the results' consumer at
-- commit. Returns the steps recorded, and those whose outcome of the attempt
-- reported already waits: an earlier try of the same call that committed and
-- lost its answer (on a dropped connection) recorded it, with all the rest.
WITH o AS (
    SELECT * FROM unnest(@steps::uuid[], @attempts::int[], @oks::bool[], @results::jsonb[], @errors::jsonb[],
        @retry_after_ms::bigint[], @durations_ms::bigint[], @bodies::jsonb[], @msg_ids::bigint[], @archive::bool[], @direct::bool[])
        AS o(step_uuid, attempt, ok, result, error, retry_after_ms, duration_ms, body, msg_id, archive, direct)
    ORDER BY step_uuid
), recorded AS (
    UPDATE tasker.steps s
    SET outcome_attempt = o.attempt, outcome_ok = o.ok,
        result = CASE WHEN o.ok THEN o.result ELSE s.result END,
        error = CASE WHEN o.ok THEN NULL ELSE o.error END,
        retry_after_ms = o.retry_after_ms, duration_ms = o.duration_ms
    FROM o
    -- The steps by their key too: joined to the arrays alone, a plan made
    -- while the table was empty walks the whole of it.
    WHERE s.step_uuid = ANY(@steps::uuid[]) AND s.step_uuid = o.step_uuid AND s.state = ANY(@outcome_states::text[])
        AND s.attempts = o.attempt
        AND s.outcome_attempt IS NULL
    RETURNING s.step_uuid, s.task_uuid, o.body, o.msg_id, o.archive, o.error, o.direct
), sent AS (
    -- Each with its task's trace context as its headers.
    INSERT INTO {{result_queue}} (vt, message, headers)
    SELECT clock_timestamp(), body, (SELECT t.trace FROM tasker.tasks t WHERE t.task_uuid = recorded.task_uuid)
    FROM recorded WHERE NOT direct
    RETURNING msg_id
), acked AS (
    DELETE FROM {{step_queue}} WHERE msg_id IN (SELECT msg_id FROM recorded WHERE NOT direct)
    RETURNING msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers
), archived AS (
    INSERT INTO {{step_queue_archive}} (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
    SELECT a.msg_id, a.read_ct, a.enqueued_at, a.last_read_at, a.vt, a.message,
        COALESCE(CASE WHEN jsonb_typeof(a.headers) = 'object' THEN a.headers END, '{}'::jsonb)
            || jsonb_build_object('archive_reason', COALESCE((r.error->>'kind') || ': ' || (r.error->>'message'), 'archived by its worker'),
                'archived_by', @node_id::text)
    FROM acked a JOIN recorded r ON r.msg_id = a.msg_id WHERE r.archive
    RETURNING msg_id
), woke AS (
    SELECT pg_notify(@wake_channel, @wake_queue) WHERE EXISTS (SELECT FROM recorded WHERE NOT direct)
)
SELECT r.step_uuid FROM recorded r, (SELECT count(*) FROM woke) w, (SELECT count(*) FROM archived) a
UNION ALL
-- Seen in the statement's snapshot, so never a step recorded just above.
SELECT s.step_uuid FROM tasker.steps s JOIN o ON o.step_uuid = s.step_uuid
WHERE s.step_uuid = ANY(@steps::uuid[]) AND s.state = ANY(@outcome_states::text[])
    AND s.attempts = o.attempt AND s.outcome_attempt = o.attempt;

-- name: outcome_forward
-- Sends to {{result_queue}} the result message of the outcome of @attempt
-- that waits on step @step (in a state that takes one), and deletes step
-- message @msg_id of {{step_queue}} whether it still waits or not; wakes the
-- results' consumer at commit. Returns the counts sent, deleted and woken.
WITH waiting AS (
    SELECT step_uuid, task_uuid FROM tasker.steps
    WHERE step_uuid = @step AND outcome_attempt = @attempt AND state = ANY(@outcome_states::text[])
    FOR UPDATE
), sent AS (
    INSERT INTO {{result_queue}} (vt, message, headers)
    SELECT clock_timestamp(), @body::jsonb, (SELECT t.trace FROM tasker.tasks t WHERE t.task_uuid = waiting.task_uuid)
    FROM waiting
    RETURNING msg_id
), acked AS (
    DELETE FROM {{step_queue}} WHERE msg_id = @msg_id::bigint
    RETURNING msg_id
), woke AS (
    SELECT pg_notify(@wake_channel, @wake_queue) FROM (SELECT FROM sent LIMIT 1) x
)
SELECT (SELECT count(*) FROM sent), (SELECT count(*) FROM acked), (SELECT count(*) FROM woke);
