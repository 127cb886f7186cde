package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// History: finished tasks written straight into the tables, to measure a
// node on a database that has been in use rather than on empty tables, and
// the reads and clean-up of a measured run (the bench). These are not
// state changes of the workflow: they write and delete whole finished
// tasks set-based, and are used only before and after a node runs.

// TaskHistoryInsertParams describe one chunk of a history of finished
// tasks.
type TaskHistoryInsertParams struct {
	// Template is the tasks' template, registered already; its steps must
	// form a chain, each step the child of the one before.
	Template *workflow.Template
	// From and To are the chunk: tasks From to To-1 (0-based, oldest
	// first) of Total.
	From, To, Total int64
	// Newest is when the newest task of the history starts; task k starts
	// Spacing × (Total-1-k) before it.
	Newest  time.Time
	Spacing time.Duration
	// StepGap is the time from one step's readiness to the next's;
	// StartAfter the wait from a step's readiness to its start.
	StepGap, StartAfter time.Duration
	// RequestedBy is the tasks' requested_by; Mark goes into their context
	// as {"bench_history": Mark}, so TaskHistoryDelete finds them again.
	RequestedBy, Mark string
	// NodeID is the node_id of their transitions.
	NodeID string
}

// TaskHistoryInsert writes the chunk p describes: for each task, the rows
// a node leaves for a completed task of a chain template (the task
// complete, each step complete after one attempt with its parent and
// child, three task transitions and four per step), with times, UUIDv7 identities and
// transition order as a real run records them. It returns how many tasks
// it wrote.
func (s *Store) TaskHistoryInsert(ctx context.Context, p TaskHistoryInsertParams) (int64, error) {
	t := p.Template
	n := len(t.Steps)
	names, handlerNames, configs := make([]string, n), make([]string, n), make([]string, n)
	maxAttempts, retryable := make([]int32, n), make([]bool, n)
	timeouts, backoffBase, backoffMax := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, st := range t.Steps {
		want := []string(nil)
		if i > 0 {
			want = []string{t.Steps[i-1].Name}
		}
		if !slices.Equal(st.DependsOn, want) {
			return 0, fmt.Errorf("task history: template %s is not a chain (step %s depends on %v)", t.Name, st.Name, st.DependsOn)
		}
		names[i], handlerNames[i] = st.Name, st.Handler
		configs[i] = string(st.Config)
		if configs[i] == "" {
			configs[i] = "{}"
		}
		maxAttempts[i], retryable[i] = int32(st.Retry.MaxAttempts), st.Retry.Retryable
		timeouts[i] = st.Timeout.Milliseconds()
		backoffBase[i], backoffMax[i] = st.Retry.BackoffBase.Milliseconds(), st.Retry.BackoffMax.Milliseconds()
	}
	var wrote int64
	err := stmt("task_history_insert").queryRow(ctx, s.pool, args{
		"from": p.From, "to": p.To, "total": p.Total, "newest": p.Newest, "spacing": p.Spacing,
		"names": names, "handlers": handlerNames, "configs": configs, "max_attempts": maxAttempts,
		"retryable": retryable, "timeouts_ms": timeouts, "backoff_base_ms": backoffBase, "backoff_max_ms": backoffMax,
		"namespace": t.Namespace, "name": t.Name, "version": t.Version, "requested_by": p.RequestedBy,
		"mark": p.Mark, "node_id": p.NodeID, "step_gap": p.StepGap, "start_after": p.StartAfter,
		"task_pending": string(workflow.TaskStatePending), "task_in_progress": string(workflow.TaskStateInProgress),
		"task_complete": string(taskCompleteTo), "step_pending": string(workflow.StepStatePending),
		"step_enqueued": string(enqueueTo), "step_in_progress": startTo,
		"step_complete":  string(workflow.StepStateComplete),
		"reason_created": workflow.ReasonTaskCreated, "reason_started": workflow.ReasonTaskStarted,
		"reason_complete": workflow.ReasonEveryStepComplete, "reason_ready": workflow.ReasonStepReady,
		"reason_taken": reasonTaken, "reason_succeeded": workflow.ReasonHandlerSucceeded,
		"release_prefix": releasePrefix, "release_suffix": releaseCompleteSuffix,
	}).Scan(&wrote)
	if err != nil {
		return 0, fmt.Errorf("writing task history (tasks %d to %d of %d): %w", p.From, p.To, p.Total, translate(err))
	}
	return wrote, nil
}

// TaskHistoryDeleteParams select history tasks to delete.
type TaskHistoryDeleteParams struct {
	// Namespace, RequestedBy and Mark are those the tasks were written
	// with.
	Namespace, RequestedBy, Mark string
	// Limit is the most tasks one call deletes.
	Limit int
}

// TaskHistoryDelete deletes up to p.Limit history tasks with their steps
// and transitions, and returns how many it deleted.
func (s *Store) TaskHistoryDelete(ctx context.Context, p TaskHistoryDeleteParams) (int64, error) {
	var n int64
	if err := stmt("task_history_delete").queryRow(ctx, s.pool, args{
		"namespace": p.Namespace, "requested_by": p.RequestedBy, "mark": p.Mark, "limit": p.Limit,
	}).Scan(&n); err != nil {
		return 0, fmt.Errorf("deleting task history: %w", translate(err))
	}
	return n, nil
}

// TaskCounts are the tasks of a namespace by whether they are finished.
type TaskCounts struct {
	Finished, Unfinished int64
}

