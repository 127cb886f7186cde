package queue_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
)

// catalogSnapshot describes every object in schema pgmq, including each catalog row's
// xmin, so any drop, re-create or CREATE OR REPLACE shows up as a difference.
func catalogSnapshot(t *testing.T, db queue.DB) string {
	t.Helper()
	var snap string
	err := db.QueryRow(context.Background(), `
		SELECT coalesce(string_agg(entry, E'\n' ORDER BY entry), '') FROM (
			SELECT 'function ' || p.oid::regprocedure::text || ' ' || p.xmin::text || ' ' || md5(p.prosrc) AS entry
			  FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE n.nspname = 'pgmq'
			UNION ALL
			SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' ' || c.xmin::text
			  FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = 'pgmq'
			UNION ALL
			SELECT 'type ' || ty.typname || ' ' || ty.xmin::text
			  FROM pg_type AS ty JOIN pg_namespace AS n ON n.oid = ty.typnamespace WHERE n.nspname = 'pgmq'
		) AS objects`).Scan(&snap)
	require.NoError(t, err)
	return snap
}

func installRows(t *testing.T, db queue.DB) []string {
	t.Helper()
	rows, err := db.Query(context.Background(),
		"SELECT version::text || ' ' || installed_at::text FROM pgmq.tasker_install ORDER BY version")
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

func TestInstallTwiceChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.NewDB(t)
	require.NoError(t, queue.NewClient(pool).Create(ctx, "jobs"))

	before, rowsBefore := catalogSnapshot(t, pool), installRows(t, pool)
	require.Contains(t, before, "function pgmq.read(text,integer,integer,jsonb)")
	require.Contains(t, before, "relation q_jobs r")
	require.Len(t, rowsBefore, queue.LatestVersion())

	res, err := queue.Install(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, queue.InstallResult{Provider: queue.ProviderTasker, Version: queue.LatestVersion()}, res)
	require.Equal(t, before, catalogSnapshot(t, pool))
	require.Equal(t, rowsBefore, installRows(t, pool))
}

// allVersions lists every version of the subset, oldest first.
func allVersions() []int {
	var vs []int
	for v := 1; v <= queue.LatestVersion(); v++ {
		vs = append(vs, v)
	}
	return vs
}

// dropPgmq removes the schema testsupport installed, giving a database without any pgmq.
func dropPgmq(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	_, err := pool.Exec(context.Background(), "DROP SCHEMA pgmq CASCADE")
	require.NoError(t, err)
}

func TestInstallConcurrentInstallersApplyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.NewDB(t)
	dropPgmq(t, pool)

	const installers = 8
	results := make([]queue.InstallResult, installers)
	errs := make([]error, installers)
	var wg sync.WaitGroup
	for i := range installers {
		wg.Go(func() { results[i], errs[i] = queue.Install(ctx, pool) })
	}
	wg.Wait()

	applied := 0
	for i := range installers {
		require.NoError(t, errs[i])
		require.Equal(t, queue.ProviderTasker, results[i].Provider)
		require.Equal(t, queue.LatestVersion(), results[i].Version)
		if len(results[i].Applied) > 0 {
			applied++
		}
	}
	require.Equal(t, 1, applied, "exactly one installer applies the schema")
	require.Len(t, installRows(t, pool), queue.LatestVersion())
}

func TestInstallInsideCallerTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.NewDB(t)
	dropPgmq(t, pool)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	res, err := queue.Install(ctx, tx)
	require.NoError(t, err)
	require.Equal(t, allVersions(), res.Applied)
	require.NoError(t, tx.Rollback(ctx))

	var exists bool
	require.NoError(t, pool.QueryRow(ctx, "SELECT to_regnamespace('pgmq') IS NOT NULL").Scan(&exists))
	require.False(t, exists, "rolling back the caller's transaction undoes the install")
}

// stubPgmq imitates a real pgmq install: schema pgmq with functions of pgmq's names
// that are not Tasker's.
const stubPgmq = `
CREATE SCHEMA pgmq;
CREATE TABLE pgmq.meta (queue_name varchar UNIQUE NOT NULL, is_partitioned boolean NOT NULL,
                        is_unlogged boolean NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION pgmq."create"(queue_name text) RETURNS void LANGUAGE sql AS 'SELECT NULL';
CREATE FUNCTION pgmq.send(queue_name text, msg jsonb, delay integer DEFAULT 0) RETURNS SETOF bigint
    LANGUAGE sql AS 'SELECT 42::bigint';
CREATE FUNCTION pgmq.read(queue_name text, vt integer, qty integer) RETURNS SETOF bigint
    LANGUAGE sql AS 'SELECT 1::bigint WHERE false';
CREATE FUNCTION pgmq.delete(queue_name text, msg_id bigint) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE FUNCTION pgmq.archive(queue_name text, msg_id bigint) RETURNS boolean LANGUAGE sql AS 'SELECT true';
`

func TestInstallLeavesRealPgmqUntouched(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.NewDB(t)
	dropPgmq(t, pool)
	_, err := pool.Exec(ctx, stubPgmq)
	require.NoError(t, err)
	before := catalogSnapshot(t, pool)

	for range 2 {
		res, err := queue.Install(ctx, pool)
		require.NoError(t, err)
		require.Equal(t, queue.InstallResult{Provider: queue.ProviderPgmq}, res)
	}
	require.Equal(t, before, catalogSnapshot(t, pool))
	var ours bool
	require.NoError(t, pool.QueryRow(ctx, "SELECT to_regclass('pgmq.tasker_install') IS NOT NULL").Scan(&ours))
	require.False(t, ours)

	// The client calls the functions that are there: the stub's send answers 42.
	id, err := queue.NewClient(pool).Send(ctx, "anything", []byte(`{}`), 0)
	require.NoError(t, err)
	require.Equal(t, int64(42), id)
}

func TestInstallRefusesForeignSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.NewDB(t)
	dropPgmq(t, pool)
	_, err := pool.Exec(ctx, "CREATE SCHEMA pgmq; CREATE TABLE pgmq.other (id int)")
	require.NoError(t, err)
	before := catalogSnapshot(t, pool)

	_, err = queue.Install(ctx, pool)
	require.ErrorIs(t, err, queue.ErrForeignSchema)
	require.Equal(t, before, catalogSnapshot(t, pool))
}

// TestInstallUpgradesAnEarlierSubsetInPlace installs version 1 alone, as a
// database made by an earlier build has it, puts messages in a queue, and
// installs this build's subset over it: the later versions are applied, the
// queue and its messages are untouched, and the added functions work on it.
func TestInstallUpgradesAnEarlierSubsetInPlace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.NewDB(t)
	dropPgmq(t, pool)
	subset, err := queue.SubsetSQL()
	require.NoError(t, err)
	require.Greater(t, len(subset), 1)
	_, err = pool.Exec(ctx, subset[0])
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "INSERT INTO pgmq.tasker_install (version) VALUES (1)")
	require.NoError(t, err)
	_, err = queue.Check(ctx, pool)
	require.ErrorIs(t, err, queue.ErrSchemaBehind)

	_, err = pool.Exec(ctx, `SELECT pgmq.create('old')`)
	require.NoError(t, err)
	var first, second int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT * FROM pgmq.send('old', '{"n":1}'::jsonb, '{"x-pgmq-group":"g"}'::jsonb)`).Scan(&first))
	require.NoError(t, pool.QueryRow(ctx, `SELECT * FROM pgmq.send('old', '{"n":2}'::jsonb, '{"x-pgmq-group":"g"}'::jsonb)`).Scan(&second))
	var inFlight int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT msg_id FROM pgmq.read('old', 600, 1)`).Scan(&inFlight))
	require.Equal(t, first, inFlight)
	const messages = `SELECT coalesce(string_agg(concat_ws(' ', msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers), E'\n' ORDER BY msg_id), '')
		FROM pgmq.q_old`
	var before string
	require.NoError(t, pool.QueryRow(ctx, messages).Scan(&before))

	res, err := queue.Install(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, queue.ProviderTasker, res.Provider)
	require.Equal(t, queue.LatestVersion(), res.Version)
	require.Equal(t, allVersions()[1:], res.Applied)
	_, err = queue.Check(ctx, pool)
	require.NoError(t, err)

	var after string
	require.NoError(t, pool.QueryRow(ctx, messages).Scan(&after))
	require.Equal(t, before, after, "the upgrade leaves the messages as they were")
	requireQueueStorage(t, pool, "old")
	// The added functions on the queue made before them: message 1 in flight
	// keeps group g closed; popping takes the visible one.
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.read_grouped('old', 30, 10)`).Scan(&n))
	require.Zero(t, n, "the group's head is in flight")
	var popped int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT msg_id FROM pgmq.pop('old')`).Scan(&popped))
	require.Equal(t, second, popped)
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.metrics_all()`).Scan(&n))
	require.Equal(t, 1, n)

	snap := catalogSnapshot(t, pool)
	again, err := queue.Install(ctx, pool)
	require.NoError(t, err)
	require.Empty(t, again.Applied)
	require.Equal(t, snap, catalogSnapshot(t, pool))
}

// requireQueueStorage checks what version 3 of the subset gives a queue
// table: fillfactor 50, autovacuum at 1000 dead rows without cost delay, and
// no vt index, so that a read is a HOT update.
func requireQueueStorage(t *testing.T, pool *pgxpool.Pool, queueName string) {
	t.Helper()
	var opts []string
	var indexes []string
	require.NoError(t, pool.QueryRow(context.Background(), `
		SELECT coalesce(c.reloptions, '{}'),
		       ARRAY(SELECT i.relname::text FROM pg_index AS x JOIN pg_class AS i ON i.oid = x.indexrelid
		             WHERE x.indrelid = c.oid ORDER BY 1)
		FROM pg_class AS c WHERE c.oid = format('pgmq.%I', 'q_' || $1::text)::regclass`, queueName).Scan(&opts, &indexes))
	require.Subset(t, opts, []string{"fillfactor=50", "autovacuum_vacuum_scale_factor=0",
		"autovacuum_vacuum_threshold=1000", "autovacuum_vacuum_cost_delay=0"})
	require.Equal(t, []string{"q_" + queueName + "_pkey"}, indexes)
}

// TestCreatedQueueStorage: a queue created by this build has version 3's
// storage parameters, logged or not.
func TestCreatedQueueStorage(t *testing.T) {
	t.Parallel()
	pool := testsupport.NewDB(t)
	_, err := pool.Exec(context.Background(), `SELECT pgmq.create('fresh'), pgmq.create_unlogged('fresh_unlogged')`)
	require.NoError(t, err)
	requireQueueStorage(t, pool, "fresh")
	requireQueueStorage(t, pool, "fresh_unlogged")
}
