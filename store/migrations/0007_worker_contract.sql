-- The worker contract: SQL functions through which a program in any
-- language runs the steps of a namespace declared external, doing what a Go
-- worker does (docs/workers.md). A worker reads step messages from
-- <namespace>_queue with pgmq.read, then calls tasker.step_begin, its
-- handler, and tasker.step_complete or tasker.step_fail; a long handler
-- calls tasker.step_heartbeat to keep its message invisible.
--
-- The functions run as their owner (SECURITY DEFINER, with a fixed search
-- path), so a worker's role needs no rights on Tasker's tables: granted
-- EXECUTE on them and pgmq.read on its queue, it can move only the steps
-- whose messages it holds, and only as the state machine allows.
--
-- Refusals raise errors with these SQLSTATEs:
--   TK404  the message is not in the queue (deleted, or never sent)
--   TK409  the attempt reported is not the step's current one: nothing changed
--   22023  an argument is malformed (the message names it)
--   TK503  no node has published the contract on this database yet

-- The rules the functions follow, published by every node when it starts
-- from its state machine (workflow) and configuration: one row, the last
-- node's.
CREATE TABLE tasker.worker_contract (
    id                 bool PRIMARY KEY DEFAULT true CHECK (id),
    start_from         text[] NOT NULL,
    start_to           text NOT NULL,
    outcome_states     text[] NOT NULL,
    reason_taken       text NOT NULL,
    reason_redelivered text NOT NULL,
    max_result_bytes   int NOT NULL,
    max_json_depth     int NOT NULL,
    max_deliveries     int NOT NULL,
    result_queue       text NOT NULL,
    wake_channel       text NOT NULL,
    node_id            text NOT NULL,
    published_at       timestamptz NOT NULL DEFAULT now()
);

-- The contract in force, or an error saying none is.
CREATE FUNCTION tasker.worker_contract_get() RETURNS tasker.worker_contract
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tasker.worker_contract;
BEGIN
    SELECT * INTO c FROM tasker.worker_contract WHERE id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no Tasker node has started on this database yet: the worker contract is not published'
            USING ERRCODE = 'TK503';
    END IF;
    RETURN c;
END $$;

