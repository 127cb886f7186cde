package queue_test

// Tests of the pgmq functions client libraries call beyond Tasker's own needs
// (docs/pgmq.md), on Tasker's subset, called the way those libraries call them:
// positionally with the parameter types they cast to, and by argument name.
// Rows are read by column name, as every client must.

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/testsupport"
)

// messageColumns are the columns of pgmq.message_record, in pgmq 1.11's order.
var messageColumns = []string{"msg_id", "read_ct", "enqueued_at", "last_read_at", "vt", "message", "headers"}

// record is one message row, scanned by column name.
type record struct {
	MsgID      int64      `db:"msg_id"`
	ReadCt     int32      `db:"read_ct"`
	EnqueuedAt time.Time  `db:"enqueued_at"`
	LastReadAt *time.Time `db:"last_read_at"`
	VT         time.Time  `db:"vt"`
	Message    []byte     `db:"message"`
	Headers    []byte     `db:"headers"`
}

// records runs a query returning message records and checks its columns.
func records(t *testing.T, db queue.DB, sql string, args ...any) []record {
	t.Helper()
	rows, err := db.Query(context.Background(), sql, args...)
	require.NoError(t, err, sql)
	names := make([]string, 0, len(messageColumns))
	for _, f := range rows.FieldDescriptions() {
		names = append(names, f.Name)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[record])
	require.NoError(t, err, sql)
	require.Equal(t, messageColumns, names, sql)
	return out
}

func ptr[T any](v T) *T { return &v }

func msgIDs(rs []record) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.MsgID
	}
	return out
}

func int64s(t *testing.T, db queue.DB, sql string, args ...any) []int64 {
	t.Helper()
	rows, err := db.Query(context.Background(), sql, args...)
	require.NoError(t, err, sql)
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err, sql)
	return out
}

// pgError runs sql and returns the PostgreSQL error it must fail with.
func pgError(t *testing.T, db queue.DB, sql string, args ...any) *pgconn.PgError {
	t.Helper()
	rows, err := db.Query(context.Background(), sql, args...)
	if err == nil {
		for rows.Next() {
		}
		rows.Close()
		err = rows.Err()
	}
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, "%s must fail", sql)
	return pgErr
}

// TestPgmqSignatures pins every public function of the subset to pgmq 1.11's
// signature: name, argument names, order, types and defaults, and result. A
// function missing, added or changed shows here.
func TestPgmqSignatures(t *testing.T) {
	t.Parallel()
	pool := testsupport.NewDB(t)
	const rec, ids = "SETOF pgmq.message_record", "SETOF bigint"
	want := map[string]string{
		"archive(queue_name text, msg_id bigint)":     "boolean",
		"archive(queue_name text, msg_ids bigint[])":  ids,
		"create(queue_name text)":                     "void",
		"create_fifo_index(queue_name text)":          "void",
		"create_fifo_indexes_all()":                   "void",
		"create_unlogged(queue_name text)":            "void",
		"delete(queue_name text, msg_id bigint)":      "boolean",
		"delete(queue_name text, msg_ids bigint[])":   ids,
		"detach_archive(queue_name text)":             "void",
		"drop_queue(queue_name text)":                 "boolean",
		"list_queues()":                               "SETOF pgmq.queue_record",
		"metrics(queue_name text)":                    "pgmq.metrics_result",
		"metrics_all()":                               "SETOF pgmq.metrics_result",
		"pop(queue_name text, qty integer DEFAULT 1)": rec,
		"purge_queue(queue_name text)":                "bigint",
		"read(queue_name text, vt integer, qty integer, conditional jsonb DEFAULT '{}'::jsonb)":      rec,
		"read_grouped(queue_name text, vt integer, qty integer)":                                     rec,
		"read_grouped_head(queue_name text, vt integer, qty integer)":                                rec,
		"read_grouped_rr(queue_name text, vt integer, qty integer)":                                  rec,
		"send(queue_name text, msg jsonb)":                                                           ids,
		"send(queue_name text, msg jsonb, delay integer)":                                            ids,
		"send(queue_name text, msg jsonb, delay timestamp with time zone)":                           ids,
		"send(queue_name text, msg jsonb, headers jsonb)":                                            ids,
		"send(queue_name text, msg jsonb, headers jsonb, delay integer)":                             ids,
		"send(queue_name text, msg jsonb, headers jsonb, delay timestamp with time zone)":            ids,
		"send_batch(queue_name text, msgs jsonb[])":                                                  ids,
		"send_batch(queue_name text, msgs jsonb[], delay integer)":                                   ids,
		"send_batch(queue_name text, msgs jsonb[], delay timestamp with time zone)":                  ids,
		"send_batch(queue_name text, msgs jsonb[], headers jsonb[])":                                 ids,
		"send_batch(queue_name text, msgs jsonb[], headers jsonb[], delay integer)":                  ids,
		"send_batch(queue_name text, msgs jsonb[], headers jsonb[], delay timestamp with time zone)": ids,
		"set_vt(queue_name text, msg_id bigint, vt integer)":                                         rec,
		"set_vt(queue_name text, msg_id bigint, vt timestamp with time zone)":                        rec,
		"set_vt(queue_name text, msg_ids bigint[], vt integer)":                                      rec,
		"set_vt(queue_name text, msg_ids bigint[], vt timestamp with time zone)":                     rec,
		"read_with_poll(queue_name text, vt integer, qty integer, max_poll_seconds integer DEFAULT 5, poll_interval_ms integer DEFAULT 100, conditional jsonb DEFAULT '{}'::jsonb)": rec,
		"read_grouped_with_poll(queue_name text, vt integer, qty integer, max_poll_seconds integer DEFAULT 5, poll_interval_ms integer DEFAULT 100)":                                rec,
		"read_grouped_rr_with_poll(queue_name text, vt integer, qty integer, max_poll_seconds integer DEFAULT 5, poll_interval_ms integer DEFAULT 100)":                             rec,
		"read_grouped_head_with_poll(queue_name text, vt integer, qty integer, max_poll_seconds integer DEFAULT 5, poll_interval_ms integer DEFAULT 100)":                           rec,
	}
	rows, err := pool.Query(t.Context(), `
		SELECT p.proname || '(' || pg_get_function_arguments(p.oid) || ')', pg_get_function_result(p.oid)
		FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
		WHERE n.nspname = 'pgmq' AND NOT starts_with(p.proname, 'tasker_')`)
	require.NoError(t, err)
	got := map[string]string{}
	for rows.Next() {
		var sig, result string
		require.NoError(t, rows.Scan(&sig, &result))
		got[sig] = result
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want, got)
}

