package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/backoff"
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
	// Throttled counts the first steps that wait for their admission
	// under flow limits.
	Throttled int
	// Waiting requests name a template not registered (yet): the message
	// comes back at VisibleAt, and is rejected once the grace period is
	// over. Reason says what is unknown.
	Waiting   bool
	VisibleAt time.Time
}

// RequestAccept handles one message of the task request queue in one
// transaction: create the task, enqueue its ready steps and delete the
// message. A request that cannot be honoured is archived and its reason
// stored (Rejected); one for a template not registered yet is put off
// until the grace period is over (Waiting). An error means nothing was
// done; the message comes back after its visibility timeout. Concurrent
// calls go together: one round trip and one commit for the batch.
func (s *Store) RequestAccept(ctx context.Context, msg queue.Message) (RequestOutcome, error) {
	if len(msg.Body) > s.maxReq {
		return s.requestReject(ctx, msg, requestIDOf(msg.Body),
			fmt.Sprintf("payload of %d bytes exceeds the limit of %d bytes", len(msg.Body), s.maxReq))
	}
	req, err := queue.DecodeTaskRequest(msg.Body)
	if err != nil {
		return s.requestReject(ctx, msg, requestIDOf(msg.Body), err.Error())
	}
	// A malformed trace context is ignored, as the W3C recommendation
	// says: the task starts without one, and the warning says why.
	if req.Trace, err = queue.TraceFromHeaders(msg.Headers); err != nil {
		s.log.Warn("task request's trace context ignored", "request_id", req.RequestID, "msg_id", msg.ID, "error", err)
	}
	out, err := s.accepts.do(ctx, acceptCall{msgID: &msg.ID, req: req})
	var refused *RefusedError
	if errors.As(err, &refused) {
		if refused.missing {
			return s.requestWait(ctx, msg, req.RequestID, refused.Reason)
		}
		return s.requestReject(ctx, msg, req.RequestID, refused.Reason)
	}
	if err != nil {
		return RequestOutcome{RequestID: req.RequestID}, fmt.Errorf("accepting task request %s: %w", req.RequestID, err)
	}
	return out, nil
}

// TaskCreate creates the task of req as RequestAccept does, for a request
// that did not come through the queue. It is idempotent on the request id.
func (s *Store) TaskCreate(ctx context.Context, req queue.TaskRequest) (RequestOutcome, error) {
	return s.accepts.do(ctx, acceptCall{req: req})
}

// RequestReject archives a task request message and stores reason where
// an operator can list it.
func (s *Store) RequestReject(ctx context.Context, msg queue.Message, reason string) (RequestOutcome, error) {
	return s.requestReject(ctx, msg, requestIDOf(msg.Body), reason)
}

func (s *Store) requestReject(ctx context.Context, msg queue.Message, requestID uuid.UUID, reason string) (RequestOutcome, error) {
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
		if _, err := stmt("request_reject").exec(ctx, tx, args{
			"request_id": rid, "msg_id": msg.ID, "payload": payload, "reason": reason, "node_id": s.nodeID,
		}); err != nil {
			return fmt.Errorf("storing rejected request: %w", err)
		}
		if err := s.messageArchive(ctx, tx, queue.TaskRequestsQueue, msg.ID, reason); err != nil {
			return fmt.Errorf("archiving task request %d: %w", msg.ID, err)
		}
		return nil
	})
	return out, err
}

// templateWait spaces the deliveries of a request waiting for its
// template: about 1s, 2s, 4s … then every 30s, spread so that a burst of
// requests does not come back at one moment.
var templateWait = backoff.Policy{Base: time.Second, Max: 30 * time.Second, Multiplier: 2, Jitter: 0.1}

