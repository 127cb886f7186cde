-- Starting attempts: a worker took the messages of these steps.

-- name: step_start
-- Moves the steps to the start event's state (attempts + 1) from a state the
-- event allows while no outcome waits, locking them in the order of their
-- ids; records the transitions; returns the work with each task's name,
-- correlation and context. Returns too, marked outcome_waiting, the steps
-- on which an outcome waits (in a state that takes one), with its attempt.
WITH old AS (
    SELECT step_uuid, state FROM tasker.steps
    WHERE step_uuid = ANY(@steps::uuid[]) AND state = ANY(@from_states::text[]) AND outcome_attempt IS NULL
    ORDER BY step_uuid
    FOR UPDATE
), moved AS (
    UPDATE tasker.steps s
    SET state = @to_state, attempts = s.attempts + 1, last_attempted_at = now(), next_attempt_at = NULL
    FROM old WHERE s.step_uuid = old.step_uuid
    RETURNING s.step_uuid, old.state AS from_state, s.task_uuid, s.namespace, s.name, s.handler, s.attempts,
        s.attempts_base + s.max_attempts AS max_attempts, s.timeout_ms, s.config
), recorded AS (
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
    SELECT step_uuid, task_uuid, from_state, @to_state,
        CASE WHEN from_state = @to_state THEN @reason_redelivered ELSE @reason_taken END, attempts, @node_id
    FROM moved
)
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
SELECT e.to_step, p.name, COALESCE(p.result, 'null'::jsonb)
FROM tasker.step_edges e
    CROSS JOIN LATERAL (SELECT name, result FROM tasker.steps WHERE step_uuid = e.from_step OFFSET 0) p
WHERE e.to_step = ANY(@steps::uuid[]);