func TestPgmqPop(t *testing.T) {
	t.Parallel()
	_, pool := newQueue(t)
	sent := int64s(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[])`,
		"q", []string{`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":4}`})
	delayed := int64s(t, pool, `SELECT * FROM pgmq.send($1::text, $2::jsonb, $3::integer)`, "q", `{"later":true}`, 3600)
	read := records(t, pool, `SELECT * FROM pgmq.read($1, $2, $3)`, "q", 30, 1)
	require.Equal(t, sent[:1], msgIDs(read), "message 1 is in flight")

	one := records(t, pool, `SELECT * FROM pgmq.pop($1)`, "q")
	require.Equal(t, sent[1:2], msgIDs(one), "qty defaults to 1; the oldest visible message")
	require.Equal(t, int32(0), one[0].ReadCt, "a popped row comes back as it was")
	require.JSONEq(t, `{"n":2}`, string(one[0].Message))

	rest := records(t, pool, `SELECT * FROM pgmq.pop(queue_name => $1, qty => $2)`, "q", 10)
	require.Equal(t, sent[2:], msgIDs(rest), "oldest first; neither the message in flight nor the delayed one")

	left := int64s(t, pool, `SELECT msg_id FROM pgmq.q_q ORDER BY msg_id`)
	require.Equal(t, append(sent[:1:1], delayed...), left, "popped messages are deleted")
	require.Empty(t, records(t, pool, `SELECT * FROM pgmq.pop($1, $2)`, "q", 5))

	for _, qty := range []any{0, -1, nil} {
		e := pgError(t, pool, `SELECT * FROM pgmq.pop($1, $2)`, "q", qty)
		require.Contains(t, e.Message, "qty", "%v", qty)
	}
}

