-- A step's edges live in its own row: parents (the steps it waits on) and
-- children (the steps waiting on it), both in the template's order, written
-- with the step when its task is created and never changed. Every read of
-- an edge starts from a step it already holds by key (the apply reads the
-- children of the step it moves, a start the parents of the step it
-- starts), so a separate table cost an inserted row and three index entries
-- per edge and answered nothing the step rows cannot.
ALTER TABLE tasker.steps
    ADD COLUMN parents  uuid[] NOT NULL DEFAULT '{}',
    ADD COLUMN children uuid[] NOT NULL DEFAULT '{}';

UPDATE tasker.steps s
SET parents = e.parents
FROM (SELECT to_step, array_agg(from_step ORDER BY p.position) AS parents
    FROM tasker.step_edges JOIN tasker.steps p ON p.step_uuid = from_step GROUP BY to_step) e
WHERE s.step_uuid = e.to_step;

UPDATE tasker.steps s
SET children = e.children
FROM (SELECT from_step, array_agg(to_step ORDER BY c.position) AS children
    FROM tasker.step_edges JOIN tasker.steps c ON c.step_uuid = to_step GROUP BY from_step) e
WHERE s.step_uuid = e.from_step;

DROP TABLE tasker.step_edges;

-- The edges as rows, for SQL written against the table this replaces (the
-- worker contract's tasker.step_begin reads a step's parents through it):
-- a condition on to_step reaches the step by its key; one on from_step
-- alone reads every step.
CREATE VIEW tasker.step_edges AS
SELECT s.task_uuid, p.from_step, s.step_uuid AS to_step
FROM tasker.steps s CROSS JOIN LATERAL unnest(s.parents) AS p(from_step);
