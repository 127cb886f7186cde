package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// newQueue gives a test its own database with queue "q" created.
func newQueue(t *testing.T) (*queue.Client, *pgxpool.Pool) {
	t.Helper()
	pool := testsupport.NewDB(t)
	c := queue.NewClient(pool)
	require.NoError(t, c.Create(context.Background(), "q"))
	return c, pool
}

func TestMessageComesBackAfterVisibilityTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := newQueue(t)

	id, err := c.Send(ctx, "q", []byte(`{"n":1}`), 0)
	require.NoError(t, err)

	first, err := c.Read(ctx, "q", time.Second, 10)
	require.NoError(t, err)
	require.Len(t, first, 1)
	require.Equal(t, id, first[0].ID)
	require.Equal(t, 1, first[0].ReadCount)
	require.JSONEq(t, `{"n":1}`, string(first[0].Body))
	require.Nil(t, first[0].Headers)

	again, err := c.Read(ctx, "q", time.Second, 10)
	require.NoError(t, err)
	require.Empty(t, again, "invisible while its visibility timeout runs")

	var second []queue.Message
	testsupport.WaitFor(t, 10*time.Second, "the message to become visible again", func() (bool, error) {
		second, err = c.Read(ctx, "q", time.Minute, 10)
		return len(second) == 1, err
	})
	require.Equal(t, id, second[0].ID)
	require.Equal(t, 2, second[0].ReadCount)
	require.False(t, second[0].VisibleAt.Before(first[0].VisibleAt))
}

func TestConcurrentReadersNeverShareAMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := newQueue(t)

	const total, readers = 2000, 8
	batch := make([][]byte, 0, 500)
	for i := range total {
		batch = append(batch, fmt.Appendf(nil, `{"i":%d}`, i))
		if len(batch) == cap(batch) {
			_, err := c.SendBatch(ctx, "q", batch, 0)
			require.NoError(t, err)
			batch = batch[:0]
		}
	}

	var (
		mu       sync.Mutex
		seen     = make(map[int64]int, total)
		dups     []int64
		firstErr error
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(time.Minute)
	for range readers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				msgs, err := c.Read(ctx, "q", 5*time.Minute, 7)
				mu.Lock()
				if err != nil {
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					return
				}
				for _, m := range msgs {
					if m.ReadCount != 1 {
						dups = append(dups, m.ID)
					}
					seen[m.ID]++
					if seen[m.ID] > 1 {
						dups = append(dups, m.ID)
					}
				}
				done := len(seen) >= total
				mu.Unlock()
				if done {
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, firstErr)
	require.Zero(t, len(dups), "messages delivered twice while invisible, e.g. %v", dups[:min(len(dups), 10)])
	require.Len(t, seen, total)

	m, err := c.Metrics(ctx, "q")
	require.NoError(t, err)
	require.Equal(t, int64(total), m.Length)
	require.Equal(t, int64(0), m.VisibleLength)
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func TestSendInRolledBackTransactionLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, pool := newQueue(t)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	inTx := c.WithDB(tx)
	_, err = inTx.Send(ctx, "q", []byte(`{"a":1}`), 0)
	require.NoError(t, err)
	_, err = inTx.SendBatch(ctx, "q", [][]byte{[]byte(`1`), []byte(`2`)}, 1500*time.Millisecond)
	require.NoError(t, err)
	_, err = inTx.Send(ctx, "q", []byte(`{"a":2}`), 500*time.Millisecond)
	require.NoError(t, err)
	inside, err := inTx.Metrics(ctx, "q")
	require.NoError(t, err)
	require.Equal(t, int64(4), inside.Length, "the transaction sees its own sends")
	require.NoError(t, tx.Rollback(ctx))

	m, err := c.Metrics(ctx, "q")
	require.NoError(t, err)
	require.Equal(t, int64(0), m.Length)
	msgs, err := c.Read(ctx, "q", time.Minute, 10)
	require.NoError(t, err)
	require.Empty(t, msgs)
}

func TestConsumeAtomicallyInTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, pool := newQueue(t)
	require.NoError(t, c.Create(ctx, "next"))
	_, err := c.Send(ctx, "q", []byte(`{"step":1}`), 0)
	require.NoError(t, err)

	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		in := c.WithDB(tx)
		msgs, err := in.Read(ctx, "q", time.Minute, 1)
		if err != nil || len(msgs) != 1 {
			return fmt.Errorf("read %d messages: %w", len(msgs), err)
		}
		if _, err := in.Send(ctx, "next", []byte(`{"step":2}`), 0); err != nil {
			return err
		}
		ok, err := in.Delete(ctx, "q", msgs[0].ID)
		if !ok {
			return errors.Join(err, errors.New("message was not deleted"))
		}
		return err
	})
	require.NoError(t, err)

	q, err := c.Metrics(ctx, "q")
	require.NoError(t, err)
	next, err := c.Metrics(ctx, "next")
	require.NoError(t, err)
	require.Equal(t, int64(0), q.Length)
	require.Equal(t, int64(1), next.Length)
}