func TestPgmqSendWithTimeAndHeaders(t *testing.T) {
	t.Parallel()
	_, pool := newQueue(t)
	at := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	past := time.Now().Add(-time.Hour).Truncate(time.Microsecond)

	timed := int64s(t, pool, `SELECT * FROM pgmq.send($1::text, $2::jsonb, $3::timestamptz)`, "q", `{"n":1}`, at)
	named := int64s(t, pool, `SELECT * FROM pgmq.send(queue_name => $1, msg => $2, headers => $3, delay => $4::timestamptz)`,
		"q", `{"n":2}`, `{"trace":"t2"}`, at)
	now := int64s(t, pool, `SELECT * FROM pgmq.send($1::text, $2::jsonb, $3::jsonb, $4::timestamptz)`, "q", `{"n":3}`, `{"trace":"t3"}`, past)
	batchAt := int64s(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::timestamptz)`,
		"q", []string{`{"n":4}`, `{"n":5}`}, at)
	withHeaders := int64s(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::jsonb[])`,
		"q", []string{`{"n":6}`, `{"n":7}`, `{"n":8}`}, []*string{ptr(`{"h":6}`), nil, ptr(`{"h":8}`)})
	headersDelay := int64s(t, pool, `SELECT * FROM pgmq.send_batch(queue_name => $1, msgs => $2, headers => $3, delay => $4::integer)`,
		"q", []string{`{"n":9}`}, []string{`{"h":9}`}, 3600)
	headersAt := int64s(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::jsonb[], $4::timestamptz)`,
		"q", []string{`{"n":10}`, `{"n":11}`}, []string{`{"h":10}`, `{"h":11}`}, at)
	noHeaders := int64s(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::jsonb[])`, "q", []string{`{"n":12}`}, nil)

	type row struct {
		id      int64
		vt      time.Time
		headers []byte
	}
	stored := map[int64]row{}
	rows, err := pool.Query(t.Context(), `SELECT msg_id, vt, headers FROM pgmq.q_q`)
	require.NoError(t, err)
	for rows.Next() {
		var r row
		require.NoError(t, rows.Scan(&r.id, &r.vt, &r.headers))
		stored[r.id] = r
	}
	require.NoError(t, rows.Err())

	for _, id := range slices.Concat(timed, named, batchAt, headersAt) {
		require.True(t, at.Equal(stored[id].vt), "message %d is visible at the time given: %s, want %s", id, stored[id].vt, at)
	}
	require.True(t, past.Equal(stored[now[0]].vt), "a time in the past is kept: visible at once")
	require.JSONEq(t, `{"trace":"t2"}`, string(stored[named[0]].headers))
	require.JSONEq(t, `{"h":6}`, string(stored[withHeaders[0]].headers))
	require.Nil(t, stored[withHeaders[1]].headers, "a NULL entry is a message without headers")
	require.JSONEq(t, `{"h":8}`, string(stored[withHeaders[2]].headers))
	require.JSONEq(t, `{"h":9}`, string(stored[headersDelay[0]].headers))
	require.True(t, stored[headersDelay[0]].vt.After(time.Now().Add(50*time.Minute)))
	require.JSONEq(t, `{"h":11}`, string(stored[headersAt[1]].headers))
	require.Nil(t, stored[noHeaders[0]].headers)

	visible := records(t, pool, `SELECT * FROM pgmq.read($1, $2, $3)`, "q", 30, 100)
	require.Equal(t, slices.Concat(now, withHeaders, noHeaders), msgIDs(visible), "only the messages without a future time are visible")
	require.JSONEq(t, `{"trace":"t3"}`, string(visible[0].Headers))

	e := pgError(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::jsonb[])`,
		"q", []string{`{}`, `{}`, `{}`}, []string{`{}`, `{}`})
	require.Equal(t, "22023", e.Code)
	require.Contains(t, e.Message, "headers has 2 entries for 3 messages")
	e = pgError(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::jsonb[], $4::integer)`,
		"q", []string{`{}`, `{}`}, []string{`{}`, `[1]`}, 0)
	require.Contains(t, e.Message, "headers of message 2 is a JSON array, not an object")
	e = pgError(t, pool, `SELECT * FROM pgmq.send($1::text, $2::jsonb, $3::jsonb)`, "q", `{}`, `"text"`)
	require.Contains(t, e.Message, "headers of message 1 is a JSON string, not an object")
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM pgmq.q_q`).Scan(&n))
	require.Equal(t, 12, n, "a refused batch sends nothing")
}

func TestPgmqSetVtForms(t *testing.T) {
	t.Parallel()
	_, pool := newQueue(t)
	sent := int64s(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[])`, "q", []string{`1`, `2`, `3`, `4`})
	at := time.Now().Add(2 * time.Hour).Truncate(time.Microsecond)

	moved := records(t, pool, `SELECT * FROM pgmq.set_vt($1::text, $2::bigint[], $3::integer)`,
		"q", []int64{sent[2], sent[0], 999}, 3600)
	require.Equal(t, []int64{sent[0], sent[2]}, msgIDs(moved), "the messages that are there, oldest first")
	for _, r := range moved {
		require.WithinDuration(t, time.Now().Add(time.Hour), r.VT, time.Minute)
	}

	moved = records(t, pool, `SELECT * FROM pgmq.set_vt(queue_name => $1, msg_ids => $2, vt => $3::timestamptz)`,
		"q", []int64{sent[1], sent[3]}, at)
	require.Equal(t, []int64{sent[1], sent[3]}, msgIDs(moved))
	require.True(t, at.Equal(moved[0].VT) && at.Equal(moved[1].VT))

	one := records(t, pool, `SELECT * FROM pgmq.set_vt($1::text, $2::bigint, $3::timestamptz)`, "q", sent[0], time.Now().Add(-time.Second))
	require.Len(t, one, 1)
	one = records(t, pool, `SELECT * FROM pgmq.set_vt(queue_name => $1, msg_id => $2, vt => $3::integer)`, "q", sent[1], 0)
	require.Len(t, one, 1)
	require.Empty(t, records(t, pool, `SELECT * FROM pgmq.set_vt($1::text, $2::bigint, $3::integer)`, "q", int64(999), 0))

	visible := records(t, pool, `SELECT * FROM pgmq.read($1, $2, $3)`, "q", 30, 10)
	require.Equal(t, sent[:2], msgIDs(visible), "made visible by a time in the past and by a vt of 0")
}

func TestPgmqMetricsAll(t *testing.T) {
	t.Parallel()
	c, pool := newQueue(t)
	require.NoError(t, c.Create(t.Context(), "other"))
	require.NoError(t, c.Create(t.Context(), "empty"))
	_, err := c.SendBatch(t.Context(), "q", [][]byte{[]byte(`1`), []byte(`2`), []byte(`3`)}, 0)
	require.NoError(t, err)
	_, err = c.Send(t.Context(), "other", []byte(`1`), time.Hour)
	require.NoError(t, err)

	type metrics struct {
		QueueName          string    `db:"queue_name"`
		QueueLength        int64     `db:"queue_length"`
		NewestMsgAgeSec    *int32    `db:"newest_msg_age_sec"`
		OldestMsgAgeSec    *int32    `db:"oldest_msg_age_sec"`
		TotalMessages      int64     `db:"total_messages"`
		ScrapeTime         time.Time `db:"scrape_time"`
		QueueVisibleLength int64     `db:"queue_visible_length"`
	}
	rows, err := pool.Query(t.Context(), `SELECT * FROM pgmq.metrics_all()`)
	require.NoError(t, err)
	all, err := pgx.CollectRows(rows, pgx.RowToStructByName[metrics])
	require.NoError(t, err)
	require.Len(t, all, 3)
	byName := map[string]metrics{}
	for _, m := range all {
		byName[m.QueueName] = m
	}
	require.Equal(t, []string{"empty", "other", "q"}, []string{all[0].QueueName, all[1].QueueName, all[2].QueueName})
	require.Equal(t, int64(3), byName["q"].QueueLength)
	require.Equal(t, int64(3), byName["q"].QueueVisibleLength)
	require.Equal(t, int64(3), byName["q"].TotalMessages)
	require.Equal(t, int64(1), byName["other"].QueueLength)
	require.Equal(t, int64(0), byName["other"].QueueVisibleLength)
	require.Zero(t, byName["empty"].QueueLength)
	require.Nil(t, byName["empty"].OldestMsgAgeSec, "no message, no age")
	require.NotNil(t, byName["q"].OldestMsgAgeSec)

	// The same row as pgmq.metrics, queue by queue.
	for name, m := range byName {
		one, err := c.Metrics(t.Context(), name)
		require.NoError(t, err)
		require.Equal(t, []int64{m.QueueLength, m.QueueVisibleLength, m.TotalMessages},
			[]int64{one.Length, one.VisibleLength, one.TotalMessages}, name)
	}
}

