package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasker-run/tasker/queue"
)

// Every statement of the store is in sql/, one file per operation, each
// statement behind a "-- name: x" line. Arguments are named (@name) in the
// files and rewritten once, at start-up, to PostgreSQL's positional ones:
// a call binds them by name (args), at the cost of a small map, and no
// statement is parsed again per call (as pgx.NamedArgs would).
//
// A statement that touches queue tables names them {{role}} (the queue's
// table) and {{role_archive}} (its archive); forQueues fills them in from
// validated queue names: the tables' layout is part of the pgmq contract
// (PGMQ.md), so the same statement serves Tasker's own pgmq and the real one.
// SQL that two statements share (the start of attempts, which a worker's
// start and a poller's read both make) is a part, written once behind a
// "-- part: x" line and placed where a statement says {{part x}}.

//go:embed sql/*.sql
var sqlFiles embed.FS

// args are a statement's arguments by name.
type args = map[string]any

// statement is one named statement of a .sql file.
type statement struct {
	name string
	sql  string
	// params names $1, $2, … in order.
	params []string

	queued sync.Map // queueKey → *statement with the tables filled in
}

type queueKey [3][2]string

var statements = mustLoadStatements(sqlFiles)

// stmt returns the statement called name; a missing one is a programming
// error, found by any test that runs it.
func stmt(name string) *statement {
	st, ok := statements[name]
	if !ok {
		panic("store: no statement " + name)
	}
	return st
}

// bind orders a's values as the statement's parameters, its slices as the
// arrays that encode without boxing their elements (arrayArg). A missing or
// an unknown name is a programming error.
func (st *statement) bind(a args) []any {
	if len(a) != len(st.params) {
		panic(fmt.Sprintf("store: statement %s takes %d arguments %v, given %d", st.name, len(st.params), st.params, len(a)))
	}
	out := make([]any, len(st.params))
	for i, p := range st.params {
		v, ok := a[p]
		if !ok {
			panic(fmt.Sprintf("store: statement %s: argument %s missing", st.name, p))
		}
		out[i] = arrayArg(v)
	}
	return out
}

// queue adds the statement to b with its arguments.
func (st *statement) queue(b *pgx.Batch, a args) *pgx.QueuedQuery {
	return b.Queue(st.sql, st.bind(a)...)
}

// forQueues returns the statement with its queue tables filled in: role →
// queue name, at most three.
func (st *statement) forQueues(roles ...string) (*statement, error) {
	var key queueKey
	if len(roles) > 2*len(key) || len(roles)%2 != 0 {
		panic("store: forQueues takes up to three role, queue pairs")
	}
	for i := 0; i < len(roles); i += 2 {
		key[i/2] = [2]string{roles[i], roles[i+1]}
	}
	if q, ok := st.queued.Load(key); ok {
		return q.(*statement), nil
	}
	sql := st.sql
	for i := 0; i < len(roles); i += 2 {
		table, err := queue.Table(roles[i+1])
		if err != nil {
			return nil, err
		}
		archive, err := queue.ArchiveTable(roles[i+1])
		if err != nil {
			return nil, err
		}
		sql = strings.ReplaceAll(sql, "{{"+roles[i]+"_archive}}", archive)
		sql = strings.ReplaceAll(sql, "{{"+roles[i]+"}}", table)
	}
	if strings.Contains(sql, "{{") {
		panic(fmt.Sprintf("store: statement %s has a queue table left unnamed", st.name))
	}
	q := &statement{name: st.name, sql: sql, params: st.params}
	actual, _ := st.queued.LoadOrStore(key, q)
	return actual.(*statement), nil
}

// mustLoadStatements reads every statement of the .sql files of fsys, with
// the parts they name filled in.
func mustLoadStatements(fsys embed.FS) map[string]*statement {
	bodies := map[string]string{}
	parts := map[string]string{}
	files, err := fs.Glob(fsys, "sql/*.sql")
	if err != nil {
		panic(err)
	}
	for _, f := range files {
		data, err := fsys.ReadFile(f)
		if err != nil {
			panic(err)
		}
		for key, body := range splitStatements(string(data)) {
			into, name := bodies, key
			if p, ok := strings.CutPrefix(key, partPrefix); ok {
				into, name = parts, p
			}
			if _, dup := into[name]; dup {
				panic(fmt.Sprintf("store: %s defined twice (%s)", key, path.Base(f)))
			}
			into[name] = body
		}
	}
	out := map[string]*statement{}
	for name, body := range bodies {
		sql, params := positional(withParts(name, body, parts))
		out[name] = &statement{name: name, sql: sql, params: params}
	}
	return out
}

