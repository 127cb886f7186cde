-- Version 2 of Tasker's pgmq subset: the rest of the pgmq 1.11 API that pgmq client
-- libraries call (docs/pgmq.md describes each function). Written from pgmq's public
-- documentation; the names, argument names and order, defaults, types and result columns
-- are pgmq's, so a client library's calls work unchanged.
--
-- Applied by queue.Install after version 1, in the same transaction and under the same
-- advisory lock, on a new database or on one that has version 1 with queues and messages
-- in it: every statement is CREATE OR REPLACE (same names, argument names and result
-- types as before where a function already existed), so existing queues keep working and
-- gain the new functions at once.
--
-- As in version 1, queue names reach dynamic SQL only after pgmq.tasker_validate_name has
-- checked and lower-cased them, and only through format('%I').

-- tasker_check_count raises a clear error unless value is a positive count.
CREATE OR REPLACE FUNCTION pgmq.tasker_check_count(value integer, name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', name USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF value < 1 THEN
        RAISE EXCEPTION '% must be at least 1, got %', name, value USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

-- ---------------------------------------------------------------------------------------
-- Queues

-- tasker_create_queue is create and create_unlogged: the queue table, its archive, their
-- indexes and the meta row, each only if missing. An unlogged queue has an unlogged queue
-- table (not written to the WAL: faster, emptied by a crash, not replicated); its archive
-- stays logged, so what was archived survives.
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
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (vt ASC)', 'q_' || qn || '_vt_idx', 'q_' || qn);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (archived_at)', 'a_' || qn || '_at_idx', 'a_' || qn);
    INSERT INTO pgmq.meta (queue_name, is_partitioned, is_unlogged)
    SELECT qn, false, c.relpersistence = 'u'
    FROM pg_class AS c WHERE c.oid = to_regclass(format('pgmq.%I', 'q_' || qn))
    ON CONFLICT (queue_name) DO NOTHING;
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.create(queue_name text)
RETURNS void
LANGUAGE sql
AS $fn$ SELECT pgmq.tasker_create_queue(queue_name, false) $fn$;

CREATE OR REPLACE FUNCTION pgmq.create_unlogged(queue_name text)
RETURNS void
LANGUAGE sql
AS $fn$ SELECT pgmq.tasker_create_queue(queue_name, true) $fn$;

-- detach_archive is a no-op in pgmq since archives stopped being extension members; it is
-- accepted for the clients that still call it. Only the name is checked.
CREATE OR REPLACE FUNCTION pgmq.detach_archive(queue_name text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM pgmq.tasker_validate_name(queue_name);
END
$fn$;

-- ---------------------------------------------------------------------------------------
-- Sending

-- tasker_send_batch is every send and send_batch: msgs in array order, each with the
-- headers entry of the same position (headers NULL: none), all visible at vt (NULL: now).
CREATE OR REPLACE FUNCTION pgmq.tasker_send_batch(queue_name text, msgs jsonb[], headers jsonb[], vt timestamptz)
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    qn  text := pgmq.tasker_validate_name(queue_name);
    bad integer;
BEGIN
    IF array_ndims(msgs) > 1 OR array_ndims(headers) > 1 THEN
        RAISE EXCEPTION 'msgs and headers must be one-dimensional arrays' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF headers IS NOT NULL AND cardinality(headers) <> cardinality(msgs) THEN
        RAISE EXCEPTION 'headers has % entries for % messages: give one per message', cardinality(headers), coalesce(cardinality(msgs), 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT h.ord INTO bad
    FROM unnest(headers) WITH ORDINALITY AS h(hdr, ord)
    WHERE jsonb_typeof(h.hdr) NOT IN ('object', 'null')
    ORDER BY h.ord LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'headers of message % is a JSON %, not an object', bad, jsonb_typeof(headers[array_lower(headers, 1) + bad - 1])
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY EXECUTE format(
        'INSERT INTO pgmq.%I (vt, message, headers)
         SELECT coalesce($3, clock_timestamp()), m.msg, h.hdr
         FROM unnest($1) WITH ORDINALITY AS m(msg, ord)
         LEFT JOIN unnest($2) WITH ORDINALITY AS h(hdr, ord) ON h.ord = m.ord
         ORDER BY m.ord
         RETURNING msg_id', 'q_' || qn)
    USING msgs, headers, vt;
END
$fn$;

-- tasker_visible_at turns a delay in seconds into the time a message becomes visible.
CREATE OR REPLACE FUNCTION pgmq.tasker_visible_at(delay integer)
RETURNS timestamptz
LANGUAGE sql VOLATILE
AS $fn$ SELECT clock_timestamp() + make_interval(secs => coalesce(delay, 0)) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb, delay integer)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, ARRAY[msg], ARRAY[headers], pgmq.tasker_visible_at(delay)) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb, delay timestamptz)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, ARRAY[msg], ARRAY[headers], delay) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, ARRAY[msg], NULL, NULL) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, delay integer)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, ARRAY[msg], NULL, pgmq.tasker_visible_at(delay)) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, delay timestamptz)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, ARRAY[msg], NULL, delay) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, ARRAY[msg], ARRAY[headers], NULL) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[])
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, msgs, NULL, NULL) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], delay integer)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, msgs, NULL, pgmq.tasker_visible_at(delay)) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], delay timestamptz)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, msgs, NULL, delay) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], headers jsonb[])
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, msgs, headers, NULL) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], headers jsonb[], delay integer)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, msgs, headers, pgmq.tasker_visible_at(delay)) $fn$;

