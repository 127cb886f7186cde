-- Retention: deleting what is older than it is kept, in small batches, and
-- the lease that lets one node at a time do it.

-- name: prune_tasks
-- Up to @limit tasks in @states that finished before @cutoff, with their
-- steps and transitions. A task another transaction holds (an
-- operator's retry) is left for the next batch.
WITH doomed AS (
    SELECT task_uuid FROM tasker.tasks
    WHERE state = ANY(@states::text[]) AND finished_at < @cutoff::timestamptz
    ORDER BY finished_at LIMIT @limit
    FOR UPDATE SKIP LOCKED
), st AS (
    DELETE FROM tasker.step_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed) RETURNING 1
), tt AS (
    DELETE FROM tasker.task_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed) RETURNING 1
), s AS (
    DELETE FROM tasker.steps WHERE task_uuid IN (SELECT task_uuid FROM doomed) RETURNING 1
), t AS (
    DELETE FROM tasker.tasks WHERE task_uuid IN (SELECT task_uuid FROM doomed) RETURNING 1
)
SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM s),
    (SELECT count(*) FROM st) + (SELECT count(*) FROM tt);

-- name: prune_tasks_count
-- What prune_tasks would delete, all batches together.
WITH doomed AS (
    SELECT task_uuid FROM tasker.tasks
    WHERE state = ANY(@states::text[]) AND finished_at < @cutoff::timestamptz
)
SELECT (SELECT count(*) FROM doomed),
    (SELECT count(*) FROM tasker.steps WHERE task_uuid IN (SELECT task_uuid FROM doomed)),
    (SELECT count(*) FROM tasker.step_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed))
    + (SELECT count(*) FROM tasker.task_transitions WHERE task_uuid IN (SELECT task_uuid FROM doomed));

-- name: prune_rejected
WITH doomed AS (
    SELECT id FROM tasker.rejected_requests WHERE rejected_at < @cutoff::timestamptz
    ORDER BY rejected_at LIMIT @limit
), d AS (
    DELETE FROM tasker.rejected_requests WHERE id IN (SELECT id FROM doomed) RETURNING 1
)
SELECT count(*) FROM d;

-- name: prune_rejected_count
SELECT count(*) FROM tasker.rejected_requests WHERE rejected_at < @cutoff::timestamptz;

-- name: prune_archive
WITH doomed AS (
    SELECT msg_id FROM {{queue_archive}} WHERE archived_at < @cutoff::timestamptz
    ORDER BY archived_at LIMIT @limit
), d AS (
    DELETE FROM {{queue_archive}} WHERE msg_id IN (SELECT msg_id FROM doomed) RETURNING 1
)
SELECT count(*) FROM d;

-- name: prune_archive_count
SELECT count(*) FROM {{queue_archive}} WHERE archived_at < @cutoff::timestamptz;

-- name: prune_fires
WITH doomed AS (
    SELECT schedule, fire_at, outcome FROM tasker.schedule_fires WHERE created_at < @cutoff::timestamptz
    ORDER BY created_at LIMIT @limit
), d AS (
    DELETE FROM tasker.schedule_fires f USING doomed
    WHERE (f.schedule, f.fire_at, f.outcome) = (doomed.schedule, doomed.fire_at, doomed.outcome) RETURNING 1
)
SELECT count(*) FROM d;

-- name: prune_fires_count
SELECT count(*) FROM tasker.schedule_fires WHERE created_at < @cutoff::timestamptz;

-- name: lease_acquire
-- Takes lease @name for @holder for @ttl_ms, or extends it when @holder
-- has it; no row when another holder's lease has not expired.
INSERT INTO tasker.leases AS l (name, holder, expires_at)
VALUES (@name, @holder, clock_timestamp() + @ttl_ms::bigint * interval '1 millisecond')
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
    acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at ELSE clock_timestamp() END
WHERE l.holder = EXCLUDED.holder OR l.expires_at < clock_timestamp()
RETURNING expires_at;

-- name: lease_release
DELETE FROM tasker.leases WHERE name = @name AND holder = @holder;

-- name: lease_get
SELECT holder, expires_at FROM tasker.leases WHERE name = @name;

-- name: autovacuum_on
SELECT current_setting('autovacuum')::bool;

-- name: tables_dead
-- Tasker's tables, and the queue tables named in @queue_tables, whose dead
-- rows pass autovacuum's threshold, as quoted names.
SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables
WHERE (schemaname = 'tasker' OR (schemaname || '.' || relname) = ANY(@queue_tables::text[]))
    AND n_dead_tup > 50 + 0.2 * n_live_tup
ORDER BY n_dead_tup DESC;