// partPrefix marks, among splitStatements' keys, a part: SQL that two
// statements share, written once after a "-- part: x" line and placed in
// each where it says {{part x}}.
const partPrefix = "part "

// withParts fills in the parts statement name uses.
func withParts(name, body string, parts map[string]string) string {
	for {
		i := strings.Index(body, "{{part ")
		if i < 0 {
			return body
		}
		j := strings.Index(body[i:], "}}")
		if j < 0 {
			panic(fmt.Sprintf("store: statement %s has an unclosed {{part", name))
		}
		part, ok := parts[strings.TrimSpace(body[i+len("{{part "):i+j])]
		if !ok {
			panic(fmt.Sprintf("store: statement %s names no part defined: %s", name, body[i:i+j+2]))
		}
		body = body[:i] + part + body[i+j+2:]
	}
}

// splitStatements cuts a file at its "-- name: x" and "-- part: x" lines
// (a part's key is partPrefix and its name); what stands before the first
// is the file's comment.
func splitStatements(file string) map[string]string {
	out := map[string]string{}
	var name string
	var body strings.Builder
	flush := func() {
		if name != "" {
			out[name] = strings.TrimSuffix(strings.TrimSpace(body.String()), ";")
		}
		body.Reset()
	}
	for line := range strings.Lines(file) {
		trimmed := strings.TrimSpace(line)
		if n, ok := strings.CutPrefix(trimmed, "-- name:"); ok {
			flush()
			name = strings.TrimSpace(n)
			continue
		}
		if n, ok := strings.CutPrefix(trimmed, "-- part:"); ok {
			flush()
			name = partPrefix + strings.TrimSpace(n)
			continue
		}
		body.WriteString(line)
	}
	flush()
	return out
}

// positional rewrites @name arguments to $n, one number per distinct name
// in order of first use. It leaves alone string literals, quoted
// identifiers, comments and operators that begin with @ (such as @>).
func positional(sql string) (string, []string) {
	var (
		b      strings.Builder
		params []string
		index  = map[string]int{}
	)
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(sql) {
				if sql[j] == c {
					if j+1 < len(sql) && sql[j+1] == c { // doubled quote
						j += 2
						continue
					}
					break
				}
				j++
			}
			b.WriteString(sql[i:min(j+1, len(sql))])
			i = j + 1
		case c == '-' && strings.HasPrefix(sql[i:], "--"):
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				j = len(sql) - i
			}
			i += j // the comment is dropped; the newline stays
		case c == '@' && i+1 < len(sql) && isNameStart(sql[i+1]):
			j := i + 1
			for j < len(sql) && isNameChar(sql[j]) {
				j++
			}
			name := sql[i+1 : j]
			n, ok := index[name]
			if !ok {
				params = append(params, name)
				n = len(params)
				index[name] = n
			}
			b.WriteString("$" + strconv.Itoa(n))
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), params
}

func isNameStart(c byte) bool { return c >= 'a' && c <= 'z' || c == '_' }
func isNameChar(c byte) bool  { return isNameStart(c) || c >= '0' && c <= '9' }

// db runs statements: the pool, or a transaction.
type db interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (st *statement) exec(ctx context.Context, d db, a args) (pgconn.CommandTag, error) {
	return d.Exec(ctx, st.sql, st.bind(a)...)
}

func (st *statement) query(ctx context.Context, d db, a args) (pgx.Rows, error) {
	return d.Query(ctx, st.sql, st.bind(a)...)
}

func (st *statement) queryRow(ctx context.Context, d db, a args) pgx.Row {
	return d.QueryRow(ctx, st.sql, st.bind(a)...)
}