CREATE OR REPLACE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], headers jsonb[], delay timestamptz)
RETURNS SETOF bigint
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_send_batch(queue_name, msgs, headers, delay) $fn$;

-- ---------------------------------------------------------------------------------------
-- Reading

-- read is version 1's, with qty checked: a NULL qty would have been LIMIT NULL, every
-- visible message of the queue.
CREATE OR REPLACE FUNCTION pgmq.read(queue_name text, vt integer, qty integer, conditional jsonb DEFAULT '{}')
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql
AS $fn$
DECLARE
    qn text := pgmq.tasker_validate_name(queue_name);
BEGIN
    PERFORM pgmq.tasker_check_count(qty, 'qty');
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
         ORDER BY msg_id ASC', 'q_' || qn)
    USING qty, coalesce(vt, 0), coalesce(conditional, '{}'::jsonb);
END
$fn$;

-- pop takes up to qty visible messages, oldest first, skipping rows other readers hold,
-- and deletes them: the rows come back as they were (read_ct not counted again). Nothing
-- redelivers a popped message, so delivery is at-most-once.
CREATE OR REPLACE FUNCTION pgmq.pop(queue_name text, qty integer DEFAULT 1)
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql
AS $fn$
DECLARE
    qn text := pgmq.tasker_validate_name(queue_name);
BEGIN
    PERFORM pgmq.tasker_check_count(qty, 'qty');
    RETURN QUERY EXECUTE format(
        'WITH picked AS (
             SELECT msg_id
             FROM pgmq.%1$I
             WHERE vt <= clock_timestamp()
             ORDER BY msg_id ASC
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         ), taken AS (
             DELETE FROM pgmq.%1$I AS q
             USING picked
             WHERE q.msg_id = picked.msg_id
             RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.last_read_at, q.vt, q.message, q.headers
         )
         SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers
         FROM taken
         ORDER BY msg_id ASC', 'q_' || qn)
    USING qty;
END
$fn$;

