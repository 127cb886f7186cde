-- The operator's actions on a task, each in a transaction that holds the
-- task's row lock.

-- name: task_lock
SELECT state, correlation_id, namespace FROM tasker.tasks WHERE task_uuid = @task FOR UPDATE;

-- name: task_move
-- Moves a task from @from_state to @to_state (compare-and-set) with its
-- transition; returns the rows moved.
WITH moved AS (
    UPDATE tasker.tasks SET state = @to_state, updated_at = now(),
        finished_at = CASE WHEN @terminal::bool THEN now() END
    -- IS TRUE: by the key only, never through tasks_state_created.
    WHERE task_uuid = @task AND (state = @from_state) IS TRUE
    RETURNING task_uuid
), recorded AS (
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, reason, node_id)
    SELECT task_uuid, @from_state, @to_state, @reason, @node_id FROM moved
)
SELECT count(*) FROM moved;

-- name: steps_move
-- Moves every step of a task whose state is in @from_states to the state at
-- the same index of @to_states, with the transitions; finished_at is set for
-- a state in @terminal_states and cleared otherwise; @reset gives the steps a
-- fresh set of attempts (an operator retry). Returns the steps moved.
WITH map AS (
    SELECT * FROM unnest(@from_states::text[], @to_states::text[]) AS m(from_state, to_state)
), old AS (
    SELECT step_uuid, state FROM tasker.steps
    WHERE task_uuid = @task AND state = ANY(@from_states::text[])
    ORDER BY step_uuid
    FOR UPDATE
), moved AS (
    UPDATE tasker.steps s
    SET state = m.to_state, outcome_attempt = NULL, outcome_ok = NULL,
        finished_at = CASE WHEN m.to_state = ANY(@terminal_states::text[]) THEN now() END,
        attempts_base = CASE WHEN @reset::bool THEN s.attempts ELSE s.attempts_base END,
        error = CASE WHEN @reset::bool THEN NULL ELSE s.error END,
        next_attempt_at = CASE WHEN @reset::bool THEN NULL ELSE s.next_attempt_at END
    FROM old JOIN map m ON m.from_state = old.state
    WHERE s.step_uuid = old.step_uuid
    RETURNING s.step_uuid, old.state AS from_state, s.state AS to_state, s.attempts, s.waiting_parents
), recorded AS (
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
    SELECT step_uuid, @task, from_state, to_state, @reason, attempts, @node_id FROM moved
)
SELECT step_uuid, waiting_parents FROM moved;

-- name: steps_enqueue
-- Enqueues the steps among @steps that are in @from_state with no parent
-- waiting: @to_state (@throttled for a step under a flow limit, which
-- then waits for its admission), the transitions, the messages of those
-- enqueued (@messages, at the same index as @steps) to {{step_queue}}, and
-- the wake-up of its poller. Returns the steps enqueued and throttled.
WITH moved AS (
    UPDATE tasker.steps SET state = CASE WHEN flow_groups IS NULL THEN @to_state ELSE @throttled END,
        enqueued_at = CASE WHEN flow_groups IS NULL THEN now() ELSE enqueued_at END
    WHERE step_uuid = ANY(@steps::uuid[]) AND state = @from_state AND waiting_parents = 0
    RETURNING step_uuid, task_uuid, state
), recorded AS (
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
    SELECT step_uuid, task_uuid, @from_state, state, @reason, 0, @node_id FROM moved
), sent AS (
    INSERT INTO {{step_queue}} (vt, message, headers)
    SELECT clock_timestamp(), m.msg, (SELECT t.trace FROM tasker.tasks t WHERE t.task_uuid = moved.task_uuid)
    FROM unnest(@steps::uuid[], @messages::jsonb[]) WITH ORDINALITY AS m(step_uuid, msg, n)
        JOIN moved USING (step_uuid)
    WHERE moved.state = @to_state
    ORDER BY m.n
    RETURNING msg_id
), woke AS (
    SELECT pg_notify(@wake_channel, @wake_queue) WHERE EXISTS (SELECT FROM moved WHERE state = @to_state)
)
SELECT (SELECT count(*) FROM moved WHERE state = @to_state), (SELECT count(*) FROM moved WHERE state = @throttled),
    (SELECT count(*) FROM sent), (SELECT count(*) FROM woke);

-- name: step_lock
-- Locks the step of a task called @name.
SELECT step_uuid, state, attempts FROM tasker.steps WHERE task_uuid = @task AND name = @name FOR UPDATE;

-- name: step_children
SELECT unnest(children) FROM tasker.steps WHERE step_uuid = @step;
