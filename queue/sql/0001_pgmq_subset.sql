-- Tasker's own implementation of the pgmq functions it relies on (version 1): the same
-- schema, names, argument order, types and result columns as pgmq, so a client written for
-- pgmq works unchanged against it.
--
-- Applied by queue.Install inside one transaction that holds an advisory lock, and only
-- when schema pgmq is absent or already owned by Tasker (pgmq.tasker_install). Every
-- statement is idempotent so a re-run changes nothing.
--
-- Queue names reach dynamic SQL only after pgmq.tasker_validate_name has checked and
-- lower-cased them, and only through format('%I'), never by concatenation.

CREATE SCHEMA IF NOT EXISTS pgmq;

CREATE TABLE IF NOT EXISTS pgmq.tasker_install (
    version      integer     PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgmq.tasker_install IS
    'Schema pgmq was installed by Tasker (pgmq-compatible subset); one row per applied version.';

CREATE TABLE IF NOT EXISTS pgmq.meta (
    queue_name     text        NOT NULL UNIQUE,
    is_partitioned boolean     NOT NULL DEFAULT false,
    is_unlogged    boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);

DO $do$
BEGIN
    IF to_regtype('pgmq.message_record') IS NULL THEN
        CREATE TYPE pgmq.message_record AS (
            msg_id       bigint,
            read_ct      integer,
            enqueued_at  timestamptz,
            last_read_at timestamptz,
            vt           timestamptz,
            message      jsonb,
            headers      jsonb
        );
    END IF;
    IF to_regtype('pgmq.metrics_result') IS NULL THEN
        CREATE TYPE pgmq.metrics_result AS (
            queue_name           text,
            queue_length         bigint,
            newest_msg_age_sec   integer,
            oldest_msg_age_sec   integer,
            total_messages       bigint,
            scrape_time          timestamptz,
            queue_visible_length bigint
        );
    END IF;
    IF to_regtype('pgmq.queue_record') IS NULL THEN
        CREATE TYPE pgmq.queue_record AS (
            queue_name     text,
            is_partitioned boolean,
            is_unlogged    boolean,
            created_at     timestamptz
        );
    END IF;
END
$do$;

-- tasker_validate_name checks a queue name and returns it lower-cased. The limit of 47
-- characters is the one real pgmq uses, so a name accepted here is accepted there too,
-- and q_/a_ table and index names stay inside PostgreSQL's 63-byte identifier limit.
CREATE OR REPLACE FUNCTION pgmq.tasker_validate_name(queue_name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    IF queue_name IS NULL OR queue_name = '' THEN
        RAISE EXCEPTION 'invalid queue name: must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF position('''' IN queue_name) > 0 OR position(';' IN queue_name) > 0
       OR position('$' IN queue_name) > 0 OR position('--' IN queue_name) > 0 THEN
        RAISE EXCEPTION 'invalid queue name %: contains a quote, semicolon, dollar or double dash', quote_literal(queue_name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF queue_name !~ '^[A-Za-z0-9_]+$' THEN
        RAISE EXCEPTION 'invalid queue name %: only letters, digits and underscore are allowed', quote_literal(queue_name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(queue_name) > 47 THEN
        RAISE EXCEPTION 'invalid queue name %: longer than 47 characters', quote_literal(queue_name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN lower(queue_name);
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.create(queue_name text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
#variable_conflict use_column
DECLARE
    qn text := pgmq.tasker_validate_name(queue_name);
BEGIN
    -- Serialises concurrent creators of the same queue: CREATE TABLE IF NOT EXISTS alone
    -- can still fail on the catalog's unique indexes when two run at once.
    PERFORM pg_advisory_xact_lock(hashtext('pgmq.create'), hashtext(qn));
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS pgmq.%I (
            msg_id       bigint      PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
            read_ct      integer     NOT NULL DEFAULT 0,
            enqueued_at  timestamptz NOT NULL DEFAULT now(),
            last_read_at timestamptz,
            vt           timestamptz NOT NULL DEFAULT clock_timestamp(),
            message      jsonb,
            headers      jsonb
        )', 'q_' || qn);
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
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (vt ASC)', 'q_' || qn || '_vt_idx', 'q_' || qn);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (archived_at)', 'a_' || qn || '_at_idx', 'a_' || qn);
    INSERT INTO pgmq.meta (queue_name, is_partitioned, is_unlogged)
    VALUES (qn, false, false)
    ON CONFLICT (queue_name) DO NOTHING;
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb, delay integer)
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'INSERT INTO pgmq.%I (vt, message, headers)
         VALUES (clock_timestamp() + make_interval(secs => $3), $1, $2)
         RETURNING msg_id', 'q_' || pgmq.tasker_validate_name(queue_name))
    USING msg, headers, coalesce(delay, 0);
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.send(queue_name, msg, NULL::jsonb, 0) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, delay integer)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.send(queue_name, msg, NULL::jsonb, delay) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.send(queue_name, msg, headers, 0) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], delay integer)
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'INSERT INTO pgmq.%I (vt, message)
         SELECT clock_timestamp() + make_interval(secs => $2), m.msg
         FROM unnest($1) WITH ORDINALITY AS m(msg, ord)
         ORDER BY m.ord
         RETURNING msg_id', 'q_' || pgmq.tasker_validate_name(queue_name))
    USING msgs, coalesce(delay, 0);
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[])
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.send_batch(queue_name, msgs, 0) $fn$;

-- read takes the oldest visible messages, skipping rows other readers hold, and makes
-- them invisible for vt seconds. Reading is a write: that is what keeps two readers
-- from receiving the same message while it is invisible.
CREATE OR REPLACE FUNCTION pgmq.read(queue_name text, vt integer, qty integer, conditional jsonb DEFAULT '{}')
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH picked AS (
             SELECT msg_id
             FROM pgmq.%1$I
             WHERE vt <= clock_timestamp()
               AND ($3 = ''{}''::jsonb OR message @> $3)
             ORDER BY msg_id ASC
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         ), taken AS (
             UPDATE pgmq.%1$I AS q
             SET vt = clock_timestamp() + make_interval(secs => $2),
                 read_ct = q.read_ct + 1,
                 last_read_at = clock_timestamp()
             FROM picked
             WHERE q.msg_id = picked.msg_id
             RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.last_read_at, q.vt, q.message, q.headers
         )
         SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers
         FROM taken
         ORDER BY msg_id ASC', 'q_' || pgmq.tasker_validate_name(queue_name))
    USING qty, coalesce(vt, 0), coalesce(conditional, '{}'::jsonb);
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.delete(queue_name text, msg_id bigint)
RETURNS boolean
LANGUAGE plpgsql
AS $fn$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1', 'q_' || pgmq.tasker_validate_name(queue_name))
    USING msg_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.delete(queue_name text, msg_ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'DELETE FROM pgmq.%I WHERE msg_id = ANY($1) RETURNING msg_id',
        'q_' || pgmq.tasker_validate_name(queue_name))
    USING msg_ids;
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.archive(queue_name text, msg_ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    qn text := pgmq.tasker_validate_name(queue_name);
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH moved AS (
             DELETE FROM pgmq.%I WHERE msg_id = ANY($1)
             RETURNING msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers
         )
         INSERT INTO pgmq.%I (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
         SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers FROM moved
         RETURNING msg_id', 'q_' || qn, 'a_' || qn)
    USING msg_ids;
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.archive(queue_name text, msg_id bigint)
RETURNS boolean
LANGUAGE sql
AS $fn$ SELECT EXISTS (SELECT 1 FROM pgmq.archive(queue_name, ARRAY[msg_id])) $fn$;

CREATE OR REPLACE FUNCTION pgmq.set_vt(queue_name text, msg_id bigint, vt integer)
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'UPDATE pgmq.%I
         SET vt = clock_timestamp() + make_interval(secs => $2)
         WHERE msg_id = $1
         RETURNING msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers',
        'q_' || pgmq.tasker_validate_name(queue_name))
    USING msg_id, coalesce(vt, 0);
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.metrics(queue_name text)
RETURNS pgmq.metrics_result
LANGUAGE plpgsql
AS $fn$
DECLARE
    qn     text := pgmq.tasker_validate_name(queue_name);
    seq    text;
    result pgmq.metrics_result;
BEGIN
    -- pg_get_serial_sequence returns an already quoted name, safe to splice with %s.
    seq := pg_get_serial_sequence(format('pgmq.%I', 'q_' || qn), 'msg_id');
    IF seq IS NULL THEN
        RAISE EXCEPTION 'queue % does not exist', quote_literal(qn) USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format(
        'WITH q AS (
             SELECT count(*) AS queue_length,
                    count(*) FILTER (WHERE vt <= clock_timestamp()) AS queue_visible_length,
                    extract(epoch FROM clock_timestamp() - max(enqueued_at))::integer AS newest_msg_age_sec,
                    extract(epoch FROM clock_timestamp() - min(enqueued_at))::integer AS oldest_msg_age_sec
             FROM pgmq.%I
         ), s AS (
             SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS total_messages FROM %s
         )
         SELECT $1, q.queue_length, q.newest_msg_age_sec, q.oldest_msg_age_sec,
                s.total_messages, clock_timestamp(), q.queue_visible_length
         FROM q, s', 'q_' || qn, seq)
    INTO result
    USING qn;
    RETURN result;
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.list_queues()
RETURNS SETOF pgmq.queue_record
LANGUAGE sql STABLE
AS $fn$
    SELECT m.queue_name, m.is_partitioned, m.is_unlogged, m.created_at
    FROM pgmq.meta AS m
    ORDER BY m.queue_name
$fn$;

CREATE OR REPLACE FUNCTION pgmq.purge_queue(queue_name text)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('DELETE FROM pgmq.%I', 'q_' || pgmq.tasker_validate_name(queue_name));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.drop_queue(queue_name text)
RETURNS boolean
LANGUAGE plpgsql
AS $fn$
#variable_conflict use_column
DECLARE
    qn      text := pgmq.tasker_validate_name(queue_name);
    existed boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgmq.create'), hashtext(qn));
    existed := to_regclass(format('pgmq.%I', 'q_' || qn)) IS NOT NULL;
    EXECUTE format('DROP TABLE IF EXISTS pgmq.%I', 'q_' || qn);
    EXECUTE format('DROP TABLE IF EXISTS pgmq.%I', 'a_' || qn);
    DELETE FROM pgmq.meta WHERE meta.queue_name = qn;
    RETURN existed;
END
$fn$;
