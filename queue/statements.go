package queue

import (
	"context"

	"fmt"
	"github.com/jackc/pgx/v5"
	"sync"
	"sync/atomic"
)

// statements are the plain-SQL forms of the hot operations on one queue table, built once
// per queue from its validated, quoted name. Their semantics are those of the pgmq
// functions: send sets vt (the delay in microseconds, $1) and lets enqueued_at default;
// read takes the oldest visible messages ($1 of them) skipping rows other readers hold,
// moves their vt ($2 seconds), counts the read and stamps last_read_at.
type statements struct {
	send, sendBatch, read, delete, deleteBatch string
}

var statementCache sync.Map // normalized queue name → *statements

// statementsOf returns the statements of a normalized queue name.
func statementsOf(q string) *statements {
	if s, ok := statementCache.Load(q); ok {
		return s.(*statements)
	}
	t := queueTable(q)
	s := &statements{
		send: "INSERT INTO " + t + " (vt, message) " +
			"VALUES (clock_timestamp() + $1::bigint * interval '1 microsecond', $2::jsonb) RETURNING msg_id",
		sendBatch: "INSERT INTO " + t + " (vt, message) " +
			"SELECT clock_timestamp() + $1::bigint * interval '1 microsecond', m.msg " +
			"FROM unnest($2::jsonb[]) WITH ORDINALITY AS m(msg, ord) ORDER BY m.ord RETURNING msg_id",
		// The picked ids go to the UPDATE as an array, not a join: a queue
		// table is mostly dead rows between vacuums, and a join may be
		// planned as a hash join over all of them.
		read: "UPDATE " + t + " SET vt = clock_timestamp() + make_interval(secs => $2::integer), " +
			"read_ct = read_ct + 1, last_read_at = clock_timestamp() " +
			"WHERE msg_id = ANY (ARRAY(SELECT msg_id FROM " + t + " WHERE vt <= clock_timestamp() " +
			"ORDER BY msg_id LIMIT $1::integer FOR UPDATE SKIP LOCKED)) " +
			"RETURNING msg_id, read_ct, enqueued_at, vt, message, headers",
		delete:      "DELETE FROM " + t + " WHERE msg_id = $1::bigint",
		deleteBatch: "DELETE FROM " + t + " WHERE msg_id = ANY($1::bigint[]) RETURNING msg_id",
	}
	actual, _ := statementCache.LoadOrStore(q, s)
	return actual.(*statements)
}

// Table returns the quoted, schema-qualified table of a queue, for a statement that joins
// a queue operation to others (a data-modifying WITH, so that one round trip does all):
// the table's layout is part of the pgmq contract. The name is validated first.
func Table(queue string) (string, error) {
	q, err := normalize(queue)
	if err != nil {
		return "", err
	}
	return queueTable(q), nil
}

// ArchiveTable returns the quoted, schema-qualified archive table of a queue, for the same
// use as Table. The name is validated first.
func ArchiveTable(queue string) (string, error) {
	q, err := normalize(queue)
	if err != nil {
		return "", err
	}
	return pgx.Identifier{"pgmq", "a_" + q}.Sanitize(), nil
}

// providerKind remembers whether a database's pgmq is Tasker's subset: 0 not known yet,
// 1 Tasker's subset (queues are plain tables), 2 another pgmq (use its functions).
type providerKind struct{ v atomic.Int32 }

// Direct reports whether the client's pgmq is Tasker's own subset, where a queue is its
// tables and nothing else, so that statements may read and write the queue tables directly
// (see Client). The answer is asked of the database once per client family (NewClient and
// the clients WithDB derives from it); it is not cached while schema pgmq does not exist.
func (c *Client) Direct(ctx context.Context) (bool, error) {
	switch c.kind.v.Load() {
	case 1:
		return true, nil
	case 2:
		return false, nil
	}
	var schema, ours bool
	if err := c.db.QueryRow(ctx, "SELECT to_regnamespace('pgmq') IS NOT NULL, to_regclass('pgmq.tasker_install') IS NOT NULL").
		Scan(&schema, &ours); err != nil {
		return false, fmt.Errorf("detecting pgmq: %w", err)
	}
	switch {
	case ours:
		c.kind.v.Store(1)
	case schema:
		c.kind.v.Store(2)
	}
	return ours, nil
}
