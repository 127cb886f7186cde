-- Storage parameters of the tables every step updates.
--
-- tasker.steps: a step's row is updated about four times in its life
-- (enqueued, started, outcome recorded, applied) and none of those changes an
-- indexed column (step_uuid, (task_uuid, name)), so each can be a HOT update,
-- which writes no index entry, when its page has room for the new version.
-- At fillfactor 100 the pages are full from the inserts, and every update
-- went to another page with a new entry in both indexes. 80 leaves a fifth of
-- each page for them; while the xmin horizon is held (see /health), the dead
-- versions cannot be pruned and that room is soon used, but it is reclaimed
-- by the first update or read of the page once the horizon moves.
--
-- Autovacuum of steps and tasks starts at 1000 dead rows plus 2% of the
-- table instead of 50 plus 20%: these tables keep every finished task until
-- retention removes it, so a fifth of them is a very late start, and a
-- vacuum after a held horizon has a large backlog to remove.
ALTER TABLE tasker.steps SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000);
ALTER TABLE tasker.tasks SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000);
