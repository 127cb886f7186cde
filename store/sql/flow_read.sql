-- Reading flow control for operators, /health and the metrics: reads that
-- stay small however many keys wait (see migrations/0011_flow_control.sql).

-- name: flow_namespace_usage
-- Per namespace with a step under a limit: its slots in use, its steps
-- waiting and the oldest wait; through the namespace indexes of both
-- tables.
SELECT coalesce(s.namespace, w.namespace), coalesce(s.in_use, 0), coalesce(w.waiting, 0), w.oldest
FROM (SELECT namespace, count(*) AS in_use FROM tasker.flow_slots GROUP BY namespace) s
    FULL JOIN (SELECT namespace, count(*) AS waiting, min(since) AS oldest FROM tasker.flow_waiting GROUP BY namespace) w
        ON w.namespace = s.namespace
ORDER BY 1;

-- name: flow_scope_slots
-- The slots in use per namespace and group, the groups of one key scope
-- (key:<scope>=<key>) counted together as key:<scope>: as many rows as
-- the templates declare groups, not as many as there are keys.
SELECT s.namespace, CASE WHEN g LIKE 'key:%' THEN split_part(g, '=', 1) ELSE g END, count(*)
FROM tasker.flow_slots s, unnest(s.groups) g
GROUP BY 1, 2 ORDER BY 1, 2;

-- name: flow_pauses_list
-- The pauses that have not ended, those ending last first, at most @limit,
-- and how many there are.
SELECT name, until, step_uuid, reason, count(*) OVER ()
FROM tasker.flow_pauses WHERE until > clock_timestamp()
ORDER BY until DESC, name LIMIT @limit;
