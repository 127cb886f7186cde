package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

const (
	queueTaskRequests = queue.TaskRequestsQueue
	queueStepResults  = queue.StepResultsQueue
)

// handleFunc applies one orchestration message. It returns an error only
// for failures of the database (which count against the breaker); whatever
// the message itself deserves (rejection, being ignored) is its own
// business.
type handleFunc func(ctx context.Context, s *System, m queue.Message) error

// consumer is an orchestration actor: the task-request actor and the
// step-result actor are both a consumer of one shared queue that handles
// each message itself, in one transaction per message (which the store may
// group with others into one commit).
type consumer struct {
	loop   pollLoop
	handle handleFunc
	// due applies the outcomes that this node's workers hand over in the
	// process (the step-result actor only); nil elsewhere.
	due dueFunc
}

// dueFunc applies one outcome handed over in the node; like handleFunc, it
// returns an error only for failures of the database.
type dueFunc func(ctx context.Context, s *System, d outcomeDue) error

func newConsumer(s *System, path, queueName string, h handleFunc) *consumer {
	return &consumer{
		loop: pollLoop{sys: s, path: path, queue: queueName, interval: s.settings.OrchestrationPollInterval,
			vt: s.settings.OrchestrationVisibility, breaker: s.Breakers()[OrchestrationComponent]},
		handle: h,
	}
}

func (c *consumer) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		c.loop.sys.tree.setStatus(c.loop.path, StatusRunning)
		c.loop.sys.registerWaker(c.loop.queue, ctx.Self())
		c.loop.schedule(ctx, 0)
	case *actor.Restarting:
		c.loop.stopTimer()
		c.loop.sys.tree.setStatus(c.loop.path, StatusRestarting)
	case *actor.Stopping:
		c.loop.stopTimer()
		c.loop.sys.tree.setStatus(c.loop.path, StatusStopped)
	case wake:
		c.poll(ctx)
	case outcomeDue:
		switch {
		case msg.Due.Carried:
			c.applyCarried(ctx, msg)
		case c.due != nil:
			c.handleDue(ctx, msg)
		}
	case duePanicked:
		panic(msg.Value)
	case pollTick:
		if c.loop.current(msg) {
			c.poll(ctx)
		}
	}
}

func (c *consumer) poll(ctx actor.Context) {
	batch := c.loop.sys.settings.BatchSize
	msgs, lease, wait := c.loop.read(batch)
	if c.loop.sys.stopping.Load() {
		return
	}
	if wait > 0 {
		c.loop.schedule(ctx, wait)
		return
	}
	c.handleAll(msgs, lease)
	if len(msgs) == batch {
		c.loop.schedule(ctx, 0)
		return
	}
	c.loop.schedule(ctx, c.loop.interval)
}

// handleAll handles the messages of one read concurrently, each in its own
// transaction, and returns when all are done. The store groups concurrent
// calls into batches, so a read of n messages costs a few round trips, not
// n; two messages of one task are still applied one after the other.
// A panic in one of them is raised again in the actor once all are done,
// so the supervisor restarts the actor as if it had handled them itself.
// A message the database fails on is held and tried again once it answers
// (System.runHeld), until its lease ends.
func (c *consumer) handleAll(msgs []queue.Message, lease time.Time) {
	var (
		wg       sync.WaitGroup
		panicked atomic.Pointer[any]
	)
	for _, m := range msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					panicked.CompareAndSwap(nil, &r)
				}
			}()
			c.handleOne(m, lease)
		}()
	}
	wg.Wait()
	if r := panicked.Load(); r != nil {
		panic(*r)
	}
}

func (c *consumer) handleOne(m queue.Message, lease time.Time) {
	if c.loop.sys.stopping.Load() {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			c.loop.sys.applyFailed(c.loop.queue, m.ID, m.ReadCount, fmt.Errorf("panic: %v", r))
			panic(r)
		}
	}()
	held := heldTry{breaker: c.loop.breaker, lease: func() time.Time { return lease }, queue: c.loop.queue}
	err := c.loop.sys.runHeld(held, func() error {
		// Bounded by the shutdown timeout too: a transaction stuck on an
		// unreachable database must not hold the tree up past it (it
		// rolls back, and the message is read again).
		hctx, cancel := context.WithTimeout(c.loop.sys.handlerCtx, dbTimeout)
		defer cancel()
		return c.handle(hctx, c.loop.sys, m)
	})
	if err != nil {
		c.loop.sys.log.Warn("handling message failed; it is left to redelivery", "queue", c.loop.queue, "msg_id", m.ID, "error", err)
		c.loop.sys.applyFailed(c.loop.queue, m.ID, m.ReadCount, err)
	}
}

