package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// worker runs one step attempt at a time: start the attempt, run the
// handler within the step's timeout while keeping the message invisible,
// and record the outcome. On a node that runs the step-result actor the
// outcome is handed to it in the process, and the message is deleted when
// the outcome is applied; the worker takes its next job meanwhile, and a
// tail goroutine waits for the apply (see carry). Elsewhere recording the
// outcome sends the result message and deletes the step message.
// A job occupies the worker's mailbox for the handler's duration; that is
// the point of having a pool.
type worker struct {
	sys    *System
	ns     NamespaceSettings
	index  int
	poller *actor.PID
	path   string
	self   *actor.PID
	// tails holds a slot for each tail (see carry) of the namespace's
	// workers; its capacity is their number.
	tails chan struct{}
}

func (w *worker) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		w.self = ctx.Self()
		w.sys.tree.setStatus(w.path, StatusRunning)
		w.sys.tree.setBusy(w.path, false)
		ctx.Send(w.poller, workerFree{Index: w.index})
	case *actor.Restarting:
		w.sys.tree.setStatus(w.path, StatusRestarting)
	case *actor.Stopping:
		w.sys.tree.setStatus(w.path, StatusStopped)
	case announce:
		ctx.Send(w.poller, workerFree{Index: w.index, Announce: true, Epoch: msg.Epoch})
	case tailPanicked:
		// Raised here, so that the worker's supervisor restarts it.
		panic(msg.Value)
	case stepJob:
		w.sys.tree.setBusy(w.path, true)
		w.run(msg)
		w.sys.tree.setBusy(w.path, false)
		ctx.Send(w.poller, workerFree{Index: w.index})
	}
}

func (w *worker) queueName() string { return queue.NamespaceQueue(w.ns.Name) }

// dbTimeout bounds one store call of a worker or an orchestration actor.
// A call takes milliseconds, a batch of them a few more; one that hangs (a
// database that stopped answering) must fail soon enough that the breaker
// opens within seconds even when every worker holds a job, and no poller is
// left reading to notice.
const dbTimeout = 5 * time.Second

func (w *worker) run(job stepJob) {
	log := &jobLog{base: w.sys.log, namespace: w.ns.Name, job: &job}
	breaker := w.sys.Breakers()[w.ns.Name]
	base := w.sys.handlerCtx
	q := w.queueName()
	// Every store call holds the message through a database failure
	// (System.runHeld) for as long as it is this worker's.
	lease := &leaseEnd{}
	lease.set(job.Lease)
	held := heldTry{breaker: breaker, lease: lease.get, queue: q}

	if job.StepUUID == uuid.Nil {
		reason := "undecodable step message: " + job.Undecodable
		log.get().Warn("archiving a step message that does not decode", "queue", q, "reason", reason)
		err := w.sys.runHeld(held, func() error {
			ctx, cancel := context.WithTimeout(base, dbTimeout)
			defer cancel()
			return w.sys.deps.Store.MessageArchive(ctx, q, job.MsgID, reason)
		})
		if err != nil {
			log.get().Warn("archiving the undecodable step message failed; it will be read again", "error", err)
		}
		return
	}

	var (
		work  store.StepWork
		stale bool
	)
	if job.Started.Attempt > 0 {
		var err error
		if work, err = job.Started.Work(); err != nil {
			log.get().Error("the started attempt does not decode; the message is left to redelivery", "error", err)
			return
		}
	} else {
		// The read started nothing: the step is in no state to start, or
		// its message came twice in one read.
		err := w.sys.runHeld(held, func() error {
			ctx, cancel := context.WithTimeout(base, dbTimeout)
			defer cancel()
			var err error
			work, err = w.sys.deps.Store.StepStart(ctx, job.StepUUID)
			if errors.Is(err, store.ErrStale) || errors.Is(err, store.ErrNotFound) {
				stale = true
				return nil
			}
			return err
		})
		if err != nil {
			log.get().Warn("starting step failed; the message is left to redelivery", "error", err)
			return
		}
	}
	if work.OutcomeWaiting {
		// An outcome recorded in a node that did not apply it (it died, or
		// the database failed past the lease): apply it here, or pass it
		// on through the result queue from a node that applies none.
		due := w.due(work, job, lease.get())
		if w.sys.handOver(due) {
			log.get().Info("step message came back with its outcome waiting; handing the outcome over", "attempt", work.Attempt)
			return
		}
		log.get().Info("step message came back with its outcome waiting; sending it to the result queue", "attempt", work.Attempt)
		err := w.sys.runHeld(held, func() error {
			ctx, cancel := context.WithTimeout(base, dbTimeout)
			defer cancel()
			return w.sys.deps.Store.OutcomeForward(ctx, due.Due)
		})
		if err != nil {
			log.get().Warn("sending the waiting outcome failed; the message is left to redelivery", "error", err)
		}
		return
	}
	if stale {
		// Cancelled, finished, or already recorded: acknowledge.
		log.get().Debug("step message is stale; deleting it")
		_ = w.sys.runHeld(held, func() error {
			ctx, cancel := context.WithTimeout(base, dbTimeout)
			defer cancel()
			_, err := w.sys.deps.Queue.Delete(ctx, q, job.MsgID)
			return err
		})
		return
	}
	log.started(&work)
	// The message stays invisible until the outcome is recorded, however
	// long the handler and the recording (through an outage) take.
	keeper := w.sys.keepInvisible(w.queueName(), job.MsgID, w.ns.VisibilityTimeout, lease)
	carried := false
	defer func() {
		if !carried {
			keeper.stop()
		}
	}()

	started := time.Now()
	var (
		result  []byte
		stepErr *workflow.StepError
		archive bool
	)
	if max := w.sys.settings.MaxDeliveries; max > 0 && job.ReadCount > max {
		stepErr = workflow.Permanent("poison", "message delivered %d times, more than queue.max_deliveries (%d)", job.ReadCount, max)
		archive = true
	} else {
		end := w.span(&work, job)
		result, stepErr = w.execute(base, work)
		end(stepErr)
		if base.Err() != nil {
			// The node is shutting down past its timeout: leave the message
			// for redelivery rather than record a failure it did not cause.
			log.get().Warn("handler cancelled by shutdown; the message will be redelivered")
			return
		}
	}
	elapsed := time.Since(started)
	if w.sys.deps.StepFinished != nil {
		w.sys.deps.StepFinished(w.ns.Name, stepErr == nil, elapsed)
	}
	if stepErr != nil {
		log.get().Info("step attempt failed", "kind", stepErr.Kind, "retryable", stepErr.Retryable, "error", stepErr.Message)
	}
	out := store.Outcome{
		MsgID: job.MsgID, Namespace: w.ns.Name, TaskUUID: work.TaskUUID, StepUUID: work.StepUUID,
		CorrelationID: work.CorrelationID, Attempt: work.Attempt, Result: result, Err: stepErr,
		Duration: elapsed, Archive: archive, Direct: !archive && w.sys.canHandOver(),
	}
	if out.Direct {
		carried = true
		w.carry(log, held, out, work, job, lease, keeper)
		return
	}
	w.record(log, held, out, work, job, lease)
}

