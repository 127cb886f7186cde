package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

var opCreated = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func opAt(ms int) *time.Time {
	t := opCreated.Add(time.Duration(ms) * time.Millisecond)
	return &t
}

// opMixedDetail is a mixed DAG task midway: one step done, one failed with
// a multi-line panic message, one waiting for its retry.
func opMixedDetail() store.TaskDetail {
	dur := int64(12)
	return store.TaskDetail{
		Task: store.Task{
			TaskUUID: uuid.MustParse("0193e7a0-0000-7000-8000-0000000000aa"), RequestID: uuid.MustParse("0193e7a0-0000-7000-8000-0000000000bb"),
			Namespace: "mixed_dag_workflow", Name: "complex_dag_computation", Version: "1.0.0",
			State: workflow.TaskStateInProgress, CreatedAt: opCreated, Context: json.RawMessage(`{ "even_number": 2 }`),
			RequestedBy: "ops",
		},
		Steps: []store.Step{
			{Name: "dag_init", State: workflow.StepStateComplete, Attempts: 1, MaxAttempts: 3, Result: json.RawMessage(`{ "result": 4 }`),
				EnqueuedAt: opAt(3), LastAttemptedAt: opAt(10), FinishedAt: opAt(22), DurationMS: &dur},
			{Name: "dag_process_left", State: workflow.StepStateError, Attempts: 3, MaxAttempts: 3, DependsOn: []string{"dag_init"},
				Error: json.RawMessage(`{"kind": "panic", "message": "boom\n\tgoroutine 1 [running]:\n\tmain.go:12"}`), FinishedAt: opAt(2500)},
			{Name: "dag_process_right", State: workflow.StepStateWaitingForRetry, Attempts: 1, MaxAttempts: 3, DependsOn: []string{"dag_init"},
				NextAttemptAt: opAt(1500), Error: json.RawMessage(`{"kind": "timeout", "message": "slow"}`)},
			{Name: "dag_validate", State: workflow.StepStatePending, MaxAttempts: 3, DependsOn: []string{"dag_process_left", "dag_process_right"}},
			{Name: "dag_transform", State: workflow.StepStatePending, MaxAttempts: 3, DependsOn: []string{"dag_process_left"}},
			{Name: "dag_analyze", State: workflow.StepStatePending, MaxAttempts: 3, DependsOn: []string{"dag_process_right"}},
			{Name: "dag_finalize", State: workflow.StepStatePending, MaxAttempts: 3, DependsOn: []string{"dag_validate", "dag_transform", "dag_analyze"}},
		},
		TaskTransitions: []store.Transition{
			{To: "pending", Reason: "task created", CreatedAt: opCreated},
			{From: "pending", To: "in_progress", Reason: "first steps enqueued", CreatedAt: *opAt(3)},
		},
		StepTransitions: []store.Transition{
			{StepName: "dag_init", From: "pending", To: "enqueued", Reason: "ready", CreatedAt: *opAt(3)},
			{StepName: "dag_init", From: "enqueued", To: "in_progress", Reason: "worker took it", Attempt: 1, CreatedAt: *opAt(10)},
		},
	}
}

func TestRenderWriteDAG(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	require.NoError(t, writeDAG(&buf, opMixedDetail().Steps))
	want := `  0  dag_init           complete
  1  dag_process_left   error              ← dag_init
     dag_process_right  waiting_for_retry  ← dag_init
  2  dag_validate       pending            ← dag_process_left, dag_process_right
     dag_transform      pending            ← dag_process_left
     dag_analyze        pending            ← dag_process_right
  3  dag_finalize       pending            ← dag_validate, dag_transform, dag_analyze
`
	require.Equal(t, want, buf.String())
}

// TestRenderWriteDAGOrder puts a step before its parent in the list: the
// drawing still lists parents first.
func TestRenderWriteDAGOrder(t *testing.T) {
	t.Parallel()
	steps := []store.Step{
		{Name: "last", State: workflow.StepStatePending, DependsOn: []string{"middle"}},
		{Name: "middle", State: workflow.StepStatePending, DependsOn: []string{"first"}},
		{Name: "first", State: workflow.StepStateEnqueued},
	}
	var buf bytes.Buffer
	require.NoError(t, writeDAG(&buf, steps))
	want := `  0  first   enqueued
  1  middle  pending  ← first
  2  last    pending  ← middle
`
	require.Equal(t, want, buf.String())
}

func TestRenderWriteTaskDetail(t *testing.T) {
	t.Parallel()
	d := opMixedDetail()
	var buf bytes.Buffer
	require.NoError(t, writeTaskDetail(&buf, d, detailOptions{}))
	out := buf.String()
	for _, want := range []string{
		"task          0193e7a0-0000-7000-8000-0000000000aa\n",
		"request       0193e7a0-0000-7000-8000-0000000000bb\n",
		"template      mixed_dag_workflow/complex_dag_computation 1.0.0\n",
		"state         in_progress\n",
		"requested by  ops\n",
		"context       {\"even_number\":2}\n",
		"STEP               STATE              ATTEMPTS  ENQUEUED  LAST ATTEMPT  FINISHED  DURATION  RESULT / ERROR\n",
		"dag_init           complete           1/3       +3ms      +10ms         +22ms     12ms      {\"result\":4}\n",
		"dag_process_left   error              3/3       -         -             +2.5s     -         error panic: boom …\n",
		"dag_process_right  waiting_for_retry  1/3       -         -             -         -         error timeout: slow (next attempt +1.5s)\n",
		"  1  dag_process_left   error              ← dag_init\n",
		"task  pending → in_progress  first steps enqueued",
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, out, "goroutine", "a multi-line error keeps to its first line")
	require.NotContains(t, out, "worker took it", "step history only on request")
	for _, line := range strings.Split(out, "\n") {
		require.NotContains(t, line, "\t", "tabs are expanded: %q", line)
		require.Equal(t, strings.TrimRight(line, " "), line, "no trailing blanks: %q", line)
	}

	buf.Reset()
	require.NoError(t, writeTaskDetail(&buf, d, detailOptions{StepHistory: true}))
	require.Contains(t, buf.String(), "dag_init  enqueued → in_progress  worker took it (attempt 1)")
}

