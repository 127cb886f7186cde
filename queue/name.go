package queue

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/internal/cowmap"
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
	if q, ok := namespaceQueues.Load()[namespace]; ok {
		return q
	}
	q := namespace + "_queue"
	namespaceQueues.Add(namespace, q)
	return q
}

// namespaceQueues keeps the names NamespaceQueue made: it runs several
// times per step, and each concatenation allocates. It keeps at most 256,
// so that names from outside (an API caller's namespace that does not
// exist) cannot grow it without end.
var namespaceQueues = cowmap.New[string, string](256)

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
