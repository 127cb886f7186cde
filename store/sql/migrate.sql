-- The schema's own bookkeeping of its migrations.

-- name: migrate_lock
SELECT pg_advisory_xact_lock(@key);

-- name: migrate_prepare
CREATE SCHEMA IF NOT EXISTS tasker;
CREATE TABLE IF NOT EXISTS tasker.schema_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());

-- name: migrate_applied
SELECT EXISTS (SELECT 1 FROM tasker.schema_migrations WHERE version = @version);

-- name: migrate_record
INSERT INTO tasker.schema_migrations (version, name) VALUES (@version, @name);

-- name: migrate_current
SELECT COALESCE(max(version), 0) FROM tasker.schema_migrations;

-- name: migrate_installed
SELECT to_regclass('tasker.schema_migrations') IS NOT NULL;
