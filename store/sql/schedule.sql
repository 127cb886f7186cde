-- Schedules: their definitions, and the check that sends their due fires.

-- name: schedule_upsert
-- Creates a schedule, or (@replace) writes a definition over the one of
-- that name and source; a changed cron expression or zone takes
-- @next_fire_at. Returns whether the row was written and its state after.
INSERT INTO tasker.schedules AS s (name, schedule_id, namespace, template, version, cron, time_zone,
    context, priority, overlap, catch_up, catch_up_limit, source, next_fire_at)
VALUES (@name, @schedule_id, @namespace, @template, @version, @cron, @time_zone,
    @context::jsonb, @priority, @overlap, @catch_up, @catch_up_limit, @source, @next_fire_at)
ON CONFLICT (name) DO UPDATE SET namespace = EXCLUDED.namespace, template = EXCLUDED.template,
    version = EXCLUDED.version, cron = EXCLUDED.cron, time_zone = EXCLUDED.time_zone,
    context = EXCLUDED.context, priority = EXCLUDED.priority, overlap = EXCLUDED.overlap,
    catch_up = EXCLUDED.catch_up, catch_up_limit = EXCLUDED.catch_up_limit,
    next_fire_at = CASE WHEN (s.cron, s.time_zone) IS DISTINCT FROM (EXCLUDED.cron, EXCLUDED.time_zone)
        THEN EXCLUDED.next_fire_at ELSE s.next_fire_at END,
    updated_at = now()
WHERE @replace::bool AND s.source = EXCLUDED.source
    AND (s.namespace, s.template, s.version, s.cron, s.time_zone, s.context, s.priority, s.overlap,
        s.catch_up, s.catch_up_limit) IS DISTINCT FROM (EXCLUDED.namespace, EXCLUDED.template,
        EXCLUDED.version, EXCLUDED.cron, EXCLUDED.time_zone, EXCLUDED.context, EXCLUDED.priority,
        EXCLUDED.overlap, EXCLUDED.catch_up, EXCLUDED.catch_up_limit)
RETURNING (xmax = 0) AS created;

-- name: schedule_source
SELECT source FROM tasker.schedules WHERE name = @name;

-- name: schedule_names_by_source
SELECT name FROM tasker.schedules WHERE source = @source ORDER BY name;

-- name: schedule_list
-- Every schedule (or the one named @name), with its last fire's task.
SELECT s.name, s.schedule_id, s.namespace, s.template, s.version, s.cron, s.time_zone, s.context,
    s.priority, s.overlap, s.catch_up, s.catch_up_limit, s.source, s.paused, s.next_fire_at,
    s.last_fire_at, s.last_request_id, t.task_uuid, t.state, s.fired, s.skipped, s.missed,
    s.created_at, s.updated_at
FROM tasker.schedules s
LEFT JOIN tasker.tasks t ON t.request_id = s.last_request_id
WHERE @name::text IS NULL OR s.name = @name
ORDER BY s.name;

-- name: schedule_pause
-- Pauses or resumes a schedule; a resumed one fires next at @next_fire_at
-- (the fires due while it was paused are not sent).
UPDATE tasker.schedules SET paused = @paused,
    next_fire_at = CASE WHEN paused AND NOT @paused THEN @next_fire_at::timestamptz ELSE next_fire_at END,
    updated_at = now()
WHERE name = @name;

-- name: schedule_delete
DELETE FROM tasker.schedules WHERE name = @name;

-- name: schedule_lock
-- One schedule held for update, for a trigger.
SELECT s.schedule_id, s.namespace, s.template, s.version, s.context, s.priority, s.last_request_id
FROM tasker.schedules s WHERE s.name = @name FOR UPDATE;

-- name: schedules_due
-- The schedules due at @now, held for update; a schedule another node is
-- checking is skipped (it sends that schedule's fires). The previous
-- fire's task, when it exists, and whether its request was rejected, tell
-- the overlap policy whether it still runs.
SELECT s.name, s.schedule_id, s.namespace, s.template, s.version, s.cron, s.time_zone, s.context,
    s.priority, s.overlap, s.catch_up, s.catch_up_limit, s.next_fire_at, s.last_request_id,
    t.task_uuid, t.state,
    EXISTS (SELECT FROM tasker.rejected_requests r WHERE r.request_id = s.last_request_id) AS last_rejected
FROM tasker.schedules s
LEFT JOIN tasker.tasks t ON t.request_id = s.last_request_id
WHERE NOT s.paused AND s.next_fire_at <= @now::timestamptz
ORDER BY s.next_fire_at
LIMIT @limit
FOR UPDATE OF s SKIP LOCKED;

-- name: schedule_fired
-- A check's outcome for one schedule: its next fire time, its last fire
-- and its counts.
UPDATE tasker.schedules SET next_fire_at = COALESCE(@next_fire_at::timestamptz, next_fire_at),
    last_fire_at = COALESCE(@last_fire_at::timestamptz, last_fire_at),
    last_request_id = COALESCE(@last_request_id::uuid, last_request_id),
    fired = fired + @fired, skipped = skipped + @skipped, missed = missed + @missed,
    updated_at = now()
WHERE name = @name;

-- name: schedule_fire_insert
INSERT INTO tasker.schedule_fires (schedule, fire_at, outcome, request_id, count, last_fire_at, reason, node_id)
VALUES (@schedule, @fire_at, @outcome, @request_id::uuid, @count, @last_fire_at::timestamptz, @reason, @node_id);

-- name: schedule_fires
-- A schedule's latest fires, newest first, with their tasks.
SELECT f.fire_at, f.outcome, f.request_id, t.task_uuid, t.state, f.count, f.last_fire_at, f.reason,
    f.node_id, f.created_at
FROM tasker.schedule_fires f
LEFT JOIN tasker.tasks t ON t.request_id = f.request_id
WHERE f.schedule = @schedule
ORDER BY f.fire_at DESC, f.created_at DESC
LIMIT @limit;

-- name: schedules_next
-- The soonest fire time of any schedule not paused.
SELECT min(next_fire_at) FROM tasker.schedules WHERE NOT paused;

-- name: task_request_send
-- A task request on {{requests}}, with @headers, and its wake-up at commit.
WITH sent AS (
    INSERT INTO {{requests}} (vt, message, headers)
    VALUES (clock_timestamp(), @message::jsonb, @headers::jsonb) RETURNING msg_id
)
SELECT msg_id, pg_notify(@wake_channel, @wake_queue) FROM sent;
