// Package workflow is Tasker's pure domain: task templates loaded from TOML
// and validated as DAGs, the step and task state machines as transition
// tables, and the contract between the engine and step handlers. It does no
// I/O beyond reading template files from an fs.FS and imports neither the
// database driver nor the actor system; the built-in handlers, which do I/O,
// live in a sub-package of their own.
//
// # Step states
//
// StepState mirrors the CHECK constraint on the steps table; the arrows are
// StepEvents and StepTransition is the only way to move along them.
//
//	                                           +-start-+   (redelivery after a lost
//	                                           |       |    worker: a new attempt)
//	                                           v       |
//	pending --enqueue--> enqueued --start--> in_progress --succeed--> complete
//	   ^                                       |    ^  |
//	   |                        fail_permanent |    |  +--fail_retryable--> waiting_for_retry
//	   |                                       v    +-----------start-------------+
//	   |                                     error --resolve--> resolved_manually
//	   |                                       |
//	   +------------------retry----------------+
//
//	pending, enqueued, in_progress, waiting_for_retry --cancel--> cancelled
//
// fail_retryable is used while attempts are left, fail_permanent for a
// permanent error or when attempts are exhausted; retry and resolve are
// operator actions. A dependency is satisfied by complete or
// resolved_manually. complete, error, cancelled and resolved_manually are
// terminal: the engine never moves a step out of them on its own.
//
// # Task states
//
//	pending --start--> in_progress --complete--> complete
//	                    ^      |
//	                    |      | fail
//	              retry |      v
//	                    +---- error --resolve--> resolved_manually
//
//	pending, in_progress, error --cancel--> cancelled
//
// A task starts when its first steps are enqueued, completes when every step
// is complete or resolved_manually, and fails when a step is in error and
// nothing else can make progress. retry and resolve are operator actions.
package workflow
