-- Sending a rejected task request again, on an operator's word.

-- name: rejected_lock
-- The latest rejection of message @msg_id, held until the replay commits.
SELECT id, replayed_msg_id, replayed_at FROM tasker.rejected_requests
WHERE msg_id = @msg_id ORDER BY id DESC LIMIT 1 FOR UPDATE;

-- name: request_replay
-- Sends the archived body of message @msg_id again to {{request_queue}}, as a
-- new message whose headers name the one it replays, records the new message
-- on rejection @id and wakes the queue's consumer at commit. No row when the
-- message is no longer in {{request_queue_archive}}.
WITH body AS (
    SELECT message FROM {{request_queue_archive}} WHERE msg_id = @msg_id LIMIT 1
), sent AS (
    INSERT INTO {{request_queue}} (vt, message, headers)
    SELECT clock_timestamp(), message, jsonb_build_object('replay_of', @msg_id::bigint) FROM body
    RETURNING msg_id
), recorded AS (
    UPDATE tasker.rejected_requests r SET replayed_msg_id = sent.msg_id, replayed_at = now()
    FROM sent WHERE r.id = @id
    RETURNING r.replayed_at
), woke AS (
    SELECT pg_notify(@wake_channel, @wake_queue) FROM sent
)
SELECT sent.msg_id, recorded.replayed_at, (SELECT count(*) FROM woke) FROM sent, recorded;