func TestDelayedSendsVisibleOnlyAfterDelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := newQueue(t)

	for _, delay := range []time.Duration{time.Second, 1500 * time.Millisecond, 300 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			q := "delay_" + strings.ReplaceAll(delay.String(), ".", "_")
			require.NoError(t, c.Create(ctx, q))
			start := time.Now()
			single, err := c.Send(ctx, q, []byte(`{"single":true}`), delay)
			require.NoError(t, err)
			batch, err := c.SendBatch(ctx, q, [][]byte{[]byte(`{"b":1}`), []byte(`{"b":2}`)}, delay)
			require.NoError(t, err)
			require.Len(t, batch, 2)
			require.Less(t, batch[0], batch[1], "batch ids follow the order of the messages")

			msgs, err := c.Read(ctx, q, time.Minute, 10)
			require.NoError(t, err)
			if time.Since(start) < delay {
				require.Empty(t, msgs, "nothing is visible before the delay")
			}

			var got []queue.Message
			testsupport.WaitFor(t, 10*time.Second, "the delayed messages", func() (bool, error) {
				msgs, err := c.Read(ctx, q, time.Minute, 10)
				got = append(got, msgs...)
				return len(got) == 3, err
			})
			require.GreaterOrEqual(t, time.Since(start), delay)
			require.Equal(t, []int64{single, batch[0], batch[1]}, []int64{got[0].ID, got[1].ID, got[2].ID})
		})
	}
}

func TestArchiveMovesRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, pool := newQueue(t)

	ids, err := c.SendBatch(ctx, "q", [][]byte{[]byte(`{"a":1}`), []byte(`{"a":2}`), []byte(`{"a":3}`)}, 0)
	require.NoError(t, err)
	_, err = c.Read(ctx, "q", time.Minute, 1)
	require.NoError(t, err)

	ok, err := c.Archive(ctx, "q", ids[0])
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = c.Archive(ctx, "q", ids[0])
	require.NoError(t, err)
	require.False(t, ok, "already archived")

	var readCount int
	var archivedAt time.Time
	var body string
	require.NoError(t, pool.QueryRow(ctx,
		"SELECT read_ct, archived_at, message::text FROM pgmq.a_q WHERE msg_id = $1", ids[0]).
		Scan(&readCount, &archivedAt, &body))
	require.Equal(t, 1, readCount)
	require.WithinDuration(t, time.Now(), archivedAt, time.Minute)
	require.JSONEq(t, `{"a":1}`, body)

	done, err := c.ArchiveBatch(ctx, "q", []int64{ids[1], ids[2], 999})
	require.NoError(t, err)
	require.ElementsMatch(t, ids[1:], done)

	var left, archived int
	require.NoError(t, pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM pgmq.q_q), (SELECT count(*) FROM pgmq.a_q)").
		Scan(&left, &archived))
	require.Equal(t, 0, left)
	require.Equal(t, 3, archived)
}

