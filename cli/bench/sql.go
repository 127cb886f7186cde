package bench

// The bench's own SQL: questions about the database server, not about
// Tasker's tables, which it reads and writes through the store.

const sqlDatabase = `SELECT current_database(), current_setting('server_version')`

// sqlNow is the send time of a batch of requests: the start of the
// transaction that sends it, on the database's clock like every other time
// the report compares.
const sqlNow = `SELECT now()`

// sqlCounters reads, in one statement (one commit of its own), the
// database's commit count, the server's WAL position in bytes and the row
// counters of every table of Tasker's and pgmq's schemas.
const sqlCounters = `
SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
       pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,
       coalesce(array_agg(schemaname || '.' || relname), '{}'),
       coalesce(array_agg(n_tup_ins), '{}'),
       coalesce(array_agg(n_tup_upd), '{}'),
       coalesce(array_agg(n_tup_del), '{}')
FROM pg_stat_user_tables
WHERE schemaname IN ('tasker', 'pgmq')`

// sqlStatistics reads what the planner knows of the tables $1 (qualified
// names): whether each was ever analyzed, the row count the planner assumes
// (reltuples, -1 before the first analyze) and the live rows counted; and
// whether autovacuum is on.
const sqlStatistics = `
SELECT t.name, s.last_analyze IS NOT NULL OR s.last_autoanalyze IS NOT NULL,
       coalesce(c.reltuples, -1)::float8, coalesce(s.n_live_tup, 0), current_setting('autovacuum') = 'on'
FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i)
LEFT JOIN pg_class c ON c.oid = to_regclass(t.name)
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
ORDER BY t.i`

// sqlStatementsInstalled says whether the pg_stat_statements extension is
// installed in the database.
const sqlStatementsInstalled = `SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_stat_statements')`

// sqlStatementTime is the database's statement time so far in
// milliseconds: planning and execution, as pg_stat_statements records it.
const sqlStatementTime = `
SELECT coalesce(sum(total_exec_time + total_plan_time), 0)::float8
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`

// sqlBackend identifies the session's server process: its pid and when
// it started, on the server's clock in Unix microseconds.
const sqlBackend = `
SELECT pid, (extract(epoch FROM backend_start) * 1e6)::bigint
FROM pg_stat_activity WHERE pid = pg_backend_pid()`

// sqlSessions lists the server's processes that pg_stat_activity knows,
// with whether each serves this database (false: another one), null for a
// background process of the server.
const sqlSessions = `
SELECT pid, CASE WHEN datid IS NULL THEN NULL ELSE datname = current_database() END
FROM pg_stat_activity`

// sqlActiveOthers lists the sessions of clients, other than the bench and
// its node on this database, that are running or in a transaction now.
const sqlActiveOthers = `
SELECT coalesce(datname, ''), application_name, pid
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND state <> 'idle'
  AND NOT (datname = current_database() AND application_name IN ($1, $2))`
