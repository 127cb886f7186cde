-- Listing what was moved to the queues' archives, and why.

-- name: archived_list
-- Messages of {{queue_archive}}, newest first, older than message @before
-- when given: the reason kept in their headers or, for a task request (when
-- @requests), its rejection; the body cut at @message_chars characters, and
-- whole (for telling its reason when none was kept) if no reason was and it
-- is short.
SELECT a.msg_id, a.read_ct, a.enqueued_at, a.archived_at, x.reason, COALESCE(a.headers->>'archived_by', ''),
    CASE WHEN length(a.message::text) > @message_chars THEN left(a.message::text, @message_chars) || '…'
        ELSE a.message::text END,
    CASE WHEN x.reason IS NULL AND octet_length(a.message::text) <= @whole_bytes THEN a.message END
FROM {{queue_archive}} a
CROSS JOIN LATERAL (SELECT COALESCE(a.headers->>'archive_reason',
    CASE WHEN @requests::bool THEN (SELECT r.reason FROM tasker.rejected_requests r
        WHERE r.msg_id = a.msg_id ORDER BY r.id DESC LIMIT 1) END) AS reason) x
WHERE @before::bigint IS NULL OR a.msg_id < @before
ORDER BY a.msg_id DESC LIMIT @limit;
