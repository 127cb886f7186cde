// Package queue is Tasker's message bus on PostgreSQL: it detects a real pgmq install or
// installs a compatible subset of it (Install), sends and receives messages through the
// pgmq functions (Client), and defines the immutable messages Tasker exchanges
// (TaskRequest, StepMessage, StepResult). The subset is the SQL of sql/, one file per
// version; docs/pgmq.md is its contract, function by function.
//
// Every operation runs on a DB, which may be a pool, a connection or a transaction, so a
// consumer can apply its effect, send follow-up messages and delete its input atomically.
package queue