// carry hands out, recorded nowhere yet, to this node's step-result actor
// and leaves the rest of the job to a tail goroutine, so that the worker
// takes its next job meanwhile: waiting for the apply's commit, recording
// the outcome itself when the actor could not apply it, and keeping the
// message invisible until one of the two is done. A namespace has at most
// as many tails as workers: a job that finds them all running waits here
// for one to end. System.Stop waits for the tails; a panic in one is raised
// again in the worker.
func (w *worker) carry(log *jobLog, held heldTry, out store.Outcome, work store.StepWork, job stepJob, lease *leaseEnd, keeper *visibilityKeeper) {
	w.tails <- struct{}{}
	self := w.self
	w.sys.tails.Add(1)
	go func() {
		defer w.sys.tails.Done()
		defer func() { <-w.tails }()
		defer keeper.stop()
		defer func() {
			if r := recover(); r != nil {
				w.sys.system.Root.Send(self, tailPanicked{Value: r})
			}
		}()
		if w.applyCarried(log, out, w.due(work, job, lease.get())) {
			return
		}
		w.record(log, held, out, work, job, lease)
	}()
}

// record records out in the worker's own transaction, then hands it over to
// the step-result actor when out is Direct.
func (w *worker) record(log *jobLog, held heldTry, out store.Outcome, work store.StepWork, job stepJob, lease *leaseEnd) {
	base := w.sys.handlerCtx
	superseded := false
	// The handler has run: its outcome is worth recording through the
	// shutdown too, rather than running it again on redelivery.
	held.untilShutdown = true
	err := w.sys.runHeld(held, func() error {
		// base ends only when the shutdown timeout has passed; then an
		// unreachable database must not hold the worker up (the message
		// is redelivered).
		ctx, cancel := context.WithTimeout(base, dbTimeout)
		defer cancel()
		err := w.sys.deps.Store.StepOutcomeRecord(ctx, out)
		if errors.Is(err, store.ErrStale) {
			log.get().Info("outcome is stale: another attempt is current")
			superseded = true
			return nil
		}
		return err
	})
	if err != nil {
		log.get().Warn("recording outcome failed; the message is left to redelivery", "error", err)
		return
	}
	if out.Direct && !superseded && !w.sys.handOver(w.due(work, job, lease.get())) {
		log.get().Warn("the step-result actor is gone; the outcome waits for its step message's redelivery")
	}
}

