-- Who holds back the xmin horizon of this database: the oldest snapshot or
-- transaction id that VACUUM must keep row versions for.

-- name: horizon_holder
-- Backends of this database (and walsenders, whose hot_standby_feedback
-- counts for every database) that hold a snapshot or a transaction id, but
-- not this session nor autovacuum, which VACUUM leaves out of the horizon;
-- prepared transactions of this database; replication slots (physical ones,
-- and this database's logical ones, whose catalog_xmin holds back the
-- catalogs). Another role's backends show no xmin without pg_read_all_stats.
-- The oldest by transaction age; age is unknown (NULL) for a slot.
WITH holder AS (
    SELECT 'backend' AS kind, a.pid, '' AS name, coalesce(a.application_name, '') AS application_name,
           coalesce(a.state, '') AS state, a.xact_start AS since,
           greatest(age(a.backend_xmin), age(a.backend_xid)) AS xid_age
    FROM pg_stat_activity AS a
    WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
      AND a.pid <> pg_backend_pid()
      AND a.backend_type <> 'autovacuum worker'
      AND (a.datname = current_database() OR a.backend_type = 'walsender')
    UNION ALL
    SELECT 'prepared', 0, p.gid, '', 'prepared', p.prepared, age(p.transaction)
    FROM pg_prepared_xacts AS p
    WHERE p.database = current_database()
    UNION ALL
    SELECT 'replication_slot', coalesce(s.active_pid, 0), s.slot_name, '',
           CASE WHEN s.active THEN 'active' ELSE 'inactive' END, NULL::timestamptz,
           greatest(age(s.xmin), age(s.catalog_xmin))
    FROM pg_replication_slots AS s
    WHERE (s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL)
      AND (s.database IS NULL OR s.database = current_database())
)
SELECT kind, pid, name, application_name, state, since,
       coalesce(extract(epoch FROM clock_timestamp() - since), 0)::float8 AS age_seconds,
       coalesce(xid_age, 0)::bigint
FROM holder
ORDER BY xid_age DESC NULLS LAST, since NULLS LAST
LIMIT 1;
