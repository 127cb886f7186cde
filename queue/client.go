package queue

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotFound is returned when the message an operation names is not in the queue.
var ErrNotFound = errors.New("message not found")

// ErrNoQueue wraps the database error raised when a queue's table does not exist.
var ErrNoQueue = errors.New("queue does not exist")

// maxDelay is the longest delay or visibility timeout: pgmq takes int32 seconds.
const maxDelay = time.Duration(math.MaxInt32) * time.Second

// Message is one message as read from a queue.
type Message struct {
	// ID is the message id, unique within its queue.
	ID int64
	// ReadCount is how many times the message has been delivered, this delivery included.
	ReadCount int
	// EnqueuedAt is when the message was sent.
	EnqueuedAt time.Time
	// VisibleAt is when the message becomes visible again unless deleted or archived.
	VisibleAt time.Time
	// Body is the message JSON.
	Body []byte
	// Headers is the headers JSON object, nil when the message has none.
	Headers []byte
}

// Metrics describes a queue's depth and age.
type Metrics struct {
	Queue string
	// Length counts every message in the queue, visible or not.
	Length int64
	// VisibleLength counts the messages a read could take now.
	VisibleLength int64
	// NewestAge and OldestAge are the ages of the newest and oldest messages; 0 when empty.
	NewestAge time.Duration
	OldestAge time.Duration
	// TotalMessages counts every message ever sent to the queue.
	TotalMessages int64
	// ScrapedAt is the database time of the measurement.
	ScrapedAt time.Time
}

// Info describes a queue as listed by pgmq.list_queues.
type Info struct {
	Name        string
	Partitioned bool
	Unlogged    bool
	CreatedAt   time.Time
}

// Client sends and receives messages through the pgmq functions. It works the same on the
// real pgmq and on Tasker's subset. On Tasker's subset, whose queues are nothing but their
// tables, the hot operations (send, send batch, read, delete, delete batch) run instead as
// plain SQL on the queue table with the semantics of the function of the same name:
// PostgreSQL then keeps their plans as prepared statements, where a function plans its
// dynamic SQL again at every call (five to eight times the cost of the statement itself).
// The client finds out which pgmq it talks to on its first operation. A Client is safe for
// concurrent use when its DB is.
type Client struct {
	db   DB
	kind *providerKind // shared by the clients WithDB derives
}

// NewClient returns a client that runs every operation on db.
func NewClient(db DB) *Client { return &Client{db: db, kind: new(providerKind)} }

// WithDB returns a client that runs every operation on db, typically a transaction, so the
// operations commit or roll back with it.
func (c *Client) WithDB(db DB) *Client { return &Client{db: db, kind: c.kind} }

// Create creates a queue and its archive. Creating an existing queue changes nothing.
func (c *Client) Create(ctx context.Context, queue string) error {
	q, err := normalize(queue)
	if err != nil {
		return err
	}
	if _, err := c.db.Exec(ctx, "SELECT pgmq.create($1::text)", q); err != nil {
		return fmt.Errorf("creating queue %s: %w", q, translate(err))
	}
	return nil
}

// Send enqueues msg, a JSON document, visible after delay. pgmq counts delays in whole
// seconds; a delay with a fraction of a second is written straight into the queue table,
// whose layout is part of the pgmq contract.
func (c *Client) Send(ctx context.Context, queue string, msg []byte, delay time.Duration) (int64, error) {
	q, err := normalize(queue)
	if err != nil {
		return 0, err
	}
	if err := checkDelay("delay", delay); err != nil {
		return 0, fmt.Errorf("sending to queue %s: %w", q, err)
	}
	if !json.Valid(msg) {
		return 0, fmt.Errorf("sending to queue %s: message is not valid JSON", q)
	}
	direct, err := c.Direct(ctx)
	if err != nil {
		return 0, fmt.Errorf("sending to queue %s: %w", q, err)
	}
	var row pgx.Row
	switch {
	case direct || delay%time.Second != 0:
		row = c.db.QueryRow(ctx, statementsOf(q).send, delay.Microseconds(), msg)
	case delay == 0:
		row = c.db.QueryRow(ctx, "SELECT * FROM pgmq.send($1::text, $2::jsonb)", q, msg)
	default:
		row = c.db.QueryRow(ctx, "SELECT * FROM pgmq.send($1::text, $2::jsonb, $3::integer)",
			q, msg, int32(delay/time.Second))
	}
	var id int64
	if err := row.Scan(&id); err != nil {
		return 0, fmt.Errorf("sending to queue %s: %w", q, translate(err))
	}
	return id, nil
}