func TestRenderWriteTaskList(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	require.NoError(t, writeTaskList(&buf, nil, opCreated))
	require.Equal(t, "no tasks\n", buf.String())

	d := opMixedDetail()
	done := d.Task
	done.TaskUUID = uuid.MustParse("0193e7a0-0000-7000-8000-0000000000cc")
	done.State = workflow.TaskStateComplete
	done.FinishedAt = opAt(1250)
	buf.Reset()
	require.NoError(t, writeTaskList(&buf, []store.Task{d.Task, done}, opCreated.Add(2*time.Hour)))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3)
	require.Regexp(t, `^TASK\s+STATE\s+NAMESPACE\s+NAME\s+VERSION\s+CREATED\s+AGE\s+TOOK$`, lines[0])
	require.Regexp(t, `^0193e7a0-0000-7000-8000-0000000000aa\s+in_progress\s+mixed_dag_workflow\s+complex_dag_computation\s+1\.0\.0\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+2h0m0s\s+-$`, lines[1])
	require.Regexp(t, `^0193e7a0-0000-7000-8000-0000000000cc\s+complete\s+.*\s+2h0m0s\s+1\.25s$`, lines[2])
}

func TestRenderWriteTemplatesAndRejected(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	require.NoError(t, writeTemplates(&buf, []store.TemplateInfo{
		{Namespace: "linear_workflow", Name: "mathematical_sequence", Version: "1.0.0", Steps: 4, Description: "Square, add.\nMore.", RegisteredAt: opCreated},
		{Namespace: "linear_workflow", Name: "mathematical_sequence", Version: "0.9.0", Steps: 3, RegisteredAt: opCreated},
	}))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3)
	require.Regexp(t, `^NAMESPACE\s+NAME\s+VERSION\s+STEPS\s+REGISTERED\s+DESCRIPTION$`, lines[0])
	require.Regexp(t, `^linear_workflow\s+mathematical_sequence\s+1\.0\.0\s+4\s+\S+ \S+\s+Square, add\. …$`, lines[1])
	require.Regexp(t, `^linear_workflow\s+mathematical_sequence\s+0\.9\.0\s+3\s`, lines[2])

	buf.Reset()
	require.NoError(t, writeRejected(&buf, nil))
	require.Equal(t, "no rejected requests\n", buf.String())
	rid := uuid.MustParse("0193e7a0-0000-7000-8000-0000000000dd")
	replayed := int64(40)
	buf.Reset()
	require.NoError(t, writeRejected(&buf, []store.RejectedRequest{
		{ID: 2, MsgID: 12, Payload: "not json at all", Reason: "invalid task request: payload is not JSON", RejectedAt: opCreated},
		{ID: 1, MsgID: 11, RequestID: &rid, Payload: `{"request_id": "x",  "namespace": "nope"}`, Reason: `unknown namespace "nope"`,
			RejectedAt: opCreated, ReplayedMsgID: &replayed},
	}))
	lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3)
	require.Regexp(t, `^ID\s+MSG\s+REJECTED\s+REQUEST\s+REPLAYED AS\s+REASON\s+PAYLOAD$`, lines[0])
	require.Regexp(t, `^2\s+12\s+\S+ \S+\s+-\s+-\s+invalid task request: payload is not JSON\s+not json at all$`, lines[1])
	require.Regexp(t, `^1\s+11\s+\S+ \S+\s+0193e7a0-0000-7000-8000-0000000000dd\s+40\s+unknown namespace "nope"\s+\{"request_id":"x","namespace":"nope"\}$`, lines[2])
}

func TestRenderWriteAction(t *testing.T) {
	t.Parallel()
	id := uuid.MustParse("0193e7a0-0000-7000-8000-0000000000aa")
	one := 1
	for _, c := range []struct {
		r    api.ActionResult
		want string
	}{
		{api.ActionResult{Action: "retry", TaskUUID: id, State: workflow.TaskStateInProgress, Enqueued: &one},
			"task 0193e7a0-0000-7000-8000-0000000000aa retried (1 step(s) enqueued); it is in_progress\n"},
		{api.ActionResult{Action: "cancel", TaskUUID: id, State: workflow.TaskStateCancelled},
			"task 0193e7a0-0000-7000-8000-0000000000aa cancelled; it is cancelled\n"},
		{api.ActionResult{Action: "resolve", TaskUUID: id, State: workflow.TaskStateResolvedManually},
			"task 0193e7a0-0000-7000-8000-0000000000aa resolved; it is resolved_manually\n"},
		{api.ActionResult{Action: "resolve", TaskUUID: id, Step: "linear_step_1", State: workflow.TaskStateInProgress},
			"step linear_step_1 of task 0193e7a0-0000-7000-8000-0000000000aa resolved; the task is in_progress\n"},
	} {
		var buf bytes.Buffer
		require.NoError(t, writeAction(&buf, c.r))
		require.Equal(t, c.want, buf.String())
	}
}
