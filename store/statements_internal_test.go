package store

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// stepMoveArgs are the arguments of one decisions_apply of one step, the hot
// path's widest statement.
func stepMoveArgs() args {
	var id [16]byte
	now := time.Now()
	attempt := int32(1)
	msg := int64(7)
	return args{
		"steps": [][16]byte{id}, "tasks": [][16]byte{id}, "from_states": []string{"in_progress"},
		"to_states": []string{"complete"}, "results": [][]byte{nil}, "errors": [][]byte{nil},
		"next_attempt_ats": []*time.Time{&now}, "finished": []bool{true}, "attempts": []int32{attempt},
		"outcome_attempts": []*int32{&attempt}, "reasons": []string{"handler succeeded"}, "release": []bool{true},
		"release_reasons": []string{"parent a complete"}, "retry": []bool{false}, "retry_delays_us": []int64{0},
		"retry_messages": [][]byte{nil}, "msg_ids": []*int64{&msg}, "archive": []bool{false},
		"archive_reasons": []string{""}, "task_state": "in_progress", "node_id": "n", "enqueued": "enqueued",
		"pending": "pending", "children": [][16]byte{id}, "child_messages": [][]byte{[]byte(`{}`)},
		"wake_channel": "w", "wake_queue": "q",
	}
}

// BenchmarkStatementArgs compares the ways a hot statement's arguments can
// be bound: by name, rewritten once at start-up (bind); by name, rewritten
// per call (pgx.NamedArgs); positionally.
func BenchmarkStatementArgs(b *testing.B) {
	st := stmt("decisions_apply")
	b.Run("bind", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink = st.bind(stepMoveArgs())
		}
	})
	raw := statementSource(b, "decisions_apply")
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
			attempt := int32(1)
			msg := int64(7)
			sink = []any{[][16]byte{id}, [][16]byte{id}, []string{"in_progress"}, []string{"complete"},
				[][]byte{nil}, [][]byte{nil}, []*time.Time{&now}, []bool{true}, []int32{attempt}, []*int32{&attempt},
				[]string{"handler succeeded"}, []bool{true}, []string{"parent a complete"}, []bool{false},
				[]int64{0}, [][]byte{nil}, []*int64{&msg}, []bool{false}, []string{""}, "in_progress", "n",
				"enqueued", "pending", [][16]byte{id}, [][]byte{[]byte(`{}`)}, "w", "q"}
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

// A part is written once and placed in each statement that names it; a
// statement naming a part no file defines does not load.
func TestStatementParts(t *testing.T) {
	file := `-- the file's comment
-- part: picked
picked AS (SELECT id FROM t WHERE id = ANY(@ids::int[]))

-- name: first
WITH {{part picked}} SELECT id FROM picked WHERE id > @min;

-- name: second
WITH {{part picked}}, twice AS (SELECT id FROM picked) SELECT count(*) FROM twice;
`
	split := splitStatements(file)
	parts := map[string]string{"picked": split[partPrefix+"picked"]}
	require.Equal(t, "picked AS (SELECT id FROM t WHERE id = ANY(@ids::int[]))", parts["picked"])
	sql, params := positional(withParts("first", split["first"], parts))
	require.Equal(t, "WITH picked AS (SELECT id FROM t WHERE id = ANY($1::int[])) SELECT id FROM picked WHERE id > $2", sql)
	require.Equal(t, []string{"ids", "min"}, params)
	require.Equal(t, "WITH picked AS (SELECT id FROM t WHERE id = ANY(@ids::int[])), twice AS (SELECT id FROM picked) SELECT count(*) FROM twice",
		withParts("second", split["second"], parts))
	require.PanicsWithValue(t, "store: statement third names no part defined: {{part missing}}", func() {
		withParts("third", "WITH {{part missing}} SELECT 1", parts)
	})
	require.PanicsWithValue(t, "store: statement fourth has an unclosed {{part", func() {
		withParts("fourth", "WITH {{part picked SELECT 1", parts)
	})
	for name, st := range statements {
		require.NotContains(t, st.sql, "{{part", "statement %s", name)
	}
}