// SendWithHeaders enqueues msg with headers (a JSON object, e.g. a trace
// context from TraceHeaders), visible at once, and returns its id. Nil
// headers send none.
func (c *Client) SendWithHeaders(ctx context.Context, queue string, msg, headers []byte) (int64, error) {
	q, err := normalize(queue)
	if err != nil {
		return 0, err
	}
	if !json.Valid(msg) {
		return 0, fmt.Errorf("sending to queue %s: message is not valid JSON", q)
	}
	if headers != nil && (!json.Valid(headers) || !bytes.HasPrefix(bytes.TrimSpace(headers), []byte("{"))) {
		return 0, fmt.Errorf("sending to queue %s: headers are not a JSON object", q)
	}
	var id int64
	err = c.db.QueryRow(ctx, "SELECT * FROM pgmq.send($1::text, $2::jsonb, $3::jsonb, 0)", q, msg, headers).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("sending to queue %s: %w", q, translate(err))
	}
	return id, nil
}

// SendBatch enqueues msgs in one statement, all visible after delay, and returns their
// ids in the order of msgs.
func (c *Client) SendBatch(ctx context.Context, queue string, msgs [][]byte, delay time.Duration) ([]int64, error) {
	q, err := normalize(queue)
	if err != nil {
		return nil, err
	}
	if err := checkDelay("delay", delay); err != nil {
		return nil, fmt.Errorf("sending batch to queue %s: %w", q, err)
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	for i, m := range msgs {
		if !json.Valid(m) {
			return nil, fmt.Errorf("sending batch to queue %s: message %d is not valid JSON", q, i)
		}
	}
	direct, err := c.Direct(ctx)
	if err != nil {
		return nil, fmt.Errorf("sending batch to queue %s: %w", q, err)
	}
	var rows pgx.Rows
	if direct || delay%time.Second != 0 {
		rows, err = c.db.Query(ctx, statementsOf(q).sendBatch, delay.Microseconds(), msgs)
	} else {
		rows, err = c.db.Query(ctx, "SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[], $3::integer)",
			q, msgs, int32(delay/time.Second))
	}
	if err != nil {
		return nil, fmt.Errorf("sending batch to queue %s: %w", q, translate(err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("sending batch to queue %s: %w", q, translate(err))
	}
	return ids, nil
}

// Read takes up to qty visible messages, oldest first, and makes them invisible to other
// readers for vt. pgmq counts vt in whole seconds, so a fraction is rounded up. Outside a
// transaction of the caller's, the read commits only once its messages have arrived (see
// readCommitted), so a lost connection never leaves messages invisible to no one's
// knowledge.
func (c *Client) Read(ctx context.Context, queue string, vt time.Duration, qty int) ([]Message, error) {
	q, err := normalize(queue)
	if err != nil {
		return nil, err
	}
	if err := checkDelay("visibility timeout", vt); err != nil {
		return nil, fmt.Errorf("reading queue %s: %w", q, err)
	}
	if qty <= 0 || qty > math.MaxInt32 {
		return nil, fmt.Errorf("reading queue %s: quantity %d out of range", q, qty)
	}
	secs := int32((vt + time.Second - 1) / time.Second)
	direct, err := c.Direct(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading queue %s: %w", q, err)
	}
	if _, inTx := c.db.(pgx.Tx); !inTx {
		if b, ok := c.db.(beginner); ok {
			return c.readCommitted(ctx, b, q, direct, qty, secs)
		}
	}
	// In the caller's transaction: KeyAccess would outlast the read.
	return c.readOn(ctx, c.db, q, direct, false, qty, secs)
}

// readCommitted reads in a transaction of its own, committed only once the
// messages have arrived. A read committed in the statement's implicit
// transaction can have its answer lost with the connection (a server
// stopping or crashing between the commit and the reply): its messages
// are then invisible for vt with nobody knowing their ids. Here a
// connection lost before the rows arrived rolls the read back, and one
// lost during the commit leaves the caller holding the messages: they are
// returned, since a read that did commit has no other reader, and one that
// did not only lets another reader take them too (at-least-once).
func (c *Client) readCommitted(ctx context.Context, b beginner, q string, direct bool, qty int, secs int32) ([]Message, error) {
	tx, err := b.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading queue %s: %w", q, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // a no-op once committed
	msgs, err := c.readOn(ctx, tx, q, direct, true, qty, secs)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil && len(msgs) == 0 {
		return nil, fmt.Errorf("reading queue %s: %w", q, err)
	}
	return msgs, nil
}

// readOn runs the read on db; keyAccess sends KeyAccess first, for a
// transaction that ends with the read.
func (c *Client) readOn(ctx context.Context, db DB, q string, direct, keyAccess bool, qty int, secs int32) ([]Message, error) {
	var (
		rows pgx.Rows
		err  error
	)
	if direct && keyAccess {
		// The statements after KeyAccess, in the same transaction, are
		// planned by key.
		var msgs []Message
		b := &pgx.Batch{}
		b.Queue(KeyAccess)
		b.Queue(statementsOf(q).read, int32(qty), secs).Query(func(rows pgx.Rows) error {
			var err error
			msgs, err = collectMessages(rows)
			return err
		})
		if err := db.SendBatch(ctx, b).Close(); err != nil {
			return nil, fmt.Errorf("reading queue %s: %w", q, translate(err))
		}
		return msgs, nil
	}
	if direct {
		rows, err = db.Query(ctx, statementsOf(q).read, int32(qty), secs)
	} else {
		rows, err = db.Query(ctx,
			"SELECT msg_id, read_ct, enqueued_at, vt, message, headers FROM pgmq.read($1::text, $2::integer, $3::integer)",
			q, secs, int32(qty))
	}
	if err != nil {
		return nil, fmt.Errorf("reading queue %s: %w", q, translate(err))
	}
	msgs, err := collectMessages(rows)
	if err != nil {
		return nil, fmt.Errorf("reading queue %s: %w", q, translate(err))
	}
	return msgs, nil
}

// collectMessages reads the rows of a read, oldest first.
func collectMessages(rows pgx.Rows) ([]Message, error) {
	msgs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Message, error) {
		var m Message
		var readCount int32
		err := row.Scan(&m.ID, &readCount, &m.EnqueuedAt, &m.VisibleAt, &m.Body, &m.Headers)
		m.ReadCount = int(readCount)
		return m, err
	})
	if err != nil {
		return nil, err
	}
	// UPDATE … RETURNING has no order; pgmq.read returns the oldest first.
	slices.SortFunc(msgs, func(a, b Message) int { return cmp.Compare(a.ID, b.ID) })
	return msgs, nil
}

// KeyAccess, sent first in a batch (one implicit transaction), has the
// statements after it planned without sequential scans. Tasker's hot
// statements reach every row by key. PostgreSQL keeps a prepared statement's
// generic plan; one made while a table was nearly empty (a queue between
// bursts, a new installation) scans and sorts the whole table once it has
// grown — a queue's backlog on every read — until the statistics are
// refreshed and the plan made again.
//
// It also has them use their generic plan from the first execution on.
// PostgreSQL otherwise plans a statement again at every execution for as
// long as the generic plan's estimate looks worse than the custom plans',
// which for statements over arrays of keys it does for good: planning the
// result apply, the start and the outcome took as long as running them
// (0.83 ms against 0.62 for the apply on an idle node). Their plans reach
// rows by key whatever the parameters, so the generic plan is as good.
// Both settings end with the transaction.
const KeyAccess = `SELECT set_config('enable_seqscan', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true)`

// Delete acknowledges a message; it reports whether the message was there.
func (c *Client) Delete(ctx context.Context, queue string, id int64) (bool, error) {
	q, err := normalize(queue)
	if err != nil {
		return false, err
	}
	direct, err := c.Direct(ctx)
	if err != nil {
		return false, fmt.Errorf("deleting message %d from queue %s: %w", id, q, err)
	}
	if !direct {
		var ok bool
		if err := c.db.QueryRow(ctx, "SELECT pgmq.delete($1::text, $2::bigint)", q, id).Scan(&ok); err != nil {
			return false, fmt.Errorf("deleting message %d from queue %s: %w", id, q, translate(err))
		}
		return ok, nil
	}
	tag, err := c.db.Exec(ctx, statementsOf(q).delete, id)
	if err != nil {
		return false, fmt.Errorf("deleting message %d from queue %s: %w", id, q, translate(err))
	}
	return tag.RowsAffected() > 0, nil
}

// DeleteBatch acknowledges messages and returns the ids that were there.
func (c *Client) DeleteBatch(ctx context.Context, queue string, ids []int64) ([]int64, error) {
	q, err := normalize(queue)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	direct, err := c.Direct(ctx)
	if err != nil {
		return nil, fmt.Errorf("deleting messages from queue %s: %w", q, err)
	}
	if !direct {
		return c.batch(ctx, "deleting messages from", "SELECT * FROM pgmq.delete($1::text, $2::bigint[])", q, ids)
	}
	rows, err := c.db.Query(ctx, statementsOf(q).deleteBatch, ids)
	if err != nil {
		return nil, fmt.Errorf("deleting messages from queue %s: %w", q, translate(err))
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("deleting messages from queue %s: %w", q, translate(err))
	}
	return done, nil
}

// Archive moves a message to the queue's archive; it reports whether the message was there.
func (c *Client) Archive(ctx context.Context, queue string, id int64) (bool, error) {
	q, err := normalize(queue)
	if err != nil {
		return false, err
	}
	var ok bool
	if err := c.db.QueryRow(ctx, "SELECT pgmq.archive($1::text, $2::bigint)", q, id).Scan(&ok); err != nil {
		return false, fmt.Errorf("archiving message %d of queue %s: %w", id, q, translate(err))
	}
	return ok, nil
}

// ArchiveBatch moves messages to the queue's archive and returns the ids that were there.
func (c *Client) ArchiveBatch(ctx context.Context, queue string, ids []int64) ([]int64, error) {
	return c.batch(ctx, "archiving messages of", "SELECT * FROM pgmq.archive($1::text, $2::bigint[])", queue, ids)
}

func (c *Client) batch(ctx context.Context, doing, sql, queue string, ids []int64) ([]int64, error) {
	q, err := normalize(queue)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := c.db.Query(ctx, sql, q, ids)
	if err != nil {
		return nil, fmt.Errorf("%s queue %s: %w", doing, q, translate(err))
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("%s queue %s: %w", doing, q, translate(err))
	}
	return done, nil
}

// SetVisibility makes a message visible vt from now: to extend a lease, or to schedule a
// retry. A vt with a fraction of a second is written straight into the queue table.
// It returns ErrNotFound when the message is not in the queue.
func (c *Client) SetVisibility(ctx context.Context, queue string, id int64, vt time.Duration) error {
	q, err := normalize(queue)
	if err != nil {
		return err
	}
	if err := checkDelay("visibility timeout", vt); err != nil {
		return fmt.Errorf("setting visibility of message %d in queue %s: %w", id, q, err)
	}
	var rows pgx.Rows
	if vt%time.Second == 0 {
		rows, err = c.db.Query(ctx, "SELECT msg_id FROM pgmq.set_vt($1::text, $2::bigint, $3::integer)",
			q, id, int32(vt/time.Second))
	} else {
		rows, err = c.db.Query(ctx, "UPDATE "+queueTable(q)+
			" SET vt = clock_timestamp() + $2::bigint * interval '1 microsecond' WHERE msg_id = $1 RETURNING msg_id",
			id, vt.Microseconds())
	}
	if err != nil {
		return fmt.Errorf("setting visibility of message %d in queue %s: %w", id, q, translate(err))
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("setting visibility of message %d in queue %s: %w", id, q, translate(err))
	}
	if len(found) == 0 {
		return fmt.Errorf("setting visibility of message %d in queue %s: %w", id, q, ErrNotFound)
	}
	return nil
}

// Metrics measures a queue's depth and age.
func (c *Client) Metrics(ctx context.Context, queue string) (Metrics, error) {
	q, err := normalize(queue)
	if err != nil {
		return Metrics{}, err
	}
	var m Metrics
	var newest, oldest *int32
	var visible *int64
	err = c.db.QueryRow(ctx, `SELECT queue_name, queue_length, newest_msg_age_sec, oldest_msg_age_sec,
		       total_messages, scrape_time, queue_visible_length
		  FROM pgmq.metrics($1::text)`, q).
		Scan(&m.Queue, &m.Length, &newest, &oldest, &m.TotalMessages, &m.ScrapedAt, &visible)
	if err != nil {
		return Metrics{}, fmt.Errorf("measuring queue %s: %w", q, translate(err))
	}
	if newest != nil {
		m.NewestAge = time.Duration(*newest) * time.Second
	}
	if oldest != nil {
		m.OldestAge = time.Duration(*oldest) * time.Second
	}
	if visible != nil {
		m.VisibleLength = *visible
	}
	return m, nil
}

// List returns every queue.
func (c *Client) List(ctx context.Context) ([]Info, error) {
	rows, err := c.db.Query(ctx, "SELECT queue_name, is_partitioned, is_unlogged, created_at FROM pgmq.list_queues()")
	if err != nil {
		return nil, fmt.Errorf("listing queues: %w", err)
	}
	infos, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Info, error) {
		var i Info
		err := row.Scan(&i.Name, &i.Partitioned, &i.Unlogged, &i.CreatedAt)
		return i, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing queues: %w", err)
	}
	return infos, nil
}

