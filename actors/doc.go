// Package actors is the node's actor tree (protoactor-go): who polls which
// queue, who runs handlers, and who restarts whom when something fails.
//
// The tree, spawned by the root supervisor (root.go) and each namespace
// supervisor (namespace.go), and recorded node by node in a Tree (tree.go)
// that /debug/actors shows:
//
//	root (supervisor, one-for-one)
//	├── (orchestration-breaker) the breaker of the orchestration queues
//	├── task_requests     reads orchestration_task_requests, creates tasks
//	├── step_results      applies the outcomes this node's workers hand over,
//	│                     and the results read from orchestration_step_results
//	└── ns-<namespace>    one supervisor per namespace (one-for-one)
//	    ├── poller        reads <namespace>_queue, starting the steps, and hands the messages to idle workers
//	    ├── worker-0..N-1 run one step attempt at a time
//	    └── (breaker)     the namespace's circuit breaker, shown in the tree
//
// Why this shape: a namespace is the unit of fault isolation. Its queue, its
// handlers and the downstream services they call fail together, so they
// share one breaker and one supervisor, and nothing in one namespace's
// subtree can stop another's. The orchestration actors sit directly under
// the root because they serve every namespace; they share the breaker of the
// orchestration queues.
//
// Supervision: every supervisor restarts only the child that failed
// (one-for-one). A child that fails more than max_restarts times within the
// window makes its supervisor escalate: a namespace supervisor then fails to
// the root, which restarts the whole namespace subtree; a namespace that
// still fails past the root's intensity is stopped and reported as given up,
// while the rest of the tree keeps running. Restart counts and the last
// failure reason of every actor are kept in the Tree for /debug/actors.
//
// Messages between actors are small immutable values (UUIDs and scalars):
// a job carries the queue message id and the step's identity and, when the
// poller's read started the attempt, what that start read from the store in
// its transaction, as strings (store.StartedAttempt); an outcome handed from a worker
// to the step-result actor (outcomeDue) carries the step's identity, the
// attempt and its step message's id, and either the outcome itself as
// strings and scalars (store.CarriedOutcome), which the actor records with
// its application and answers whether it did (carriedApplied), or nothing
// more: the outcome stays in the store, where the worker recorded it.
package actors