-- The table of a step queue, checked: a namespace queue's name is lower-case
-- letters, digits and underscores ending in _queue.
CREATE FUNCTION tasker.worker_queue_table(queue text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF queue IS NULL OR queue !~ '^[a-z][a-z0-9_]{0,40}_queue$' THEN
        RAISE EXCEPTION 'queue %: not a namespace queue (lower-case letters, digits and underscores, ending in _queue)',
            coalesce(quote_literal(queue), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN 'q_' || queue;
END $$;

-- How deeply a JSON value nests (a scalar is 0).
CREATE FUNCTION tasker.jsonb_depth(v jsonb) RETURNS int
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN CASE jsonb_typeof(v)
        WHEN 'object' THEN 1 + coalesce((SELECT max(tasker.jsonb_depth(e.value)) FROM jsonb_each(v) e), 0)
        WHEN 'array' THEN 1 + coalesce((SELECT max(tasker.jsonb_depth(e)) FROM jsonb_array_elements(v) e), 0)
        ELSE 0 END;
END $$;

-- Records an outcome of step_uuid's attempt on the step, sends its result
-- message (with the task's trace context as its headers), and deletes step
-- message msg_id (archiving it with the error as the reason when archive) — the compare-and-set of a Go worker's record.
-- Answers 'recorded', or 'already recorded' when this outcome already waits
-- (a retried call); raises TK409 when the attempt is not current.
CREATE FUNCTION tasker.worker_outcome_record(queue text, msg_id bigint, step_uuid uuid, attempt int,
    ok bool, result jsonb, error jsonb, retry_after_ms bigint, archive bool) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c  tasker.worker_contract := tasker.worker_contract_get();
    qt text := tasker.worker_queue_table(queue);
    s  record;
BEGIN
    SELECT st.state, st.attempts, st.outcome_attempt, st.task_uuid, st.last_attempted_at,
        (SELECT t.correlation_id FROM tasker.tasks t WHERE t.task_uuid = st.task_uuid) AS correlation_id,
        (SELECT t.trace FROM tasker.tasks t WHERE t.task_uuid = st.task_uuid) AS trace
    INTO s FROM tasker.steps st WHERE st.step_uuid = worker_outcome_record.step_uuid FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step % does not exist: nothing recorded', step_uuid USING ERRCODE = 'TK409';
    END IF;
    IF s.state = ANY(c.outcome_states) AND s.attempts = attempt AND s.outcome_attempt = attempt THEN
        RETURN 'already recorded';
    END IF;
    IF NOT (s.state = ANY(c.outcome_states) AND s.attempts = attempt AND s.outcome_attempt IS NULL) THEN
        RAISE EXCEPTION 'attempt % of step % is not current (the step is % on attempt %): nothing recorded',
            attempt, step_uuid, s.state, s.attempts USING ERRCODE = 'TK409';
    END IF;
    UPDATE tasker.steps st
    SET outcome_attempt = attempt, outcome_ok = ok,
        result = CASE WHEN ok THEN worker_outcome_record.result ELSE st.result END,
        error = CASE WHEN ok THEN NULL ELSE worker_outcome_record.error END,
        retry_after_ms = worker_outcome_record.retry_after_ms,
        duration_ms = (extract(epoch FROM clock_timestamp() - coalesce(s.last_attempted_at, now())) * 1000)::bigint
    WHERE st.step_uuid = worker_outcome_record.step_uuid;
    EXECUTE format('INSERT INTO pgmq.%I (vt, message, headers) VALUES (clock_timestamp(), $1, $2)', 'q_' || c.result_queue)
    USING jsonb_strip_nulls(jsonb_build_object('task_uuid', s.task_uuid, 'step_uuid', step_uuid,
        'correlation_id', s.correlation_id, 'attempt', attempt)), s.trace;
    -- Only the message of this step: a wrong msg_id deletes nothing else.
    IF archive THEN
        PERFORM tasker.worker_message_archive(queue, msg_id, (error->>'kind') || ': ' || (error->>'message'), step_uuid);
    ELSE
        EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1 AND message->>''step_uuid'' = $2::text', qt)
        USING msg_id, step_uuid;
    END IF;
    PERFORM pg_notify(c.wake_channel, c.result_queue);
    RETURN 'recorded';
END $$;

-- Moves message msg_id of queue to its archive with reason (and this
-- worker's name) in its headers; only the message of step_uuid when given.
CREATE FUNCTION tasker.worker_message_archive(queue text, msg_id bigint, reason text, step_uuid uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format(
        'WITH gone AS (DELETE FROM pgmq.%I WHERE msg_id = $1 AND ($2::uuid IS NULL OR message->>''step_uuid'' = $2::text)
            RETURNING msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
        INSERT INTO pgmq.%I (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
        SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message,
            COALESCE(CASE WHEN jsonb_typeof(headers) = ''object'' THEN headers END, ''{}''::jsonb)
                || jsonb_build_object(''archive_reason'', $3, ''archived_by'', $4)
        FROM gone', tasker.worker_queue_table(queue), 'a_' || queue)
    USING msg_id, step_uuid, reason, tasker.worker_node_id();
END $$;

-- The name an external worker's transitions carry: its application_name,
-- else its role.
CREATE FUNCTION tasker.worker_node_id() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'external:' || coalesce(nullif(current_setting('application_name', true), ''), session_user::text)
$$;

-- Starts the attempt of step message msg_id of queue, which the caller has
-- read: one row, whose status is
--   'started'    the step moved to in_progress (attempts + 1, the transition
--                recorded); the work columns are filled;
--   'stale'      the step was cancelled, finished or is gone: the message is
--                deleted (reason says why); nothing to run;
--   'forwarded'  an earlier attempt's outcome was waiting (its worker's node
--                died before applying it): it is sent on to orchestration and
--                the message deleted; nothing to run;
--   'archived'   the message does not decode, or was delivered more often
--                than queue.max_deliveries (the step fails as poison): it is
--                moved to the queue's archive with the reason.
CREATE FUNCTION tasker.step_begin(queue text, msg_id bigint)
RETURNS TABLE (status text, reason text, task_uuid uuid, step_uuid uuid, step_name text, handler text,
    attempt int, max_attempts int, timeout_ms bigint, config jsonb, task_name text, correlation_id uuid,
    context jsonb, parents jsonb, headers jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c     tasker.worker_contract := tasker.worker_contract_get();
    qt    text := tasker.worker_queue_table(queue);
    m     record;
    s     record;
    t     record;
    sid   uuid;
    why   text;
    n     int;
BEGIN
    IF msg_id IS NULL THEN
        RAISE EXCEPTION 'msg_id must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('SELECT q.read_ct, q.message, q.headers FROM pgmq.%I q WHERE q.msg_id = $1 FOR UPDATE', qt)
    INTO m USING msg_id;
    GET DIAGNOSTICS n = ROW_COUNT; -- EXECUTE leaves FOUND alone
    IF n = 0 THEN
        RAISE EXCEPTION 'message % is not in queue %: deleted, or never sent', msg_id, queue USING ERRCODE = 'TK404';
    END IF;
    BEGIN
        sid := (m.message->>'step_uuid')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        sid := NULL;
    END;
    IF sid IS NULL THEN
        why := 'undecodable step message: step_uuid is missing or not a uuid';
        PERFORM tasker.worker_message_archive(queue, msg_id, why, NULL);
        RETURN QUERY SELECT 'archived'::text, why, NULL::uuid, NULL::uuid, NULL::text, NULL::text, NULL::int,
            NULL::int, NULL::bigint, NULL::jsonb, NULL::text, NULL::uuid, NULL::jsonb, NULL::jsonb, m.headers;
        RETURN;
    END IF;

    SELECT st.* INTO s FROM tasker.steps st WHERE st.step_uuid = sid FOR UPDATE;
    IF NOT FOUND THEN
        why := format('step %s does not exist', sid);
    ELSIF s.namespace || '_queue' <> queue THEN
        why := format('step %s belongs to namespace %s, not to queue %s', sid, s.namespace, queue);
    END IF;
    IF why IS NOT NULL THEN
        EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1', qt) USING msg_id;
        RETURN QUERY SELECT 'stale'::text, why, NULL::uuid, sid, NULL::text, NULL::text, NULL::int,
            NULL::int, NULL::bigint, NULL::jsonb, NULL::text, NULL::uuid, NULL::jsonb, NULL::jsonb, m.headers;
        RETURN;
    END IF;
    SELECT tk.name, tk.correlation_id, tk.context, tk.trace INTO t FROM tasker.tasks tk WHERE tk.task_uuid = s.task_uuid;

    IF s.outcome_attempt IS NOT NULL AND s.state = ANY(c.outcome_states) THEN
        EXECUTE format('INSERT INTO pgmq.%I (vt, message, headers) VALUES (clock_timestamp(), $1, $2)', 'q_' || c.result_queue)
        USING jsonb_strip_nulls(jsonb_build_object('task_uuid', s.task_uuid, 'step_uuid', sid,
            'correlation_id', t.correlation_id, 'attempt', s.outcome_attempt)), t.trace;
        EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1', qt) USING msg_id;
        PERFORM pg_notify(c.wake_channel, c.result_queue);
        RETURN QUERY SELECT 'forwarded'::text, format('the outcome of attempt %s was waiting; sent on to orchestration', s.outcome_attempt),
            s.task_uuid, sid, s.name, s.handler, s.outcome_attempt, NULL::int, NULL::bigint, NULL::jsonb,
            t.name, t.correlation_id, NULL::jsonb, NULL::jsonb, m.headers;
        RETURN;
    END IF;
    IF s.outcome_attempt IS NOT NULL OR NOT (s.state = ANY(c.start_from)) THEN
        EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1', qt) USING msg_id;
        RETURN QUERY SELECT 'stale'::text, format('step %s is %s: nothing to run', sid, s.state),
            s.task_uuid, sid, s.name, s.handler, s.attempts, NULL::int, NULL::bigint, NULL::jsonb,
            t.name, t.correlation_id, NULL::jsonb, NULL::jsonb, m.headers;
        RETURN;
    END IF;

    UPDATE tasker.steps st
    SET state = c.start_to, attempts = st.attempts + 1, last_attempted_at = now(), next_attempt_at = NULL
    WHERE st.step_uuid = sid;
    INSERT INTO tasker.step_transitions (step_uuid, task_uuid, from_state, to_state, reason, attempt, node_id)
    VALUES (sid, s.task_uuid, s.state, c.start_to,
        CASE WHEN s.state = c.start_to THEN c.reason_redelivered ELSE c.reason_taken END, s.attempts + 1,
        tasker.worker_node_id());

    IF c.max_deliveries > 0 AND m.read_ct > c.max_deliveries THEN
        why := format('message delivered %s times, more than queue.max_deliveries (%s)', m.read_ct, c.max_deliveries);
        PERFORM tasker.worker_outcome_record(queue, msg_id, sid, s.attempts + 1, false, NULL,
            jsonb_build_object('kind', 'poison', 'message', why, 'retryable', false, 'attempt', s.attempts + 1), NULL, true);
        RETURN QUERY SELECT 'archived'::text, why, s.task_uuid, sid, s.name, s.handler, s.attempts + 1, NULL::int,
            NULL::bigint, NULL::jsonb, t.name, t.correlation_id, NULL::jsonb, NULL::jsonb, m.headers;
        RETURN;
    END IF;

    RETURN QUERY
    SELECT 'started'::text, NULL::text, s.task_uuid, sid, s.name, s.handler, s.attempts + 1,
        s.attempts_base + s.max_attempts, s.timeout_ms, s.config, t.name, t.correlation_id, t.context,
        coalesce((SELECT jsonb_object_agg(p.name, coalesce(p.result, 'null'::jsonb))
            FROM tasker.step_edges e JOIN tasker.steps p ON p.step_uuid = e.from_step
            WHERE e.to_step = sid), '{}'::jsonb),
        m.headers;
END $$;

-- Records the success of attempt of step_uuid with result, sends the result
-- message and deletes step message msg_id, in the caller's transaction. A
-- result larger than queue.max_result_bytes or nested deeper than the node
-- allows fails the step permanently instead, as in a Go worker. Returns
-- status 'recorded' (or 'already recorded' for a repeated call) or
-- 'failed' with the reason the result was refused; raises TK409 when the
-- attempt is not current.
CREATE FUNCTION tasker.step_complete(queue text, msg_id bigint, step_uuid uuid, attempt int, result jsonb)
RETURNS TABLE (status text, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c    tasker.worker_contract := tasker.worker_contract_get();
    r    jsonb := coalesce(result, 'null'::jsonb);
    size int := octet_length(r::text);
    why  text;
    kind text;
    st   text;
BEGIN
    PERFORM tasker.worker_check_call(queue, msg_id, step_uuid, attempt);
    IF size > c.max_result_bytes THEN
        kind := 'result_too_large';
        why := format('the result is %s bytes, more than the limit of %s (queue.max_result_bytes)', size, c.max_result_bytes);
    ELSIF tasker.jsonb_depth(r) > c.max_json_depth THEN
        kind := 'invalid_result';
        why := format('the result nests %s levels deep, more than the limit of %s', tasker.jsonb_depth(r), c.max_json_depth);
    END IF;
    IF kind IS NOT NULL THEN
        st := tasker.worker_outcome_record(queue, msg_id, step_uuid, attempt, false, NULL,
            jsonb_build_object('kind', kind, 'message', why, 'retryable', false, 'attempt', attempt), NULL, false);
        RETURN QUERY SELECT CASE WHEN st = 'recorded' THEN 'failed' ELSE st END, why;
        RETURN;
    END IF;
    RETURN QUERY SELECT tasker.worker_outcome_record(queue, msg_id, step_uuid, attempt, true, r, NULL, NULL, false), NULL::text;
END $$;

-- Records the failure of attempt of step_uuid, described by error:
--   kind                text, required: what went wrong, e.g. "timeout"
--   message             text, required
--   retryable           bool, default true: may the step be tried again
--   retry_after_seconds number >= 0: the earliest next attempt (e.g. a
--                       Retry-After); the backoff applies when absent
--   http_status         int 100..599: the status of a failed call
--   metadata            object: anything else worth keeping
-- Any other key is refused. Sends the result message and deletes step
-- message msg_id; orchestration retries or fails the step by its policy.
-- Returns status 'recorded' or 'already recorded'; raises TK409 when the
-- attempt is not current and 22023 naming a malformed field.
CREATE FUNCTION tasker.step_fail(queue text, msg_id bigint, step_uuid uuid, attempt int, error jsonb)
RETURNS TABLE (status text, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c       tasker.worker_contract := tasker.worker_contract_get();
    extra   text;
    after   numeric;
    stored  jsonb;
BEGIN
    PERFORM tasker.worker_check_call(queue, msg_id, step_uuid, attempt);
    IF error IS NULL OR jsonb_typeof(error) <> 'object' THEN
        RAISE EXCEPTION 'error must be a JSON object with kind and message' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO extra FROM jsonb_object_keys(error) k
    WHERE k NOT IN ('kind', 'message', 'retryable', 'retry_after_seconds', 'http_status', 'metadata');
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION 'error has unknown field(s) %: allowed are kind, message, retryable, retry_after_seconds, http_status, metadata', extra
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(error->'kind') IS DISTINCT FROM 'string' OR btrim(error->>'kind') = '' OR length(error->>'kind') > 64 THEN
        RAISE EXCEPTION 'error.kind must be a non-empty string of at most 64 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(error->'message') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'error.message must be a string' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF error ? 'retryable' AND jsonb_typeof(error->'retryable') <> 'boolean' THEN
        RAISE EXCEPTION 'error.retryable must be true or false' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF error ? 'retry_after_seconds' THEN
        IF jsonb_typeof(error->'retry_after_seconds') <> 'number' OR (error->>'retry_after_seconds')::numeric < 0
            OR (error->>'retry_after_seconds')::numeric > 86400 * 30 THEN
            RAISE EXCEPTION 'error.retry_after_seconds must be a number from 0 to 2592000 (30 days)' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        after := (error->>'retry_after_seconds')::numeric;
    END IF;
    IF error ? 'http_status' AND (jsonb_typeof(error->'http_status') <> 'number'
        OR (error->>'http_status')::numeric NOT BETWEEN 100 AND 599
        OR (error->>'http_status')::numeric <> trunc((error->>'http_status')::numeric)) THEN
        RAISE EXCEPTION 'error.http_status must be an integer from 100 to 599' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF error ? 'metadata' AND jsonb_typeof(error->'metadata') <> 'object' THEN
        RAISE EXCEPTION 'error.metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    stored := jsonb_strip_nulls(jsonb_build_object(
        'kind', error->>'kind', 'message', left(error->>'message', 8192),
        'retryable', coalesce((error->>'retryable')::bool, true),
        'http_status', (error->>'http_status')::int,
        'retry_after_ms', (after * 1000)::bigint,
        'metadata', error->'metadata', 'attempt', attempt));
    IF octet_length(stored::text) > c.max_result_bytes THEN
        RAISE EXCEPTION 'error is % bytes, more than the limit of % (queue.max_result_bytes)',
            octet_length(stored::text), c.max_result_bytes USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT tasker.worker_outcome_record(queue, msg_id, step_uuid, attempt, false, NULL, stored,
        CASE WHEN after > 0 THEN (after * 1000)::bigint END, false), NULL::text;
END $$;

-- Extends the invisibility of step message msg_id by extend_seconds from
-- now while attempt of step_uuid runs. Returns the new visibility time;
-- raises TK409 when the attempt is not current and TK404 when the message
-- is gone.
CREATE FUNCTION tasker.step_heartbeat(queue text, msg_id bigint, step_uuid uuid, attempt int, extend_seconds int)
RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    vt timestamptz;
BEGIN
    IF extend_seconds IS NULL OR extend_seconds NOT BETWEEN 1 AND 43200 THEN
        RAISE EXCEPTION 'extend_seconds must be from 1 to 43200 (12 hours), got %', extend_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM tasker.worker_check_call(queue, msg_id, step_uuid, attempt);
    EXECUTE format('UPDATE pgmq.%I SET vt = clock_timestamp() + make_interval(secs => $3)
        WHERE msg_id = $1 AND message->>''step_uuid'' = $2::text RETURNING vt', tasker.worker_queue_table(queue))
    INTO vt USING msg_id, step_uuid, extend_seconds;
    IF vt IS NULL THEN
        RAISE EXCEPTION 'message % of step % is not in queue %', msg_id, step_uuid, queue USING ERRCODE = 'TK404';
    END IF;
    RETURN vt;
END $$;

-- The checks every call about a running attempt makes: arguments present,
-- the queue a namespace queue and the step's, the attempt current (or its
-- outcome already recorded, for a repeated call).
CREATE FUNCTION tasker.worker_check_call(queue text, msg_id bigint, step_uuid uuid, attempt int) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tasker.worker_contract := tasker.worker_contract_get();
    s record;
BEGIN
    PERFORM tasker.worker_queue_table(queue);
    IF msg_id IS NULL OR step_uuid IS NULL OR attempt IS NULL OR attempt < 1 THEN
        RAISE EXCEPTION 'msg_id, step_uuid and attempt (from 1) are required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT st.namespace, st.state, st.attempts, st.outcome_attempt INTO s FROM tasker.steps st WHERE st.step_uuid = worker_check_call.step_uuid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'step % does not exist: nothing changed', step_uuid USING ERRCODE = 'TK409';
    END IF;
    IF s.namespace || '_queue' <> queue THEN
        RAISE EXCEPTION 'step % belongs to namespace %, not to queue %: nothing changed', step_uuid, s.namespace, queue
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (s.state = ANY(c.outcome_states) AND s.attempts = attempt AND (s.outcome_attempt IS NULL OR s.outcome_attempt = attempt)) THEN
        RAISE EXCEPTION 'attempt % of step % is not current (the step is % on attempt %): nothing changed',
            attempt, step_uuid, s.state, s.attempts USING ERRCODE = 'TK409';
    END IF;
END $$;

REVOKE EXECUTE ON FUNCTION tasker.worker_contract_get(), tasker.worker_outcome_record(text, bigint, uuid, int, bool, jsonb, jsonb, bigint, bool),
    tasker.step_begin(text, bigint), tasker.step_complete(text, bigint, uuid, int, jsonb),
    tasker.step_fail(text, bigint, uuid, int, jsonb), tasker.step_heartbeat(text, bigint, uuid, int, int),
    tasker.worker_check_call(text, bigint, uuid, int), tasker.worker_message_archive(text, bigint, text, uuid) FROM PUBLIC;