func TestPgmqCreateUnlogged(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testsupport.NewDB(t)
	c := queue.NewClient(pool)
	_, err := pool.Exec(ctx, `SELECT pgmq.create_unlogged($1)`, "Fast")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `SELECT pgmq.create_unlogged(queue_name => $1)`, "fast")
	require.NoError(t, err, "creating it again changes nothing")
	require.NoError(t, c.Create(ctx, "fast"), "create on an unlogged queue changes nothing")
	require.NoError(t, c.Create(ctx, "durable"))

	persistence := func(rel string) string {
		var p string
		require.NoError(t, pool.QueryRow(ctx, `SELECT relpersistence::text FROM pg_class WHERE oid = $1::regclass`, rel).Scan(&p))
		return p
	}
	require.Equal(t, "u", persistence("pgmq.q_fast"), "the queue table is unlogged")
	require.Equal(t, "u", persistence("pgmq.q_fast_pkey"))
	require.Equal(t, "p", persistence("pgmq.a_fast"), "the archive keeps what it holds across a crash")
	require.Equal(t, "p", persistence("pgmq.q_durable"))

	infos, err := c.List(ctx)
	require.NoError(t, err)
	require.Len(t, infos, 2)
	require.Equal(t, "durable", infos[0].Name)
	require.False(t, infos[0].Unlogged)
	require.Equal(t, "fast", infos[1].Name)
	require.True(t, infos[1].Unlogged)

	id, err := c.Send(ctx, "fast", []byte(`{"a":1}`), 0)
	require.NoError(t, err)
	msgs, err := c.Read(ctx, "fast", time.Minute, 1)
	require.NoError(t, err)
	require.Equal(t, id, msgs[0].ID)
	ok, err := c.Archive(ctx, "fast", id)
	require.NoError(t, err)
	require.True(t, ok)

	e := pgError(t, pool, `SELECT pgmq.create_unlogged($1)`, "durable")
	require.Equal(t, "42P07", e.Code)
	require.Contains(t, e.Message, "already exists as a logged queue")
	require.Equal(t, "22023", pgError(t, pool, `SELECT pgmq.create_unlogged($1)`, "no-dash").Code)

	dropped, err := c.Drop(ctx, "fast")
	require.NoError(t, err)
	require.True(t, dropped)
}

func TestPgmqDetachArchiveDoesNothing(t *testing.T) {
	t.Parallel()
	c, pool := newQueue(t)
	_, err := c.Send(t.Context(), "q", []byte(`{}`), 0)
	require.NoError(t, err)
	before := catalogSnapshot(t, pool)
	_, err = pool.Exec(t.Context(), `SELECT pgmq.detach_archive($1)`, "q")
	require.NoError(t, err)
	_, err = pool.Exec(t.Context(), `SELECT * FROM pgmq.detach_archive(queue_name => $1)`, "missing_queue")
	require.NoError(t, err, "accepted for any queue, as pgmq's no-op is")
	require.Equal(t, before, catalogSnapshot(t, pool))
	require.Equal(t, "22023", pgError(t, pool, `SELECT pgmq.detach_archive($1)`, "a;b").Code)
}

// poller is a connection of its own, for a call that waits.
type poller struct {
	conn *pgxpool.Conn
	pid  uint32
}

func newPoller(t *testing.T, pool *pgxpool.Pool) *poller {
	t.Helper()
	conn, err := pool.Acquire(t.Context())
	require.NoError(t, err)
	t.Cleanup(conn.Release)
	return &poller{conn: conn, pid: conn.Conn().PgConn().PID()}
}

type pollResult struct {
	rows     []record
	err      error
	returned time.Time
}

// start runs sql on the poller's connection and delivers its rows when it returns.
func (p *poller) start(t *testing.T, sql string, args ...any) <-chan pollResult {
	t.Helper()
	done := make(chan pollResult, 1)
	go func() {
		var res pollResult
		rows, err := p.conn.Query(context.Background(), sql, args...)
		if err == nil {
			res.rows, err = pgx.CollectRows(rows, pgx.RowToStructByName[record])
		}
		res.err, res.returned = err, time.Now()
		done <- res
	}()
	return done
}

// sleeping waits until the poller's call is between two checks.
func (p *poller) sleeping(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	testsupport.WaitFor(t, 10*time.Second, "the poll to wait", func() (bool, error) {
		var n int
		err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep'`,
			int32(p.pid)).Scan(&n)
		return n == 1, err
	})
}

func receive(t *testing.T, done <-chan pollResult, within time.Duration) pollResult {
	t.Helper()
	select {
	case res := <-done:
		require.NoError(t, res.err)
		return res
	case <-time.After(within):
		t.Fatalf("the poll did not return within %s", within)
		return pollResult{}
	}
}

