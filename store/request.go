package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
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
// request's deletion in one implicit transaction, one statement per kind
// of row for the whole batch (taskRows). A request whose template is
// refused is answered with the refusal (the caller rejects it); a repeated
// request creates nothing and is acknowledged.
func (s *Store) acceptRequests(ctx context.Context, calls []acceptCall) ([]answer[RequestOutcome], error) {
	answers := make([]answer[RequestOutcome], len(calls))
	type resolved struct {
		tmpl resolvedTemplate
		err  error
	}
	templates := map[templateKey]resolved{}
	type created struct {
		i      int
		id     uuid.UUID
		digest []byte // this request's
	}
	var (
		batched []*created
		rows    = &taskRows{}
		// Per request id: the task of its id and that task's digest.
		made     = map[uuid.UUID]madeTask{}
		sent     = map[uuid.UUID]int64{}
		admitted = map[uuid.UUID]*[2]int64{} // per task: roots enqueued, waiting
	)
	// The templates first: the batch's rows are then sized at once.
	resolvedOf := make([]resolved, len(calls))
	tasks, steps := 0, 0
	for i, c := range calls {
		key := templateKey{c.req.Namespace, c.req.Name, c.req.Version}
		r, ok := templates[key]
		if !ok {
			r.tmpl, r.err = s.templateResolve(ctx, s.pool, c.req.Namespace, c.req.Name, c.req.Version)
			templates[key] = r
		}
		resolvedOf[i] = r
		if r.err == nil {
			tasks, steps = tasks+1, steps+len(r.tmpl.Steps)
		}
	}
	rows.grow(tasks, steps)
	for i, c := range calls {
		req := c.req
		a := &answers[i]
		a.res = RequestOutcome{RequestID: req.RequestID}
		r := resolvedOf[i]
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
		if cr.id, err = s.planTaskCreate(rows, c, r.tmpl, cr.digest); err != nil {
			a.err = err
			continue
		}
		batched = append(batched, cr)
	}
	if len(batched) == 0 {
		return answers, nil
	}
	b := newBatch()
	if err := s.queueTasksCreate(b, rows, made, sent, admitted); err != nil {
		return nil, err
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("creating tasks: %w", translate(err))
	}
	for _, cr := range batched {
		out := &answers[cr.i].res
		m, ok := made[out.RequestID]
		if !ok {
			answers[cr.i].err = fmt.Errorf("request_id %s: no task holds it after its creation", out.RequestID)
			continue
		}
		out.TaskUUID = m.task
		n, throttled := sent[cr.id], 0
		if a := admitted[cr.id]; a != nil {
			n, throttled = n+a[0], int(a[1])
		}
		if throttled > 0 {
			s.flowChanged()
		}
		switch {
		case m.task == cr.id:
			out.Created, out.Enqueued, out.Throttled = true, int(n), throttled
		case m.digest != nil && !bytes.Equal(m.digest, cr.digest):
			// The request id made a task of another request: this one is
			// not a repeat, and is refused rather than taken for one.
			answers[cr.i].err = &RefusedError{Action: "task request", Reason: fmt.Sprintf(
				"request_id %s was already used by task %s for a different request (namespace, name, version, context, priority, requested_by or correlation_id differ)",
				out.RequestID, out.TaskUUID)}
		}
	}
	return answers, nil
}

// madeTask is the task a request id made, and that task's request digest
// (nil for a task from before digests were kept).
type madeTask struct {
	task   uuid.UUID
	digest []byte
}

// taskRows are the rows of a batch's new tasks, as the statements that
// insert them take them: one element per task, step, edge or transition,
// each step and transition naming its task (an edge, a pair of steps, goes
// into their rows).
type taskRows struct {
	// The tasks, with their requests.
	tasks, requestIDs, correlations               [][16]byte
	templateIDs                                   []int64
	namespaces, names, versions, states, contexts []string
	priorities                                    []int32
	requestedBy                                   []string
	digests, traces                               [][]byte
	msgIDs                                        []*int64
	taskMoveTasks                                 [][16]byte
	taskFrom, taskTo, taskWhy                     []string
	steps, stepTasks                              [][16]byte
	stepNamespaces, stepNames, handlers, configs  []string
	stepStates                                    []string
	positions, maxAttempts, waiting               []int32
	retryable                                     []bool
	timeouts, backoffBase, backoffMax             []int64
	flow                                          flowColumns
	edgeFrom, edgeTo                              [][16]byte
	moveSteps, moveTasks                          [][16]byte
	moveFrom, moveTo, moveWhy                     []string
	// The roots to enqueue at once, and those under flow limits left to
	// the batch's admission (task_roots_admit), by namespace.
	roots, limited map[string]*rootMessages
}

