package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// flowLockClass is the first key of the advisory lock that makes a
// namespace's admissions take turns ('flow').
const flowLockClass = 0x666c6f77

// flowSharedLockClass is the first key of the advisory locks on groups
// whose slots several namespaces share ('flox').
const flowSharedLockClass = 0x666c6f78

// flowShards is how many shards a namespace's flow counters have
// (tasker.flow_shards).
const flowShards = 8

// queueFlowShard adds to b the choice of the shard of the namespaces' flow
// counters that b's transaction writes: which shard does not change what
// is admitted, only which transactions wait on each other's counters.
func (s *Store) queueFlowShard(b *pgx.Batch, offset int) {
	stmt("flow_shard").queue(b, args{"shard": int32((s.flowShard + offset) % flowShards)})
}

// FlowWindow is the most throttled steps one admission looks at.
const FlowWindow = 512

// FlowHorizon is how far ahead an admission hands out tokens: a step whose
// token is due within it is enqueued now, its message delayed until then;
// the others wait for a later admission. The next round is due when the
// first of those comes within the horizon, but no sooner than a sixth of it
// (workflow.Admit), so a round may be held up by most of the horizon
// (2.5 s) before a rate loses a token.
const FlowHorizon = 3 * time.Second

// SetFlowPolicy replaces the flow limits the configuration sets (a reload).
// Steps created before keep the groups they were created with; the limits
// of namespace and handler groups are read at each admission, so changed
// values apply at once.
func (s *Store) SetFlowPolicy(p workflow.FlowPolicy) { s.flow.Store(&p) }

// FlowPolicy is the flow policy in force.
func (s *Store) FlowPolicy() workflow.FlowPolicy {
	if p := s.flow.Load(); p != nil {
		return *p
	}
	return workflow.FlowPolicy{}
}

// FlowSignal receives a value after the store commits a change that may let
// a throttled step through: a step became throttled, or a step under a
// limit moved (giving back its slot). The admission waits on it.
func (s *Store) FlowSignal() <-chan struct{} { return s.flowSignal }

// flowChanged signals FlowSignal without waiting.
func (s *Store) flowChanged() {
	select {
	case s.flowSignal <- struct{}{}:
	default:
	}
}

// flowColumns are the flow columns of new steps, as tasks_steps_insert takes
// them: one PostgreSQL array literal per step, or NULL.
type flowColumns struct {
	groups, max, intervalUS, burst []*string
	keys                           []*string
}

// add appends a step's columns from its groups and key: NULLs for a step
// under no limit.
func (f *flowColumns) add(groups []workflow.Group, key string) {
	if len(groups) == 0 {
		f.groups, f.max, f.intervalUS, f.burst = append(f.groups, nil), append(f.max, nil), append(f.intervalUS, nil), append(f.burst, nil)
		f.keys = append(f.keys, nil)
		return
	}
	names, maxes, intervals, bursts := make([]string, len(groups)), make([]string, len(groups)), make([]string, len(groups)), make([]string, len(groups))
	for j, g := range groups {
		names[j] = g.Name
		maxes[j] = strconv.Itoa(g.MaxInFlight)
		intervals[j] = strconv.FormatInt(g.Rate.Interval().Microseconds(), 10)
		bursts[j] = strconv.Itoa(g.Burst)
	}
	text := func(v []string) *string { s := pgArray(v); return &s }
	f.groups, f.max = append(f.groups, text(names)), append(f.max, text(maxes))
	f.intervalUS, f.burst = append(f.intervalUS, text(intervals)), append(f.burst, text(bursts))
	f.keys = append(f.keys, &key)
}

