-- A rejected request an operator sent again: the message it became and
-- when, so a second replay is refused and every replay can be listed.
ALTER TABLE tasker.rejected_requests
    ADD COLUMN replayed_msg_id bigint,
    ADD COLUMN replayed_at timestamptz;

CREATE INDEX rejected_requests_msg ON tasker.rejected_requests (msg_id);
