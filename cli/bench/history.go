package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
	"github.com/tasker-run/tasker/workflow/handlers"
)

// History: finished tasks put in the tables before a run (Options.History),
// to measure the node on a database that has been in use rather than on
// empty tables. They are the rows a node leaves for a completed task of the
// linear template: the task complete, four steps complete after one attempt
// each (with their parents and children), three task transitions and
// sixteen step transitions, with times, UUIDv7 identities and transition
// order as a real run records them. They are written by store.TaskHistoryInsert, historyChunk tasks per
// statement and historyWriters statements at a time, then the tables are
// analyzed.
//
// Their requested_by is HistoryRequestedBy and their context holds
// {"bench_history": "<id of the run that wrote them>"}: the run counts only
// its own request ids, so they never enter a report, and the cleanup
// deletes the ones the run wrote (unless Keep).

// HistoryRequestedBy is the requested_by of the finished tasks written by
// Options.History.
const HistoryRequestedBy = "tasker-bench-history"

// historyPattern is the pattern of the history tasks.
const historyPattern = PatternLinear

// historyChunk is how many tasks one statement writes or deletes.
const historyChunk = 10_000

// History timing: task k of n starts historySpacing after task k-1, the
// newest historyAge before now; each step is ready historyStepGap after its
// parent became ready, starts historyStartAfter after being ready and
// completes when the next step is ready.
const (
	historySpacing    = 10 * time.Millisecond
	historyAge        = time.Minute
	historyStepGap    = 10 * time.Millisecond
	historyStartAfter = 4 * time.Millisecond
)

// historyNodeID is the node_id of the history's transitions.
const historyNodeID = "bench-history"

// history writes the finished tasks Options.History asks for.
type history struct {
	db *database
	o  Options
	// id marks the tasks this run writes.
	id string
	// present is the number of finished tasks of the namespace once the
	// history is written; written how many this run wrote.
	present, written int64
	// writing is set once the run starts writing: from then on, the
	// cleanup looks for the run's history.
	writing bool
}

func newHistory(db *database, o Options) (*history, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	return &history{db: db, o: o, id: id.String()}, nil
}

// count reads how many finished tasks the namespace holds.
func (h *history) count(ctx context.Context) (int64, error) {
	c, err := h.db.client.Store.TaskCount(ctx, Namespace)
	return c.Finished, err
}

// fill writes finished tasks until the namespace holds Options.History of
// them, then analyzes the tables, and sets present.
func (h *history) fill(ctx context.Context) error {
	present, err := h.count(ctx)
	if err != nil {
		return err
	}
	h.present = present
	missing := int64(h.o.History) - present
	if missing <= 0 {
		return nil
	}
	began := time.Now()
	tmpl, err := h.template(ctx)
	if err != nil {
		return err
	}
	var newest time.Time
	if err := h.db.pool.QueryRow(ctx, sqlNow).Scan(&newest); err != nil {
		return err
	}
	newest = newest.Add(-historyAge)
	write := func(ctx context.Context, from, to int64) (int64, error) {
		return h.db.client.Store.TaskHistoryInsert(ctx, store.TaskHistoryInsertParams{
			Template: tmpl, From: from, To: to, Total: missing, Newest: newest, Spacing: historySpacing,
			StepGap: historyStepGap, StartAfter: historyStartAfter,
			RequestedBy: HistoryRequestedBy, Mark: h.id, NodeID: historyNodeID,
		})
	}
	h.writing = true
	err = inChunks(ctx, missing, write, func(n int64) { h.written += n })
	if err != nil {
		return err
	}
	if err := h.db.client.Store.TablesAnalyze(ctx); err != nil {
		return err
	}
	if h.present, err = h.count(ctx); err != nil {
		return err
	}
	fmt.Fprintf(h.o.LogOutput, "bench: wrote %d finished %s tasks of history in %s; %d finished tasks in namespace %s\n",
		h.written, tmpl.Name, time.Since(began).Round(time.Millisecond), h.present, Namespace)
	return nil
}

// historyWriters is how many chunks are written at once. The node is not
// running yet, and PostgreSQL spends the time on per-row work (index
// entries) that its backends do in parallel.
const historyWriters = 4

// inChunks calls write for [from, to) ranges of historyChunk tasks out of
// total, historyWriters at a time, and done (serialised) with what each
// wrote. It stops at the first error.
func inChunks(ctx context.Context, total int64, write func(ctx context.Context, from, to int64) (int64, error), done func(int64)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	starts := make(chan int64)
	go func() {
		defer close(starts)
		for from := int64(0); from < total; from += historyChunk {
			select {
			case starts <- from:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range historyWriters {
		wg.Go(func() {
			for from := range starts {
				n, err := write(ctx, from, min(from+historyChunk, total))
				mu.Lock()
				if err != nil && first == nil {
					first = err
					cancel()
				}
				done(n)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// template registers the bench templates, as the node will when it starts
// (the same files, so the node finds them unchanged), and returns the
// history's template.
func (h *history) template(ctx context.Context) (*workflow.Template, error) {
	reg := workflow.NewRegistry()
	if err := reg.Register(handlers.NameNoop, handlers.Noop()); err != nil {
		return nil, err
	}
	if err := reg.Register(HandlerName, Handler(h.o.HandlerDuration, h.o.FailureRate)); err != nil {
		return nil, err
	}
	ts, err := workflow.LoadDir(Templates(handlerFor(h.o)), reg)
	if err != nil {
		return nil, fmt.Errorf("loading the bench templates: %w", err)
	}
	var tmpl *workflow.Template
	for _, t := range ts {
		if _, err := h.db.client.Store.TemplateRegister(ctx, t); err != nil {
			return nil, err
		}
		if t.Name == historyPattern {
			tmpl = t
		}
	}
	if tmpl == nil {
		return nil, fmt.Errorf("bench history: no %s template", historyPattern)
	}
	return tmpl, nil
}

// remove deletes the tasks this run wrote, historyChunk per statement, and
// analyzes the tables again.
func (h *history) remove(ctx context.Context) error {
	if !h.writing {
		return nil
	}
	began := time.Now()
	var deleted int64
	for {
		n, err := h.db.client.Store.TaskHistoryDelete(ctx, store.TaskHistoryDeleteParams{
			Namespace: Namespace, RequestedBy: HistoryRequestedBy, Mark: h.id, Limit: historyChunk,
		})
		if err != nil {
			return fmt.Errorf("deleting the bench history: %w", err)
		}
		if n == 0 {
			break
		}
		deleted += n
	}
	h.writing = false
	if err := h.db.client.Store.TablesAnalyze(ctx); err != nil {
		return err
	}
	fmt.Fprintf(h.o.LogOutput, "bench: deleted the %d tasks of history the run wrote in %s\n", deleted, time.Since(began).Round(time.Millisecond))
	return nil
}
