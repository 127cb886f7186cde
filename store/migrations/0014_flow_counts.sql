-- Flow control by counters: a group's slots in use and steps waiting are
-- one row of tasker.flow_counts, not counted from one row per step, so
-- that an admission at once reads them in constant time and a limit that
-- is never reached costs one counter row per group and statement.
--
-- Three statement triggers on tasker.steps keep the counters and
-- tasker.flow_waiting true to the steps' states, whatever statement
-- changes them, in the same transaction: each adds up the statement's
-- changes per group and writes each counter once, so a batch that frees
-- 64 slots and takes 64 writes nothing to a counter whose net change is
-- zero. The row '' of a namespace counts every step of the namespace
-- under a limit, whatever its groups.
--
-- Counters are written in the order of (namespace, name, shard), and an
-- admission at once first locks every counter its statement will change
-- in that order (tasker.flow_direct), so two transactions never wait on
-- each other in a cycle; while it holds them no other transaction can
-- take those groups' slots, which makes the check and the take one step.
--
-- A namespace's counters ('' and namespace:…), which every transaction of
-- the namespace changes, are split in 8 shards so that transactions do not
-- queue on one row: a transaction writes only its own shard (the setting
-- tasker.flow_shard, each store's task creation and result apply taking
-- their own), and admits at once only within that shard's share of the
-- limit (the limit split evenly over the shards; a limit below 32 per
-- shard is not split: its admissions lock every shard and check the
-- whole). Every shard within its share keeps the whole within the limit. A shard's count can be below
-- zero (slots taken in another shard given back in this one) and a share
-- can fill up while others have room: the step then waits for a round,
-- which locks every shard, admits against the whole, and spreads the
-- whole evenly over the shards again (tasker.flow_spread).

CREATE TABLE tasker.flow_counts (
    namespace text NOT NULL,
    -- A flow group's name, or '' for the namespace's steps under any limit.
    name      text NOT NULL,
    -- 0 to tasker.flow_shards(name) - 1.
    shard     int  NOT NULL DEFAULT 0,
    in_use    int  NOT NULL DEFAULT 0,
    waiting   int  NOT NULL DEFAULT 0,
    -- The limits the group's steps declared, as the last of them to change
    -- it did (0: none; namespace and handler groups take theirs from the
    -- configuration).
    max_in_flight int    NOT NULL DEFAULT 0,
    interval_us   bigint NOT NULL DEFAULT 0,
    burst         int    NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, name, shard)
) WITH (fillfactor = 50);
-- A handler's slots are shared by every namespace: its rounds add them up.
CREATE INDEX flow_counts_handler ON tasker.flow_counts (name) WHERE name LIKE 'handler:%';

-- How many shards a group's counter has, and the one the transaction
-- writes.
CREATE FUNCTION tasker.flow_shards(name text) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN name = '' OR name LIKE 'namespace:%' THEN 8 ELSE 1 END
$$;
CREATE FUNCTION tasker.flow_shard(name text) RETURNS int LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('tasker.flow_shard', true), '')::int, 0) % tasker.flow_shards(name)
$$;
-- A shard's share of a count split evenly over the group's shards: of a
-- limit, or of the slots in use that a round or a repair spreads.
CREATE FUNCTION tasker.flow_share(max int, name text, shard int) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT max / tasker.flow_shards(name) + CASE WHEN shard < max % tasker.flow_shards(name) THEN 1 ELSE 0 END
$$;

