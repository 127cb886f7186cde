package bench

// The bench's SQL, in one place. $1 is always the run's request ids.

const sqlDatabase = `SELECT current_database(), current_setting('server_version')`

const sqlCommits = `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`

// sqlNow is the send time of a batch of requests: the start of the
// transaction that sends it, on the database's clock like every other time
// the report compares.
const sqlNow = `SELECT now()`

// sqlFinished counts the run's requests that are done with: a task in a
// terminal state, or a rejection.
const sqlFinished = `
	SELECT (SELECT count(*) FROM tasker.tasks
			WHERE request_id = ANY($1) AND state IN ('complete', 'error', 'cancelled', 'resolved_manually'))
		+ (SELECT count(DISTINCT request_id) FROM tasker.rejected_requests WHERE request_id = ANY($1))`

const sqlRejected = `SELECT count(DISTINCT request_id) FROM tasker.rejected_requests WHERE request_id = ANY($1)`

// sqlTasks lists the run's tasks.
const sqlTasks = `
	SELECT request_id, state, created_at, finished_at
	FROM tasker.tasks WHERE request_id = ANY($1)`

// sqlSteps lists the steps of the run's tasks with the moment each became
// ready, the moment it first started and the moment it completed. A root is ready when its task is
// created; any other step when the last of its parents completed (the
// transitions' clock_timestamp()).
const sqlSteps = `
	WITH run AS (
		SELECT task_uuid, created_at FROM tasker.tasks WHERE request_id = ANY($1)
	), moves AS (
		SELECT x.step_uuid,
			min(x.created_at) FILTER (WHERE x.to_state = 'in_progress') AS started,
			min(x.created_at) FILTER (WHERE x.to_state = 'complete') AS completed
		FROM tasker.step_transitions x JOIN run USING (task_uuid)
		GROUP BY x.step_uuid
	), parents AS (
		SELECT e.to_step AS step_uuid, count(*) AS total, count(m.completed) AS done, max(m.completed) AS done_at
		FROM tasker.step_edges e JOIN run USING (task_uuid) LEFT JOIN moves m ON m.step_uuid = e.from_step
		GROUP BY e.to_step
	)
	SELECT s.name, s.position, s.state, s.attempts, p.step_uuid IS NULL AS root,
		CASE WHEN p.step_uuid IS NULL THEN run.created_at
			WHEN p.done = p.total THEN p.done_at END AS ready_at,
		m.started, m.completed
	FROM tasker.steps s
		JOIN run USING (task_uuid)
		LEFT JOIN moves m USING (step_uuid)
		LEFT JOIN parents p USING (step_uuid)`

// sqlDeleteRequests deletes the run's requests still in the request queue
// %[1]s, and sqlDeleteTaskMessages the step and result messages of the
// run's tasks still in queue %[1]s: a run that stopped early leaves them,
// and they would outlive its tasks. Both address the queue tables, whose
// layout is part of the pgmq contract.
const (
	sqlDeleteRequests     = `DELETE FROM %[1]s WHERE message->>'request_id' = ANY($1::text[])`
	sqlDeleteTaskMessages = `DELETE FROM %[1]s WHERE message->>'task_uuid' IN
		(SELECT task_uuid::text FROM tasker.tasks WHERE request_id = ANY($1))`
)

// sqlDeleteTasks deletes the run's tasks; steps, edges and transitions go
// with them (ON DELETE CASCADE).
const sqlDeleteTasks = `DELETE FROM tasker.tasks WHERE request_id = ANY($1)`

const sqlDeleteRejected = `DELETE FROM tasker.rejected_requests WHERE request_id = ANY($1)`

// sqlLeftovers counts tasks of the bench namespace that are still running,
// left by an earlier run that was killed: the node will work on them too.
const sqlLeftovers = `
	SELECT count(*) FROM tasker.tasks
	WHERE namespace = $1 AND state NOT IN ('complete', 'error', 'cancelled', 'resolved_manually')`
