package store

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// stepMoveArgs are the arguments of one step_move, the hot path's widest
// statement.
func stepMoveArgs() args {
	var id [16]byte
	now := time.Now()
	attempt := 1
	msg := int64(7)
	return args{
		"step": id, "from_state": "in_progress", "to_state": "complete", "result": nil, "error": nil,
		"next_attempt_at": &now, "finished": true, "attempt": attempt, "outcome_attempt": &attempt, "task": id,
		"task_state": "in_progress", "reason": "handler succeeded", "node_id": "n", "enqueued": "enqueued",
		"pending": "pending", "release": true, "release_reason": "parent a complete",
		"children": [][16]byte{id}, "child_messages": [][]byte{[]byte(`{}`)}, "retry_delay_us": int64(0),
		"retry_message": []byte(nil), "retry": false, "wake_channel": "w", "wake_queue": "q",
		"msg_id": &msg, "archive": false,
	}
}

// BenchmarkStatementArgs compares the ways a hot statement's arguments can
// be bound: by name, rewritten once at start-up (bind); by name, rewritten
// per call (pgx.NamedArgs); positionally.
func BenchmarkStatementArgs(b *testing.B) {
	st := stmt("step_move")
	b.Run("bind", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink = st.bind(stepMoveArgs())
		}
	})
	raw := statementSource(b, "step_move")
	b.Run("pgx.NamedArgs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := pgx.NamedArgs(stepMoveArgs()).RewriteQuery(context.Background(), nil, raw, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("positional", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var id [16]byte
			now := time.Now()
			attempt := 1
			msg := int64(7)
			sink = []any{id, "in_progress", "complete", nil, nil, &now, true, attempt, &attempt, id,
				"in_progress", "handler succeeded", "n", "enqueued", "pending", true, "parent a complete",
				[][16]byte{id}, [][]byte{[]byte(`{}`)}, int64(0), []byte(nil), false, "w", "q", &msg, false}
		}
	})
}

// sink keeps the benchmarks' results alive.
var sink []any

// statementSource is a statement as its file has it, @names and all.
func statementSource(tb testing.TB, name string) string {
	tb.Helper()
	for _, f := range []string{"sql/result_apply.sql"} {
		data, err := sqlFiles.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		if body, ok := splitStatements(string(data))[name]; ok {
			return body
		}
	}
	tb.Fatalf("no statement %s", name)
	return ""
}
