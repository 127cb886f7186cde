package store

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/backoff"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// MaxRequestBytesDefault is the task request size limit when Options leaves
// it zero.
const MaxRequestBytesDefault = 256 << 10

// Options configure a Store.
type Options struct {
	// NodeID is recorded on every transition this store writes.
	NodeID string
	// Backoff computes retry delays. Defaults to backoff.Default() when
	// neither Base nor Max is set.
	Backoff backoff.Policy
	// MaxRequestBytes is the largest task request accepted. Defaults to
	// MaxRequestBytesDefault.
	MaxRequestBytes int
	// TemplateGrace is how long a task request for a template, version or
	// namespace not registered is put off, with growing delays, before it
	// is rejected: a node registering it may be starting. Zero rejects it
	// at once.
	TemplateGrace time.Duration
	// Logger receives warnings about skipped messages. Defaults to
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock for retry times. Defaults to time.Now.
	Now func() time.Time
}

// Store is Tasker's persistence. It is safe for concurrent use.
type Store struct {
	pool      *pgxpool.Pool
	queue     *queue.Client
	nodeID    string
	backoff   atomic.Pointer[backoff.Policy]
	maxReq    int
	grace     time.Duration
	log       *slog.Logger
	now       func() time.Time
	templates *templateCache
	flow      atomic.Pointer[workflow.FlowPolicy]
	// flowSignal wakes the admission (FlowSignal).
	flowSignal chan struct{}
	// flowShard is the shard of the namespaces' flow counters this store's
	// task creations write; its result applies write the next one
	// (migrations/0014_flow_counts.sql). Drawn at random, so that the
	// stores of several nodes mostly write different shards.
	flowShard int

	// Concurrent calls of the hot operations are grouped into batches
	// (see batcher).
	accepts  *batcher[acceptCall, RequestOutcome]
	starts   *batcher[uuid.UUID, StepWork]
	outcomes *batcher[outcomeCall, struct{}]
	results  *batcher[resultCall, ResultOutcome]
}

// New returns a Store on pool. The schema must have been migrated and the
// queue schema installed.
func New(pool *pgxpool.Pool, opts Options) *Store {
	if opts.Backoff.Base == 0 && opts.Backoff.Max == 0 {
		opts.Backoff = backoff.Default()
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = MaxRequestBytesDefault
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	st := &Store{
		pool:       pool,
		queue:      queue.NewClient(pool),
		nodeID:     opts.NodeID,
		maxReq:     opts.MaxRequestBytes,
		grace:      opts.TemplateGrace,
		log:        opts.Logger,
		now:        opts.Now,
		templates:  newTemplateCache(),
		flowSignal: make(chan struct{}, 1),
		flowShard:  rand.IntN(flowShards),
	}
	st.backoff.Store(&opts.Backoff)
	st.accepts = newBatcher(func(c acceptCall) any { return c.req.RequestID }, st.acceptRequests)
	st.starts = newBatcher(func(step uuid.UUID) any { return step }, st.startSteps)
	st.outcomes = newBatcher(func(c outcomeCall) any { return c.o.StepUUID }, st.recordOutcomes)
	st.results = newBatcher(func(c resultCall) any { return c.res.TaskUUID }, st.applyResults)
	return st
}

// NodeID is the id recorded on this store's transitions.
func (s *Store) NodeID() string { return s.nodeID }

// Queue returns the queue client on the store's pool.
func (s *Store) Queue() *queue.Client { return s.queue }

// SetBackoff replaces the retry policy (a config reload).
func (s *Store) SetBackoff(p backoff.Policy) { s.backoff.Store(&p) }

// EnsureQueues creates the orchestration queues and one step queue per
// namespace. Creating an existing queue is a no-op.
func (s *Store) EnsureQueues(ctx context.Context, namespaces []string) error {
	names := append([]string{queue.TaskRequestsQueue, queue.StepResultsQueue}, namespaceQueues(namespaces)...)
	for _, q := range names {
		if err := s.queue.Create(ctx, q); err != nil {
			return fmt.Errorf("creating queue %s: %w", q, err)
		}
	}
	return nil
}

func namespaceQueues(namespaces []string) []string {
	out := make([]string, 0, len(namespaces))
	for _, ns := range namespaces {
		out = append(out, queue.NamespaceQueue(ns))
	}
	return out
}

// inTx runs fn in a transaction, translating errors.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return translate(pgx.BeginFunc(ctx, s.pool, fn))
}

// SessionSettings are the settings of every session that runs the store's
// statements, given as connection parameters (bootstrap and testsupport set
// them on their pools).
//
// enable_seqscan off: every hot statement reaches its rows by a key (the
// primary key, (task_uuid, name), from_step, msg_id), and must keep doing so
// whatever the planner believes of a table's size. A table analyzed while
// empty, or never (autovacuum off), reads as empty; a plan made then (and
// pgx keeps plans per connection) would scan the whole table on every call
// once it has grown. With sequential scans discouraged the planner takes the
// key's index; a statement with no index to use still scans.
//
// jit off: a statement that still scans (a queue's metrics, a count) is
// then costed far above jit_above_cost, and PostgreSQL compiled it on every
// call: pgmq.metrics on an empty queue took 130 ms instead of about one.
// Tasker's statements are short; compiling them never pays.
func SessionSettings() map[string]string {
	return map[string]string{"enable_seqscan": "off", "jit": "off"}
}
