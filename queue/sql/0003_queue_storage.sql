-- Version 3 of Tasker's pgmq subset: queue tables that stay small and fast when VACUUM
-- cannot keep up, or cannot run at all because a long transaction holds the xmin horizon.
--
-- A message is inserted, read once (an UPDATE of vt, read_ct and last_read_at) and deleted.
-- With an index on vt, the read can never be a HOT update: it wrote a second entry into
-- the primary key and one into the vt index for every message. No statement of Tasker's
-- uses the vt index (every read walks the primary key in msg_id order, filtering on vt),
-- so it is dropped: the read is then a HOT update when the page has room, and a 50%
-- fillfactor leaves that room. While the horizon is held, the entries of deleted messages
-- stay in the primary key and every read walks them from the head; one entry per message
-- instead of two halves that walk.
--
-- Autovacuum of a queue table starts at 1000 dead rows, whatever the table's size, and
-- runs without cost delay: a queue table holds few live rows, so its reltuples (which
-- counts the row versions a held horizon kept) says nothing of when to vacuum it, and
-- after a held horizon the sooner its dead rows go, the sooner reads are fast again.
--
-- Applied by queue.Install after version 2, in the same transaction: existing queues get
-- the settings and lose the vt index; tasker_create_queue makes new queues so.

-- tasker_queue_storage sets the storage parameters of a queue table and drops its vt index.
CREATE OR REPLACE FUNCTION pgmq.tasker_queue_storage(queue_name text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    qn text := pgmq.tasker_validate_name(queue_name);
BEGIN
    EXECUTE format('ALTER TABLE pgmq.%I SET (
        fillfactor = 50,
        autovacuum_vacuum_scale_factor = 0,
        autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0,
        autovacuum_vacuum_insert_threshold = 1000,
        autovacuum_analyze_scale_factor = 0,
        autovacuum_analyze_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0)', 'q_' || qn);
    EXECUTE format('DROP INDEX IF EXISTS pgmq.%I', 'q_' || qn || '_vt_idx');
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.tasker_create_queue(queue_name text, unlogged boolean)
RETURNS void
LANGUAGE plpgsql
AS $fn$
#variable_conflict use_column
DECLARE
    qn          text := pgmq.tasker_validate_name(queue_name);
    persistence "char";
BEGIN
    -- Serialises concurrent creators of the same queue: CREATE TABLE IF NOT EXISTS alone
    -- can still fail on the catalog's unique indexes when two run at once.
    PERFORM pg_advisory_xact_lock(hashtext('pgmq.create'), hashtext(qn));
    SELECT c.relpersistence INTO persistence
    FROM pg_class AS c WHERE c.oid = to_regclass(format('pgmq.%I', 'q_' || qn));
    IF persistence = 'p' AND unlogged THEN
        RAISE EXCEPTION 'queue % already exists as a logged queue; drop it first to create it unlogged', quote_literal(qn)
            USING ERRCODE = 'duplicate_table';
    END IF;
    -- An existing queue keeps what it is: create on an unlogged queue changes nothing.
    EXECUTE format(
        'CREATE %s TABLE IF NOT EXISTS pgmq.%I (
            msg_id       bigint      PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
            read_ct      integer     NOT NULL DEFAULT 0,
            enqueued_at  timestamptz NOT NULL DEFAULT now(),
            last_read_at timestamptz,
            vt           timestamptz NOT NULL DEFAULT clock_timestamp(),
            message      jsonb,
            headers      jsonb
        )', CASE WHEN unlogged THEN 'UNLOGGED' ELSE '' END, 'q_' || qn);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS pgmq.%I (
            msg_id       bigint      PRIMARY KEY,
            read_ct      integer     NOT NULL DEFAULT 0,
            enqueued_at  timestamptz NOT NULL DEFAULT now(),
            last_read_at timestamptz,
            archived_at  timestamptz NOT NULL DEFAULT now(),
            vt           timestamptz NOT NULL,
            message      jsonb,
            headers      jsonb
        )', 'a_' || qn);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (archived_at)', 'a_' || qn || '_at_idx', 'a_' || qn);
    PERFORM pgmq.tasker_queue_storage(qn);
    INSERT INTO pgmq.meta (queue_name, is_partitioned, is_unlogged)
    SELECT qn, false, c.relpersistence = 'u'
    FROM pg_class AS c WHERE c.oid = to_regclass(format('pgmq.%I', 'q_' || qn))
    ON CONFLICT (queue_name) DO NOTHING;
END
$fn$;

DO $do$
DECLARE
    qn text;
BEGIN
    FOR qn IN SELECT m.queue_name FROM pgmq.meta AS m
              WHERE to_regclass(format('pgmq.%I', 'q_' || m.queue_name)) IS NOT NULL LOOP
        PERFORM pgmq.tasker_queue_storage(qn);
    END LOOP;
END
$do$;
