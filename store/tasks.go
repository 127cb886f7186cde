package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// RequestOutcome is what became of one task request message.
type RequestOutcome struct {
	RequestID uuid.UUID
	TaskUUID  uuid.UUID
	// Created is false when the request id had already created a task (a
	// repeated request creates nothing).
	Created bool
	// Rejected requests are archived with Reason stored.
	Rejected bool
	Reason   string
	// Enqueued counts the steps sent to their queue.
	Enqueued int
}

// RequestAccept handles one message of the task request queue in one
// transaction: create the task, enqueue its ready steps and delete the
// message. A request that cannot be honoured is archived and its reason
// stored (Rejected). An error means nothing was done; the message comes back
// after its visibility timeout.
func (s *Store) RequestAccept(ctx context.Context, msg queue.Message) (RequestOutcome, error) {
	if len(msg.Body) > s.maxReq {
		return s.rejectRequest(ctx, msg, uuid.Nil,
			fmt.Sprintf("payload of %d bytes exceeds the limit of %d bytes", len(msg.Body), s.maxReq))
	}
	req, err := queue.DecodeTaskRequest(msg.Body)
	if err != nil {
		return s.rejectRequest(ctx, msg, requestIDOf(msg.Body), err.Error())
	}

	var (
		out  = RequestOutcome{RequestID: req.RequestID}
		fast bool
	)
	direct, err := s.queue.Direct(ctx)
	if err == nil && direct {
		out, err = s.accepts.do(ctx, acceptCall{msg: msg, req: req})
		fast = true
	}
	if !fast && err == nil {
		err = s.inTx(ctx, func(tx pgx.Tx) error {
			created, err := s.createTask(ctx, tx, req)
			if err != nil {
				return err
			}
			out = created
			if _, err := s.queue.WithDB(tx).Delete(ctx, queue.TaskRequestsQueue, msg.ID); err != nil {
				return fmt.Errorf("deleting task request %d: %w", msg.ID, err)
			}
			return nil
		})
	}
	var refused *RefusedError
	if errors.As(err, &refused) {
		return s.rejectRequest(ctx, msg, req.RequestID, refused.Reason)
	}
	if err != nil {
		return RequestOutcome{RequestID: req.RequestID}, fmt.Errorf("accepting task request %s: %w", req.RequestID, err)
	}
	return out, nil
}

// RequestReject archives a task request message and stores reason where
// an operator can list it.
func (s *Store) RequestReject(ctx context.Context, msg queue.Message, reason string) (RequestOutcome, error) {
	return s.rejectRequest(ctx, msg, requestIDOf(msg.Body), reason)
}

