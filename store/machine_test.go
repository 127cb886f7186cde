package store_test

import (
	"math/rand/v2"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
	"github.com/tasker-run/tasker/workflow"
)

// TestStatementsNameNoState checks that no statement writes a task or step
// state itself: every state set a compare-and-set uses comes from the
// machines of package workflow, as an argument.
func TestStatementsNameNoState(t *testing.T) {
	t.Parallel()
	var names []string
	for _, s := range workflow.AllStepStates() {
		names = append(names, string(s))
	}
	for _, s := range workflow.AllTaskStates() {
		names = append(names, string(s))
	}
	texts := store.StatementTexts()
	require.NotEmpty(t, texts)
	literal := regexp.MustCompile(`'([a-z_]+)'`)
	for name, sql := range texts {
		for _, m := range literal.FindAllStringSubmatch(sql, -1) {
			require.NotContains(t, names, m[1], "statement %s names state %q itself", name, m[1])
		}
	}
}

func TestPositional(t *testing.T) {
	t.Parallel()
	sql, params := store.Positional(`SELECT @a, '@not' || "@col", @b::int, @a -- @comment
		WHERE x @> @c AND y = 'it''s @no'`)
	require.Equal(t, []string{"a", "b", "c"}, params)
	require.Equal(t, `SELECT $1, '@not' || "@col", $2::int, $1 
		WHERE x @> $3 AND y = 'it''s @no'`, sql)
}

// TestFinalizeAgreesWithVerdict sets a task's steps to many combinations of
// states and checks that the finalization statement ends the task exactly
// when, and as, workflow.TaskVerdict says.
func TestFinalizeAgreesWithVerdict(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)
	d, err := h.st.TaskShow(h.ctx, task)
	require.NoError(t, err)
	names := make([]string, len(d.Steps))
	for i, st := range d.Steps {
		names[i] = st.Name
	}
	all := workflow.AllStepStates()
	rng := rand.New(rand.NewPCG(1, 2))
	combos := [][]workflow.StepState{}
	for _, s := range all { // every state alone, beside complete steps
		combos = append(combos, []workflow.StepState{s, workflow.StepStateComplete, workflow.StepStateComplete, workflow.StepStateComplete})
	}
	for range 200 {
		c := make([]workflow.StepState, len(names))
		for i := range c {
			c[i] = all[rng.IntN(len(all))]
		}
		combos = append(combos, c)
	}
	for _, c := range combos {
		want := workflow.TaskVerdict(names, c)
		tx, err := h.pool.Begin(h.ctx)
		require.NoError(t, err)
		for i, s := range c {
			_, err := tx.Exec(h.ctx, `UPDATE tasker.steps SET state = $3 WHERE task_uuid = $1 AND name = $2`, task, names[i], string(s))
			require.NoError(t, err)
		}
		got, err := h.st.TaskFinalizeInTx(h.ctx, tx, task)
		require.NoError(t, err)
		var reason string
		err = tx.QueryRow(h.ctx, `SELECT reason FROM tasker.task_transitions WHERE task_uuid = $1 ORDER BY id DESC LIMIT 1`, task).Scan(&reason)
		require.NoError(t, err)
		require.NoError(t, tx.Rollback(h.ctx))
		if want.Event == "" {
			require.Equal(t, workflow.TaskStateInProgress, got, "%v", c)
			continue
		}
		to, err := workflow.TaskTransition(workflow.TaskStateInProgress, want.Event)
		require.NoError(t, err)
		require.Equal(t, to, got, "%v", c)
		require.Equal(t, want.Reason, reason, "%v", c)
	}
}
