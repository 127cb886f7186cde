-- The digest of the request that created a task (SHA-256 of its canonical
-- form), so that a request id used again with a different request is
-- refused instead of silently taken for a repeat. NULL for tasks created
-- before it was kept.
ALTER TABLE tasker.tasks ADD COLUMN request_digest bytea;