// grow makes room in rows for tasks more tasks of steps more steps in
// all, so that planning them appends without growing a slice again (a
// task's moves and edges are taken to be about as many as its steps).
func (r *taskRows) grow(tasks, steps int) {
	r.tasks, r.requestIDs, r.correlations = slices.Grow(r.tasks, tasks), slices.Grow(r.requestIDs, tasks), slices.Grow(r.correlations, tasks)
	r.templateIDs, r.priorities = slices.Grow(r.templateIDs, tasks), slices.Grow(r.priorities, tasks)
	for _, v := range []*[]string{&r.namespaces, &r.names, &r.versions, &r.states, &r.contexts, &r.requestedBy} {
		*v = slices.Grow(*v, tasks)
	}
	r.digests, r.traces, r.msgIDs = slices.Grow(r.digests, tasks), slices.Grow(r.traces, tasks), slices.Grow(r.msgIDs, tasks)
	for _, v := range []*[][16]byte{&r.taskMoveTasks, &r.steps, &r.stepTasks, &r.edgeFrom, &r.edgeTo, &r.moveSteps, &r.moveTasks} {
		*v = slices.Grow(*v, steps)
	}
	for _, v := range []*[]string{&r.taskFrom, &r.taskTo, &r.taskWhy, &r.stepNamespaces, &r.stepNames, &r.handlers, &r.configs,
		&r.stepStates, &r.moveFrom, &r.moveTo, &r.moveWhy} {
		*v = slices.Grow(*v, steps)
	}
	for _, v := range []*[]int32{&r.positions, &r.maxAttempts, &r.waiting} {
		*v = slices.Grow(*v, steps)
	}
	r.retryable = slices.Grow(r.retryable, steps)
	for _, v := range []*[]int64{&r.timeouts, &r.backoffBase, &r.backoffMax} {
		*v = slices.Grow(*v, steps)
	}
	for _, v := range []*[]*string{&r.flow.groups, &r.flow.max, &r.flow.intervalUS, &r.flow.burst, &r.flow.keys} {
		*v = slices.Grow(*v, steps)
	}
}

// rootMessages are roots of new tasks of one namespace and their messages.
type rootMessages struct {
	steps [][16]byte
	msgs  [][]byte
}

// addRoot adds step's message to the roots of namespace in to.
func addRoot(to *map[string]*rootMessages, namespace string, step [16]byte, msg []byte) {
	if *to == nil {
		*to = map[string]*rootMessages{}
	}
	r := (*to)[namespace]
	if r == nil {
		r = &rootMessages{}
		(*to)[namespace] = r
	}
	r.steps, r.msgs = append(r.steps, step), append(r.msgs, msg)
}