func TestPgmqReadWithPollReturnsSoonAfterASend(t *testing.T) {
	t.Parallel()
	for name, sql := range map[string]string{
		"positional": `SELECT * FROM pgmq.read_with_poll($1::text, $2::integer, $3::integer, $4::integer, $5::integer)`,
		"named": `SELECT * FROM pgmq.read_with_poll(queue_name => $1, vt => $2, qty => $3,
			max_poll_seconds => $4, poll_interval_ms => $5)`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, pool := newQueue(t)
			p := newPoller(t, pool)
			start := time.Now()
			done := p.start(t, sql, "q", 30, 5, 30, 10)
			p.sleeping(t, pool)
			ids := int64s(t, pool, `SELECT * FROM pgmq.send($1::text, $2::jsonb)`, "q", `{"wake":true}`)
			sent := time.Now() // the send has committed
			res := receive(t, done, 10*time.Second)
			require.Equal(t, ids, msgIDs(res.rows))
			require.Equal(t, int32(1), res.rows[0].ReadCt)
			latency := res.returned.Sub(sent)
			t.Logf("returned %s after the send (%s after the call)", latency, res.returned.Sub(start))
			require.Less(t, latency, 100*time.Millisecond, "a message sent during the wait is taken at the next check")
		})
	}
}

func TestPgmqReadWithPollReturnsAtOnceOrEmptyAfterTheTimeout(t *testing.T) {
	t.Parallel()
	_, pool := newQueue(t)
	ids := int64s(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[])`, "q", []string{`{"k":"a"}`, `{"k":"b"}`})

	start := time.Now()
	got := records(t, pool, `SELECT * FROM pgmq.read_with_poll($1, $2, $3)`, "q", 30, 1)
	require.Equal(t, ids[:1], msgIDs(got), "defaults: a visible message is taken at the first check")
	got = records(t, pool, `SELECT * FROM pgmq.read_with_poll(queue_name => $1, vt => $2, qty => $3, conditional => $4)`,
		"q", 30, 5, `{"k":"b"}`)
	require.Equal(t, ids[1:], msgIDs(got))
	require.Less(t, time.Since(start), time.Second)

	for _, maxPoll := range []int{0, 1} {
		start = time.Now()
		got = records(t, pool, `SELECT * FROM pgmq.read_with_poll($1, $2, $3, $4, $5)`, "q", 30, 1, maxPoll, 50)
		elapsed := time.Since(start)
		t.Logf("max_poll_seconds %d: empty after %s", maxPoll, elapsed)
		require.Empty(t, got)
		require.GreaterOrEqual(t, elapsed, time.Duration(maxPoll)*time.Second, "waits the whole max_poll_seconds")
		require.Less(t, elapsed, time.Duration(maxPoll)*time.Second+time.Second, "and not much longer")
	}

	// Under REPEATABLE READ the snapshot cannot change: one check, then return.
	tx, err := pool.BeginTx(t.Context(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	start = time.Now()
	require.Empty(t, records(t, tx, `SELECT * FROM pgmq.read_with_poll($1, $2, $3, $4, $5)`, "q", 30, 1, 30, 10))
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestPgmqReadWithPollRejectsBadArguments(t *testing.T) {
	t.Parallel()
	_, pool := newQueue(t)
	for _, tc := range []struct {
		args []any
		code string
		msg  string
	}{
		{[]any{"q", 30, 1, -1, 100}, "22023", "max_poll_seconds must not be negative, got -1"},
		{[]any{"q", 30, 1, 1, 0}, "22023", "poll_interval_ms must be at least 1, got 0"},
		{[]any{"q", 30, 1, nil, 100}, "22004", "must not be null"},
		{[]any{"q", 30, 0, 1, 100}, "22023", "qty must be at least 1, got 0"},
		{[]any{"q", 30, nil, 1, 100}, "22004", "qty must not be null"},
		{[]any{"q'x", 30, 1, 1, 100}, "22023", "invalid queue name"},
		{[]any{"absent", 30, 1, 1, 100}, "42P01", "does not exist"},
	} {
		e := pgError(t, pool, `SELECT * FROM pgmq.read_with_poll($1, $2, $3, $4, $5)`, tc.args...)
		require.Equal(t, tc.code, e.Code, "%v: %s", tc.args, e.Message)
		require.Contains(t, e.Message, tc.msg, "%v", tc.args)
	}
}

// vacuumDeadKept vacuums a table and returns how many dead rows it had to keep
// because some snapshot may still see them.
func vacuumDeadKept(t *testing.T, url, table string) int {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	var mu sync.Mutex
	var notices []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		notices = append(notices, n.Message)
	}
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	require.NoError(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(t.Context(), "VACUUM (VERBOSE) "+table)
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	re := regexp.MustCompile(`tuples: \d+ removed, \d+ remain, (\d+) are dead but not yet removable`)
	for _, n := range notices {
		if m := re.FindStringSubmatch(n); m != nil {
			kept, err := strconv.Atoi(m[1])
			require.NoError(t, err)
			return kept
		}
	}
	t.Fatalf("VACUUM VERBOSE reported no tuple counts: %q", notices)
	return 0
}

// TestPgmqReadWithPollHoldsTheHorizonOnlyWhileItRuns shows exactly what a wait
// holds (docs/pgmq.md, read_with_poll). A check that takes nothing writes
// nothing: no transaction id, no row lock. The snapshot of the statement that
// called the function is PostgreSQL's to keep until the call returns, so rows
// deleted during the wait cannot be vacuumed away until then; once it returns,
// early on a message or at its timeout, they can.
func TestPgmqReadWithPollHoldsTheHorizonOnlyWhileItRuns(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testsupport.NewDatabaseURL(t)
	pool, err := testsupport.OpenPool(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	c := queue.NewClient(pool)
	require.NoError(t, c.Create(ctx, "idle"))
	require.NoError(t, c.Create(ctx, "churn"))
	const rows = 200
	batch := make([][]byte, rows)
	for i := range batch {
		batch[i] = fmt.Appendf(nil, `{"i":%d}`, i)
	}
	_, err = c.SendBatch(ctx, "churn", batch, 0)
	require.NoError(t, err)

	p := newPoller(t, pool)
	done := p.start(t, `SELECT * FROM pgmq.read_with_poll($1, $2, $3, $4, $5)`, "idle", 30, 1, 60, 20)
	p.sleeping(t, pool)

	var xidAssigned, xminHeld bool
	var rowLocks int
	require.NoError(t, pool.QueryRow(ctx, `
		SELECT a.backend_xid IS NOT NULL, a.backend_xmin IS NOT NULL,
		       (SELECT count(*) FROM pg_locks AS l WHERE l.pid = a.pid AND l.locktype IN ('transactionid', 'tuple'))
		FROM pg_stat_activity AS a WHERE a.pid = $1`, int32(p.pid)).Scan(&xidAssigned, &xminHeld, &rowLocks))
	require.False(t, xidAssigned, "a check that takes nothing is given no transaction id")
	require.Zero(t, rowLocks, "and holds no row")
	require.True(t, xminHeld, "the calling statement's snapshot is held for the call")

	purged, err := c.Purge(ctx, "churn")
	require.NoError(t, err)
	require.Equal(t, int64(rows), purged)
	require.Equal(t, rows, vacuumDeadKept(t, url, "pgmq.q_churn"), "rows deleted during the wait stay until the call returns")

	_, err = c.Send(ctx, "idle", []byte(`{}`), 0)
	require.NoError(t, err)
	require.Len(t, receive(t, done, 10*time.Second).rows, 1)
	testsupport.WaitFor(t, 10*time.Second, "the deleted rows to be removable", func() (bool, error) {
		return vacuumDeadKept(t, url, "pgmq.q_churn") == 0, nil
	})
}

// groupedQueue sends messages of groups A (5), B (3) and C (2), interleaved as
// B1 A1 C1 A2 B2 ..., and returns their ids by name ("A1").
func groupedQueue(t *testing.T, pool *pgxpool.Pool) map[string]int64 {
	t.Helper()
	order := []string{"A1", "B1", "A2", "C1", "A3", "B2", "A4", "C2", "B3", "A5"}
	msgs := make([]string, len(order))
	headers := make([]string, len(order))
	for i, name := range order {
		msgs[i] = fmt.Sprintf(`{"name":%q}`, name)
		headers[i] = fmt.Sprintf(`{"x-pgmq-group":%q}`, name[:1])
	}
	ids := int64s(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::jsonb[])`, "q", msgs, headers)
	out := make(map[string]int64, len(order))
	for i, name := range order {
		out[name] = ids[i]
	}
	return out
}

