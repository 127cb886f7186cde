-- Failed applies of orchestration messages (see
-- migrations/0013_apply_failures.sql).

-- name: apply_failed
-- Counts a failed delivery of message @msg_id of @queue_name (read
-- @read_count times), once per delivery, with its error; and forgets the
-- failures of messages not seen failing for a day (applied or archived
-- since, as nearly all are).
WITH forgotten AS (
    DELETE FROM tasker.apply_failures WHERE updated_at < clock_timestamp() - interval '1 day'
)
INSERT INTO tasker.apply_failures AS f (queue_name, msg_id, failures, last_read, last_error)
VALUES (@queue_name, @msg_id, 1, @read_count, @error)
ON CONFLICT (queue_name, msg_id) DO UPDATE
SET failures = f.failures + CASE WHEN excluded.last_read > f.last_read THEN 1 ELSE 0 END,
    last_read = greatest(f.last_read, excluded.last_read), last_error = excluded.last_error,
    updated_at = clock_timestamp();

-- name: apply_failures_read
-- The failed deliveries of message @msg_id of @queue_name and the last
-- error; no row when none failed.
SELECT failures, last_error FROM tasker.apply_failures WHERE queue_name = @queue_name AND msg_id = @msg_id;