// requestWait puts off a request whose template is not registered (reason
// says what is unknown) for its next delivery, with a delay that grows with
// the waits counted in its headers; past the grace period, or with none,
// the request is rejected, the reason naming the period.
func (s *Store) requestWait(ctx context.Context, msg queue.Message, requestID uuid.UUID, reason string) (RequestOutcome, error) {
	if s.grace <= 0 {
		return s.requestReject(ctx, msg, requestID, reason)
	}
	waits := templateWaits(msg.Headers) + 1
	st, err := stmt("request_wait").forQueues("request_queue", queue.TaskRequestsQueue)
	if err != nil {
		return RequestOutcome{}, err
	}
	var (
		deadline time.Time
		visible  *time.Time
	)
	err = st.queryRow(ctx, s.pool, args{
		"msg_id": msg.ID, "grace_us": s.grace.Microseconds(), "delay_us": templateWait.Delay(waits).Microseconds(), "waits": waits,
	}).Scan(&deadline, &visible)
	if err != nil {
		return RequestOutcome{RequestID: requestID}, fmt.Errorf("putting off task request %d: %w", msg.ID, translate(err))
	}
	if visible == nil {
		return s.requestReject(ctx, msg, requestID, fmt.Sprintf("%s; not registered within queue.template_grace (%s, %d deliveries)",
			reason, s.grace, waits))
	}
	log := s.log.With("msg_id", msg.ID, "request_id", requestID, "reason", reason, "wait", waits,
		"visible_at", *visible, "rejected_after", deadline)
	switch {
	case !visible.Before(deadline):
		log.Warn("task request still waits for its template; it is rejected when queue.template_grace ends, unless the template is registered")
	case waits == 1:
		log.Info("task request waits for its template to be registered")
	default:
		log.Debug("task request waits for its template to be registered")
	}
	return RequestOutcome{RequestID: requestID, Waiting: true, Reason: reason, VisibleAt: *visible}, nil
}

// templateWaits reads how often a request message was put off.
func templateWaits(headers []byte) int {
	var h struct {
		TemplateWaits int `json:"template_waits"`
	}
	if len(headers) == 0 || json.Unmarshal(headers, &h) != nil {
		return 0
	}
	return max(h.TemplateWaits, 0)
}

// maxRejectedPayload is how much of a rejected request is kept, in bytes.
const maxRejectedPayload = 4096

// requestIDOf digs the request id out of a payload that failed validation
// (too large, too deep, a field wrong), so the rejection can still be found
// by it: it reads the top-level object token by token, never decoding a
// nested value whole, and stops at the first request_id.
func requestIDOf(body []byte) uuid.UUID {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return uuid.Nil
	}
	// The last request_id counts, as when the whole payload is decoded; the
	// reading stops at the end of the object or at the first syntax error.
	found := uuid.Nil
	depth, expectKey := 1, true
	for {
		t, err := dec.Token()
		if err != nil {
			return found
		}
		if depth == 1 && expectKey {
			key, ok := t.(string)
			if !ok {
				return found // the end of the object
			}
			if key == "request_id" {
				t, err := dec.Token()
				if err != nil {
					return found
				}
				s, _ := t.(string)
				found = uuid.Nil
				if id, err := uuid.Parse(s); err == nil {
					found = id
				}
				if d, ok := t.(json.Delim); ok && (d == '{' || d == '[') {
					depth++ // an object or array: read past it below
					expectKey = false
				}
				continue // a scalar: the next token is a key
			}
			expectKey = false
			continue
		}
		switch v := t.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
				continue
			}
			depth--
		}
		if depth == 1 {
			expectKey = true // a value of the top level has ended
		}
	}
}

// acceptCall is one task request to accept in a batch; msgID is the
// request's message, nil for a task created without one.
type acceptCall struct {
	msgID *int64
	req   queue.TaskRequest
}

// templateKey names a template as a request asks for it.
type templateKey struct{ namespace, name, version string }

