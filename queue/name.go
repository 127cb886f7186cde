package queue

import (
	"fmt"
	"maps"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// MaxNameLength is the longest queue name accepted, the same limit real pgmq uses; it keeps
// the q_/a_ table names and their index names inside PostgreSQL's 63-byte identifiers.
const MaxNameLength = 47

// Queue names used by Tasker.
const (
	// TaskRequestsQueue carries TaskRequest messages from any client to the orchestrator.
	TaskRequestsQueue = "orchestration_task_requests"
	// StepResultsQueue carries StepResult messages from workers to the orchestrator.
	StepResultsQueue = "orchestration_step_results"
)

// NamespaceQueue is the name of the step queue of a namespace.
func NamespaceQueue(namespace string) string {
	if m := namespaceQueues.Load(); m != nil {
		if q, ok := (*m)[namespace]; ok {
			return q
		}
	}
	q := namespace + "_queue"
	if old := namespaceQueues.Load(); old == nil || len(*old) < namespaceQueuesMax {
		next := map[string]string{}
		if old != nil {
			next = maps.Clone(*old)
		}
		next[namespace] = q
		namespaceQueues.CompareAndSwap(old, &next) // lost to another: the next call adds it
	}
	return q
}

// namespaceQueues keeps the names NamespaceQueue made, copied on write: it
// runs several times per step, and each concatenation allocates. It keeps
// at most namespaceQueuesMax, so that names from outside (an API caller's
// namespace that does not exist) cannot grow it without end.
var namespaceQueues atomic.Pointer[map[string]string]

const namespaceQueuesMax = 256

// ValidateName reports whether name can be a pgmq queue name: 1 to MaxNameLength letters,
// digits or underscores. Names are case-insensitive (pgmq lower-cases them).
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("invalid queue name: must not be empty")
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("invalid queue name %q: longer than %d characters", name, MaxNameLength)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return fmt.Errorf("invalid queue name %q: only letters, digits and underscore are allowed", name)
		}
	}
	return nil
}

// normalize validates a queue name and returns it lower-cased, as pgmq stores it.
func normalize(name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	return strings.ToLower(name), nil
}

// queueTable is the quoted, schema-qualified queue table of a normalized name. Only called
// with names that passed normalize.
func queueTable(name string) string {
	return pgx.Identifier{"pgmq", "q_" + name}.Sanitize()
}