// names maps the rows of a grouped read back to the message names.
func names(t *testing.T, rs []record) []string {
	t.Helper()
	out := make([]string, len(rs))
	for i, r := range rs {
		var m struct{ Name string }
		require.NoError(t, json.Unmarshal(r.Message, &m))
		out[i] = m.Name
	}
	return out
}

func TestPgmqGroupedReadStrategies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sql  string
		qty  int
		want []string
	}{
		{`SELECT * FROM pgmq.read_grouped_rr($1, $2, $3)`, 10, []string{"A1", "B1", "C1", "A2", "B2", "C2", "A3", "B3", "A4", "A5"}},
		{`SELECT * FROM pgmq.read_grouped_rr(queue_name => $1, vt => $2, qty => $3)`, 4, []string{"A1", "B1", "C1", "A2"}},
		{`SELECT * FROM pgmq.read_grouped($1, $2, $3)`, 10, []string{"A1", "A2", "A3", "A4", "A5", "B1", "B2", "B3", "C1", "C2"}},
		{`SELECT * FROM pgmq.read_grouped(queue_name => $1, vt => $2, qty => $3)`, 3, []string{"A1", "A2", "A3"}},
		{`SELECT * FROM pgmq.read_grouped($1, $2, $3)`, 7, []string{"A1", "A2", "A3", "A4", "A5", "B1", "B2"}},
		{`SELECT * FROM pgmq.read_grouped_head($1, $2, $3)`, 10, []string{"A1", "B1", "C1"}},
		{`SELECT * FROM pgmq.read_grouped_head(queue_name => $1, vt => $2, qty => $3)`, 2, []string{"A1", "B1"}},
		{`SELECT * FROM pgmq.read_grouped_with_poll($1, $2, $3, $4, $5)`, 4, []string{"A1", "A2", "A3", "A4"}},
		{`SELECT * FROM pgmq.read_grouped_rr_with_poll(queue_name => $1, vt => $2, qty => $3)`, 4, []string{"A1", "B1", "C1", "A2"}},
		{`SELECT * FROM pgmq.read_grouped_head_with_poll($1, $2, $3)`, 5, []string{"A1", "B1", "C1"}},
		{`SELECT * FROM pgmq.read_grouped_head_with_poll(queue_name => $1, vt => $2, qty => $3,
			max_poll_seconds => $4, poll_interval_ms => $5)`, 2, []string{"A1", "B1"}},
	} {
		form := "positional"
		if strings.Contains(tc.sql, "=>") {
			form = "named"
		}
		fn := regexp.MustCompile(`pgmq\.(\w+)\(`).FindStringSubmatch(tc.sql)[1]
		t.Run(fmt.Sprintf("%s/%s/qty_%d", fn, form, tc.qty), func(t *testing.T) {
			t.Parallel()
			_, pool := newQueue(t)
			groupedQueue(t, pool)
			args := []any{"q", 30, tc.qty}
			if strings.Count(tc.sql, "$") == 5 {
				args = append(args, 1, 10)
			}
			got := records(t, pool, tc.sql, args...)
			require.Equal(t, tc.want, names(t, got), "in the strategy's order")
			for _, r := range got {
				require.Equal(t, int32(1), r.ReadCt)
				require.NotNil(t, r.LastReadAt)
			}
		})
	}
}