func (s *Store) rejectRequest(ctx context.Context, msg queue.Message, requestID uuid.UUID, reason string) (RequestOutcome, error) {
	out := RequestOutcome{RequestID: requestID, Rejected: true, Reason: reason}
	var rid *uuid.UUID
	if requestID != uuid.Nil {
		rid = &requestID
	}
	payload := string(msg.Body)
	if len(payload) > maxRejectedPayload {
		// Cut on a character boundary: a split character is invalid UTF-8,
		// which the text column refuses, and the rejection would fail.
		cut := maxRejectedPayload
		for cut > 0 && !utf8.RuneStart(payload[cut]) {
			cut--
		}
		payload = payload[:cut] + "…"
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO tasker.rejected_requests (request_id, msg_id, payload, reason, node_id)
			VALUES ($1, $2, $3, $4, $5)`, rid, msg.ID, payload, reason, s.nodeID); err != nil {
			return fmt.Errorf("storing rejected request: %w", err)
		}
		if _, err := s.queue.WithDB(tx).Archive(ctx, queue.TaskRequestsQueue, msg.ID); err != nil {
			return fmt.Errorf("archiving task request %d: %w", msg.ID, err)
		}
		return nil
	})
	if err != nil {
		return out, err
	}
	return out, nil
}

// maxRejectedPayload is how much of a rejected request is kept, in bytes.
const maxRejectedPayload = 4096

// requestIDOf digs the request id out of a payload that failed validation,
// so the rejection can still be found by it.
func requestIDOf(body []byte) uuid.UUID {
	var probe struct {
		RequestID string `json:"request_id"`
	}
	if json.Unmarshal(body, &probe) != nil {
		return uuid.Nil
	}
	id, err := uuid.Parse(probe.RequestID)
	if err != nil {
		return uuid.Nil
	}
	return id
}

// TaskCreate creates the task of req with its steps, edges and first
// transitions, and enqueues the steps that are ready, all in one
// transaction. It is idempotent on the request id.
func (s *Store) TaskCreate(ctx context.Context, req queue.TaskRequest) (RequestOutcome, error) {
	var out RequestOutcome
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = s.createTask(ctx, tx, req)
		return err
	})
	return out, err
}

func (s *Store) createTask(ctx context.Context, tx pgx.Tx, req queue.TaskRequest) (RequestOutcome, error) {
	out := RequestOutcome{RequestID: req.RequestID}
	tmpl, err := s.templateResolve(ctx, tx, req.Namespace, req.Name, req.Version)
	if err != nil {
		return out, err
	}
	p, err := planTask(req, tmpl)
	if err != nil {
		return out, err
	}
	b := &pgx.Batch{}
	s.queueTaskRows(b, p, req, tmpl)
	b.Queue(`SELECT task_uuid FROM tasker.tasks WHERE request_id = $1`, pgUUID(req.RequestID)).
		QueryRow(func(row pgx.Row) error { return row.Scan(scanUUID(&out.TaskUUID)) })
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return out, fmt.Errorf("inserting task: %w", err)
	}
	if out.TaskUUID != p.id {
		return out, nil // the request id already made a task: hand back that one
	}
	out.Created = true
	if err := s.sendStepMessages(ctx, tx, p.ready, 0); err != nil {
		return out, err
	}
	out.Enqueued = len(p.ready)
	return out, nil
}

// Reasons of the first transitions of a task.
const (
	reasonTaskCreated = "task created"
	reasonTaskStarted = "first steps enqueued"
)

// taskPlan is every row a new task starts with: the task's identity, its
// steps (arrays by column, for unnest), edges, first step transitions and
// the roots to enqueue.
type taskPlan struct {
	id, correlation uuid.UUID
	context         string
	started         workflow.TaskState

	ids                               []uuid.UUID
	names, handlers, configs, states  []string
	positions, maxAttempts, waiting   []int32
	retryable                         []bool
	timeouts, backoffBase, backoffMax []int64
	edgeFrom, edgeTo                  []uuid.UUID
	moves                             []stepMove
	ready                             []readyStep
}

// planTask lays out the task of req from tmpl.
func planTask(req queue.TaskRequest, tmpl resolvedTemplate) (taskPlan, error) {
	var p taskPlan
	var err error
	if p.id, err = uuid.NewV7(); err != nil {
		return p, err
	}
	p.correlation = req.CorrelationID
	if p.correlation == uuid.Nil {
		p.correlation = req.RequestID
	}
	p.context = req.Context
	if p.context == "" {
		p.context = "{}"
	}
	if p.started, err = workflow.TaskTransition(workflow.TaskStatePending, workflow.TaskEventStart); err != nil {
		return p, err
	}
	steps := tmpl.Def.Steps
	n := len(steps)
	p.ids = make([]uuid.UUID, n)
	byName := make(map[string]uuid.UUID, n)
	for i, st := range steps {
		if p.ids[i], err = uuid.NewV7(); err != nil {
			return p, err
		}
		byName[st.Name] = p.ids[i]
	}
	p.names, p.handlers, p.configs, p.states = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	p.positions, p.maxAttempts, p.waiting = make([]int32, n), make([]int32, n), make([]int32, n)
	p.retryable = make([]bool, n)
	p.timeouts, p.backoffBase, p.backoffMax = make([]int64, n), make([]int64, n), make([]int64, n)
	p.moves = make([]stepMove, 0, 2*n)
	for i, st := range steps {
		p.names[i], p.handlers[i], p.positions[i] = st.Name, st.Handler, int32(i)
		p.configs[i] = string(st.Config)
		if p.configs[i] == "" {
			p.configs[i] = "{}"
		}
		p.maxAttempts[i], p.retryable[i] = int32(st.MaxAttempts), st.Retryable
		p.timeouts[i], p.backoffBase[i], p.backoffMax[i] = st.TimeoutMS, st.BackoffBaseMS, st.BackoffMaxMS
		p.waiting[i] = int32(len(st.DependsOn))
		for _, dep := range st.DependsOn {
			p.edgeFrom = append(p.edgeFrom, byName[dep])
			p.edgeTo = append(p.edgeTo, p.ids[i])
		}
		p.moves = append(p.moves, stepMove{Step: p.ids[i], Task: p.id, To: workflow.StepStatePending, Reason: "task created"})
		p.states[i] = string(workflow.StepStatePending)
		if len(st.DependsOn) == 0 {
			// A root is ready at once: it is inserted enqueued, and both
			// transitions are recorded.
			p.states[i] = string(workflow.StepStateEnqueued)
			p.moves = append(p.moves, stepMove{Step: p.ids[i], Task: p.id, From: workflow.StepStatePending, To: workflow.StepStateEnqueued, Reason: "ready"})
			p.ready = append(p.ready, readyStep{Step: p.ids[i], Task: p.id, Namespace: req.Namespace, CorrelationID: p.correlation})
		}
	}
	if len(p.ready) == 0 {
		return p, fmt.Errorf("template %s/%s %s has no step without dependencies", req.Namespace, req.Name, tmpl.Version)
	}
	return p, nil
}
