package actors

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// Store is what the actors need of persistence. *store.Store implements it;
// tests wrap it to inject faults.
type Store interface {
	RequestAccept(ctx context.Context, msg queue.Message) (store.RequestOutcome, error)
	RequestReject(ctx context.Context, msg queue.Message, reason string) (store.RequestOutcome, error)
	ResultApply(ctx context.Context, msg queue.Message) (store.ResultOutcome, error)
	ResultQuarantine(ctx context.Context, msg queue.Message, reason string) (store.ResultOutcome, error)
	OutcomeApply(ctx context.Context, d store.OutcomeDue) (store.ResultOutcome, error)
	OutcomeQuarantine(ctx context.Context, d store.OutcomeDue, reason string) (store.ResultOutcome, error)
	OutcomeForward(ctx context.Context, d store.OutcomeDue) error
	StepStart(ctx context.Context, step uuid.UUID) (store.StepWork, error)
	// StepsTake is a poller's read of a step queue, which starts the
	// messages' steps in the same transaction.
	StepsTake(ctx context.Context, namespace string, vt time.Duration, qty int) ([]store.TakenStep, error)
	StepOutcomeRecord(ctx context.Context, o store.Outcome) error
	MessageArchive(ctx context.Context, queueName string, id int64, reason string) error
	// ApplyFailed and ApplyFailures count the deliveries of an
	// orchestration message that failed through its own fault
	// (store.MessageFault), which queue.max_deliveries bounds.
	ApplyFailed(ctx context.Context, queueName string, msgID int64, readCount int, cause error) error
	ApplyFailures(ctx context.Context, queueName string, msgID int64) (int, string, error)
}

// Queue is what the actors need of the queue client.
type Queue interface {
	Read(ctx context.Context, queue string, vt time.Duration, qty int) ([]queue.Message, error)
	Delete(ctx context.Context, queue string, id int64) (bool, error)
	Archive(ctx context.Context, queue string, id int64) (bool, error)
	SetVisibility(ctx context.Context, queue string, id int64, vt time.Duration) error
}

// NamespaceSettings configure one namespace subtree.
type NamespaceSettings struct {
	Name              string
	Workers           int
	PollInterval      time.Duration
	VisibilityTimeout time.Duration
	Breaker           BreakerSettings
}

// Settings configure the whole tree.
type Settings struct {
	NodeID string
	// Orchestration runs the task-request and step-result actors.
	Orchestration bool
	// OrchestrationPollInterval and OrchestrationVisibility tune their
	// pollers; OrchestrationBreaker guards the orchestration queues.
	OrchestrationPollInterval time.Duration
	OrchestrationVisibility   time.Duration
	OrchestrationBreaker      BreakerSettings
	// Namespaces whose workers run on this node.
	Namespaces []NamespaceSettings
	// BatchSize is the most messages one read takes.
	BatchSize int
	// MaxDeliveries marks a message read more often than this as poison.
	MaxDeliveries int
	// MaxResultBytes is the largest result a handler may return; 0 means
	// workflow.MaxResultBytesDefault.
	MaxResultBytes int
	// Supervision is the restart intensity of every supervisor.
	Supervision Intensity
	// HostBreaker gives the breaker settings of a downstream host.
	HostBreaker func(host string) BreakerSettings
	// MaxHostBreakers caps the host breakers (see System.HostBreaker); 0
	// means DefaultMaxHostBreakers.
	MaxHostBreakers int
	// Schedules runs the scheduler (with Orchestration and
	// Deps.Maintenance).
	Schedules bool
	// Retention, when set, runs the pruner (with Orchestration and
	// Deps.Maintenance).
	Retention *RetentionSettings
}

// DefaultMaxHostBreakers is the cap on host breakers when
// Settings.MaxHostBreakers is 0.
const DefaultMaxHostBreakers = 1024