func TestDeleteAndSetVisibility(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := newQueue(t)

	ids, err := c.SendBatch(ctx, "q", [][]byte{[]byte(`1`), []byte(`2`), []byte(`3`)}, 0)
	require.NoError(t, err)

	ok, err := c.Delete(ctx, "q", ids[0])
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = c.Delete(ctx, "q", ids[0])
	require.NoError(t, err)
	require.False(t, ok)

	// Hide the second message, then schedule it back with a sub-second delay.
	require.NoError(t, c.SetVisibility(ctx, "q", ids[1], time.Hour))
	msgs, err := c.Read(ctx, "q", time.Hour, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Equal(t, ids[2], msgs[0].ID)

	require.NoError(t, c.SetVisibility(ctx, "q", ids[1], 200*time.Millisecond))
	testsupport.WaitFor(t, 10*time.Second, "the rescheduled message", func() (bool, error) {
		msgs, err = c.Read(ctx, "q", time.Hour, 10)
		return len(msgs) == 1 && msgs[0].ID == ids[1], err
	})

	require.ErrorIs(t, c.SetVisibility(ctx, "q", 12345, time.Second), queue.ErrNotFound)
	require.ErrorIs(t, c.SetVisibility(ctx, "q", 12345, 10*time.Millisecond), queue.ErrNotFound)

	deleted, err := c.DeleteBatch(ctx, "q", []int64{ids[1], ids[2], ids[0]})
	require.NoError(t, err)
	require.ElementsMatch(t, ids[1:], deleted)
}

func TestMetricsReportDepthAndAge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := newQueue(t)

	empty, err := c.Metrics(ctx, "q")
	require.NoError(t, err)
	require.Equal(t, queue.Metrics{Queue: "q", ScrapedAt: empty.ScrapedAt}, empty)

	_, err = c.SendBatch(ctx, "q", [][]byte{[]byte(`1`), []byte(`2`), []byte(`3`)}, 0)
	require.NoError(t, err)
	_, err = c.Read(ctx, "q", time.Hour, 1)
	require.NoError(t, err)

	var m queue.Metrics
	testsupport.WaitFor(t, 10*time.Second, "the oldest message to age", func() (bool, error) {
		m, err = c.Metrics(ctx, "q")
		return m.OldestAge >= time.Second, err
	})
	require.Equal(t, "q", m.Queue)
	require.Equal(t, int64(3), m.Length)
	require.Equal(t, int64(2), m.VisibleLength)
	require.Equal(t, int64(3), m.TotalMessages)
	require.LessOrEqual(t, m.NewestAge, m.OldestAge)
	require.WithinDuration(t, time.Now(), m.ScrapedAt, time.Minute)

	infos, err := c.List(ctx)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	require.Equal(t, "q", infos[0].Name)

	n, err := c.Purge(ctx, "q")
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
	existed, err := c.Drop(ctx, "q")
	require.NoError(t, err)
	require.True(t, existed)
	_, err = c.Metrics(ctx, "q")
	require.Error(t, err)
	_, err = c.Send(ctx, "q", []byte(`{}`), 0)
	require.ErrorIs(t, err, queue.ErrNoQueue)
}

// TestPlainSQLClient runs the statements a client written for the real pgmq would.
func TestPlainSQLClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.NewDB(t)
	// Simple protocol: untyped literals resolved by PostgreSQL, as psql sends them.
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	exec := func(sql string) [][]any {
		t.Helper()
		rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		require.NoError(t, err, sql)
		out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		require.NoError(t, err, sql)
		return out
	}

	exec(`SELECT pgmq.create('q')`)
	require.Equal(t, int64(1), exec(`SELECT * FROM pgmq.send('q', '{"a":1}')`)[0][0])
	require.Equal(t, int64(2), exec(`SELECT * FROM pgmq.send('q', '{"a":2}', 0)`)[0][0])
	require.Equal(t, int64(3), exec(`SELECT * FROM pgmq.send('q', '{"a":3}', '{"x-trace":"t"}'::jsonb)`)[0][0])
	require.Equal(t, int64(4), exec(`SELECT * FROM pgmq.send('q', '{"a":4}', '{"x":1}'::jsonb, 3600)`)[0][0])
	require.Len(t, exec(`SELECT * FROM pgmq.send_batch('q', ARRAY['{"b":1}', '{"b":2}']::jsonb[])`), 2)
	require.Len(t, exec(`SELECT * FROM pgmq.send_batch('q', ARRAY['{"b":3}']::jsonb[], 3600)`), 1)

	conditional := exec(`SELECT msg_id, message FROM pgmq.read('q', 30, 10, '{"a":3}')`)
	require.Len(t, conditional, 1)
	require.Equal(t, int64(3), conditional[0][0])

	rows := exec(`SELECT * FROM pgmq.read('q', 30, 10)`)
	require.Len(t, rows, 4, "msg 1, 2 and the two visible batch messages")
	got := exec(`SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers FROM pgmq.read('q', 30, 10)`)
	require.Empty(t, got, "everything visible was taken")

	require.Equal(t, true, exec(`SELECT pgmq.delete('q', 1::bigint)`)[0][0])
	require.Equal(t, false, exec(`SELECT pgmq.delete('q', 1::bigint)`)[0][0])
	require.Len(t, exec(`SELECT * FROM pgmq.delete('q', ARRAY[2, 5]::bigint[])`), 2)
	require.Equal(t, true, exec(`SELECT pgmq.archive('q', 3::bigint)`)[0][0])
	require.Len(t, exec(`SELECT * FROM pgmq.archive('q', ARRAY[6]::bigint[])`), 1)
	require.Len(t, exec(`SELECT * FROM pgmq.set_vt('q', 4, 0)`), 1)

	metrics := exec(`SELECT * FROM pgmq.metrics('q')`)
	require.Len(t, metrics, 1)
	require.Equal(t, "q", metrics[0][0])
	require.Equal(t, int64(2), metrics[0][1], "queue_length: messages 4 and 7")
	require.Equal(t, int64(7), metrics[0][4], "total_messages")
	require.Equal(t, int64(1), metrics[0][6], "queue_visible_length: message 4")

	queues := exec(`SELECT * FROM pgmq.list_queues()`)
	require.Len(t, queues, 1)
	require.Equal(t, "q", queues[0][0])
	require.Equal(t, false, queues[0][1])

	require.Equal(t, int64(2), exec(`SELECT pgmq.purge_queue('q')`)[0][0])
	require.Equal(t, true, exec(`SELECT pgmq.drop_queue('q')`)[0][0])
	require.Empty(t, exec(`SELECT * FROM pgmq.list_queues()`))
}