// applyCarried hands out, recorded nowhere yet, to this node's step-result
// actor, which records it with the move it decides in one transaction, and
// waits for the answer: true once that committed (or the outcome was
// ignored and its step message acknowledged: its task is no longer in
// progress). On false (the actor is gone or failed, the database failed,
// the attempt is no longer current) nothing was written, and the job's
// tail records the outcome itself (see carry).
func (w *worker) applyCarried(log *jobLog, out store.Outcome, due outcomeDue) bool {
	pid := w.sys.resultsActor()
	if pid == nil {
		return false
	}
	carried, err := out.Carry()
	if err != nil {
		log.get().Warn("the outcome does not encode", "error", err)
		return false
	}
	due.Due.Carried, due.Due.Outcome = true, carried
	// The actor answers within dbTimeout; past it (an actor stuck behind a
	// restart), the outcome is recorded here, and whichever write comes
	// second meets the step's compare-and-set.
	answer, err := w.sys.system.Root.RequestFuture(pid, due, dbTimeout+time.Second).Result()
	if err != nil {
		return false
	}
	applied, _ := answer.(carriedApplied)
	return applied.OK
}

// jobLog is a job's logger, built on its first use: most jobs log nothing,
// and building one formats its attributes (a tenth of a step's
// allocations, measured with tasker bench --memprofile).
type jobLog struct {
	base      *slog.Logger
	namespace string
	job       *stepJob
	work      *store.StepWork // once the attempt has started
	l         *slog.Logger
}

func (j *jobLog) get() *slog.Logger {
	if j.l == nil {
		j.l = j.base.With("namespace", j.namespace, "msg_id", j.job.MsgID, "step_uuid", j.job.StepUUID)
		if w := j.work; w != nil {
			j.l = j.l.With("task_uuid", w.TaskUUID, "step", w.StepName, "attempt", w.Attempt)
		}
	}
	return j.l
}

// started adds the attempt's task, step and attempt to the job's logger.
func (j *jobLog) started(w *store.StepWork) {
	j.work, j.l = w, nil
}

// due is what the step-result actor is handed of work's attempt, recorded
// without a result message.
func (w *worker) due(work store.StepWork, job stepJob, lease time.Time) outcomeDue {
	return outcomeDue{
		Due: store.OutcomeDue{MsgID: job.MsgID, Namespace: w.ns.Name, TaskUUID: work.TaskUUID, StepUUID: work.StepUUID,
			CorrelationID: work.CorrelationID, Attempt: work.Attempt},
		ReadCount: job.ReadCount, Lease: lease,
	}
}

// leaseEnd is when a worker's message becomes visible to other readers;
// keepInvisible moves it on.
type leaseEnd struct{ at atomic.Int64 }

func (l *leaseEnd) set(t time.Time) { l.at.Store(t.UnixNano()) }
func (l *leaseEnd) get() time.Time  { return time.Unix(0, l.at.Load()) }

// execute runs the handler with the step's timeout. A panic becomes a retryable failure carrying the
// stack. A handler that ignores its context past the timeout is abandoned:
// the worker records the timeout and moves on.
func (w *worker) execute(base context.Context, work store.StepWork) ([]byte, *workflow.StepError) {
	h, ok := w.sys.deps.Handlers.Lookup(work.Handler)
	if !ok {
		return nil, workflow.Permanent("unknown_handler", "no handler %q is registered on this node", work.Handler)
	}
	timeout := work.Timeout
	if timeout <= 0 {
		timeout = workflow.DefaultStepTimeout
	}
	ctx, cancel := context.WithTimeout(workflow.WithTrace(base, work.Trace), timeout)
	defer cancel()

	type answer struct {
		result []byte
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		var a answer
		defer func() {
			if r := recover(); r != nil {
				se := workflow.Retryable(workflow.KindPanic, 0, "handler %s panicked: %v", work.Handler, r)
				se.Metadata = map[string]any{"stack": string(debug.Stack())}
				a = answer{err: se}
			}
			done <- a
		}()
		res, err := h.Handle(ctx, work.Input())
		a = answer{result: res, err: err}
	}()
	select {
	case a := <-done:
		if a.err != nil {
			if ctx.Err() != nil && errors.Is(a.err, context.Canceled) && base.Err() == nil {
				a.err = context.DeadlineExceeded
			}
			return nil, workflow.AsStepError(a.err)
		}
		if len(a.result) == 0 {
			a.result = []byte("null")
		}
		if se := workflow.CheckResult(work.Handler, a.result, w.sys.settings.MaxResultBytes); se != nil {
			return nil, se
		}
		return a.result, nil
	case <-ctx.Done():
		return nil, workflow.Retryable(workflow.KindTimeout, 0, "handler %s did not finish within %s", work.Handler, timeout)
	}
}

