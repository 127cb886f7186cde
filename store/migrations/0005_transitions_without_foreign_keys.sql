-- The transition tables are append-only, and every row is written by the
-- statement that moves the step or task it records, in the same statement:
-- the reference holds by construction. Their foreign keys checked, and
-- share-locked, the step and task rows on every insert, about 7% of the hot
-- path's execution time (pg_stat_statements over a burn-down). Whatever
-- deletes tasks deletes their transitions itself (task_history.sql).
ALTER TABLE tasker.step_transitions
    DROP CONSTRAINT IF EXISTS step_transitions_step_uuid_fkey,
    DROP CONSTRAINT IF EXISTS step_transitions_task_uuid_fkey;
ALTER TABLE tasker.task_transitions
    DROP CONSTRAINT IF EXISTS task_transitions_task_uuid_fkey;
