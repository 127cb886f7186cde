-- Steps and edges are inserted only with their task, by the statements that
-- create a batch's tasks (sql/request_accept.sql), each row only if its
-- task is one the same transaction inserted; an edge joins two steps of
-- its task, inserted beside it. The references hold by construction, as
-- the transitions' do (0005). Their foreign keys checked, and share-locked,
-- the task row for every step and edge and both steps of every edge: 65,000
-- checks for 5,000 linear tasks of four steps. Whatever deletes tasks
-- deletes their steps and edges itself (task_history.sql, retention.sql).
ALTER TABLE tasker.steps
    DROP CONSTRAINT IF EXISTS steps_task_uuid_fkey;
ALTER TABLE tasker.step_edges
    DROP CONSTRAINT IF EXISTS step_edges_task_uuid_fkey,
    DROP CONSTRAINT IF EXISTS step_edges_from_step_fkey,
    DROP CONSTRAINT IF EXISTS step_edges_to_step_fkey;