// Purge deletes every message of a queue (not its archive) and returns how many.
func (c *Client) Purge(ctx context.Context, queue string) (int64, error) {
	q, err := normalize(queue)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := c.db.QueryRow(ctx, "SELECT pgmq.purge_queue($1::text)", q).Scan(&n); err != nil {
		return 0, fmt.Errorf("purging queue %s: %w", q, translate(err))
	}
	return n, nil
}

// Drop removes a queue, its archive and its messages; it reports whether the queue existed.
func (c *Client) Drop(ctx context.Context, queue string) (bool, error) {
	q, err := normalize(queue)
	if err != nil {
		return false, err
	}
	var ok bool
	if err := c.db.QueryRow(ctx, "SELECT pgmq.drop_queue($1::text)", q).Scan(&ok); err != nil {
		return false, fmt.Errorf("dropping queue %s: %w", q, translate(err))
	}
	return ok, nil
}

func checkDelay(what string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s %s is negative", what, d)
	}
	if d > maxDelay {
		return fmt.Errorf("%s %s is longer than %s", what, d, maxDelay)
	}
	return nil
}

// translate marks a missing queue table with ErrNoQueue, keeping the database error.
func translate(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return fmt.Errorf("%w: %w", ErrNoQueue, err)
	}
	return err
}
