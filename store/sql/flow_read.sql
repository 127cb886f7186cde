-- Reading flow control for operators, /health and the metrics: reads that
-- stay small however many keys wait (see migrations/0011_flow_control.sql
-- and 0014_flow_counts.sql).

-- name: flow_namespace_usage
-- Per namespace with a step under a limit: its slots in use and its steps
-- waiting (its counter ''), and the oldest wait.
SELECT c.namespace, c.in_use, c.waiting,
    (SELECT min(w.since) FROM tasker.flow_waiting w WHERE w.namespace = c.namespace)
FROM (SELECT namespace, sum(in_use) AS in_use, sum(waiting) AS waiting FROM tasker.flow_counts
    WHERE name = '' GROUP BY 1) c
WHERE c.in_use > 0 OR c.waiting > 0
ORDER BY 1;

-- name: flow_scope_slots
-- The slots in use per namespace and group, the groups of one key scope
-- (key:<scope>=<key>) counted together as key:<scope>: as many rows as
-- the templates declare groups, not as many as there are keys.
SELECT namespace, CASE WHEN name LIKE 'key:%' THEN split_part(name, '=', 1) ELSE name END, sum(in_use)
FROM tasker.flow_counts WHERE name <> ''
GROUP BY 1, 2 HAVING sum(in_use) > 0 ORDER BY 1, 2;

-- name: flow_pauses_list
-- The pauses that have not ended, those ending last first, at most @limit,
-- and how many there are.
SELECT name, until, step_uuid, reason, count(*) OVER ()
FROM tasker.flow_pauses WHERE until > clock_timestamp()
ORDER BY until DESC, name LIMIT @limit;