func TestPgmqGroupedReadsKeepEachGroupInOrder(t *testing.T) {
	t.Parallel()
	_, pool := newQueue(t)
	ids := groupedQueue(t, pool)
	plain := int64s(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[])`, "q",
		[]string{`{"name":"D1"}`, `{"name":"D2"}`})
	read := func(qty int) []string {
		return names(t, records(t, pool, `SELECT * FROM pgmq.read_grouped($1, $2, $3)`, "q", 30, qty))
	}

	// A1 in flight closes group A; messages without a group are one group of their own.
	require.Equal(t, []string{"A1"}, names(t, records(t, pool, `SELECT * FROM pgmq.read_grouped_head($1, $2, $3)`, "q", 30, 1)))
	require.Equal(t, []string{"B1", "B2", "B3", "C1"}, read(4))
	require.Equal(t, []string{"D1", "D2"}, read(10), "C2 waits for C1, which is in flight")
	require.Empty(t, read(10), "every group has its head in flight")

	// Deleting A1 opens A again at A2. A visible message after an invisible one
	// is not taken: A4 delayed stops the run at A3.
	_, err := pool.Exec(t.Context(), `SELECT pgmq.delete($1, $2::bigint)`, "q", ids["A1"])
	require.NoError(t, err)
	_, err = pool.Exec(t.Context(), `SELECT * FROM pgmq.set_vt($1::text, $2::bigint, $3::integer)`, "q", ids["A4"], 3600)
	require.NoError(t, err)
	require.Equal(t, []string{"A2", "A3"}, read(10))

	// A delayed head closes its group: A5 is visible, but after A4.
	_, err = pool.Exec(t.Context(), `SELECT * FROM pgmq.delete($1::text, $2::bigint[])`, "q", []int64{ids["A2"], ids["A3"]})
	require.NoError(t, err)
	require.Empty(t, read(10))
	_, err = pool.Exec(t.Context(), `SELECT * FROM pgmq.set_vt($1::text, $2::bigint, $3::integer)`, "q", ids["A4"], 0)
	require.NoError(t, err)
	require.Equal(t, []string{"A4", "A5"}, read(10))

	// A message another reader holds cuts its group's run there.
	_, err = pool.Exec(t.Context(), `SELECT * FROM pgmq.set_vt($1::text, $2::bigint[], $3::integer)`, "q", plain, 0)
	require.NoError(t, err)
	_, err = pool.Exec(t.Context(), `SELECT * FROM pgmq.delete($1::text, $2::bigint[])`, "q",
		[]int64{ids["B1"], ids["B2"], ids["B3"], ids["C1"], ids["A4"], ids["A5"]})
	require.NoError(t, err)
	tx, err := pool.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(t.Context(), `SELECT msg_id FROM pgmq.q_q WHERE msg_id = $1 FOR UPDATE`, plain[1])
	require.NoError(t, err)
	require.Equal(t, []string{"C2", "D1"}, read(10))

	// The FIFO index changes no answer.
	_, err = pool.Exec(t.Context(), `SELECT pgmq.create_fifo_indexes_all()`)
	require.NoError(t, err)
	var indexed bool
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT to_regclass('pgmq.q_q_fifo_idx') IS NOT NULL`).Scan(&indexed))
	require.True(t, indexed)
	require.NoError(t, tx.Rollback(t.Context()))
	require.Empty(t, read(10), "C2 and D1 are in flight")
	_, err = pool.Exec(t.Context(), `SELECT pgmq.create_fifo_index(queue_name => $1)`, "q")
	require.NoError(t, err, "creating the index again changes nothing")

	for _, sql := range []string{
		`SELECT * FROM pgmq.read_grouped($1, $2, $3)`,
		`SELECT * FROM pgmq.read_grouped_rr($1, $2, $3)`,
		`SELECT * FROM pgmq.read_grouped_head($1, $2, $3)`,
	} {
		e := pgError(t, pool, sql, "q", 30, 0)
		require.Equal(t, "22023", e.Code)
		require.Contains(t, e.Message, "qty must be at least 1")
	}
	require.Equal(t, "42P01", pgError(t, pool, `SELECT pgmq.create_fifo_index($1)`, "absent").Code)
}