-- Spreads the slots in use of each of p_names (every shard of them locked
-- and present) evenly over their shards: with the whole within the limit,
-- every shard is then within its share.
CREATE FUNCTION tasker.flow_spread(p_namespace text, p_names text[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasker.flow_counts f
    SET in_use = tasker.flow_share(t.total, f.name, f.shard)
    FROM (SELECT c.name, sum(c.in_use)::int AS total FROM tasker.flow_counts c
        WHERE c.namespace = p_namespace AND c.name = ANY(p_names) AND tasker.flow_shards(c.name) > 1
        GROUP BY c.name) t
    WHERE f.namespace = p_namespace AND f.name = t.name
        AND f.in_use <> tasker.flow_share(t.total, f.name, f.shard);
END
$$;

-- A change of steps under a limit, as the triggers collect it: the step's
-- own row change (+1, -1 or 0 for its slot and its wait).
CREATE TYPE tasker.flow_change AS (
    step_uuid uuid,
    task_uuid uuid,
    namespace text,
    flow_key  text,
    groups    text[],
    maxes     int[],
    intervals bigint[],
    bursts    int[],
    in_use    int,
    waiting   int
);

-- Applies changes: the counters (net per group, in lock order), and the
-- waiting rows of steps that became or stopped being throttled. In
-- PL/pgSQL, as every function here, so that its plans are made once per
-- session.
CREATE FUNCTION tasker.flow_count(p_changes tasker.flow_change[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tasker.flow_counts AS f (namespace, name, shard, in_use, waiting, max_in_flight, interval_us, burst)
    SELECT c.namespace, g.name, tasker.flow_shard(g.name), sum(c.in_use), sum(c.waiting),
        coalesce(max(g.max), 0), coalesce(max(g.interval_us), 0), coalesce(max(g.burst), 0)
    FROM unnest(p_changes) c, unnest(array_prepend('', c.groups), array_prepend(0, c.maxes),
        array_prepend(0::bigint, c.intervals), array_prepend(0, c.bursts)) AS g(name, max, interval_us, burst)
    WHERE c.in_use <> 0 OR c.waiting <> 0
    GROUP BY 1, 2 HAVING sum(c.in_use) <> 0 OR sum(c.waiting) <> 0
    ORDER BY 1, 2, 3
    ON CONFLICT ON CONSTRAINT flow_counts_pkey DO UPDATE SET in_use = f.in_use + excluded.in_use,
        waiting = f.waiting + excluded.waiting, max_in_flight = excluded.max_in_flight,
        interval_us = excluded.interval_us, burst = excluded.burst;
    IF EXISTS (SELECT FROM unnest(p_changes) c WHERE c.waiting <> 0) THEN
        DELETE FROM tasker.flow_waiting w
        WHERE w.step_uuid IN (SELECT c.step_uuid FROM unnest(p_changes) c WHERE c.waiting < 0);
        INSERT INTO tasker.flow_waiting (step_uuid, task_uuid, namespace, flow_key, groups, priority)
        SELECT c.step_uuid, c.task_uuid, c.namespace, coalesce(c.flow_key, ''), c.groups, t.priority
        FROM unnest(p_changes) c JOIN tasker.tasks t ON t.task_uuid = c.task_uuid
        WHERE c.waiting > 0
        ON CONFLICT (step_uuid) DO NOTHING;
    END IF;
END
$$;

-- The states of workflow.StepState.HoldsSlot (store tests check the two
-- agree), and of a step waiting for its admission.
CREATE FUNCTION tasker.flow_holds(state text) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN state IN ('enqueued', 'in_progress', 'waiting_for_retry') THEN 1 ELSE 0 END
$$;
CREATE FUNCTION tasker.flow_waits(state text) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN state = 'throttled' THEN 1 ELSE 0 END
$$;

-- The triggers' function: the statement's changes of steps under a limit,
-- those rows only whose change counts (+1 or -1 for a slot or a wait).
CREATE FUNCTION tasker.steps_flow_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changes tasker.flow_change[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        changes := ARRAY(
            SELECT ROW(n.step_uuid, n.task_uuid, n.namespace, n.flow_key, n.flow_groups, n.flow_max,
                n.flow_interval_us, n.flow_burst, tasker.flow_holds(n.state), tasker.flow_waits(n.state))::tasker.flow_change
            FROM new_steps n
            WHERE n.flow_groups IS NOT NULL AND tasker.flow_holds(n.state) + tasker.flow_waits(n.state) > 0);
    ELSIF TG_OP = 'UPDATE' THEN
        changes := ARRAY(
            SELECT ROW(n.step_uuid, n.task_uuid, n.namespace, n.flow_key, n.flow_groups, n.flow_max,
                n.flow_interval_us, n.flow_burst, tasker.flow_holds(n.state) - tasker.flow_holds(o.state),
                tasker.flow_waits(n.state) - tasker.flow_waits(o.state))::tasker.flow_change
            FROM new_steps n JOIN old_steps o ON o.step_uuid = n.step_uuid
            WHERE n.flow_groups IS NOT NULL AND n.state <> o.state
                AND (tasker.flow_holds(n.state) <> tasker.flow_holds(o.state)
                    OR tasker.flow_waits(n.state) <> tasker.flow_waits(o.state)));
    ELSE
        changes := ARRAY(
            SELECT ROW(o.step_uuid, o.task_uuid, o.namespace, o.flow_key, o.flow_groups, o.flow_max,
                o.flow_interval_us, o.flow_burst, -tasker.flow_holds(o.state), -tasker.flow_waits(o.state))::tasker.flow_change
            FROM old_steps o
            WHERE o.flow_groups IS NOT NULL AND tasker.flow_holds(o.state) + tasker.flow_waits(o.state) > 0);
    END IF;
    IF cardinality(changes) > 0 THEN
        PERFORM tasker.flow_count(changes);
    END IF;
    RETURN NULL;
END
$$;

-- The counters start from the steps as they are, spread over their shards.
INSERT INTO tasker.flow_counts (namespace, name, shard, in_use, waiting)
SELECT t.namespace, t.name, sh,
    tasker.flow_share(t.in_use, t.name, sh),
    CASE WHEN sh = 0 THEN t.waiting ELSE 0 END
FROM (SELECT s.namespace, g AS name, sum(tasker.flow_holds(s.state))::int AS in_use,
        sum(tasker.flow_waits(s.state))::int AS waiting
    FROM tasker.steps s, unnest(array_prepend('', s.flow_groups)) g
    WHERE s.flow_groups IS NOT NULL AND s.state IN ('throttled', 'enqueued', 'in_progress', 'waiting_for_retry')
    GROUP BY 1, 2) t, generate_series(0, tasker.flow_shards(t.name) - 1) sh;

DROP TRIGGER steps_flow ON tasker.steps;
DROP FUNCTION tasker.steps_flow();
DROP TABLE tasker.flow_slots;

CREATE TRIGGER steps_flow_inserted AFTER INSERT ON tasker.steps
    REFERENCING NEW TABLE AS new_steps FOR EACH STATEMENT EXECUTE FUNCTION tasker.steps_flow_count();
CREATE TRIGGER steps_flow_updated AFTER UPDATE ON tasker.steps
    REFERENCING OLD TABLE AS old_steps NEW TABLE AS new_steps FOR EACH STATEMENT EXECUTE FUNCTION tasker.steps_flow_count();
CREATE TRIGGER steps_flow_deleted AFTER DELETE ON tasker.steps
    REFERENCING OLD TABLE AS old_steps FOR EACH STATEMENT EXECUTE FUNCTION tasker.steps_flow_count();

-- The steps among a demand (each step once per group it needs: its id, the
-- group, and the group's limits as the step declared them) that may be
-- admitted at once by the statement making them ready. It locks, in order,
-- the counters (the transaction's shards) of every group the statement
-- changes (the demand's, those of freed — the groups of the slots the same
-- statement gives back, which count as free — and the namespace's ''), so
-- it sees every slot taken in them before and none is taken until it
-- commits; it admits the steps, in the order they come, while every group's
-- shard has, within its share of the limit, a slot for each beside every
-- step of the group that waits already (so no waiting step is passed), and
-- none of a step's groups is rated (tokens are a round's) or paused. The configuration's
-- limits of namespace and handler groups come as policy_*.
DROP FUNCTION tasker.flow_direct(text, uuid[], text[], int[], bigint[], text[], int[], bool[], text[]);
CREATE FUNCTION tasker.flow_direct(p_namespace text, p_steps uuid[], p_groups text[], p_maxes int[],
    p_intervals bigint[], p_policy_groups text[], p_policy_max int[], p_policy_rated bool[], p_freed text[])
RETURNS SETOF uuid LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH demand AS (
        SELECT d.*, min(d.n) OVER (PARTITION BY d.step_uuid) AS pos
        FROM unnest(p_steps, p_groups, p_maxes, p_intervals) WITH ORDINALITY AS d(step_uuid, name, max, interval_us, n)
    ), limits AS (
        SELECT d.name,
            max(CASE WHEN d.name LIKE 'namespace:%' OR d.name LIKE 'handler:%' THEN coalesce(p.max, 0)
                ELSE d.max END) AS max_in_flight,
            bool_or(CASE WHEN d.name LIKE 'namespace:%' OR d.name LIKE 'handler:%' THEN coalesce(p.rated, false)
                ELSE d.interval_us > 0 END) AS rated,
            (SELECT count(*) FROM unnest(p_freed) AS x(name) WHERE x.name = d.name) AS freed
        FROM demand d
            LEFT JOIN unnest(p_policy_groups, p_policy_max, p_policy_rated) AS p(name, max, rated) ON p.name = d.name
        GROUP BY d.name
    ), counters AS (
        -- The counters to lock: the transaction's shard of each group, or
        -- every shard of a sharded group whose limit is too small to split
        -- (its check is then against the whole).
        SELECT n.name, sh.shard
        FROM (SELECT d.name FROM demand d UNION SELECT unnest(p_freed) UNION SELECT '') n
            LEFT JOIN limits l ON l.name = n.name AND NOT l.rated AND l.max_in_flight > 0
                AND l.max_in_flight < 32 * tasker.flow_shards(n.name),
            LATERAL (SELECT generate_series(0, tasker.flow_shards(n.name) - 1) WHERE l.name IS NOT NULL
                UNION ALL SELECT tasker.flow_shard(n.name) WHERE l.name IS NULL) AS sh(shard)
    ), locked AS (
        INSERT INTO tasker.flow_counts AS f (namespace, name, shard)
        SELECT p_namespace, c.name, c.shard FROM counters c
        ORDER BY c.name, c.shard
        ON CONFLICT ON CONSTRAINT flow_counts_pkey DO UPDATE SET in_use = f.in_use
        RETURNING f.name, f.shard, f.in_use
    ), counted AS (
        -- The locked shards' slots in use against their share of the limit
        -- (all of it, when every shard is locked); and, as a guard for a
        -- limit lowered below the slots in use, the whole as last committed.
        -- Both count the group's waiting steps (every shard's) as taken.
        SELECT l.name, least(
                CASE WHEN count(*) > 1 THEN l.max_in_flight
                    ELSE tasker.flow_share(l.max_in_flight::int, l.name, min(k.shard)) END
                - (sum(k.in_use) - l.freed + w.waiting),
                l.max_in_flight - (w.in_use - l.freed + w.waiting)) AS room
        FROM limits l JOIN locked k ON k.name = l.name,
            LATERAL (SELECT coalesce(sum(c.in_use), 0) AS in_use, coalesce(sum(c.waiting), 0) AS waiting
                FROM tasker.flow_counts c WHERE c.namespace = p_namespace AND c.name = l.name) w
        WHERE NOT l.rated AND l.max_in_flight > 0
        GROUP BY l.name, l.max_in_flight, l.freed, w.in_use, w.waiting
    ), ranked AS (
        -- Within each group, the steps in the order they came: the first
        -- `room` of them fit. A step needs a place in every group, and
        -- counts in each even where another holds it back, so no group
        -- gives more than its room.
        SELECT d.step_uuid, d.name, dense_rank() OVER (PARTITION BY d.name ORDER BY d.pos) AS rank FROM demand d
    )
    SELECT DISTINCT d.step_uuid FROM demand d
    WHERE NOT EXISTS (SELECT FROM demand r JOIN limits l ON l.name = r.name WHERE r.step_uuid = d.step_uuid AND l.rated)
        AND NOT EXISTS (SELECT FROM ranked r JOIN counted c ON c.name = r.name
            WHERE r.step_uuid = d.step_uuid AND r.rank > c.room)
        AND NOT EXISTS (SELECT FROM demand p JOIN tasker.flow_pauses f ON f.name = p.name
            WHERE p.step_uuid = d.step_uuid AND f.until > clock_timestamp());
END
$$;