// acceptRequests creates the tasks of a batch of requests: a look-up per
// distinct template asked for, then every task's creation with its
// request's deletion in one implicit transaction. A request whose template
// is refused is answered with the refusal (the caller rejects it); a
// repeated request creates nothing and is acknowledged.
func (s *Store) acceptRequests(ctx context.Context, calls []acceptCall) ([]answer[RequestOutcome], error) {
	answers := make([]answer[RequestOutcome], len(calls))
	type resolved struct {
		tmpl resolvedTemplate
		err  error
	}
	templates := map[templateKey]resolved{}
	type created struct {
		i    int
		id   uuid.UUID
		sent int64
		// throttled counts the roots waiting for their admission.
		throttled int
		digest    []byte // this request's
		stored    []byte // the request's that made the task
	}
	var (
		batched []*created
		// The roots under flow limits of the batch's tasks, by namespace,
		// admitted together once every task is in (task_roots_admit).
		limited    = map[string]*limitedRoots{}
		namespaces []string
		admitted   = map[uuid.UUID]*[2]int64{} // per task: roots enqueued, waiting
	)
	b := newBatch()
	// By namespace: every transaction takes the flow counters of
	// namespaces in the same order (migrations/0014_flow_counts.sql).
	order := make([]int, len(calls))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int { return strings.Compare(calls[i].req.Namespace, calls[j].req.Namespace) })
	for _, i := range order {
		c := calls[i]
		req := c.req
		a := &answers[i]
		a.res = RequestOutcome{RequestID: req.RequestID}
		key := templateKey{req.Namespace, req.Name, req.Version}
		r, ok := templates[key]
		if !ok {
			r.tmpl, r.err = s.templateResolve(ctx, s.pool, req.Namespace, req.Name, req.Version)
			templates[key] = r
		}
		if r.err != nil {
			a.err = r.err
			continue
		}
		cr := &created{i: i}
		var err error
		if cr.digest, err = requestDigest(req); err != nil {
			a.err = err
			continue
		}
		lr := limited[req.Namespace]
		if lr == nil {
			lr = &limitedRoots{}
		}
		before := len(lr.steps)
		if cr.id, err = s.queueTaskCreate(b, c, r.tmpl, cr.digest, &a.res.TaskUUID, &cr.stored, &cr.sent, lr); err != nil {
			a.err = err
			continue
		}
		if len(lr.steps) > before && limited[req.Namespace] == nil {
			limited[req.Namespace] = lr
			namespaces = append(namespaces, req.Namespace)
		}
		batched = append(batched, cr)
	}
	if len(batched) == 0 {
		return answers, nil
	}
	if len(namespaces) > 0 {
		s.queueFlowShard(b, 0)
	}
	for _, ns := range namespaces {
		if err := s.queueRootsAdmit(b, ns, limited[ns], admitted); err != nil {
			return nil, err
		}
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("creating tasks: %w", translate(err))
	}
	for _, cr := range batched {
		if n := admitted[cr.id]; n != nil {
			cr.sent, cr.throttled = cr.sent+n[0], int(n[1])
		}
		if cr.throttled > 0 {
			s.flowChanged()
		}
		out := &answers[cr.i].res
		switch {
		case out.TaskUUID == cr.id:
			out.Created, out.Enqueued, out.Throttled = true, int(cr.sent), cr.throttled
		case cr.stored != nil && !bytes.Equal(cr.stored, cr.digest):
			// The request id made a task of another request: this one is
			// not a repeat, and is refused rather than taken for one.
			answers[cr.i].err = &RefusedError{Action: "task request", Reason: fmt.Sprintf(
				"request_id %s was already used by task %s for a different request (namespace, name, version, context, priority, requested_by or correlation_id differ)",
				out.RequestID, out.TaskUUID)}
		}
	}
	return answers, nil
}

// limitedRoots are roots under flow limits of new tasks of one namespace,
// and their messages, to admit together (task_roots_admit).
type limitedRoots struct {
	steps [][16]byte
	msgs  [][]byte
}

// queueRootsAdmit adds to b the admission of the roots under flow limits
// of a batch's new tasks of namespace; each task's count of roots enqueued
// and waiting goes to admitted.
func (s *Store) queueRootsAdmit(b *pgx.Batch, namespace string, roots *limitedRoots, admitted map[uuid.UUID]*[2]int64) error {
	st, err := stmt("task_roots_admit").forQueues("step_queue", queue.NamespaceQueue(namespace))
	if err != nil {
		return err
	}
	policyGroups, policyMax, policyByRound := s.FlowPolicy().Arrays()
	st.queue(b, args{
		"namespace": namespace, "roots": roots.steps, "messages": roots.msgs, "pending": string(workflow.StepStatePending),
		"enqueued": string(enqueueTo), "throttled": string(throttleTo), "ready_reason": workflow.ReasonStepReady,
		"throttled_reason": workflow.ReasonStepThrottled, "node_id": s.nodeID, "wake_channel": WakeChannel,
		"wake_queue": queue.NamespaceQueue(namespace), "policy_groups": policyGroups, "policy_max": policyMax,
		"policy_by_round": policyByRound,
	}).Query(func(rows pgx.Rows) error {
		var (
			task            uuid.UUID
			enqueued, waits int64
		)
		_, err := pgx.ForEachRow(rows, []any{scanUUID(&task), &enqueued, &waits}, func() error {
			admitted[task] = &[2]int64{enqueued, waits}
			return nil
		})
		return err
	})
	return nil
}

