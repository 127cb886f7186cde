-- Operators look a task up by its correlation id (the dashboard's search,
-- beside the task uuid and the request id, which have their indexes).
CREATE INDEX tasks_correlation ON tasker.tasks (correlation_id);