// queueTasksCreate adds to b the creation of rows' tasks: the task rows
// first, then every other row only if its task is one this batch
// inserted, the roots' messages (one statement per namespace), the
// admission of the roots under flow limits (one per namespace), and the
// requests' deletion. What each request id made goes to made, the roots
// sent of each task to sent, those admitted or left waiting to admitted.
func (s *Store) queueTasksCreate(b *pgx.Batch, rows *taskRows, made map[uuid.UUID]madeTask, sent map[uuid.UUID]int64, admitted map[uuid.UUID]*[2]int64) error {
	stmt("tasks_insert").queue(b, args{
		"tasks": rows.tasks, "request_ids": rows.requestIDs, "correlation_ids": rows.correlations,
		"template_ids": rows.templateIDs, "namespaces": rows.namespaces, "names": rows.names, "versions": rows.versions,
		"states": rows.states, "contexts": rows.contexts, "priorities": rows.priorities,
		"requested_by": rows.requestedBy, "digests": rows.digests, "traces": rows.traces,
	})
	stmt("tasks_steps_insert").queue(b, args{
		"steps": rows.steps, "tasks": rows.stepTasks, "namespaces": rows.stepNamespaces, "enqueued": string(enqueueTo),
		"names": rows.stepNames, "positions": rows.positions, "handlers": rows.handlers, "configs": rows.configs,
		"states": rows.stepStates, "max_attempts": rows.maxAttempts, "retryable": rows.retryable,
		"timeouts_ms": rows.timeouts, "backoff_base_ms": rows.backoffBase, "backoff_max_ms": rows.backoffMax,
		"waiting": rows.waiting, "flow_groups": rows.flow.groups, "flow_max": rows.flow.max,
		"flow_interval_us": rows.flow.intervalUS, "flow_burst": rows.flow.burst, "flow_keys": rows.flow.keys,
		"edge_from": rows.edgeFrom, "edge_to": rows.edgeTo,
	})
	stmt("tasks_transitions_insert").queue(b, args{
		"tasks": rows.taskMoveTasks, "from_states": rows.taskFrom, "to_states": rows.taskTo, "reasons": rows.taskWhy,
		"node_id": s.nodeID,
	})
	if len(rows.moveSteps) > 0 {
		stmt("tasks_step_transitions_insert").queue(b, args{
			"steps": rows.moveSteps, "tasks": rows.moveTasks, "from_states": rows.moveFrom, "to_states": rows.moveTo,
			"reasons": rows.moveWhy, "node_id": s.nodeID,
		})
	}
	for _, ns := range slices.Sorted(maps.Keys(rows.roots)) {
		stepQueue := queue.NamespaceQueue(ns)
		st, err := stmt("tasks_roots_send").forQueues("step_queue", stepQueue)
		if err != nil {
			return err
		}
		r := rows.roots[ns]
		st.queue(b, args{
			"roots": r.steps, "messages": r.msgs, "enqueued": string(enqueueTo), "wake_channel": WakeChannel,
			"wake_queue": stepQueue,
		}).Query(func(res pgx.Rows) error {
			var (
				task uuid.UUID
				n    int64
			)
			_, err := pgx.ForEachRow(res, []any{scanUUID(&task), &n}, func() error {
				sent[task] = n
				return nil
			})
			return err
		})
	}
	if len(rows.limited) > 0 {
		s.queueFlowShard(b, 0)
		// In order: every transaction takes the flow counters of
		// namespaces in the same order (migrations/0014_flow_counts.sql).
		for _, ns := range slices.Sorted(maps.Keys(rows.limited)) {
			if err := s.queueRootsAdmit(b, ns, rows.limited[ns], admitted); err != nil {
				return err
			}
		}
	}
	ack, err := stmt("requests_ack").forQueues("request_queue", queue.TaskRequestsQueue)
	if err != nil {
		return err
	}
	ack.queue(b, args{
		"request_ids": rows.requestIDs, "tasks": rows.tasks, "msg_ids": rows.msgIDs, "digests": rows.digests,
	}).Query(func(res pgx.Rows) error {
		var (
			request uuid.UUID
			task    *[16]byte
			digest  []byte
		)
		_, err := pgx.ForEachRow(res, []any{scanUUID(&request), &task, &digest}, func() error {
			if task != nil {
				made[request] = madeTask{task: *task, digest: digest}
			}
			return nil
		})
		return err
	})
	return nil
}