// queueTaskCreate adds one task's creation to b, as workflow plans it: the
// task row first, then every other row only if that row is the one this
// batch inserted, the roots' messages, and the request's deletion. The task
// of the request (this one, or the one an earlier request with its id
// created) is scanned into task, the roots sent into sent. Roots under flow
// limits are inserted pending and added to limited, for the batch to
// admit together. It returns the new task's id.
func (s *Store) queueTaskCreate(b *pgx.Batch, c acceptCall, tmpl resolvedTemplate, digest []byte, task *uuid.UUID, stored *[]byte, sent *int64, limited *limitedRoots) (uuid.UUID, error) {
	req := c.req
	taskContext := req.Context
	if taskContext == "" {
		taskContext = "{}"
	}
	p, err := workflow.PlanTaskFlow(tmpl.Steps, workflow.TaskFlow{
		Policy: s.FlowPolicy(), Namespace: req.Namespace, Template: req.Name, Context: json.RawMessage(taskContext),
	}, uuid.NewV7)
	if err != nil {
		return uuid.Nil, &RefusedError{Action: "task request",
			Reason: fmt.Sprintf("template %s/%s %s: %v", req.Namespace, req.Name, tmpl.Version, err)}
	}
	stepQueue := queue.NamespaceQueue(req.Namespace)
	roots, err := stmt("task_roots_send").forQueues("step_queue", stepQueue, "request_queue", queue.TaskRequestsQueue)
	if err != nil {
		return uuid.Nil, err
	}
	correlation := req.CorrelationID
	if correlation == uuid.Nil {
		correlation = req.RequestID
	}
	n := len(p.Steps)
	var (
		ids                               [][16]byte
		names, handlers, configs, states  = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		positions, maxAttempts, waiting   = make([]int32, n), make([]int32, n), make([]int32, n)
		retryable                         = make([]bool, n)
		timeouts, backoffBase, backoffMax = make([]int64, n), make([]int64, n), make([]int64, n)
		edgeFrom, edgeTo                  [][16]byte
		rootIDs                           [][16]byte
		rootMsgs                          [][]byte
		moveSteps                         [][16]byte
		moveFrom, moveTo, moveWhy         []string
		taskFrom, taskTo, taskWhy         []string
		flow                              = newFlowColumns(n)
		waits                             = map[int]bool{} // roots left to the batch's admission
	)
	ids = make([][16]byte, n)
	for i, st := range p.Steps {
		ids[i] = st.ID
		names[i], handlers[i], positions[i], states[i] = st.Name, st.Handler, int32(i), string(st.State)
		configs[i] = string(st.Config)
		if configs[i] == "" {
			configs[i] = "{}"
		}
		maxAttempts[i], retryable[i], waiting[i] = int32(st.Retry.MaxAttempts), st.Retry.Retryable, int32(len(st.DependsOn))
		timeouts[i] = st.Timeout.Milliseconds()
		backoffBase[i], backoffMax[i] = st.Retry.BackoffBase.Milliseconds(), st.Retry.BackoffMax.Milliseconds()
		flow.set(i, st.Groups, st.Key)
		if st.Root() {
			msg, err := queue.StepMessage{TaskUUID: p.Task, StepUUID: st.ID, CorrelationID: correlation}.Encode()
			if err != nil {
				return uuid.Nil, fmt.Errorf("encoding step message: %w", err)
			}
			if st.State == throttleTo {
				waits[i], states[i] = true, string(workflow.StepStatePending)
				limited.steps, limited.msgs = append(limited.steps, ids[i]), append(limited.msgs, msg)
				continue
			}
			rootIDs, rootMsgs = append(rootIDs, ids[i]), append(rootMsgs, msg)
		}
	}
	for _, e := range p.Edges {
		edgeFrom, edgeTo = append(edgeFrom, ids[e.From]), append(edgeTo, ids[e.To])
	}
	for _, m := range p.StepMoves {
		if waits[m.Step] && m.To == throttleTo {
			continue // recorded by task_roots_admit
		}
		moveSteps = append(moveSteps, ids[m.Step])
		moveFrom, moveTo, moveWhy = append(moveFrom, string(m.From)), append(moveTo, string(m.To)), append(moveWhy, m.Reason)
	}
	for _, m := range p.TaskMoves {
		taskFrom, taskTo, taskWhy = append(taskFrom, string(m.From)), append(taskTo, string(m.To)), append(taskWhy, m.Reason)
	}
	id := pgUUID(p.Task)
	stmt("task_insert").queue(b, args{
		"task": id, "request_id": pgUUID(req.RequestID), "correlation_id": pgUUID(correlation), "template_id": tmpl.ID,
		"namespace": req.Namespace, "name": req.Name, "version": tmpl.Version, "state": string(p.State),
		"context": taskContext, "priority": req.Priority, "requested_by": req.RequestedBy, "digest": digest,
		"trace": queue.TraceHeaders(req.Trace),
	})
	stmt("task_steps_insert").queue(b, args{
		"task": id, "namespace": req.Namespace, "enqueued": string(enqueueTo), "steps": ids, "names": names,
		"positions": positions, "handlers": handlers, "configs": configs, "states": states,
		"max_attempts": maxAttempts, "retryable": retryable, "timeouts_ms": timeouts,
		"backoff_base_ms": backoffBase, "backoff_max_ms": backoffMax, "waiting": waiting,
		"flow_groups": flow.groups, "flow_max": flow.max, "flow_interval_us": flow.intervalUS, "flow_burst": flow.burst,
		"flow_keys": flow.keys,
	})
	if len(edgeFrom) > 0 {
		stmt("task_edges_insert").queue(b, args{"task": id, "from_steps": edgeFrom, "to_steps": edgeTo})
	}
	stmt("task_transitions_insert").queue(b, args{
		"task": id, "from_states": taskFrom, "to_states": taskTo, "reasons": taskWhy, "node_id": s.nodeID,
	})
	stmt("task_step_transitions_insert").queue(b, args{
		"task": id, "steps": moveSteps, "from_states": moveFrom, "to_states": moveTo, "reasons": moveWhy, "node_id": s.nodeID,
	})
	var woke, acked int64
	roots.queue(b, args{
		"roots": rootIDs, "messages": rootMsgs, "enqueued": string(enqueueTo), "task": id, "wake_channel": WakeChannel, "wake_queue": stepQueue,
		"msg_id": c.msgID, "request_id": pgUUID(req.RequestID), "digest": digest, "trace": queue.TraceHeaders(req.Trace),
	}).QueryRow(func(row pgx.Row) error {
		return row.Scan(scanUUID(task), stored, sent, &woke, &acked)
	})
	return p.Task, nil
}