// Deps are the collaborators of the tree.
type Deps struct {
	Store    Store
	Queue    Queue
	Handlers *workflow.Registry
	Logger   *slog.Logger
	// LoggerFactory, when set, is given to the actor system so protoactor
	// logs through the node's handler.
	ActorLogger *slog.Logger
	// BreakerChanged is told of every breaker state change (metrics).
	BreakerChanged func(component, state string)
	// BreakerRemoved is told of a host breaker dropped from the cap
	// (metrics); no BreakerChanged for it follows.
	BreakerRemoved func(component string)
	// StepFinished is told of every finished attempt (metrics).
	StepFinished func(namespace string, ok bool, d time.Duration)
	// RequestHandled is told what became of every task request; it may be
	// called from several goroutines at once.
	RequestHandled func(store.RequestOutcome)
	// ResultApplied is told what every applied result did; it may be called
	// from several goroutines at once.
	ResultApplied func(store.ResultOutcome)
	// Ping checks that the database answers. While a breaker guarding the
	// database is open it is called every probeInterval, and its first
	// success lets the breaker try again at once. Optional: without it a
	// breaker waits out its delay.
	Ping func(ctx context.Context) error
	// MessageHeld is told of every message kept in process through a
	// database failure: handled once the database answered, or released
	// to redelivery (metrics). It may be called from several goroutines.
	MessageHeld func(queue string, handled bool)
	// Tracer, when set, makes a span of every step attempt a worker runs,
	// a child of the trace context of the task's request.
	Tracer trace.Tracer
	// Maintenance is the persistence of the scheduler and the pruner;
	// without it neither runs.
	Maintenance Maintenance
	// SchedulesChecked is told of every check of the schedules (metrics).
	SchedulesChecked func(store.FireReport, error)
	// Pruned is told of every pruning batch that deleted rows (metrics).
	Pruned func(store.PruneTarget, store.PruneCount)
	// PruneRan is told of every pruning run on this node (metrics).
	PruneRan func(store.PruneRun, time.Duration, error)
	// Flow is the persistence of the admission of throttled steps; without
	// it no admission runs on this node.
	Flow Flow
	// FlowAdmitted is told of every admission round of a namespace
	// (metrics).
	FlowAdmitted func(namespace string, r store.FlowRound, err error)
	// FlowRepaired is told of every check of the flow tables (metrics).
	FlowRepaired func(store.FlowDrift, error)
}

// System is a running actor tree.
type System struct {
	settings Settings
	deps     Deps
	tree     *Tree
	log      *slog.Logger

	system *actor.ActorSystem
	root   *actor.PID

	// stopping stops pollers from taking new messages.
	stopping atomic.Bool
	// tails counts the workers' tails still running (worker.carry).
	tails sync.WaitGroup
	// handlerCtx is the parent of every handler's context; cancelled when
	// the shutdown timeout runs out.
	handlerCtx    context.Context
	cancelHandler context.CancelFunc

	// breakers is built at start; breakersPtr publishes the current map,
	// replaced copy-on-write under hostMu when a host breaker is added.
	breakers    map[string]*Breaker
	breakersPtr atomic.Pointer[map[string]*Breaker]
	hostMu      sync.Mutex
	// hostLRU orders the host breakers by last use, most recent first;
	// hostUse finds a component's element. Both under hostMu.
	hostLRU  *list.List
	hostUse  map[string]*list.Element
	wakeMu   sync.Mutex
	wakers   map[string]*actor.PID // queue name → poller to wake
	gaveUpMu sync.Mutex
	gaveUp   map[string]bool
	// pollerEpoch numbers poller incarnations (see poller.epoch).
	pollerEpoch atomic.Uint64
	// rootStarted is closed once the root has spawned its children.
	rootStarted     chan struct{}
	rootStartedOnce sync.Once
	// probe pings the database while a breaker guarding it is open.
	probe *dbProbe

	stopOnce sync.Once
	stopErr  error
}

// Names of the fixed actors.
const (
	rootName         = "root"
	taskRequestsName = "task_requests"
	stepResultsName  = "step_results"
	// OrchestrationComponent is the breaker of the orchestration queues.
	OrchestrationComponent = "orchestration"
)

// NamespacePath is the tree path of a namespace supervisor.
func NamespacePath(namespace string) string { return rootName + "/ns-" + namespace }