func TestQueueNamesValidated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.NewDB(t)
	c := queue.NewClient(pool)

	bad := []string{"", "a'b", "a;b", "a$b", "a--b", "a-b", "a b", `a"b`, "q_ü", "a.b",
		strings.Repeat("x", queue.MaxNameLength+1), "x; DROP TABLE pgmq.meta"}
	for _, name := range bad {
		require.Error(t, queue.ValidateName(name), "%q", name)
		require.Error(t, c.Create(ctx, name), "%q", name)
		_, err := c.Send(ctx, name, []byte(`{}`), 0)
		require.Error(t, err, "%q", name)

		for _, sql := range []string{
			"SELECT pgmq.create($1)",
			"SELECT * FROM pgmq.send($1, '{}'::jsonb)",
			"SELECT * FROM pgmq.read($1, 1, 1)",
			"SELECT * FROM pgmq.metrics($1)",
			"SELECT pgmq.drop_queue($1)",
		} {
			_, err := pool.Exec(ctx, sql, name)
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr, "%s with %q", sql, name)
			require.Equal(t, "22023", pgErr.Code, "%s with %q: %v", sql, name, err)
		}
	}

	for _, name := range []string{"q", "Mixed_Case_9", "9lives", strings.Repeat("x", queue.MaxNameLength),
		queue.TaskRequestsQueue, queue.StepResultsQueue, queue.NamespaceQueue(strings.Repeat("n", queue.MaxNamespaceLength))} {
		require.NoError(t, queue.ValidateName(name), name)
		require.NoError(t, c.Create(ctx, name), name)
	}
	infos, err := c.List(ctx)
	require.NoError(t, err)
	names := make([]string, 0, len(infos))
	for _, i := range infos {
		names = append(names, i.Name)
	}
	require.Contains(t, names, "mixed_case_9", "names are lower-cased")
	_, err = c.Send(ctx, "MIXED_case_9", []byte(`{}`), 0)
	require.NoError(t, err)

	var count int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM pgmq.meta").Scan(&count))
	require.Equal(t, 7, count)
}

func TestClientRejectsBadArguments(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := newQueue(t)

	_, err := c.Send(ctx, "q", []byte(`{not json`), 0)
	require.Error(t, err)
	_, err = c.Send(ctx, "q", []byte(`{}`), -time.Second)
	require.Error(t, err)
	_, err = c.SendBatch(ctx, "q", [][]byte{[]byte(`{}`), nil}, 0)
	require.Error(t, err)
	_, err = c.Read(ctx, "q", time.Second, 0)
	require.Error(t, err)
	_, err = c.Read(ctx, "q", -time.Second, 1)
	require.Error(t, err)

	ids, err := c.SendBatch(ctx, "q", nil, 0)
	require.NoError(t, err)
	require.Empty(t, ids)

	// A fraction of a second of visibility timeout rounds up to a whole second.
	_, err = c.Send(ctx, "q", json.RawMessage(`{"x":1}`), 0)
	require.NoError(t, err)
	before := time.Now()
	msgs, err := c.Read(ctx, "q", 10*time.Millisecond, 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.WithinDuration(t, before.Add(time.Second), msgs[0].VisibleAt, 500*time.Millisecond)
}

func TestConcurrentCreateOfOneQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testsupport.NewDB(t)
	c := queue.NewClient(pool)

	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = c.Create(ctx, "shared") })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	infos, err := c.List(ctx)
	require.NoError(t, err)
	require.Len(t, infos, 1)
}

func TestReadReturnsHeaders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, pool := newQueue(t)

	var id int64
	require.NoError(t, pool.QueryRow(ctx,
		`SELECT * FROM pgmq.send('q', '{"a":1}'::jsonb, '{"trace":"abc"}'::jsonb)`).Scan(&id))
	msgs, err := c.Read(ctx, "q", time.Minute, 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Equal(t, id, msgs[0].ID)
	require.JSONEq(t, `{"trace":"abc"}`, string(msgs[0].Headers))
}
