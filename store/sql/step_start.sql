-- Starting attempts: a poller or a worker took the messages of these steps.

-- part: start_moves
-- Moves the steps of starting (step_uuid) to the start event's state
-- (attempts + 1) from a state the event allows while no outcome waits,
-- locking them in the order of their ids, and records the transitions;
-- moved holds each with what its work needs. The attempt's time is the
-- clock's when the statement runs, not its transaction's start: a read that
-- starts steps finds them once the statement has begun, so only the clock
-- is sure to come after the commit that made them ready.
old AS (
    SELECT step_uuid, state FROM tasker.steps
    WHERE step_uuid = ANY (ARRAY(SELECT step_uuid FROM starting))
        AND state = ANY(@from_states::text[]) AND outcome_attempt IS NULL
    ORDER BY step_uuid
    FOR UPDATE
), moved AS (
    UPDATE tasker.steps s
    SET state = @to_state, attempts = s.attempts + 1, last_attempted_at = clock_timestamp(), next_attempt_at = NULL
    FROM old WHERE s.step_uuid = old.step_uuid
    RETURNING s.step_uuid, old.state AS from_state, s.task_uuid, s.namespace, s.name, s.handler, s.attempts,
        s.attempts_base + s.max_attempts AS max_attempts, s.timeout_ms, s.config, s.last_attempted_at, s.parents
), recorded AS (
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id,
        created_at)
    SELECT step_uuid, task_uuid, from_state, @to_state,
        CASE WHEN from_state = @to_state THEN @reason_redelivered ELSE @reason_taken END, attempts, @node_id,
        last_attempted_at
    FROM moved
)

-- name: step_start
-- Starts the steps (start_moves); returns the work with each task's name,
-- correlation and context. Returns too, marked outcome_waiting, the steps
-- on which an outcome waits (in a state that takes one), with its attempt.
WITH starting AS (
    SELECT unnest(@steps::uuid[]) AS step_uuid
), {{part start_moves}}
SELECT m.step_uuid, m.task_uuid, m.namespace, m.name, m.handler, m.attempts, m.max_attempts,
    m.timeout_ms, m.config, t.name, t.correlation_id, t.context, t.trace, false AS outcome_waiting
FROM moved m JOIN tasker.tasks t ON t.task_uuid = m.task_uuid
UNION ALL
-- In the key's order, and the task by its key alone, so that the plan reads
-- both by key however empty the tables looked when it was made.
(SELECT s.step_uuid, s.task_uuid, s.namespace, NULL, NULL, s.outcome_attempt, NULL, NULL, NULL, NULL,
    (SELECT t.correlation_id FROM tasker.tasks t WHERE t.task_uuid = s.task_uuid), NULL, NULL, true
FROM tasker.steps s
WHERE s.step_uuid = ANY(@steps::uuid[]) AND s.outcome_attempt IS NOT NULL AND s.state = ANY(@outcome_states::text[])
ORDER BY s.step_uuid);

-- name: step_parents
-- The results of the parents of the steps.
-- Each parent by its key (OFFSET 0 keeps the lookup a subquery, so a plan
-- made while the tables were empty cannot join them by walking steps).
SELECT s.step_uuid, p.name, COALESCE(p.result, 'null'::jsonb)
FROM tasker.steps s CROSS JOIN LATERAL unnest(s.parents) AS e(from_step)
    CROSS JOIN LATERAL (SELECT name, result FROM tasker.steps WHERE step_uuid = e.from_step OFFSET 0) p
WHERE s.step_uuid = ANY(@steps::uuid[]);

-- name: steps_take
-- Takes up to @qty visible messages of {{step_queue}}, oldest first,
-- skipping those other readers hold, as pgmq's read does (vt moves @vt_secs
-- on, read_ct counts the read, last_read_at is stamped), and starts
-- (start_moves) the step each message's step_uuid names: the first message
-- of each step, when one read takes two. Returns a row per message, with
-- the started work when it started one (step_uuid NULL otherwise: the
-- reader decodes the message and starts it, or learns why not, as
-- step_start), its JSON documents as text and its parents' results as one
-- object by step name.
WITH taken AS (
    UPDATE {{step_queue}} SET vt = clock_timestamp() + make_interval(secs => @vt_secs::integer),
        read_ct = read_ct + 1, last_read_at = clock_timestamp()
    WHERE msg_id = ANY (ARRAY(SELECT msg_id FROM {{step_queue}} WHERE vt <= clock_timestamp()
        ORDER BY msg_id LIMIT @qty::integer FOR UPDATE SKIP LOCKED))
    RETURNING msg_id, read_ct, message
), named AS (
    SELECT msg_id, read_ct, message, step_uuid,
        row_number() OVER (PARTITION BY step_uuid ORDER BY msg_id) AS nth
    FROM (SELECT msg_id, read_ct, message,
            CASE WHEN message->>'step_uuid' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN (message->>'step_uuid')::uuid END AS step_uuid
        FROM taken) t
), starting AS (
    SELECT step_uuid FROM named WHERE step_uuid IS NOT NULL AND nth = 1
), {{part start_moves}}
SELECT n.msg_id, n.read_ct, n.message, m.step_uuid, m.task_uuid, m.namespace, m.name, m.handler, m.attempts,
    m.max_attempts, m.timeout_ms, m.config::text, t.name, t.correlation_id, t.context::text, t.trace,
    CASE WHEN m.step_uuid IS NOT NULL THEN
        -- Each parent by its key (OFFSET 0 keeps the look-up a subquery).
        (SELECT COALESCE(jsonb_object_agg(p.name, COALESCE(p.result, 'null'::jsonb)), '{}'::jsonb)::text
        FROM unnest(m.parents) AS e(from_step)
            CROSS JOIN LATERAL (SELECT name, result FROM tasker.steps WHERE step_uuid = e.from_step OFFSET 0) p)
    END
FROM named n
    LEFT JOIN moved m ON m.step_uuid = n.step_uuid AND n.nth = 1
    -- The task by its key (OFFSET 0 keeps the look-up a subquery).
    LEFT JOIN LATERAL (SELECT name, correlation_id, context, trace FROM tasker.tasks
        WHERE task_uuid = m.task_uuid OFFSET 0) t ON true;