// Start builds and starts the tree.
func Start(settings Settings, deps Deps) (*System, error) {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if settings.BatchSize <= 0 {
		settings.BatchSize = 50
	}
	if settings.MaxHostBreakers <= 0 {
		settings.MaxHostBreakers = DefaultMaxHostBreakers
	}
	if settings.Supervision.MaxRestarts <= 0 {
		settings.Supervision = Intensity{MaxRestarts: 10, Window: time.Minute}
	}
	s := &System{
		settings: settings,
		deps:     deps,
		tree:     NewTree(settings.NodeID),
		log:      deps.Logger,
		breakers: map[string]*Breaker{},
		hostLRU:  list.New(),
		hostUse:  map[string]*list.Element{},
		wakers:   map[string]*actor.PID{},
		gaveUp:   map[string]bool{},

		rootStarted: make(chan struct{}),
	}
	s.handlerCtx, s.cancelHandler = context.WithCancel(context.Background())
	var opts []actor.ConfigOption
	actorLog := deps.ActorLogger
	if actorLog == nil {
		actorLog = deps.Logger
	}
	opts = append(opts, actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return actorLog.With("component", "actor") }))
	s.system = actor.NewActorSystemWithConfig(actor.Configure(opts...))

	s.tree.declare(rootName, KindRoot, "", "")
	// The breakers guarding the database: each wakes the pollers it
	// paused when it lets calls through again, and all are probed.
	var guarded []*Breaker
	if settings.Orchestration {
		b := newBreaker(OrchestrationComponent, rootName+"/orchestration-breaker",
			settings.OrchestrationBreaker, s.tree, s.log, deps.BreakerChanged)
		b.onReady = func() { s.Wake(queueTaskRequests); s.Wake(queueStepResults) }
		s.breakers[OrchestrationComponent] = b
		guarded = append(guarded, b)
		s.tree.declare(rootName+"/orchestration-breaker", KindBreaker, "", "")
		s.tree.setStatus(rootName+"/orchestration-breaker", StatusRunning)
	}
	for _, ns := range settings.Namespaces {
		path := NamespacePath(ns.Name) + "/breaker"
		b := newBreaker(ns.Name, path, ns.Breaker, s.tree, s.log, deps.BreakerChanged)
		q := queue.NamespaceQueue(ns.Name)
		b.onReady = func() { s.Wake(q) }
		s.breakers[ns.Name] = b
		guarded = append(guarded, b)
		s.tree.declare(path, KindBreaker, ns.Name, "")
		s.tree.setStatus(path, StatusRunning)
	}
	s.probe = startProbe(deps.Ping, guarded)

	s.breakersPtr.Store(&s.breakers)

	props := actor.PropsFromProducer(func() actor.Actor { return &rootActor{sys: s} },
		actor.WithSupervisor(&strategy{intensity: settings.Supervision, tree: s.tree, log: s.log, escalate: false, gaveUp: s.markGaveUp}))
	pid, err := s.system.Root.SpawnNamed(props, rootName)
	if err != nil {
		s.probe.close()
		return nil, fmt.Errorf("spawning the root supervisor: %w", err)
	}
	s.root = pid
	// The root spawns the tree on its own goroutine; a caller that reports
	// ready as soon as Start returns must find it running.
	select {
	case <-s.rootStarted:
	case <-time.After(rootStartTimeout):
		s.probe.close()
		s.system.Shutdown()
		return nil, fmt.Errorf("the root supervisor did not start within %s", rootStartTimeout)
	}
	return s, nil
}

// rootStartTimeout bounds the wait for the root to spawn its children.
const rootStartTimeout = 30 * time.Second

// Tree returns the live tree.
func (s *System) Tree() *Tree { return s.tree }

// Breakers returns the breakers by component. The map must not be
// modified.
func (s *System) Breakers() map[string]*Breaker { return *s.breakersPtr.Load() }

// Breaker returns a component's breaker.
func (s *System) Breaker(component string) (*Breaker, bool) {
	b, ok := s.Breakers()[component]
	return b, ok
}

