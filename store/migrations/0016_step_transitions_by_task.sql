-- Every read of step transitions reaches them by task (a task's history,
-- retention, the deletion of a request's tasks): nothing reads them by step
-- alone. The index by (step_uuid, id) was written four times per step
-- attempt and never read.
DROP INDEX IF EXISTS tasker.step_transitions_step;
