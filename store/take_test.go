package store_test

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
)

// A take reads the messages and starts their steps in one transaction: the
// attempt, its transition and the work are what StepStart gives, with the
// parents' results of a later step.
func TestStepsTakeStartsTheStepsOfItsMessages(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{NodeID: "taker"})
	task := h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 6}`)

	taken, err := h.st.StepsTake(h.ctx, testsupport.LinearNamespace, readVT, 10)
	require.NoError(t, err)
	require.Len(t, taken, 1, "the root's message")
	root := taken[0]
	require.Equal(t, 1, root.Started.Attempt, "the root started")
	require.Equal(t, 1, root.Message.ReadCount)
	w, err := root.Started.Work()
	require.NoError(t, err)
	require.Equal(t, task, w.TaskUUID)
	require.Equal(t, testsupport.LinearNamespace, w.Namespace)
	require.Equal(t, testsupport.LinearName, w.TaskName)
	require.Equal(t, 1, w.Attempt)
	require.Positive(t, w.MaxAttempts)
	require.Positive(t, w.Timeout)
	require.Empty(t, w.Parents)
	require.JSONEq(t, `{"even_number": 6}`, string(w.Context))
	require.Equal(t, int64(1), h.count(`SELECT count(*) FROM tasker.steps
		WHERE step_uuid = $1 AND state = 'in_progress' AND attempts = 1`, w.StepUUID))
	require.Equal(t, int64(1), h.count(`SELECT count(*) FROM tasker.step_transitions
		WHERE step_uuid = $1 AND to_state = 'in_progress' AND attempt = 1 AND node_id = 'taker'
			AND reason = 'worker took the message'`, w.StepUUID))

	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, h.outcome(root.Message, w)))
	h.applyAll()
	taken, err = h.st.StepsTake(h.ctx, testsupport.LinearNamespace, readVT, 10)
	require.NoError(t, err)
	require.Len(t, taken, 1, "the second step's message")
	require.Equal(t, 1, taken[0].Started.Attempt)
	second, err := taken[0].Started.Work()
	require.NoError(t, err)
	require.Equal(t, task, second.TaskUUID)
	require.Len(t, second.Parents, 1)
	var rootResult json.RawMessage
	require.NoError(t, h.pool.QueryRow(h.ctx, `SELECT result FROM tasker.steps WHERE step_uuid = $1`, w.StepUUID).Scan(&rootResult))
	require.JSONEq(t, string(rootResult), string(second.Parents[w.StepName]), "the root's result, by its name")

	require.NoError(t, h.st.StepOutcomeRecord(h.ctx, h.outcome(taken[0].Message, second)))
	requireCleanRun(t, h.runToEnd(task))
}

// What a take cannot start it reads and leaves to the worker: a message
// that names no step, one that names a step that does not exist, and the
// second message of one step in one read. The step starts once.
func TestStepsTakeLeavesToTheWorkerWhatItCannotStart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	h.submit(testsupport.LinearNamespace, testsupport.LinearName, `{"even_number": 4}`)
	q := queue.NamespaceQueue(testsupport.LinearNamespace)
	var rootBody []byte
	require.NoError(t, h.pool.QueryRow(h.ctx, `SELECT message FROM pgmq.q_`+q).Scan(&rootBody))
	unknown, err := queue.StepMessage{TaskUUID: uuid.New(), StepUUID: uuid.New()}.Encode()
	require.NoError(t, err)
	for _, body := range [][]byte{rootBody, []byte(`{"step_uuid": "not a uuid"}`), []byte(`[1, 2]`), unknown} {
		_, err := h.q.Send(h.ctx, q, body, 0)
		require.NoError(t, err)
	}

	taken, err := h.st.StepsTake(h.ctx, testsupport.LinearNamespace, readVT, 10)
	require.NoError(t, err)
	require.Len(t, taken, 5)
	for i, tk := range taken {
		require.Equal(t, 1, tk.Message.ReadCount, "message %d", i)
		if i > 0 {
			require.Greater(t, tk.Message.ID, taken[i-1].Message.ID, "in the queue's order")
		}
	}
	require.Equal(t, 1, taken[0].Started.Attempt, "the root's first message started it")
	require.JSONEq(t, string(rootBody), string(taken[0].Message.Body))
	for i, tk := range taken[1:] {
		require.Zero(t, tk.Started, "message %d started nothing", i+1)
	}
	require.JSONEq(t, string(rootBody), string(taken[1].Message.Body), "the copy, for the worker")
	require.Equal(t, int64(1), h.count(`SELECT count(*) FROM tasker.step_transitions
		WHERE step_uuid = $1 AND to_state = 'in_progress'`, taken[0].Started.StepUUID), "started once")
	require.Equal(t, int64(5), h.count(`SELECT count(*) FROM pgmq.q_`+q+` WHERE vt > clock_timestamp()`),
		"every message taken is invisible")

	_, err = h.st.StepsTake(h.ctx, testsupport.LinearNamespace, 0, 10)
	require.ErrorContains(t, err, "visibility timeout 0s out of range")
	_, err = h.st.StepsTake(h.ctx, testsupport.LinearNamespace, readVT, 0)
	require.ErrorContains(t, err, "quantity 0 out of range")
	_, err = h.st.StepsTake(h.ctx, "Not A Namespace!", readVT, 1)
	require.Error(t, err)
}
