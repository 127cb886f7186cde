-- Pauses: a Retry-After answer (an http 429 or 503) to a step can pause the
-- step's concurrency key or its host for as long as the answer asks
-- ([namespaces.<ns>] retry_after_pauses). While a group is paused, no
-- admission lets another of its steps through before the pause ends, and
-- admission at once leaves its steps to a round. Ended pauses are deleted
-- by the check of the flow tables.

CREATE TABLE tasker.flow_pauses (
    -- A flow group's name (key:… or host:…).
    name  text PRIMARY KEY,
    until timestamptz NOT NULL,
    -- The step whose answer paused it last, and what it was.
    step_uuid uuid NOT NULL,
    reason text NOT NULL
);

-- As in 0011, with steps of a paused group left to a round.
CREATE OR REPLACE FUNCTION tasker.flow_direct(namespace text, steps uuid[], groups text[], maxes int[], intervals bigint[],
    policy_groups text[], policy_max int[], policy_rated bool[], freed text[])
RETURNS SETOF uuid LANGUAGE sql STABLE AS $$
    WITH demand AS (
        SELECT * FROM unnest(steps, groups, maxes, intervals) AS d(step_uuid, name, max, interval_us)
        WHERE current_setting('tasker.flow_gate_' || namespace, true) = 'on'
    ), limits AS (
        SELECT d.name, count(*) AS wanted,
            max(CASE WHEN d.name LIKE 'namespace:%' OR d.name LIKE 'handler:%' THEN coalesce(p.max, 0)
                ELSE d.max END) AS max_in_flight,
            bool_or(CASE WHEN d.name LIKE 'namespace:%' OR d.name LIKE 'handler:%' THEN coalesce(p.rated, false)
                ELSE d.interval_us > 0 END) AS rated,
            (SELECT count(*) FROM unnest(freed) AS x(name) WHERE x.name = d.name) AS freed
        FROM demand d
            LEFT JOIN unnest(policy_groups, policy_max, policy_rated) AS p(name, max, rated) ON p.name = d.name
        GROUP BY d.name
    ), counted AS (
        SELECT l.name, l.wanted, l.max_in_flight,
            (SELECT count(*) FROM (SELECT FROM tasker.flow_slots f
                WHERE f.namespace = flow_direct.namespace AND l.name = ANY(f.groups) LIMIT l.max_in_flight + l.freed + 1) s)
            - l.freed
            + (SELECT count(*) FROM (SELECT FROM tasker.flow_waiting w
                WHERE w.namespace = flow_direct.namespace AND l.name = ANY(w.groups) LIMIT l.max_in_flight + 1) q)
            AS in_use
        FROM limits l WHERE NOT l.rated AND l.max_in_flight > 0
    )
    SELECT DISTINCT step_uuid FROM demand d
    WHERE NOT EXISTS (SELECT FROM limits WHERE rated)
        AND NOT EXISTS (SELECT FROM counted WHERE in_use + wanted > max_in_flight)
        AND NOT EXISTS (SELECT FROM demand p JOIN tasker.flow_pauses f ON f.name = p.name
            WHERE p.step_uuid = d.step_uuid AND f.until > clock_timestamp())
$$;
