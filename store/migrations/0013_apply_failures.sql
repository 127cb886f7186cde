-- Failed applies: how many deliveries of an orchestration message (a task
-- request, a step result, or the step message of an outcome handed over in
-- a node) failed for a reason that may be the message's own (not the
-- database being away or slow). queue.max_deliveries counts these, so a
-- message delivered again only because the node or the database was
-- overloaded is applied, not quarantined.

CREATE TABLE tasker.apply_failures (
    queue_name text   NOT NULL,
    msg_id     bigint NOT NULL,
    -- Deliveries that failed, and the read count of the last of them (a
    -- delivery tried several times counts once).
    failures   int    NOT NULL,
    last_read  int    NOT NULL,
    last_error text   NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (queue_name, msg_id)
);
