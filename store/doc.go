// Package store keeps tasks, steps and their transitions in PostgreSQL
// (schema tasker) and carries out every state change the actors ask for.
//
// Each operation is one transaction that does the whole of what one message
// means: accepting a task request creates the task, enqueues its ready steps
// and deletes the request; recording a worker's outcome writes it, sends the
// result message and deletes the step message; applying a result moves the
// step, enqueues what became ready, finalizes the task and deletes the result
// message. State changes are compare-and-set on the current state, computed
// by the pure transition tables of package workflow, and every change is a
// row in task_transitions or step_transitions. Delivery is at-least-once;
// because of the compare-and-set, state changes happen exactly once.
//
// Database errors are translated at this boundary (see errors.go) so callers
// never need pgx.
package store