// handleDue applies an outcome handed over in the node on a goroutine of
// its own, so that the outcomes handed over at the same moment go to the
// store together (which groups them into batches); the actor goes on to
// its next message. A panic is sent back to the actor, to be raised there.
// A failure of the database holds the outcome until its step message's
// lease ends; then the message's redelivery brings it back.
func (c *consumer) handleDue(ctx actor.Context, d outcomeDue) {
	s, self := c.loop.sys, ctx.Self()
	go func() {
		q := queue.NamespaceQueue(d.Due.Namespace)
		defer func() {
			if r := recover(); r != nil {
				s.applyFailed(q, d.Due.MsgID, d.ReadCount, fmt.Errorf("panic: %v", r))
				s.system.Root.Send(self, duePanicked{Value: r})
			}
		}()
		if s.stopping.Load() {
			return
		}
		// The step message stays invisible while the outcome is applied,
		// however slow the database is: read again, it would be applied
		// twice at once.
		lease := &leaseEnd{}
		lease.set(d.Lease)
		defer s.keepInvisible(q, d.Due.MsgID, s.namespaceVisibility(d.Due.Namespace), lease).stop()
		held := heldTry{breaker: c.loop.breaker, lease: lease.get, queue: q}
		err := s.runHeld(held, func() error {
			hctx, cancel := context.WithTimeout(s.handlerCtx, dbTimeout)
			defer cancel()
			return c.due(hctx, s, d)
		})
		if err != nil {
			s.log.Warn("applying outcome failed; its step message is left to redelivery", "namespace", d.Due.Namespace,
				"msg_id", d.Due.MsgID, "step_uuid", d.Due.StepUUID, "error", err)
			s.applyFailed(q, d.Due.MsgID, d.ReadCount, err)
		}
	}()
}

// applyCarried applies, on a goroutine of its own (as handleDue), an
// outcome a worker carries recorded nowhere yet, in one try through the
// breaker, and answers the worker whether it was applied (or ignored with
// its step message acknowledged, its task no longer in progress). A worker's
// tail told no records the outcome itself, so nothing here holds the
// outcome through a failure, counts the failure against the message or
// acknowledges anything; the tail keeps the step message invisible
// meanwhile.
func (c *consumer) applyCarried(ctx actor.Context, d outcomeDue) {
	s, self, sender := c.loop.sys, ctx.Self(), ctx.Sender()
	go func() {
		applied := false
		defer func() {
			r := recover()
			if sender != nil {
				s.system.Root.Send(sender, carriedApplied{OK: applied})
			}
			if r != nil {
				s.system.Root.Send(self, duePanicked{Value: r})
			}
		}()
		if s.stopping.Load() || c.due == nil {
			return
		}
		var (
			out store.ResultOutcome
			err error
		)
		brokeErr := c.loop.breaker.Run(func() error {
			hctx, cancel := context.WithTimeout(s.handlerCtx, dbTimeout)
			defer cancel()
			out, err = s.deps.Store.OutcomeApply(hctx, d.Due)
			if store.MessageFault(err) || errors.Is(err, store.ErrStale) {
				return nil // the outcome's, not the database's
			}
			return err
		})
		if brokeErr != nil || err != nil || out.Unrecorded {
			return
		}
		applied = true
		_ = s.resultApplied(d.Due.MsgID, out, nil)
	}()
}

// acceptRequest turns one task request into a task.
func acceptRequest(ctx context.Context, s *System, m queue.Message) error {
	var (
		out store.RequestOutcome
		err error
	)
	reason, quarantine, err := s.overDelivered(ctx, "request", queueTaskRequests, m.ID, m.ReadCount)
	if err != nil {
		return err
	}
	if quarantine {
		out, err = s.deps.Store.RequestReject(ctx, m, reason)
	} else {
		out, err = s.deps.Store.RequestAccept(ctx, m)
	}
	if err != nil {
		return err
	}
	switch {
	case out.Rejected:
		s.log.Warn("task request rejected", "msg_id", m.ID, "request_id", out.RequestID, "reason", out.Reason)
	case out.Created:
		s.log.Debug("task created", "task_uuid", out.TaskUUID, "request_id", out.RequestID, "enqueued", out.Enqueued)
	case out.Waiting:
		// The store logs the wait (INFO on the first, WARN on the last).
		s.log.Debug("task request put off until its template is registered", "msg_id", m.ID, "request_id", out.RequestID,
			"visible_at", out.VisibleAt, "reason", out.Reason)
	default:
		s.log.Info("repeated task request ignored", "task_uuid", out.TaskUUID, "request_id", out.RequestID)
	}
	if s.deps.RequestHandled != nil {
		s.deps.RequestHandled(out)
	}
	return nil
}

