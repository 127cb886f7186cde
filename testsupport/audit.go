package testsupport

import (
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
)

// ReferenceSteps is the number of steps of ReferenceRequest i.
func ReferenceSteps(i int) int { return []int{4, 4, 8, 7, 4}[i%5] }

// ReferenceRequest is request i of the reference mix: the five reference
// workflows in turn, with varied inputs, all of which complete.
func ReferenceRequest(id uuid.UUID, i int, requestedBy string) ([]byte, error) {
	type workflow struct{ ns, name string }
	mix := []workflow{
		{LinearNamespace, LinearName},
		{DiamondNamespace, DiamondName},
		{TreeNamespace, TreeName},
		{MixedDAGNamespace, MixedDAGName},
		{FulfillmentNamespace, FulfillmentName},
	}
	wf := mix[i%len(mix)]
	input := fmt.Sprintf(`{"even_number": %d}`, 2+2*(i%10))
	if wf.ns == FulfillmentNamespace {
		input = fmt.Sprintf(`{"order_id": "ord-%d", "customer": {"id": "c-%d", "email": "c%d@example.com"},
			"items": [{"sku": "A", "quantity": 2, "unit_price": 5}, {"sku": "B", "quantity": 1, "unit_price": 2.5}],
			"payment": {"method": "card", "token": "tok", "amount": 12.5, "currency": "EUR"},
			"shipping": {"method": "standard", "address": {"city": "Lyon"}}}`, i, i, i)
	}
	return queue.TaskRequest{RequestID: id, Namespace: wf.ns, Name: wf.name, Context: input, RequestedBy: requestedBy}.Encode()
}

// AuditFigures sum up an audit.
type AuditFigures struct {
	Tasks, Steps, Attempts, Redeliveries, Retries int
}

// AuditComplete checks that every request made exactly one task, every task
// completed, and the transitions are sound (AuditTransitions).
func AuditComplete(t *testing.T, db *pgxpool.Pool, requests []uuid.UUID) AuditFigures {
	t.Helper()
	states := taskStatesByRequest(t, db)
	require.Len(t, states, len(requests), "one task per request, none lost, none extra")
	for _, r := range requests {
		require.Equal(t, "complete", states[r], "task of request %s", r)
	}
	notComplete := TextRows(t, db, `SELECT format('step %s is %s', step_uuid, state) FROM tasker.steps WHERE state <> 'complete'`)
	require.Empty(t, notComplete)
	return AuditTransitions(t, db)
}

// taskStatesByRequest maps request ids to the state of their task.
func taskStatesByRequest(t *testing.T, db *pgxpool.Pool) map[uuid.UUID]string {
	t.Helper()
	rows, err := db.Query(t.Context(), `SELECT request_id, state FROM tasker.tasks`)
	require.NoError(t, err)
	states := map[uuid.UUID]string{}
	var (
		id    uuid.UUID
		state string
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &state}, func() error {
		states[id] = state
		return nil
	})
	require.NoError(t, err)
	return states
}

// AuditTransitions checks that no state change was applied twice and
// that every attempt of every step has its own recorded start: the first
// from enqueued, every later one from a redelivery (in_progress) or a
// retry (waiting_for_retry). It returns the figures.
func AuditTransitions(t *testing.T, db *pgxpool.Pool) AuditFigures {
	t.Helper()
	dupes := TextRows(t, db, `
		SELECT format('step %s %s→%s attempt %s ×%s', step_uuid, from_state, to_state, attempt, count(*))
		FROM tasker.step_transitions GROUP BY step_uuid, from_state, to_state, attempt HAVING count(*) > 1
		UNION ALL
		SELECT format('task %s %s→%s ×%s', task_uuid, from_state, to_state, count(*))
		FROM tasker.task_transitions GROUP BY task_uuid, from_state, to_state HAVING count(*) > 1`)
	require.Empty(t, dupes, "no transition applied twice")

	unexplained := TextRows(t, db, `
		WITH starts AS (
			SELECT step_uuid, from_state, attempt, id FROM tasker.step_transitions WHERE to_state = 'in_progress')
		SELECT format('step %s: %s attempts, starts: %s', s.step_uuid, s.attempts,
			(SELECT string_agg(format('%s→in_progress #%s', x.from_state, x.attempt), ', ' ORDER BY x.id)
				FROM starts x WHERE x.step_uuid = s.step_uuid))
		FROM tasker.steps s
		WHERE s.attempts <> (SELECT count(*) FROM starts x WHERE x.step_uuid = s.step_uuid)
			OR EXISTS (SELECT 1 FROM generate_series(1, s.attempts) k WHERE NOT EXISTS (
				SELECT 1 FROM starts x WHERE x.step_uuid = s.step_uuid AND x.attempt = k
					AND CASE WHEN k = 1 THEN x.from_state = 'enqueued'
						ELSE x.from_state IN ('in_progress', 'waiting_for_retry') END))`)
	require.Empty(t, unexplained, "every attempt has its own recorded start")

	var fig AuditFigures
	require.NoError(t, db.QueryRow(t.Context(), `
		SELECT (SELECT count(*) FROM tasker.tasks), (SELECT count(*) FROM tasker.steps),
			(SELECT COALESCE(sum(attempts), 0) FROM tasker.steps),
			(SELECT count(*) FROM tasker.step_transitions WHERE from_state = 'in_progress' AND to_state = 'in_progress'),
			(SELECT count(*) FROM tasker.step_transitions WHERE from_state = 'waiting_for_retry' AND to_state = 'in_progress')`).
		Scan(&fig.Tasks, &fig.Steps, &fig.Attempts, &fig.Redeliveries, &fig.Retries))
	return fig
}

// TextRows returns the text rows of sql.
func TextRows(t *testing.T, db *pgxpool.Pool, sql string) []string {
	t.Helper()
	rows, err := db.Query(t.Context(), sql)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}