func TestPgmqGroupedWithPollReturnsOnASendOrAfterTheTimeout(t *testing.T) {
	t.Parallel()
	_, pool := newQueue(t)
	start := time.Now()
	require.Empty(t, records(t, pool, `SELECT * FROM pgmq.read_grouped_rr_with_poll($1, $2, $3, $4, $5)`, "q", 30, 1, 1, 20))
	require.GreaterOrEqual(t, time.Since(start), time.Second)

	p := newPoller(t, pool)
	done := p.start(t, `SELECT * FROM pgmq.read_grouped_with_poll(queue_name => $1, vt => $2, qty => $3,
		max_poll_seconds => $4, poll_interval_ms => $5)`, "q", 30, 10, 30, 10)
	p.sleeping(t, pool)
	ids := int64s(t, pool, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::jsonb[])`, "q",
		[]string{`{"name":"G1"}`, `{"name":"G2"}`}, []string{`{"x-pgmq-group":"g"}`, `{"x-pgmq-group":"g"}`})
	sent := time.Now()
	res := receive(t, done, 10*time.Second)
	require.Equal(t, ids, msgIDs(res.rows))
	require.Less(t, res.returned.Sub(sent), 100*time.Millisecond)
}

// TestPgmqConcurrentGroupedReadersKeepGroupOrder has readers with each of the
// strategies take and delete the messages of many groups at once: every group
// is delivered in order, each message once, and never a message while an
// earlier one of its group is still undeleted.
func TestPgmqConcurrentGroupedReadersKeepGroupOrder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, pool := newQueue(t)
	_, err := pool.Exec(ctx, `SELECT pgmq.create_fifo_index('q')`)
	require.NoError(t, err)
	const groups, perGroup = 8, 25
	var msgs, headers []string
	for i := range perGroup {
		for g := range groups + 1 { // the last group is the default one: no header
			msgs = append(msgs, fmt.Sprintf(`{"g":%d,"i":%d}`, g, i))
			if g == groups {
				headers = append(headers, `{}`)
			} else {
				headers = append(headers, fmt.Sprintf(`{"x-pgmq-group":"g%d"}`, g))
			}
		}
	}
	_, err = pool.Exec(ctx, `SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::jsonb[])`, "q", msgs, headers)
	require.NoError(t, err)
	total := len(msgs)

	var (
		mu       sync.Mutex
		deleted  = make([]int, groups+1) // per group, how many are deleted (counted before the delete)
		received int
		failures []string
	)
	// The polling forms wait for the groups other readers hold to open.
	reads := []string{
		`SELECT * FROM pgmq.read_grouped($1, $2, $3)`,
		`SELECT * FROM pgmq.read_grouped_with_poll($1, $2, $3, 1, 5)`,
		`SELECT * FROM pgmq.read_grouped_rr_with_poll($1, $2, $3, 1, 5)`,
		`SELECT * FROM pgmq.read_grouped_head_with_poll($1, $2, $3, 1, 5)`,
	}
	finished := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return received >= total || len(failures) > 0
	}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, err.Error())
	}
	deadline := time.Now().Add(time.Minute)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for n := 0; !finished() && time.Now().Before(deadline); n++ {
				rows, err := pool.Query(ctx, reads[(w+n)%len(reads)], "q", 300, 1+(w+n)%4)
				var batch []record
				if err == nil {
					batch, err = pgx.CollectRows(rows, pgx.RowToStructByName[record])
				}
				if err != nil {
					fail(err)
					return
				}
				mu.Lock()
				next := map[int]int{}
				for _, r := range batch {
					var m struct{ G, I int }
					if err := json.Unmarshal(r.Message, &m); err != nil {
						failures = append(failures, err.Error())
					}
					want, seen := next[m.G]
					if !seen {
						want = deleted[m.G]
					}
					if m.I != want {
						failures = append(failures, fmt.Sprintf("group %d: got message %d, expected %d", m.G, m.I, want))
					}
					next[m.G] = m.I + 1
				}
				received += len(batch)
				for g, upTo := range next {
					deleted[g] = upTo
				}
				mu.Unlock()
				if len(batch) > 0 {
					if _, err := pool.Exec(ctx, `SELECT * FROM pgmq.delete($1::text, $2::bigint[])`, "q", msgIDs(batch)); err != nil {
						fail(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	require.Empty(t, failures)
	require.Equal(t, total, received, "each message once")
	var left int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_q`).Scan(&left))
	require.Zero(t, left)
}

func TestPgmqReadAndPopRefuseBadQuantities(t *testing.T) {
	t.Parallel()
	_, pool := newQueue(t)
	_, err := pool.Exec(t.Context(), `SELECT * FROM pgmq.send($1::text, $2::jsonb)`, "q", `{}`)
	require.NoError(t, err)
	for _, sql := range []string{
		`SELECT * FROM pgmq.read($1, 30, $2)`,
		`SELECT * FROM pgmq.pop($1, $2)`,
	} {
		e := pgError(t, pool, sql, "q", nil)
		require.Equal(t, "22004", e.Code, sql)
		require.Equal(t, "qty must not be null", e.Message)
		e = pgError(t, pool, sql, "q", -3)
		require.Equal(t, "qty must be at least 1, got -3", e.Message)
	}
	require.Len(t, records(t, pool, `SELECT * FROM pgmq.read($1, 30, 1)`, "q"), 1, "nothing was taken by the refused calls")
}

// A grouped read inside a consumer's transaction holds, until that
// transaction ends, only the groups it took messages from.
func TestPgmqGroupedReadInATransactionHoldsOnlyItsGroups(t *testing.T) {
	t.Parallel()
	_, pool := newQueue(t)
	groupedQueue(t, pool)
	tx, err := pool.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	require.Equal(t, []string{"A1", "A2", "A3"}, names(t, records(t, tx, `SELECT * FROM pgmq.read_grouped($1, $2, $3)`, "q", 30, 3)))

	// Another reader, while that transaction is open: A's head is held, B and C are free.
	require.Equal(t, []string{"B1", "C1"}, names(t, records(t, pool, `SELECT * FROM pgmq.read_grouped_head($1, $2, $3)`, "q", 30, 5)))
	require.NoError(t, tx.Rollback(t.Context()))
	require.Equal(t, []string{"A1", "A2"}, names(t, records(t, pool, `SELECT * FROM pgmq.read_grouped($1, $2, $3)`, "q", 30, 2)),
		"rolled back, A is open again")
}
