package bootstrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/bootstrap/pgserver"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// Client is a connection to a node's database for the CLI: it finds the
// database the way a node does (database.url, TASKER_DATABASE_URL, or the
// embedded PostgreSQL's data folder).
type Client struct {
	Pool  *pgxpool.Pool
	Store *store.Store
	Queue *queue.Client
	// embedded is set when the client started the embedded server itself
	// (no node was running); Close stops it again.
	embedded *pgserver.Server
}

// Connect opens a client on cfg's database. When the embedded server is not
// running it is started, with the schema installed, and stopped on Close.
func Connect(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Client, error) {
	c := &Client{}
	url := cfg.Database.URL
	if url == "" {
		srv, err := StartEmbedded(ctx, cfg.Database, log)
		if err != nil {
			return nil, err
		}
		if !srv.Attached() {
			c.embedded = srv
		}
		url = srv.URL()
	}
	pool, err := openPool(ctx, url, cfg.Database)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.Pool = pool
	if _, err := queue.Install(ctx, pool); err != nil {
		c.Close()
		return nil, fmt.Errorf("installing the queue schema: %w", err)
	}
	if _, err := store.Migrate(ctx, pool); err != nil {
		c.Close()
		return nil, err
	}
	c.Queue = queue.NewClient(pool)
	c.Store = store.New(pool, store.Options{NodeID: "cli", Logger: log})
	return c, nil
}

// Close releases the client (and stops an embedded server it started).
func (c *Client) Close() {
	if c.Pool != nil {
		c.Pool.Close()
	}
	if c.embedded != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.embedded.Stop(ctx)
	}
}

// SubmitParams describe one task request.
type SubmitParams struct {
	Namespace     string
	Name          string
	Version       string
	Context       string
	RequestID     uuid.UUID
	CorrelationID uuid.UUID
	RequestedBy   string
}

// Submit sends a task request through the task request queue, as any pgmq
// client would, and returns its request id.
func (c *Client) Submit(ctx context.Context, p SubmitParams) (uuid.UUID, error) {
	if p.RequestID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return uuid.Nil, err
		}
		p.RequestID = id
	}
	if p.Context == "" {
		p.Context = "{}"
	}
	req := queue.TaskRequest{
		RequestID: p.RequestID, Namespace: p.Namespace, Name: p.Name, Version: p.Version,
		Context: p.Context, CorrelationID: p.CorrelationID, RequestedBy: p.RequestedBy,
	}
	// Validate as the node will, so an obvious mistake fails here.
	body, err := req.Encode()
	if err != nil {
		return uuid.Nil, err
	}
	if _, err := queue.DecodeTaskRequest(body); err != nil {
		return uuid.Nil, err
	}
	if err := c.Queue.Create(ctx, queue.TaskRequestsQueue); err != nil {
		return uuid.Nil, err
	}
	if _, err := c.Queue.Send(ctx, queue.TaskRequestsQueue, body, 0); err != nil {
		return uuid.Nil, fmt.Errorf("sending the task request: %w", err)
	}
	// Wake the task-request pollers now rather than at their next poll; a
	// lost notification only costs that poll interval.
	if _, err := c.Pool.Exec(ctx, "SELECT pg_notify($1, $2)", store.WakeChannel, queue.TaskRequestsQueue); err != nil {
		return uuid.Nil, fmt.Errorf("notifying the task request: %w", err)
	}
	return p.RequestID, nil
}

// ErrRejected is returned by Wait for a request the node rejected.
var ErrRejected = errors.New("task request rejected")

// ErrTaskFailed is returned by Wait for a task that ended in error.
var ErrTaskFailed = errors.New("task ended in error")

// Wait follows the task of requestID until it reaches a terminal state and
// returns it. A rejected request returns ErrRejected with the reason.
func (c *Client) Wait(ctx context.Context, requestID uuid.UUID, every time.Duration) (store.TaskDetail, error) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		d, err := c.Store.TaskShow(ctx, requestID)
		switch {
		case err == nil && d.State.Terminal():
			if d.State == workflow.TaskStateError {
				return d, ErrTaskFailed
			}
			return d, nil
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return d, err
		case errors.Is(err, store.ErrNotFound):
			var reason string
			qerr := c.Pool.QueryRow(ctx, `SELECT reason FROM tasker.rejected_requests WHERE request_id = $1 ORDER BY id DESC LIMIT 1`, requestID).Scan(&reason)
			if qerr == nil {
				return d, fmt.Errorf("%w: %s", ErrRejected, reason)
			}
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("waiting for request %s: %w", requestID, ctx.Err())
		case <-t.C:
		}
	}
}

// PrintTask writes a task's final state and each step's result or error.
func PrintTask(w io.Writer, d store.TaskDetail) {
	fmt.Fprintf(w, "task %s %s/%s@%s: %s\n", d.TaskUUID, d.Namespace, d.Name, d.Version, d.State)
	for _, st := range d.Steps {
		line := fmt.Sprintf("  %-28s %-18s attempts=%d", st.Name, st.State, st.Attempts)
		switch {
		case len(st.Error) > 0 && st.State != workflow.StepStateComplete:
			var e struct {
				Kind    string `json:"kind"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(st.Error, &e)
			line += fmt.Sprintf(" error=%s: %s", e.Kind, e.Message)
		case len(st.Result) > 0:
			line += " result=" + string(st.Result)
		}
		fmt.Fprintln(w, line)
	}
}