// queueRootsAdmit adds to b the admission of the roots under flow limits
// of a batch's new tasks of namespace; each task's count of roots enqueued
// and waiting goes to admitted.
func (s *Store) queueRootsAdmit(b *pgx.Batch, namespace string, roots *rootMessages, admitted map[uuid.UUID]*[2]int64) error {
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

// planTaskCreate adds one task's rows to rows, as workflow plans it, and
// returns the new task's id. Roots under flow limits are inserted pending,
// for the batch to admit together.
func (s *Store) planTaskCreate(rows *taskRows, c acceptCall, tmpl resolvedTemplate, digest []byte) (uuid.UUID, error) {
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
	// The namespace's queue is named by the batch's statements
	// (forQueues): a name it refuses fails this request alone, here.
	if _, err := queue.Table(queue.NamespaceQueue(req.Namespace)); err != nil {
		return uuid.Nil, err
	}
	correlation := req.CorrelationID
	if correlation == uuid.Nil {
		correlation = req.RequestID
	}
	// Encoded before anything is added, so a failure leaves rows whole.
	msgs := make([][]byte, len(p.Steps))
	for i, st := range p.Steps {
		if st.Root() {
			if msgs[i], err = (queue.StepMessage{TaskUUID: p.Task, StepUUID: st.ID, CorrelationID: correlation}).Encode(); err != nil {
				return uuid.Nil, fmt.Errorf("encoding step message: %w", err)
			}
		}
	}
	id := pgUUID(p.Task)
	rows.tasks, rows.requestIDs, rows.correlations = append(rows.tasks, id), append(rows.requestIDs, pgUUID(req.RequestID)), append(rows.correlations, pgUUID(correlation))
	rows.templateIDs = append(rows.templateIDs, tmpl.ID)
	rows.namespaces, rows.names, rows.versions = append(rows.namespaces, req.Namespace), append(rows.names, req.Name), append(rows.versions, tmpl.Version)
	rows.states, rows.contexts = append(rows.states, string(p.State)), append(rows.contexts, taskContext)
	rows.priorities, rows.requestedBy = append(rows.priorities, int32(req.Priority)), append(rows.requestedBy, req.RequestedBy)
	rows.digests, rows.traces = append(rows.digests, digest), append(rows.traces, queue.TraceHeaders(req.Trace))
	rows.msgIDs = append(rows.msgIDs, c.msgID)
	waits := map[int]bool{} // roots left to the batch's admission
	for i, st := range p.Steps {
		state := string(st.State)
		if st.Root() {
			if st.State == throttleTo {
				waits[i], state = true, string(workflow.StepStatePending)
				addRoot(&rows.limited, req.Namespace, st.ID, msgs[i])
			} else {
				addRoot(&rows.roots, req.Namespace, st.ID, msgs[i])
			}
		}
		config := string(st.Config)
		if config == "" {
			config = "{}"
		}
		rows.steps, rows.stepTasks = append(rows.steps, st.ID), append(rows.stepTasks, id)
		rows.stepNamespaces, rows.stepNames, rows.handlers = append(rows.stepNamespaces, req.Namespace), append(rows.stepNames, st.Name), append(rows.handlers, st.Handler)
		rows.configs, rows.stepStates = append(rows.configs, config), append(rows.stepStates, state)
		rows.positions, rows.maxAttempts = append(rows.positions, int32(i)), append(rows.maxAttempts, int32(st.Retry.MaxAttempts))
		rows.waiting, rows.retryable = append(rows.waiting, int32(len(st.DependsOn))), append(rows.retryable, st.Retry.Retryable)
		rows.timeouts = append(rows.timeouts, st.Timeout.Milliseconds())
		rows.backoffBase, rows.backoffMax = append(rows.backoffBase, st.Retry.BackoffBase.Milliseconds()), append(rows.backoffMax, st.Retry.BackoffMax.Milliseconds())
		rows.flow.add(st.Groups, st.Key)
	}
	for _, e := range p.Edges {
		rows.edgeFrom, rows.edgeTo = append(rows.edgeFrom, p.Steps[e.From].ID), append(rows.edgeTo, p.Steps[e.To].ID)
	}
	for _, m := range p.StepMoves {
		if waits[m.Step] && m.To == throttleTo {
			continue // recorded by task_roots_admit
		}
		rows.moveSteps, rows.moveTasks = append(rows.moveSteps, p.Steps[m.Step].ID), append(rows.moveTasks, id)
		rows.moveFrom, rows.moveTo, rows.moveWhy = append(rows.moveFrom, string(m.From)), append(rows.moveTo, string(m.To)), append(rows.moveWhy, m.Reason)
	}
	for _, m := range p.TaskMoves {
		rows.taskMoveTasks = append(rows.taskMoveTasks, id)
		rows.taskFrom, rows.taskTo, rows.taskWhy = append(rows.taskFrom, string(m.From)), append(rows.taskTo, string(m.To)), append(rows.taskWhy, m.Reason)
	}
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