// TaskCount counts the tasks of namespace.
func (s *Store) TaskCount(ctx context.Context, namespace string) (TaskCounts, error) {
	var c TaskCounts
	if err := stmt("task_count").queryRow(ctx, s.pool, args{"namespace": namespace, "finished": finishedStates}).Scan(&c.Finished, &c.Unfinished); err != nil {
		return c, fmt.Errorf("counting the tasks of namespace %s: %w", namespace, translate(err))
	}
	return c, nil
}

// TablesAnalyze refreshes the planner's statistics of the task tables.
func (s *Store) TablesAnalyze(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, "ANALYZE "+strings.Join(taskTables, ", ")); err != nil {
		return fmt.Errorf("analyzing the task tables: %w", translate(err))
	}
	return nil
}

// TablesVacuum reclaims the dead rows of the task tables and of the tables
// of queues, and refreshes their statistics.
func (s *Store) TablesVacuum(ctx context.Context, queues []string) error {
	tables := slices.Clone(taskTables)
	for _, q := range queues {
		t, err := queue.Table(q)
		if err != nil {
			return err
		}
		tables = append(tables, t)
	}
	if _, err := s.pool.Exec(ctx, "VACUUM (ANALYZE) "+strings.Join(tables, ", ")); err != nil {
		return fmt.Errorf("vacuuming the task tables: %w", translate(err))
	}
	return nil
}

// Request ids are passed as [16]byte, which pgx encodes natively: a
// uuid.UUID is encoded through its text form, which costs noticeable CPU
// for tens of thousands of ids.

// RequestsFinishedCount counts the requests of ids that are done with: a
// task in a terminal state, or a rejection.
func (s *Store) RequestsFinishedCount(ctx context.Context, ids [][16]byte) (int64, error) {
	var n int64
	if err := stmt("requests_finished_count").queryRow(ctx, s.pool, args{"ids": ids, "finished": finishedStates}).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting finished requests: %w", translate(err))
	}
	return n, nil
}

// RequestsRejectedCount counts the requests of ids that were rejected.
func (s *Store) RequestsRejectedCount(ctx context.Context, ids [][16]byte) (int64, error) {
	var n int64
	if err := stmt("requests_rejected_count").queryRow(ctx, s.pool, args{"ids": ids}).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting rejected requests: %w", translate(err))
	}
	return n, nil
}

// RequestTask is the task of a request, with its times. Its fields are in
// the order of request_tasks's columns (sql/task_history.sql).
type RequestTask struct {
	RequestID  [16]byte
	State      workflow.TaskState
	CreatedAt  time.Time
	FinishedAt *time.Time
}

// RequestTasks lists the tasks of the requests ids.
func (s *Store) RequestTasks(ctx context.Context, ids [][16]byte) ([]RequestTask, error) {
	rows, err := stmt("request_tasks").query(ctx, s.pool, args{"ids": ids})
	if err != nil {
		return nil, fmt.Errorf("reading the tasks of requests: %w", translate(err))
	}
	tasks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[RequestTask])
	if err != nil {
		return nil, fmt.Errorf("reading the tasks of requests: %w", translate(err))
	}
	return tasks, nil
}

// RequestStep is a step of a request's task with the moment it became
// ready (a root: its task's creation; any other step: its last parent's
// completion), first started and completed. Its fields are in the order
// of request_steps's columns (sql/task_history.sql).
type RequestStep struct {
	Name      string
	Position  int
	State     workflow.StepState
	Attempts  int
	Root      bool
	ReadyAt   *time.Time
	StartedAt *time.Time
	DoneAt    *time.Time
}

// RequestSteps lists the steps of the tasks of the requests ids.
func (s *Store) RequestSteps(ctx context.Context, ids [][16]byte) ([]RequestStep, error) {
	rows, err := stmt("request_steps").query(ctx, s.pool, args{
		"ids": ids, "started_state": startTo, "completed_state": string(workflow.StepStateComplete),
	})
	if err != nil {
		return nil, fmt.Errorf("reading the steps of requests: %w", translate(err))
	}
	steps, err := pgx.CollectRows(rows, pgx.RowToStructByPos[RequestStep])
	if err != nil {
		return nil, fmt.Errorf("reading the steps of requests: %w", translate(err))
	}
	return steps, nil
}

// RequestsDelete deletes, in one transaction, the requests ids still in
// the task request queue, the messages of their tasks still in
// taskQueues, their tasks (steps and transitions go with them) and
// their rejections.
func (s *Store) RequestsDelete(ctx context.Context, ids [][16]byte, taskQueues []string) error {
	texts := make([]string, len(ids))
	for i, id := range ids {
		texts[i] = uuidText(id)
	}
	requests, err := stmt("request_messages_delete").forQueues("queue", queue.TaskRequestsQueue)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := requests.exec(ctx, tx, args{"ids": texts}); err != nil {
			return err
		}
		for _, q := range taskQueues {
			st, err := stmt("request_task_messages_delete").forQueues("queue", q)
			if err != nil {
				return err
			}
			if _, err := st.exec(ctx, tx, args{"ids": ids}); err != nil {
				return err
			}
		}
		if _, err := stmt("request_tasks_delete").exec(ctx, tx, args{"ids": ids}); err != nil {
			return err
		}
		_, err := stmt("request_rejections_delete").exec(ctx, tx, args{"ids": ids})
		return err
	})
}

func uuidText(id [16]byte) string { return uuid.UUID(id).String() }

// taskTables are the tables a task's rows live in.
var taskTables = []string{"tasker.tasks", "tasker.steps", "tasker.task_transitions", "tasker.step_transitions"}

// finishedStates are the task states a task ends in.
var finishedStates = states(workflow.TaskStatesWhere(workflow.TaskState.Terminal))
