package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
)

// A database migrated before the edges moved into the steps keeps them:
// migration 17 writes each step's parents and children, in the order of
// the steps' positions, and the view that replaces the table gives the
// same edges back.
func TestEdgesMoveIntoTheirSteps(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testsupport.NewDB(t)
	require.NoError(t, store.MigrateBefore(ctx, pool, 17))

	// A diamond: a → b, a → c, b → d, c → d, with the edges inserted out of
	// order.
	_, err := pool.Exec(ctx, `
		INSERT INTO tasker.steps (step_uuid, task_uuid, name, position, namespace, handler, state,
			max_attempts, retryable, timeout_ms, waiting_parents)
		SELECT ('00000000-0000-0000-0000-00000000000' || p)::uuid, '00000000-0000-0000-0000-0000000000ff',
			n, p, 'ns', 'h', 'pending', 1, false, 1000, 0
		FROM unnest('{a,b,c,d}'::text[]) WITH ORDINALITY AS x(n, p);
		INSERT INTO tasker.step_edges (task_uuid, from_step, to_step)
		SELECT '00000000-0000-0000-0000-0000000000ff', ('00000000-0000-0000-0000-00000000000' || f)::uuid,
			('00000000-0000-0000-0000-00000000000' || t)::uuid
		FROM (VALUES (3, 4), (1, 3), (2, 4), (1, 2)) AS e(f, t);`)
	require.NoError(t, err)

	applied, err := store.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Contains(t, applied, 17)

	require.Equal(t, []string{"a {} {b,c}", "b {a} {d}", "c {a} {d}", "d {b,c} {}"}, testsupport.TextRows(t, pool, `
		SELECT s.name || ' ' || ARRAY(SELECT p.name FROM unnest(s.parents) WITH ORDINALITY AS u(id, n)
				JOIN tasker.steps p ON p.step_uuid = u.id ORDER BY u.n)::text
			|| ' ' || ARRAY(SELECT c.name FROM unnest(s.children) WITH ORDINALITY AS u(id, n)
				JOIN tasker.steps c ON c.step_uuid = u.id ORDER BY u.n)::text
		FROM tasker.steps s ORDER BY s.position`))
	require.Equal(t, []string{"a→b", "a→c", "b→d", "c→d"}, testsupport.TextRows(t, pool, `
		SELECT f.name || '→' || c.name FROM tasker.step_edges e
			JOIN tasker.steps f ON f.step_uuid = e.from_step JOIN tasker.steps c ON c.step_uuid = e.to_step
		WHERE e.task_uuid = '00000000-0000-0000-0000-0000000000ff' ORDER BY 1`))
}