-- tasker_read_grouped is the FIFO-group reads. A message's group is its header
-- x-pgmq-group as text; messages without one (or with an empty one) form one default group.
-- Within a group messages are delivered in msg_id order, one run at a time:
--
--   * the group's head is its oldest message, visible or not. While the head is invisible
--     (being processed, or sent with a delay) the group is closed: nothing after it is
--     delivered until it is deleted, archived or visible again;
--   * from an open group a reader takes the head and the visible messages that follow it,
--     up to the first invisible one, never past a gap;
--   * every message taken is locked first (FOR UPDATE SKIP LOCKED, its visibility checked
--     again on the current row), the head before the rest, and a run ends at the first
--     message the reader could not lock: a group whose head another reader holds is
--     skipped whole, so two readers never share a group, and a reader locks the heads only
--     of the groups it takes from.
--
-- strategy says how up to qty messages are drawn from the open groups, oldest head first:
-- 'grouped' fills the batch group after group (read_grouped), 'rr' takes the first of
-- every group, then the second of every group, and so on (read_grouped_rr), 'head' takes
-- only the heads, one message per group (read_grouped_head). The rows come back in that
-- order.
--
-- Without create_fifo_index the statements scan the queue table. A session that turns
-- sequential scans off (Tasker's do) prices such a plan at PostgreSQL's disable cost,
-- far above jit_above_cost, and JIT compilation would then take seconds for a
-- millisecond's work: the function runs with JIT off.
CREATE OR REPLACE FUNCTION pgmq.tasker_read_grouped(queue_name text, vt integer, qty integer, strategy text)
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql
SET jit = off
AS $fn$
DECLARE
    qn       text := pgmq.tasker_validate_name(queue_name);
    ordering text;
    per      integer; -- the most messages one group can give the batch
    grp      record;
    run      bigint[];
    held     bigint[];
    n        integer;
    ids      bigint[] := '{}';
    pos      bigint[] := '{}';
    rn       bigint[] := '{}';
    groups   integer := 0;
BEGIN
    PERFORM pgmq.tasker_check_count(qty, 'qty');
    ordering := CASE strategy
        WHEN 'grouped' THEN 'c.pos, c.rn'
        WHEN 'rr' THEN 'c.rn, c.pos'
        WHEN 'head' THEN 'c.pos'
    END;
    IF ordering IS NULL THEN
        RAISE EXCEPTION 'unknown grouped read strategy %', quote_literal(strategy) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    per := CASE strategy WHEN 'head' THEN 1 ELSE qty END;

    -- The open groups, oldest head first, each with its run of visible messages (no more
    -- than per), as this statement's snapshot sees them.
    FOR grp IN EXECUTE format(
        'SELECT r.pos, array_agg(r.msg_id ORDER BY r.msg_id) AS run
         FROM (
             SELECT h.pos, m.msg_id,
                    row_number() OVER w AS rn,
                    bool_and(m.vt <= clock_timestamp()) OVER w AS open
             FROM (
                 SELECT heads.msg_id AS head, heads.grp, row_number() OVER (ORDER BY heads.msg_id) AS pos
                 FROM (
                     SELECT DISTINCT ON (coalesce(t.headers->>''x-pgmq-group'', ''''))
                            t.msg_id, coalesce(t.headers->>''x-pgmq-group'', '''') AS grp, t.vt
                     FROM pgmq.%1$I AS t
                     ORDER BY coalesce(t.headers->>''x-pgmq-group'', ''''), t.msg_id
                 ) AS heads
                 WHERE heads.vt <= clock_timestamp()
             ) AS h
             JOIN pgmq.%1$I AS m
               ON coalesce(m.headers->>''x-pgmq-group'', '''') = h.grp AND m.msg_id >= h.head
             WINDOW w AS (PARTITION BY h.pos ORDER BY m.msg_id)
         ) AS r
         WHERE r.open AND r.rn <= $1
         GROUP BY r.pos
         ORDER BY r.pos', 'q_' || qn)
    USING per
    LOOP
        IF strategy = 'grouped' THEN
            run := grp.run[1:qty - cardinality(ids)];
        ELSE
            run := grp.run;
        END IF;
        -- The head first: only the reader holding it takes anything from the group.
        EXECUTE format('SELECT array_agg(msg_id) FROM (SELECT msg_id FROM pgmq.%I
                        WHERE msg_id = $1 AND vt <= clock_timestamp() FOR UPDATE SKIP LOCKED) AS l', 'q_' || qn)
        INTO held
        USING run[1];
        CONTINUE WHEN held IS NULL;
        n := 1;
        IF cardinality(run) > 1 THEN
            EXECUTE format('SELECT coalesce(array_agg(msg_id), ''{}'') FROM (SELECT msg_id FROM pgmq.%I
                            WHERE msg_id = ANY($1) AND vt <= clock_timestamp() FOR UPDATE SKIP LOCKED) AS l', 'q_' || qn)
            INTO held
            USING run[2:];
            WHILE n < cardinality(run) AND run[n + 1] = ANY(held) LOOP
                n := n + 1;
            END LOOP;
        END IF;
        groups := groups + 1;
        ids := ids || run[1:n];
        pos := pos || array_fill(groups::bigint, ARRAY[n]);
        rn := rn || ARRAY(SELECT generate_series(1, n)::bigint);
        EXIT WHEN (strategy = 'grouped' AND cardinality(ids) >= qty)
              OR (strategy <> 'grouped' AND groups >= qty);
    END LOOP;
    IF groups = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY EXECUTE format(
        'WITH chosen AS (
             SELECT c.id, row_number() OVER (ORDER BY %2$s) AS ord
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS c(id, pos, rn)
             ORDER BY %2$s
             LIMIT $4
         ), taken AS (
             UPDATE pgmq.%1$I AS q
             SET vt = clock_timestamp() + make_interval(secs => $5),
                 read_ct = q.read_ct + 1,
                 last_read_at = clock_timestamp()
             FROM chosen
             WHERE q.msg_id = chosen.id
             RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.last_read_at, q.vt, q.message, q.headers, chosen.ord
         )
         SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers
         FROM taken
         ORDER BY ord', 'q_' || qn, ordering)
    USING ids, pos, rn, qty, coalesce(vt, 0);
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.read_grouped(queue_name text, vt integer, qty integer)
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_read_grouped(queue_name, vt, qty, 'grouped') $fn$;

CREATE OR REPLACE FUNCTION pgmq.read_grouped_rr(queue_name text, vt integer, qty integer)
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_read_grouped(queue_name, vt, qty, 'rr') $fn$;

CREATE OR REPLACE FUNCTION pgmq.read_grouped_head(queue_name text, vt integer, qty integer)
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_read_grouped(queue_name, vt, qty, 'head') $fn$;

-- tasker_poll is every *_with_poll function: it checks with the read of kind ('read', or
-- a tasker_read_grouped strategy), returns as soon as a check takes messages, and
-- otherwise sleeps poll_interval_ms and checks again until max_poll_seconds have passed
-- (one last check at the deadline).
--
-- What it holds while it waits: each check is its own statement, with a snapshot of its
-- own, so it sees every message committed before it starts. A check that takes nothing
-- writes nothing: no transaction id is assigned and no row stays locked, so the wait
-- blocks no other reader or writer (the queue table's ROW EXCLUSIVE lock does last until
-- the call ends, so DDL on the queue waits for it). What no function can
-- release is the snapshot of the statement that called it: PostgreSQL keeps that until
-- the call returns, so the calling session's backend_xmin, and with it the horizon below
-- which VACUUM removes dead rows, stays where it was when the call began, for as long as
-- the call lasts (at most max_poll_seconds plus one check). In a REPEATABLE READ or
-- SERIALIZABLE transaction the snapshot never changes, so waiting could never see a new
-- message: it checks once and returns.
CREATE OR REPLACE FUNCTION pgmq.tasker_poll(
    kind text, queue_name text, vt integer, qty integer,
    max_poll_seconds integer, poll_interval_ms integer, conditional jsonb)
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql
AS $fn$
DECLARE
    deadline timestamptz;
    pause    double precision;
BEGIN
    IF max_poll_seconds IS NULL OR poll_interval_ms IS NULL THEN
        RAISE EXCEPTION 'max_poll_seconds and poll_interval_ms must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF max_poll_seconds < 0 THEN
        RAISE EXCEPTION 'max_poll_seconds must not be negative, got %', max_poll_seconds USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pgmq.tasker_check_count(poll_interval_ms, 'poll_interval_ms');
    deadline := clock_timestamp() + make_interval(secs => max_poll_seconds);
    LOOP
        IF kind = 'read' THEN
            RETURN QUERY SELECT * FROM pgmq.read(queue_name, vt, qty, conditional);
        ELSE
            RETURN QUERY SELECT * FROM pgmq.tasker_read_grouped(queue_name, vt, qty, kind);
        END IF;
        EXIT WHEN FOUND
            OR current_setting('transaction_isolation') <> 'read committed';
        pause := least(poll_interval_ms / 1000.0, extract(epoch FROM deadline - clock_timestamp()));
        EXIT WHEN pause <= 0;
        PERFORM pg_sleep(pause);
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.read_with_poll(
    queue_name text, vt integer, qty integer,
    max_poll_seconds integer DEFAULT 5, poll_interval_ms integer DEFAULT 100,
    conditional jsonb DEFAULT '{}')
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_poll('read', queue_name, vt, qty, max_poll_seconds, poll_interval_ms, conditional) $fn$;

CREATE OR REPLACE FUNCTION pgmq.read_grouped_with_poll(
    queue_name text, vt integer, qty integer,
    max_poll_seconds integer DEFAULT 5, poll_interval_ms integer DEFAULT 100)
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_poll('grouped', queue_name, vt, qty, max_poll_seconds, poll_interval_ms, NULL) $fn$;

CREATE OR REPLACE FUNCTION pgmq.read_grouped_rr_with_poll(
    queue_name text, vt integer, qty integer,
    max_poll_seconds integer DEFAULT 5, poll_interval_ms integer DEFAULT 100)
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_poll('rr', queue_name, vt, qty, max_poll_seconds, poll_interval_ms, NULL) $fn$;

CREATE OR REPLACE FUNCTION pgmq.read_grouped_head_with_poll(
    queue_name text, vt integer, qty integer,
    max_poll_seconds integer DEFAULT 5, poll_interval_ms integer DEFAULT 100)
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_poll('head', queue_name, vt, qty, max_poll_seconds, poll_interval_ms, NULL) $fn$;

-- create_fifo_index indexes a queue by group and msg_id, the order the grouped reads walk
-- a queue in; create_fifo_indexes_all does it for every queue.
CREATE OR REPLACE FUNCTION pgmq.create_fifo_index(queue_name text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    qn text := pgmq.tasker_validate_name(queue_name);
BEGIN
    IF to_regclass(format('pgmq.%I', 'q_' || qn)) IS NULL THEN
        RAISE EXCEPTION 'queue % does not exist', quote_literal(qn) USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I ((coalesce(headers->>''x-pgmq-group'', '''')), msg_id)',
        'q_' || qn || '_fifo_idx', 'q_' || qn);
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.create_fifo_indexes_all()
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    qn text;
BEGIN
    FOR qn IN SELECT m.queue_name FROM pgmq.meta AS m ORDER BY m.queue_name LOOP
        PERFORM pgmq.create_fifo_index(qn);
    END LOOP;
END
$fn$;

-- ---------------------------------------------------------------------------------------
-- Visibility

-- tasker_set_vt is every set_vt: the messages of msg_ids that are in the queue become
-- visible at vt (NULL: now); their rows come back, oldest first.
CREATE OR REPLACE FUNCTION pgmq.tasker_set_vt(queue_name text, msg_ids bigint[], vt timestamptz)
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql
AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH moved AS (
             UPDATE pgmq.%I
             SET vt = coalesce($2, clock_timestamp())
             WHERE msg_id = ANY($1)
             RETURNING msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers
         )
         SELECT * FROM moved ORDER BY msg_id',
        'q_' || pgmq.tasker_validate_name(queue_name))
    USING msg_ids, vt;
END
$fn$;

CREATE OR REPLACE FUNCTION pgmq.set_vt(queue_name text, msg_id bigint, vt integer)
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_set_vt(queue_name, ARRAY[msg_id], pgmq.tasker_visible_at(vt)) $fn$;

CREATE OR REPLACE FUNCTION pgmq.set_vt(queue_name text, msg_id bigint, vt timestamptz)
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_set_vt(queue_name, ARRAY[msg_id], vt) $fn$;

CREATE OR REPLACE FUNCTION pgmq.set_vt(queue_name text, msg_ids bigint[], vt integer)
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_set_vt(queue_name, msg_ids, pgmq.tasker_visible_at(vt)) $fn$;

CREATE OR REPLACE FUNCTION pgmq.set_vt(queue_name text, msg_ids bigint[], vt timestamptz)
RETURNS SETOF pgmq.message_record
LANGUAGE sql
AS $fn$ SELECT * FROM pgmq.tasker_set_vt(queue_name, msg_ids, vt) $fn$;

-- ---------------------------------------------------------------------------------------
-- Metrics

-- metrics_all is metrics for every queue in pgmq.meta, by name; a queue dropped while it
-- runs is left out.
CREATE OR REPLACE FUNCTION pgmq.metrics_all()
RETURNS SETOF pgmq.metrics_result
LANGUAGE plpgsql
AS $fn$
DECLARE
    qn text;
BEGIN
    FOR qn IN SELECT m.queue_name FROM pgmq.meta AS m ORDER BY m.queue_name LOOP
        IF to_regclass(format('pgmq.%I', 'q_' || qn)) IS NOT NULL THEN
            RETURN NEXT pgmq.metrics(qn);
        END IF;
    END LOOP;
END
$fn$;
