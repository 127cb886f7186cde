-- Flow control: admitting throttled steps under their limits (see
-- migrations/0011_flow_control.sql and 0014_flow_counts.sql).

-- name: flow_lock
-- Makes the admissions of one namespace take turns, on every node, until
-- the transaction ends; returns the server's time once it holds the lock,
-- the one clock the token buckets of every node are read against.
SELECT clock_timestamp() FROM (SELECT pg_advisory_xact_lock(@class::int, hashtext(@namespace))) l;

-- name: flow_counts_lock
-- Locks every shard of the counters of @groups of a namespace (and of the
-- namespace's ''), making those missing, in the order every statement
-- takes them, and returns each group's slots in use: until the round
-- commits, no admission at once takes any.
WITH locked AS (
    INSERT INTO tasker.flow_counts AS f (namespace, name, shard)
    SELECT @namespace, g, sh FROM unnest(array_prepend('', @groups::text[])) g,
        generate_series(0, tasker.flow_shards(g) - 1) sh
    ORDER BY 2, 3
    ON CONFLICT ON CONSTRAINT flow_counts_pkey DO UPDATE SET in_use = f.in_use
    RETURNING f.name, f.in_use
)
SELECT name, sum(in_use) FROM locked GROUP BY name;

-- name: flow_spread
-- After a round's admissions: spreads the slots in use of its groups
-- evenly over their shards (tasker.flow_spread), so that each shard's
-- share has room again.
SELECT tasker.flow_spread(@namespace, array_prepend('', @groups::text[]));

-- name: flow_shard
-- The shard of the namespace counters that the transaction writes
-- (migrations/0014_flow_counts.sql).
SELECT set_config('tasker.flow_shard', (@shard::int)::text, true);

-- name: flow_shared_lock
-- Makes the admissions of every namespace whose steps share the slots of
-- group @group (a handler's concurrency limit) take turns, until the
-- transaction ends. Taken after the namespace's lock, one group at a time
-- in the order of their names.
SELECT pg_advisory_xact_lock(@class::int, hashtext(@group));

-- name: flow_shared_in_use
-- Adds up the slots in use of each of @groups (handler groups) across every
-- namespace.
SELECT name, sum(in_use) FROM tasker.flow_counts
WHERE name LIKE 'handler:%' AND name = ANY(@groups::text[]) GROUP BY name;

-- name: flow_candidates
-- The throttled steps of a namespace in the order they are offered slots:
-- keys take turns (each key's first step, then each key's second, ...);
-- within a turn by effective priority (the task's priority plus one level
-- per @aging_us waited: workflow.EffectivePriority), then from the key
-- served least recently, then by the time they became ready; within a key
-- by effective priority and that time. With each, its groups and their
-- declared limits, and what its message needs.
WITH w AS (
    SELECT step_uuid, task_uuid, flow_key, since,
        priority + CASE WHEN @aging_us::bigint > 0
            THEN floor(extract(epoch FROM clock_timestamp() - since) * 1000000 / @aging_us::bigint)::bigint
            ELSE 0 END AS effective
    FROM tasker.flow_waiting WHERE namespace = @namespace
), ranked AS (
    SELECT w.*, row_number() OVER (PARTITION BY w.flow_key ORDER BY w.effective DESC, w.since, w.step_uuid) AS turn,
        (SELECT k.served_at FROM tasker.flow_keys k WHERE k.namespace = @namespace AND k.flow_key = w.flow_key) AS served_at
    FROM w
)
SELECT r.step_uuid, r.task_uuid, t.correlation_id, s.flow_groups, s.flow_max, s.flow_interval_us, s.flow_burst
FROM (SELECT * FROM ranked ORDER BY turn, effective DESC, served_at NULLS FIRST, since, step_uuid LIMIT @window) r
    JOIN LATERAL (SELECT * FROM tasker.steps WHERE step_uuid = r.step_uuid OFFSET 0) s ON true
    JOIN LATERAL (SELECT correlation_id FROM tasker.tasks WHERE task_uuid = r.task_uuid OFFSET 0) t ON true
ORDER BY r.turn, r.effective DESC, r.served_at NULLS FIRST, r.since, r.step_uuid;

-- name: flow_keys_forget
-- Forgets when the keys of a namespace with no step waiting were served.
DELETE FROM tasker.flow_keys k WHERE k.namespace = @namespace
    AND NOT EXISTS (SELECT FROM tasker.flow_waiting w WHERE w.namespace = k.namespace AND w.flow_key = k.flow_key);

-- name: flow_buckets_lock
-- Reads and locks the token buckets of @names, in the order of their names
-- (a handler's bucket is shared by namespaces admitting at once).
SELECT name, tat FROM tasker.flow_buckets WHERE name = ANY(@names::text[]) ORDER BY name FOR UPDATE;

-- name: flow_admit
-- Admits throttled steps: each to @enqueued with its transition (the
-- reason saying the wait for its token, if any), its key served now, its
-- message to
-- {{step_queue}} visible when its token is due (@now, the round's time,
-- plus its delay: the buckets' schedule whatever the round took), the wake-up of the poller when
-- one is visible now; moves the token buckets on; and records why the
-- steps left waiting wait (@held_steps, @held_reasons), where it changed;
-- returns the steps whose reason changed.
WITH a AS (
    SELECT * FROM unnest(@steps::uuid[], @delays_us::bigint[], @messages::jsonb[]) AS a(step_uuid, delay_us, msg)
), moved AS (
    UPDATE tasker.steps s SET state = @enqueued, enqueued_at = now()
    FROM a
    WHERE s.step_uuid = ANY(@steps::uuid[]) AND s.step_uuid = a.step_uuid AND s.state = @throttled
    RETURNING s.step_uuid, s.task_uuid, s.namespace, coalesce(s.flow_key, '') AS flow_key, a.delay_us, a.msg
), served AS (
    INSERT INTO tasker.flow_keys (namespace, flow_key, served_at)
    SELECT namespace, flow_key, clock_timestamp() FROM moved GROUP BY namespace, flow_key
    ON CONFLICT (namespace, flow_key) DO UPDATE SET served_at = excluded.served_at
), recorded AS (
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
    SELECT step_uuid, task_uuid, @throttled, @enqueued,
        CASE WHEN delay_us > 0 THEN @reason || format(' (runs in %s ms, when its token is due at %s)',
            round(delay_us / 1000.0, 1), @now::timestamptz + delay_us * interval '1 microsecond')
            ELSE @reason END,
        0, @node_id
    FROM moved
), sent AS (
    INSERT INTO {{step_queue}} (vt, message, headers)
    SELECT greatest(clock_timestamp(), @now::timestamptz + delay_us * interval '1 microsecond'), msg,
        (SELECT t.trace FROM tasker.tasks t WHERE t.task_uuid = moved.task_uuid)
    FROM moved
    RETURNING msg_id
), woke AS (
    SELECT pg_notify(@wake_channel, @wake_queue) WHERE EXISTS (SELECT FROM moved WHERE delay_us = 0)
), buckets AS (
    INSERT INTO tasker.flow_buckets (name, tat)
    SELECT * FROM unnest(@bucket_names::text[], @bucket_tats::timestamptz[]) ORDER BY 1
    ON CONFLICT (name) DO UPDATE SET tat = excluded.tat
    RETURNING name
), held AS (
    UPDATE tasker.flow_waiting w SET reason = h.reason
    FROM unnest(@held_steps::uuid[], @held_reasons::text[]) AS h(step_uuid, reason)
    WHERE w.step_uuid = ANY(@held_steps::uuid[]) AND w.step_uuid = h.step_uuid AND w.reason <> h.reason
    RETURNING w.step_uuid
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM sent), (SELECT count(*) FROM woke),
    (SELECT count(*) FROM buckets), ARRAY(SELECT step_uuid FROM held);

-- name: flow_namespaces
-- The namespaces with throttled steps: one index probe per namespace.
WITH RECURSIVE ns AS (
    (SELECT namespace FROM tasker.flow_waiting ORDER BY namespace LIMIT 1)
    UNION ALL
    SELECT (SELECT w.namespace FROM tasker.flow_waiting w WHERE w.namespace > ns.namespace ORDER BY w.namespace LIMIT 1)
    FROM ns WHERE ns.namespace IS NOT NULL
)
SELECT namespace FROM ns WHERE namespace IS NOT NULL;

-- name: flow_usage
-- The groups with a step in it, those with the most steps waiting and then
-- in use first, at most @limit, and how many there are: each group's slots
-- in use, its steps waiting (and the oldest wait), and the limits its
-- steps declared (0 for the groups whose limits the configuration sets).
WITH oldest AS (
    SELECT w.namespace, g.name, min(w.since) AS since
    FROM tasker.flow_waiting w, unnest(w.groups) AS g(name) GROUP BY 1, 2
), counts AS (
    SELECT namespace, name, sum(in_use) AS in_use, sum(waiting) AS waiting, max(max_in_flight) AS max_in_flight,
        max(interval_us) AS interval_us, max(burst) AS burst
    FROM tasker.flow_counts WHERE name <> '' GROUP BY 1, 2
)
SELECT c.namespace, c.name, c.in_use, c.waiting, o.since, c.max_in_flight, c.interval_us, c.burst, count(*) OVER ()
FROM counts c LEFT JOIN oldest o ON o.namespace = c.namespace AND o.name = c.name
WHERE c.in_use > 0 OR c.waiting > 0
ORDER BY c.waiting DESC, c.in_use DESC, 1, 2
LIMIT @limit;

-- name: flow_counts_lock_all
-- Locks every shard of every counter, making those missing, in order, for
-- a repair: a transaction that changes a counter after this waits for the
-- repair, and one that changed it before has committed.
INSERT INTO tasker.flow_counts AS f (namespace, name, shard)
SELECT DISTINCT c.namespace, c.name, sh FROM tasker.flow_counts c, generate_series(0, tasker.flow_shards(c.name) - 1) sh
ORDER BY 1, 2, 3
ON CONFLICT ON CONSTRAINT flow_counts_pkey DO UPDATE SET in_use = f.in_use;

-- name: flow_repair
-- After flow_counts_lock_all, in the same transaction: sets every counter
-- that disagrees with the steps' states to what they say (neither happens
-- while the triggers keep them; a change made with the triggers disabled
-- would leave them wrong), deletes the counters at zero, drops the waiting
-- rows of steps no longer throttled and adds those of throttled steps
-- without one. Returns by how much the groups' slot counts were off (the
-- namespaces' '' aside: their totals), and the waits set right (counts
-- and rows).
WITH truth AS (
    SELECT s.namespace, g AS name,
        count(*) FILTER (WHERE s.state = ANY(@slot_states::text[]))::int AS in_use,
        count(*) FILTER (WHERE s.state = @throttled)::int AS waiting
    FROM tasker.steps s, unnest(array_prepend('', s.flow_groups)) g
    WHERE s.flow_groups IS NOT NULL AND (s.state = ANY(@slot_states::text[]) OR s.state = @throttled)
    GROUP BY 1, 2
), counts AS (
    SELECT namespace, name, sum(in_use)::int AS in_use, sum(waiting)::int AS waiting
    FROM tasker.flow_counts GROUP BY 1, 2
), wrong AS (
    SELECT coalesce(c.namespace, t.namespace) AS namespace, coalesce(c.name, t.name) AS name,
        coalesce(t.in_use, 0) AS in_use, coalesce(t.waiting, 0) AS waiting,
        abs(coalesce(c.in_use, 0) - coalesce(t.in_use, 0)) AS slots_off,
        abs(coalesce(c.waiting, 0) - coalesce(t.waiting, 0)) AS waiting_off
    FROM counts c FULL JOIN truth t ON t.namespace = c.namespace AND t.name = c.name
    WHERE coalesce(c.in_use, 0) <> coalesce(t.in_use, 0) OR coalesce(c.waiting, 0) <> coalesce(t.waiting, 0)
), fixed AS (
    -- Each wrong counter set to the truth, spread over its shards.
    INSERT INTO tasker.flow_counts AS f (namespace, name, shard, in_use, waiting)
    SELECT w.namespace, w.name, sh,
        tasker.flow_share(w.in_use, w.name, sh),
        CASE WHEN sh = 0 THEN w.waiting ELSE 0 END
    FROM wrong w, generate_series(0, tasker.flow_shards(w.name) - 1) sh
    ORDER BY 1, 2, 3
    ON CONFLICT ON CONSTRAINT flow_counts_pkey DO UPDATE SET in_use = excluded.in_use, waiting = excluded.waiting
    RETURNING 1
), idle AS (
    -- Not drift: a key seen once would otherwise keep its row for ever.
    DELETE FROM tasker.flow_counts f
    WHERE (f.namespace, f.name) IN (SELECT namespace, name FROM counts WHERE in_use = 0 AND waiting = 0)
        AND NOT EXISTS (SELECT FROM wrong w WHERE w.namespace = f.namespace AND w.name = f.name)
    RETURNING 1
), left_waiting AS (
    DELETE FROM tasker.flow_waiting f
    WHERE NOT EXISTS (SELECT FROM tasker.steps s WHERE s.step_uuid = f.step_uuid AND s.state = @throttled)
    RETURNING 1
), missing_waits AS (
    INSERT INTO tasker.flow_waiting (step_uuid, task_uuid, namespace, flow_key, groups, priority)
    SELECT s.step_uuid, s.task_uuid, s.namespace, coalesce(s.flow_key, ''), s.flow_groups, t.priority
    FROM tasker.steps s JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
    WHERE s.flow_groups IS NOT NULL AND s.state = @throttled
        AND NOT EXISTS (SELECT FROM tasker.flow_waiting w WHERE w.step_uuid = s.step_uuid)
    ON CONFLICT (step_uuid) DO NOTHING
    RETURNING 1
), ended AS (
    -- Pauses that have ended (not drift: their rows are left to here).
    DELETE FROM tasker.flow_pauses WHERE until < clock_timestamp() - interval '1 minute'
)
SELECT (SELECT coalesce(sum(slots_off), 0) FROM wrong WHERE name <> ''),
    (SELECT coalesce(sum(waiting_off), 0) FROM wrong WHERE name <> '') + (SELECT count(*) FROM left_waiting)
        + (SELECT count(*) FROM missing_waits)
FROM (SELECT count(*) FROM fixed) f, (SELECT count(*) FROM idle) i;

-- name: flow_pauses_read
-- The pauses of @names that have not ended at @now.
SELECT name, until FROM tasker.flow_pauses WHERE name = ANY(@names::text[]) AND until > @now;

-- name: flow_pause
-- Pauses, for each step of @steps that a Retry-After answer sends to
-- @waiting (its retry), its groups that @scope ('key:%' or 'host:%') names,
-- for the step's delay in @pauses_us from now; a longer pause already in
-- place stays.
INSERT INTO tasker.flow_pauses (name, until, step_uuid, reason)
SELECT DISTINCT ON (g) g, clock_timestamp() + make_interval(secs => p.us / 1e6), s.step_uuid,
    'a Retry-After answer of ' || p.us / 1000 || ' ms to step ' || s.step_uuid
FROM unnest(@steps::uuid[], @pauses_us::bigint[]) AS p(step_uuid, us)
    JOIN tasker.steps s ON s.step_uuid = p.step_uuid AND s.state = @waiting, unnest(s.flow_groups) g
WHERE g LIKE @scope
ORDER BY g, p.us DESC
ON CONFLICT (name) DO UPDATE SET until = excluded.until, step_uuid = excluded.step_uuid, reason = excluded.reason
    WHERE flow_pauses.until < excluded.until;
