package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// Client is a connection to a node's database for the CLI and the bench:
// it finds the database the way a node does (database.url,
// TASKER_DATABASE_URL, or the embedded PostgreSQL's data folder).
type Client struct {
	*DB
	Store *store.Store
	Queue *queue.Client
	// maxRequest is the node's queue.max_request_bytes, checked before a
	// request is sent.
	maxRequest int
}

// Connect opens a client on cfg's database as it is (see Attach): it starts
// no server and runs no DDL.
func Connect(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Client, error) {
	db, err := Attach(ctx, cfg.Database, log)
	if err != nil {
		return nil, err
	}
	return NewClient(db, cfg, log), nil
}

// NewClient makes a client on a database already open; Close closes it.
// The store takes the flow limits of cfg, so what the client reads of them
// (tasker limits) is the configuration's.
func NewClient(db *DB, cfg *config.Config, log *slog.Logger) *Client {
	st := store.New(db.Pool, storeOptions(cfg, "cli", log))
	st.SetFlowPolicy(cfg.Policy())
	return &Client{DB: db, Queue: queue.NewClient(db.Pool), Store: st, maxRequest: cfg.Queue.MaxRequestBytes}
}

// Close releases the client (and stops an embedded server Open started).
func (c *Client) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = c.DB.Close(ctx)
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
	// Trace, when set, goes with the request as its traceparent and
	// tracestate headers.
	Trace workflow.Trace
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
	if c.maxRequest > 0 && len(body) > c.maxRequest {
		return uuid.Nil, fmt.Errorf("the task request is %d bytes, more than queue.max_request_bytes (%d): the node would reject it", len(body), c.maxRequest)
	}
	if _, err := queue.DecodeTaskRequest(body); err != nil {
		return uuid.Nil, err
	}
	if err := c.Queue.Create(ctx, queue.TaskRequestsQueue); err != nil {
		return uuid.Nil, err
	}
	if _, err := c.Queue.SendWithHeaders(ctx, queue.TaskRequestsQueue, body, queue.TraceHeaders(p.Trace)); err != nil {
		return uuid.Nil, fmt.Errorf("sending the task request: %w", err)
	}
	// Wake the task-request pollers now rather than at their next poll; a
	// lost notification only costs that poll interval.
	if err := c.Store.QueueWake(ctx, queue.TaskRequestsQueue); err != nil {
		return uuid.Nil, err
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
			rr, err := c.Store.RequestRejection(ctx, requestID)
			if err == nil {
				return d, fmt.Errorf("%w: %s", ErrRejected, rr.Reason)
			}
			if !errors.Is(err, store.ErrNotFound) {
				return d, err
			}
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("waiting for request %s: %w", requestID, ctx.Err())
		case <-t.C:
		}
	}
}