// pgArray writes a PostgreSQL array literal of v, every element quoted.
func pgArray(v []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for _, r := range e {
			if r == '"' || r == '\\' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// FlowRound is what one admission of a namespace did.
type FlowRound struct {
	// Admitted counts the steps enqueued, Delayed those of them whose
	// message waits for its token.
	Admitted, Delayed int
	// Held counts the steps looked at and left throttled, by the kind of
	// limit that holds them: "slots" or "rate".
	Held map[string]int
	// NewlyHeld counts, of those, the steps held for the first time or by
	// another limit than before, by kind.
	NewlyHeld map[string]int
	// RetryIn is how long after the round the next round can admit a step
	// held by a rate or a pause (workflow.Admission.Retry, by the server's
	// clock); zero when none is held so.
	RetryIn time.Duration
}

// Kinds of limit that hold a step.
const (
	HeldBySlots = "slots"
	HeldByRate  = "rate"
	HeldByPause = "pause"
)

// FlowNamespaces returns the namespaces with throttled steps.
func (s *Store) FlowNamespaces(ctx context.Context) ([]string, error) {
	rows, err := stmt("flow_namespaces").query(ctx, s.pool, nil)
	if err != nil {
		return nil, fmt.Errorf("reading throttled namespaces: %w", translate(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading throttled namespaces: %w", translate(err))
	}
	return out, nil
}

// FlowAdmit runs one admission of namespace: under the namespace's lock it
// counts the slots in use, offers them to the throttled steps in the order
// of fairness and priority (workflow.Admit), and enqueues those it lets
// through, in one transaction.
func (s *Store) FlowAdmit(ctx context.Context, namespace string) (FlowRound, error) {
	round := FlowRound{Held: map[string]int{}, NewlyHeld: map[string]int{}}
	policy := s.FlowPolicy()
	stepQueue := queue.NamespaceQueue(namespace)
	admit, err := stmt("flow_admit").forQueues("step_queue", stepQueue)
	if err != nil {
		return round, err
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		var now time.Time
		if err := stmt("flow_lock").queryRow(ctx, tx, args{"class": int32(flowLockClass), "namespace": namespace}).Scan(&now); err != nil {
			return err
		}
		if _, err := stmt("flow_keys_forget").exec(ctx, tx, args{"namespace": namespace}); err != nil {
			return err
		}
		cands, messages, err := s.flowCandidates(ctx, tx, namespace, policy)
		if err != nil || len(cands) == 0 {
			return err
		}
		inUse := map[string]int{}
		groups := candidateGroups(cands, func(workflow.Group) bool { return true })
		if err := groupValues(ctx, tx, "flow_counts_lock", args{"namespace": namespace, "groups": groups}, inUse); err != nil {
			return err
		}
		if err := flowSharedSlots(ctx, tx, cands, inUse); err != nil {
			return err
		}
		tat, err := flowBuckets(ctx, tx, cands)
		if err != nil {
			return err
		}
		paused, err := flowPauses(ctx, tx, cands, now)
		if err != nil {
			return err
		}
		a := workflow.Admit(cands, inUse, tat, paused, now, FlowHorizon)
		if !a.Retry.IsZero() {
			round.RetryIn = max(a.Retry.Sub(now), time.Microsecond)
		}
		var (
			steps        [][16]byte
			delays       []int64
			msgs         [][]byte
			heldSteps    [][16]byte
			heldReasons  []string
			bucketNames  []string
			bucketTimes  []time.Time
			moved, _sent int64
			_woke, _b    int64
			newlyHeld    [][16]byte
		)
		for _, ad := range a.Admitted {
			steps, delays, msgs = append(steps, ad.Step), append(delays, ad.Delay.Microseconds()), append(msgs, messages[ad.Step])
			if ad.Delay > 0 {
				round.Delayed++
			}
		}
		kinds := make(map[uuid.UUID]string, len(a.Held))
		for _, h := range a.Held {
			heldSteps, heldReasons = append(heldSteps, h.Step), append(heldReasons, h.Reason)
			switch {
			case h.Rated:
				kinds[h.Step] = HeldByRate
			case h.Paused:
				kinds[h.Step] = HeldByPause
			default:
				kinds[h.Step] = HeldBySlots
			}
			round.Held[kinds[h.Step]]++
		}
		for _, name := range slices.Sorted(maps.Keys(a.Buckets)) {
			bucketNames, bucketTimes = append(bucketNames, name), append(bucketTimes, a.Buckets[name])
		}
		if err := admit.queryRow(ctx, tx, args{
			"steps": steps, "delays_us": delays, "messages": msgs, "enqueued": string(enqueueTo), "now": now,
			"throttled": string(workflow.StepStateThrottled), "reason": "admitted under its flow limits",
			"node_id": s.nodeID, "wake_channel": WakeChannel, "wake_queue": stepQueue,
			"bucket_names": bucketNames, "bucket_tats": bucketTimes, "held_steps": heldSteps, "held_reasons": heldReasons,
		}).Scan(&moved, &_sent, &_woke, &_b, &newlyHeld); err != nil {
			return err
		}
		if _, err := stmt("flow_spread").exec(ctx, tx, args{"namespace": namespace, "groups": groups}); err != nil {
			return err
		}
		for _, id := range newlyHeld {
			round.NewlyHeld[kinds[uuid.UUID(id)]]++
		}
		round.Admitted = int(moved)
		return nil
	})
	if err != nil {
		return FlowRound{Held: map[string]int{}, NewlyHeld: map[string]int{}}, fmt.Errorf("admitting throttled steps of %s: %w", namespace, translate(err))
	}
	return round, nil
}

// flowCandidates reads the throttled steps of namespace in the order they
// are offered slots, with their groups under the policy's current limits,
// and encodes the message of each.
func (s *Store) flowCandidates(ctx context.Context, tx pgx.Tx, namespace string, policy workflow.FlowPolicy) ([]workflow.Candidate, map[uuid.UUID][]byte, error) {
	rows, err := stmt("flow_candidates").query(ctx, tx, args{
		"namespace": namespace, "aging_us": policy.Aging.Microseconds(), "window": FlowWindow,
	})
	if err != nil {
		return nil, nil, err
	}
	var (
		cands     []workflow.Candidate
		messages  = map[uuid.UUID][]byte{}
		step      uuid.UUID
		task      uuid.UUID
		corr      uuid.UUID
		names     []string
		maxes     []int32
		intervals []int64
		bursts    []int32
	)
	_, err = pgx.ForEachRow(rows, []any{scanUUID(&step), scanUUID(&task), scanUUID(&corr), &names, &maxes, &intervals, &bursts}, func() error {
		c := workflow.Candidate{Step: step, Groups: make([]workflow.Group, len(names))}
		for i, name := range names {
			g := workflow.Group{Name: name}
			if i < len(maxes) {
				g.MaxInFlight = int(maxes[i])
			}
			if i < len(intervals) && intervals[i] > 0 {
				g.Rate = workflow.Rate{Count: 1, Per: time.Duration(intervals[i]) * time.Microsecond}
			}
			if i < len(bursts) {
				g.Burst = int(bursts[i])
			}
			c.Groups[i] = policy.Current(g)
		}
		msg, err := queue.StepMessage{TaskUUID: task, StepUUID: step, CorrelationID: corr}.Encode()
		if err != nil {
			return fmt.Errorf("encoding step message: %w", err)
		}
		cands, messages[step] = append(cands, c), msg
		return nil
	})
	return cands, messages, err
}

// flowSharedSlots takes the locks of the candidates' groups whose slots
// other namespaces share (workflow.Group.SharedSlots) and replaces their
// counts in inUse, which are the namespace's own, with the counts across
// every namespace. While the locks are held no other admission takes those
// slots, and admission at once leaves such steps to a round.
func flowSharedSlots(ctx context.Context, tx pgx.Tx, cands []workflow.Candidate, inUse map[string]int) error {
	groups := candidateGroups(cands, workflow.Group.SharedSlots)
	if len(groups) == 0 {
		return nil
	}
	for _, g := range groups {
		if _, err := stmt("flow_shared_lock").exec(ctx, tx, args{"class": int32(flowSharedLockClass), "group": g}); err != nil {
			return err
		}
		delete(inUse, g)
	}
	return groupValues(ctx, tx, "flow_shared_in_use", args{"groups": groups}, inUse)
}

// flowPauses reads the pauses of the candidates' groups that have not
// ended at now.
func flowPauses(ctx context.Context, tx pgx.Tx, cands []workflow.Candidate, now time.Time) (map[string]time.Time, error) {
	paused := map[string]time.Time{}
	names := candidateGroups(cands, func(g workflow.Group) bool {
		return workflow.PauseKey.Paused(g.Name) || workflow.PauseHost.Paused(g.Name)
	})
	if len(names) == 0 {
		return paused, nil
	}
	return paused, groupValues(ctx, tx, "flow_pauses_read", args{"names": names, "now": now}, paused)
}

// flowBuckets reads and locks the token buckets of the candidates' rated
// groups.
func flowBuckets(ctx context.Context, tx pgx.Tx, cands []workflow.Candidate) (map[string]time.Time, error) {
	tat := map[string]time.Time{}
	names := candidateGroups(cands, func(g workflow.Group) bool { return !g.Rate.IsZero() })
	if len(names) == 0 {
		return tat, nil
	}
	return tat, groupValues(ctx, tx, "flow_buckets_lock", args{"names": names}, tat)
}

// candidateGroups lists the names of the candidates' groups that keep
// accepts, each once, in order.
func candidateGroups(cands []workflow.Candidate, keep func(workflow.Group) bool) []string {
	seen := map[string]bool{}
	for _, c := range cands {
		for _, g := range c.Groups {
			if keep(g) {
				seen[g.Name] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// groupValues runs statement name, whose rows are a group's name and a
// value, into into.
func groupValues[V any](ctx context.Context, tx pgx.Tx, name string, a args, into map[string]V) error {
	rows, err := stmt(name).query(ctx, tx, a)
	if err != nil {
		return err
	}
	var (
		group string
		v     V
	)
	_, err = pgx.ForEachRow(rows, []any{&group, &v}, func() error { into[group] = v; return nil })
	return err
}

// FlowGroupUsage is one flow group with steps in it.
type FlowGroupUsage struct {
	Namespace string `json:"namespace"`
	Group     string `json:"group"`
	InUse     int    `json:"in_use"`
	Waiting   int    `json:"waiting"`
	// OldestWait is when the longest-waiting step of the group became
	// ready; nil when none waits.
	OldestWait *time.Time `json:"oldest_wait,omitempty"`
	// MaxInFlight, Rate and Burst are the group's limits now (the
	// configuration's for namespace and handler groups).
	MaxInFlight int    `json:"max_in_flight,omitempty"`
	Rate        string `json:"rate,omitempty"`
	Burst       int    `json:"burst,omitempty"`
}

// FlowUsage returns the flow groups with a step holding a slot or
// waiting, those with the most steps waiting and then in use first, at
// most limit of them, and how many there are.
func (s *Store) FlowUsage(ctx context.Context, limit int) ([]FlowGroupUsage, int, error) {
	policy := s.FlowPolicy()
	rows, err := stmt("flow_usage").query(ctx, s.pool, args{"limit": int32(limit)})
	if err != nil {
		return nil, 0, fmt.Errorf("reading flow usage: %w", translate(err))
	}
	var (
		out      []FlowGroupUsage
		u        FlowGroupUsage
		interval int64
		total    int
	)
	_, err = pgx.ForEachRow(rows, []any{&u.Namespace, &u.Group, &u.InUse, &u.Waiting, &u.OldestWait, &u.MaxInFlight, &interval, &u.Burst, &total}, func() error {
		g := workflow.Group{Name: u.Group, Limit: workflow.Limit{MaxInFlight: u.MaxInFlight, Burst: u.Burst}}
		if interval > 0 {
			g.Rate = workflow.Rate{Count: 1, Per: time.Duration(interval) * time.Microsecond}
		}
		g = policy.Current(g)
		v := u
		v.MaxInFlight, v.Burst = g.MaxInFlight, g.Burst
		if !g.Rate.IsZero() {
			v.Rate = strconv.FormatFloat(g.Rate.PerSecond(), 'f', -1, 64) + "/s"
		}
		out = append(out, v)
		u.OldestWait = nil
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("reading flow usage: %w", translate(err))
	}
	return out, total, nil
}

// FlowDrift is what a repair of the flow tables set right.
type FlowDrift struct {
	// Slots is by how much the counts of slots in use were off, summed
	// over the groups; Waiting the same for the counts of waiting steps,
	// plus the waiting rows dropped or added.
	Slots, Waiting int
}

// FlowRepair sets the flow counters to what the steps' states say, under
// the lock of every counter, deletes those at zero, and sets the waiting
// rows right.
func (s *Store) FlowRepair(ctx context.Context) (FlowDrift, error) {
	var d FlowDrift
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := stmt("flow_counts_lock_all").exec(ctx, tx, nil); err != nil {
			return err
		}
		return stmt("flow_repair").queryRow(ctx, tx, args{
			"slot_states": states(workflow.StepStatesWhere(workflow.StepState.HoldsSlot)),
			"throttled":   string(workflow.StepStateThrottled),
		}).Scan(&d.Slots, &d.Waiting)
	})
	if err != nil {
		return FlowDrift{}, fmt.Errorf("repairing the flow tables: %w", translate(err))
	}
	return d, nil
}
