-- Retention: finished tasks are found by the time they finished, and one
-- node at a time prunes, holding a lease.

CREATE INDEX tasks_finished ON tasker.tasks (state, finished_at) WHERE finished_at IS NOT NULL;

-- A lease: held by one node until it expires or the node gives it back.
CREATE TABLE tasker.leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);
