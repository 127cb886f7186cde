-- Flow control: concurrency limits, rate limits, priorities and fairness,
-- held in the database so that they bind every node.
--
-- A step under a limit carries its flow groups (workflow.StepGroups): their
-- names and, for the groups its template declares, their limits; a NULL
-- flow_groups puts a step under no limit, and such a step never reaches
-- this file's trigger. When it is ready it goes to 'throttled' instead of
-- 'enqueued' and waits in tasker.flow_waiting until an admission (one node
-- at a time per namespace) finds it a slot in every group and its tokens.
-- From its admission until it ends it holds a row in tasker.flow_slots: the
-- count of a group's slots in use is the count of those rows.
--
-- One trigger keeps both tables true to the steps' states, in the same
-- transaction as every change of state, whatever statement makes it: a step
-- that finishes, fails, is cancelled or deleted gives its slot back at
-- once. No index of tasker.steps involves the state, so its updates stay
-- HOT.

ALTER TABLE tasker.steps DROP CONSTRAINT steps_state_check;
ALTER TABLE tasker.steps ADD CONSTRAINT steps_state_check CHECK (state IN
    ('pending', 'throttled', 'enqueued', 'in_progress', 'waiting_for_retry', 'complete', 'error',
     'cancelled', 'resolved_manually'));

ALTER TABLE tasker.steps
    ADD COLUMN flow_groups      text[],
    -- At the same index as flow_groups: the group's limit as the template
    -- declared it (0: none); namespace and handler groups take theirs from
    -- the configuration when admitted.
    ADD COLUMN flow_max         int[],
    ADD COLUMN flow_interval_us bigint[],
    ADD COLUMN flow_burst       int[],
    -- The key whose steps take turns with other keys' ("" without one).
    ADD COLUMN flow_key         text;

CREATE TABLE tasker.flow_waiting (
    step_uuid uuid PRIMARY KEY REFERENCES tasker.steps ON DELETE CASCADE,
    task_uuid uuid NOT NULL,
    namespace text NOT NULL,
    flow_key  text NOT NULL,
    -- The step's flow groups, as on its row.
    groups    text[] NOT NULL,
    -- The task's priority when the step became ready.
    priority  int  NOT NULL,
    since     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Why the last admission that looked at it left it waiting.
    reason    text NOT NULL DEFAULT 'waiting for its admission'
);
CREATE INDEX flow_waiting_namespace ON tasker.flow_waiting (namespace, flow_key, since);

-- When each key with steps waiting last had one admitted: keys take turns
-- from the least recently served, across admissions. A key's row goes when
-- none of its steps waits, so a key back after a pause has the next turn.
CREATE TABLE tasker.flow_keys (
    namespace text NOT NULL,
    flow_key  text NOT NULL,
    served_at timestamptz NOT NULL,
    PRIMARY KEY (namespace, flow_key)
);

CREATE TABLE tasker.flow_slots (
    step_uuid uuid PRIMARY KEY REFERENCES tasker.steps ON DELETE CASCADE,
    namespace text   NOT NULL,
    groups    text[] NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX flow_slots_namespace ON tasker.flow_slots (namespace);

-- A token bucket as a generic cell rate: tat is when its next token is due
-- with the bucket empty.
CREATE TABLE tasker.flow_buckets (
    name text PRIMARY KEY,
    tat  timestamptz NOT NULL
);

-- The states of workflow.StepState.HoldsSlot: enqueued, in_progress,
-- waiting_for_retry (store tests check the two agree).
CREATE FUNCTION tasker.steps_flow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state = NEW.state THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.state = 'throttled' THEN
        DELETE FROM tasker.flow_waiting WHERE step_uuid = NEW.step_uuid;
    END IF;
    IF NEW.state = 'throttled' THEN
        INSERT INTO tasker.flow_waiting (step_uuid, task_uuid, namespace, flow_key, groups, priority)
        SELECT NEW.step_uuid, NEW.task_uuid, NEW.namespace, coalesce(NEW.flow_key, ''), NEW.flow_groups, t.priority
        FROM tasker.tasks t WHERE t.task_uuid = NEW.task_uuid
        ON CONFLICT (step_uuid) DO NOTHING;
    ELSIF NEW.state IN ('enqueued', 'in_progress', 'waiting_for_retry') THEN
        INSERT INTO tasker.flow_slots (step_uuid, namespace, groups)
        VALUES (NEW.step_uuid, NEW.namespace, NEW.flow_groups)
        ON CONFLICT (step_uuid) DO NOTHING;
    ELSE
        DELETE FROM tasker.flow_slots WHERE step_uuid = NEW.step_uuid;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER steps_flow AFTER INSERT OR UPDATE OF state ON tasker.steps
    FOR EACH ROW WHEN (NEW.flow_groups IS NOT NULL) EXECUTE FUNCTION tasker.steps_flow();

-- The steps among a demand (each step once per group it needs: its id, the
-- group, and the group's limits as the step declared them) that may be
-- admitted at once by the transaction making them ready: it holds the
-- namespace's admission lock (the setting tasker.flow_gate_<namespace> is
-- on), every group has a slot for each and for every step of the group
-- that waits already (so no waiting step is passed; the slots in freed,
-- which the same statement gives back, count as free), and none is rated
-- (tokens are the admission's). The configuration's limits of namespace
-- and handler groups come as policy_*. Run in the caller's snapshot.
CREATE FUNCTION tasker.flow_direct(namespace text, steps uuid[], groups text[], maxes int[], intervals bigint[],
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
        -- Slots and waiting steps are counted only as far as the limit
        -- needs: past it the answer is no whatever the rest.
        SELECT l.name, l.wanted, l.max_in_flight,
            (SELECT count(*) FROM (SELECT FROM tasker.flow_slots f
                WHERE f.namespace = flow_direct.namespace AND l.name = ANY(f.groups) LIMIT l.max_in_flight + l.freed + 1) s)
            - l.freed
            + (SELECT count(*) FROM (SELECT FROM tasker.flow_waiting w
                WHERE w.namespace = flow_direct.namespace AND l.name = ANY(w.groups) LIMIT l.max_in_flight + 1) q)
            AS in_use
        FROM limits l WHERE NOT l.rated AND l.max_in_flight > 0
    )
    SELECT DISTINCT step_uuid FROM demand
    WHERE NOT EXISTS (SELECT FROM limits WHERE rated)
        AND NOT EXISTS (SELECT FROM counted WHERE in_use + wanted > max_in_flight)
$$;