// applyResult applies one step result message.
func applyResult(ctx context.Context, s *System, m queue.Message) error {
	var (
		out store.ResultOutcome
		err error
	)
	reason, quarantine, err := s.overDelivered(ctx, "result", queueStepResults, m.ID, m.ReadCount)
	if err != nil {
		return err
	}
	if quarantine {
		s.log.Error("quarantining a step result that keeps failing", "msg_id", m.ID, "reason", reason)
		out, err = s.deps.Store.ResultQuarantine(ctx, m, reason)
	} else {
		out, err = s.deps.Store.ResultApply(ctx, m)
	}
	return s.resultApplied(m.ID, out, err)
}

// applyDue applies one outcome handed over in the node; its step message's
// deliveries count as the result's.
func applyDue(ctx context.Context, s *System, d outcomeDue) error {
	var (
		out store.ResultOutcome
		err error
	)
	reason, quarantine, err := s.overDelivered(ctx, "result", queue.NamespaceQueue(d.Due.Namespace), d.Due.MsgID, d.ReadCount)
	if err != nil {
		return err
	}
	if quarantine {
		s.log.Error("quarantining a step outcome that keeps failing", "namespace", d.Due.Namespace, "msg_id", d.Due.MsgID,
			"reason", reason)
		out, err = s.deps.Store.OutcomeQuarantine(ctx, d.Due, reason)
	} else {
		out, err = s.deps.Store.OutcomeApply(ctx, d.Due)
	}
	return s.resultApplied(d.Due.MsgID, out, err)
}

// deliveryBackstop is how many times queue.max_deliveries a message may be
// delivered, whatever failed, before it is quarantined: a node that dies
// while it applies records no failure.
const deliveryBackstop = 4

// overDelivered says whether message msgID of queueName, a request or a
// result (what) delivered readCount times, is quarantined, and why. Past
// queue.max_deliveries it reads the deliveries that failed through the
// message's own fault (System.applyFailed): a message is quarantined when
// that many failed, or when it was delivered deliveryBackstop times as
// often. A message delivered again only because the node or the database
// was overloaded is applied.
func (s *System) overDelivered(ctx context.Context, what, queueName string, msgID int64, readCount int) (string, bool, error) {
	max := s.settings.MaxDeliveries
	if max <= 0 || readCount <= max {
		return "", false, nil
	}
	if readCount > deliveryBackstop*max {
		return fmt.Sprintf("%s delivered %d times, more than %d × queue.max_deliveries (%d)", what, readCount, deliveryBackstop, max), true, nil
	}
	failed, last, err := s.deps.Store.ApplyFailures(ctx, queueName, msgID)
	if err != nil {
		return "", false, err
	}
	if failed < max {
		return "", false, nil
	}
	return fmt.Sprintf("%s failed on %d of %d deliveries, queue.max_deliveries is %d; last: %s", what, failed, readCount-1, max, last), true, nil
}

// applyFailed records a failed delivery of message msgID of queueName when
// the failure may be the message's own (store.MessageFault); a failure to
// record it is logged.
func (s *System) applyFailed(queueName string, msgID int64, readCount int, cause error) {
	if !store.MessageFault(cause) {
		return
	}
	ctx, cancel := context.WithTimeout(s.handlerCtx, dbTimeout)
	defer cancel()
	if err := s.deps.Store.ApplyFailed(ctx, queueName, msgID, readCount, cause); err != nil {
		s.log.Warn("recording a failed apply failed", "queue", queueName, "msg_id", msgID, "error", err)
	}
}

// resultApplied logs and reports what applying the result of message msgID
// did.
func (s *System) resultApplied(msgID int64, out store.ResultOutcome, err error) error {
	if errors.Is(err, store.ErrStale) {
		// Lost a compare-and-set race; the message was not deleted and will
		// be read again, when it will be seen as stale.
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case out.Archived:
		s.log.Warn("step result archived", "msg_id", msgID, "task_uuid", out.TaskUUID, "step_uuid", out.StepUUID, "reason", out.Reason)
	case out.Ignored:
		s.log.Debug("step result ignored", "task_uuid", out.TaskUUID, "step_uuid", out.StepUUID, "reason", out.Reason)
	case out.TaskState == workflow.TaskStateError:
		s.log.Warn("task failed", "task_uuid", out.TaskUUID, "step_uuid", out.StepUUID, "step_state", out.StepState)
	}
	if out.Enqueued > 0 && out.Namespace != "" {
		// The steps it made ready are committed: this node's poller of
		// their queue reads them now rather than when the notification
		// comes back from the database (a node that runs no workers of the
		// namespace has no poller to wake).
		s.Wake(queue.NamespaceQueue(out.Namespace))
	}
	if s.deps.ResultApplied != nil {
		s.deps.ResultApplied(out)
	}
	return nil
}

// namespaceVisibility is the visibility timeout of namespace's step
// messages on this node.
func (s *System) namespaceVisibility(namespace string) time.Duration {
	for _, ns := range s.settings.Namespaces {
		if ns.Name == namespace {
			return ns.VisibilityTimeout
		}
	}
	return s.settings.OrchestrationVisibility
}