// keepInvisible extends the visibility of message msgID of queue q by vt
// every half vt, moving lease on with each success, until its stop is
// called (which waits for an extension under way): a long handler, or an
// outcome slow to be applied, is not taken for a lost one and read again
// by another node. Nothing runs until the first extension is due: most
// steps end long before.
func (s *System) keepInvisible(q string, msgID int64, vt time.Duration, lease *leaseEnd) *visibilityKeeper {
	k := &visibilityKeeper{sys: s, queue: q, msgID: msgID, vt: vt, lease: lease}
	if vt <= 0 {
		return k
	}
	// The first extension comes a quarter vt before the lease ends, and
	// at once when less is left (an outcome handed over late in it).
	first := min(vt/2, max(0, time.Until(lease.get())-vt/4))
	k.mu.Lock()
	k.timer = time.AfterFunc(first, k.extend)
	k.mu.Unlock()
	return k
}

// visibilityKeeper is one message's keepInvisible.
type visibilityKeeper struct {
	sys   *System
	queue string
	msgID int64
	vt    time.Duration
	lease *leaseEnd

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
	// cancel ends the extension under way; nil when none is.
	cancel context.CancelFunc
	idle   *sync.Cond // signalled when an extension ends
}

// extend extends the message's visibility once, and sets the timer for
// the next.
func (k *visibilityKeeper) extend() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.vt/2)
	k.cancel = cancel
	k.mu.Unlock()

	asked := time.Now()
	err := k.sys.deps.Queue.SetVisibility(ctx, k.queue, k.msgID, k.vt)
	cancel()
	if err == nil {
		k.lease.set(asked.Add(k.vt))
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	k.cancel = nil
	if k.idle != nil {
		k.idle.Broadcast()
	}
	// Not found: the outcome was just recorded or applied, deleting it.
	if err != nil && !k.stopped && !errors.Is(err, queue.ErrNotFound) {
		k.sys.log.Warn("extending message visibility failed", "queue", k.queue, "msg_id", k.msgID, "error", err)
	}
	if !k.stopped {
		k.timer.Reset(k.vt / 2)
	}
}

// stop ends the extensions, cancelling one under way and waiting for it.
func (k *visibilityKeeper) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	if k.timer != nil {
		k.timer.Stop()
	}
	if k.cancel != nil {
		k.cancel()
		if k.idle == nil {
			k.idle = sync.NewCond(&k.mu)
		}
		for k.cancel != nil {
			k.idle.Wait()
		}
	}
}

// span starts the span of work's attempt when the node traces, a child of
// the request's trace context, and moves work's trace context on to it so
// that the handler (and the services it calls) continue from the attempt.
// The returned func ends it with the attempt's outcome.
func (w *worker) span(work *store.StepWork, job stepJob) func(*workflow.StepError) {
	tracer := w.sys.deps.Tracer
	if tracer == nil {
		return func(*workflow.StepError) {}
	}
	ctx := context.Background()
	if parent, ok := SpanParent(work.Trace); ok {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	_, span := tracer.Start(ctx, "step "+work.StepName, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("tasker.namespace", w.ns.Name),
			attribute.String("tasker.task_uuid", work.TaskUUID.String()),
			attribute.String("tasker.task_name", work.TaskName),
			attribute.String("tasker.step_uuid", work.StepUUID.String()),
			attribute.String("tasker.step", work.StepName),
			attribute.String("tasker.handler", work.Handler),
			attribute.Int("tasker.attempt", work.Attempt),
			attribute.Int64("messaging.message.id", job.MsgID),
		))
	sc := span.SpanContext()
	work.Trace.Parent = fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
	return func(stepErr *workflow.StepError) {
		if stepErr != nil {
			span.SetStatus(codes.Error, stepErr.Message)
			span.SetAttributes(attribute.String("tasker.error_kind", stepErr.Kind), attribute.Bool("tasker.retryable", stepErr.Retryable))
		}
		span.End()
	}
}

// SpanParent is t as the remote parent of a span; false for the zero Trace.
func SpanParent(t workflow.Trace) (trace.SpanContext, bool) {
	if t.IsZero() {
		return trace.SpanContext{}, false
	}
	traceID, err := trace.TraceIDFromHex(t.TraceID())
	if err != nil {
		return trace.SpanContext{}, false
	}
	spanID, err := trace.SpanIDFromHex(t.Parent[36:52])
	if err != nil {
		return trace.SpanContext{}, false
	}
	f, err := strconv.ParseUint(t.Parent[53:55], 16, 8)
	if err != nil {
		return trace.SpanContext{}, false
	}
	flags := trace.TraceFlags(f) & trace.FlagsSampled
	state, _ := trace.ParseTraceState(t.State)
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: flags,
		TraceState: state, Remote: true}), true
}