// requestDigest is the SHA-256 of a request's canonical form, kept on its
// task so a request id used again can be told a repeat or another request.
func requestDigest(req queue.TaskRequest) ([]byte, error) {
	body, err := req.Encode()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	return sum[:], nil
}

// RequestReplay sends the rejected task request of message msgID again: its
// archived body becomes a new message on the request queue (its headers
// name msgID), and the rejection records that message, so the replay is
// listed. A rejection is replayed once: a second replay is refused, naming
// the message the first one sent (replay that message's rejection, if it
// was rejected too). It returns the rejection as recorded afterwards.
func (s *Store) RequestReplay(ctx context.Context, msgID int64) (RejectedRequest, error) {
	var rr RejectedRequest
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var (
			id         int64
			replayedTo *int64
			replayedAt *time.Time
		)
		err := stmt("rejected_lock").queryRow(ctx, tx, args{"msg_id": msgID}).Scan(&id, &replayedTo, &replayedAt)
		if errors.Is(translate(err), ErrNotFound) {
			return fmt.Errorf("no rejected task request has message id %d: %w", msgID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading the rejection of message %d: %w", msgID, err)
		}
		if replayedTo != nil {
			return &RefusedError{Action: "replay", Reason: fmt.Sprintf(
				"message %d was already replayed, as message %d at %s; if that one was rejected too, replay it instead",
				msgID, *replayedTo, replayedAt.UTC().Format(time.RFC3339))}
		}
		st, err := stmt("request_replay").forQueues("request_queue", queue.TaskRequestsQueue)
		if err != nil {
			return err
		}
		var (
			sent int64
			at   time.Time
			woke int64
		)
		err = st.queryRow(ctx, tx, args{
			"msg_id": msgID, "id": id, "wake_channel": WakeChannel, "wake_queue": queue.TaskRequestsQueue,
		}).Scan(&sent, &at, &woke)
		if errors.Is(translate(err), ErrNotFound) {
			return &RefusedError{Action: "replay", Reason: fmt.Sprintf(
				"message %d is no longer in the archive of %s; send the request again instead", msgID, queue.TaskRequestsQueue)}
		}
		if err != nil {
			return fmt.Errorf("replaying message %d: %w", msgID, translate(err))
		}
		rr, err = scanRejected(stmt("rejected_get").queryRow(ctx, tx, args{"id": id}))
		return err
	})
	return rr, err
}