// GaveUp lists the actors the root stopped for good, sorted.
func (s *System) GaveUp() []string {
	s.gaveUpMu.Lock()
	defer s.gaveUpMu.Unlock()
	out := make([]string, 0, len(s.gaveUp))
	for k := range s.gaveUp {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (s *System) markGaveUp(path string) {
	s.gaveUpMu.Lock()
	s.gaveUp[path] = true
	s.gaveUpMu.Unlock()
}

// Running reports whether the tree is up (not stopping, root alive).
func (s *System) Running() bool {
	if s.stopping.Load() {
		return false
	}
	n, ok := s.tree.Find(rootName)
	return ok && n.Status == StatusRunning
}

// Wake asks the poller of queue to read now (a LISTEN/NOTIFY arrival).
func (s *System) Wake(queueName string) {
	s.wakeMu.Lock()
	pid := s.wakers[queueName]
	s.wakeMu.Unlock()
	if pid != nil && !s.stopping.Load() {
		s.system.Root.Send(pid, wake{})
	}
}

// canHandOver reports whether this node's step-result actor takes outcomes
// from its workers: it runs one, and the node is not stopping (then the
// outcome goes through the result queue, to whichever node applies it).
func (s *System) canHandOver() bool { return s.resultsActor() != nil }

func (s *System) resultsActor() *actor.PID {
	if !s.settings.Orchestration || s.stopping.Load() {
		return nil
	}
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	return s.wakers[queueStepResults]
}

// handOver gives the step-result actor of this node an outcome to apply.
// It reports false when it cannot take it (see canHandOver): an outcome
// already recorded then waits for its step message's redelivery.
func (s *System) handOver(d outcomeDue) bool {
	pid := s.resultsActor()
	if pid == nil {
		return false
	}
	s.system.Root.Send(pid, d)
	return true
}

func (s *System) registerWaker(queueName string, pid *actor.PID) {
	s.wakeMu.Lock()
	s.wakers[queueName] = pid
	s.wakeMu.Unlock()
}

// Stop stops the tree in order: pollers stop taking messages, in-flight
// handlers, and the workers' tails that wait for their outcomes' apply, get
// until ctx's deadline to finish (then they are cancelled and their
// messages left to redelivery), then the actors stop. Stop is
// idempotent.
func (s *System) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		done := make(chan struct{})
		go func() {
			defer close(done)
			// A stop future gives up after 10s; asking again is harmless and
			// answers at once once the root has terminated.
			for s.system.Root.StopFuture(s.root).Wait() != nil {
			}
			// The workers have ended their jobs, so no tail starts after
			// this; a tail's outcome is recorded through the shutdown.
			s.tails.Wait()
		}()
		select {
		case <-done:
		case <-ctx.Done():
			s.log.Warn("shutdown timeout reached; cancelling running handlers, their messages will be redelivered")
			s.cancelHandler()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				s.stopErr = errors.New("actors did not stop within 5s of cancelling their handlers")
			}
		}
		s.cancelHandler()
		s.probe.close()
		s.system.Shutdown()
		s.tree.setStatus(rootName, StatusStopped)
	})
	return s.stopErr
}

// HostBreaker returns the circuit breaker of a downstream host called by the
// http handler, creating it on first use with the settings of
// Settings.HostBreaker. Its component name is "http:<host>".
//
// At most Settings.MaxHostBreakers exist: making one more drops the least
// recently used closed breaker, with its tree node, and tells
// Deps.BreakerRemoved. An open or half-open breaker is kept while a closed
// one can go, so a failing host stays held off; when every breaker is open or
// half-open, the least recently used one is dropped anyway (logged at WARN),
// and its host is called again until a new breaker opens. A caller still
// running through a dropped breaker finishes on it unseen.
func (s *System) HostBreaker(host string) *Breaker {
	component := "http:" + host
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	current := *s.breakersPtr.Load()
	if b, ok := current[component]; ok {
		if e, ok := s.hostUse[component]; ok {
			s.hostLRU.MoveToFront(e)
		}
		return b
	}
	// Copy on write: readers iterate the map without the lock.
	next := make(map[string]*Breaker, len(current)+1)
	for k, v := range current {
		next[k] = v
	}
	for s.hostLRU.Len() >= s.settings.MaxHostBreakers {
		s.evictHostBreaker(next)
	}
	var settings BreakerSettings
	if s.settings.HostBreaker != nil {
		settings = s.settings.HostBreaker(host)
	}
	path := rootName + "/" + component
	s.tree.declare(path, KindBreaker, "", "")
	s.tree.setStatus(path, StatusRunning)
	b := newBreaker(component, path, settings, s.tree, s.log, s.deps.BreakerChanged)
	next[component] = b
	s.hostUse[component] = s.hostLRU.PushFront(component)
	s.breakersPtr.Store(&next)
	return b
}

// evictHostBreaker drops one host breaker from breakers (see HostBreaker).
// The caller holds hostMu.
func (s *System) evictHostBreaker(breakers map[string]*Breaker) {
	victim := s.hostLRU.Back()
	for e := s.hostLRU.Back(); e != nil; e = e.Prev() {
		if breakers[e.Value.(string)].State() == "closed" {
			victim = e
			break
		}
	}
	component := victim.Value.(string)
	b := breakers[component]
	if state := b.State(); state != "closed" {
		s.log.Warn("host breaker cap reached with every breaker open or half-open; dropping the least recently used",
			"component", component, "state", state, "max_host_breakers", s.settings.MaxHostBreakers)
	} else {
		s.log.Debug("host breaker cap reached; dropping the least recently used closed breaker",
			"component", component, "max_host_breakers", s.settings.MaxHostBreakers)
	}
	s.hostLRU.Remove(victim)
	delete(s.hostUse, component)
	delete(breakers, component)
	b.retire(s.deps.BreakerRemoved)
}
