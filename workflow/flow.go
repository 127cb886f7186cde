package workflow

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Flow control: a step under a limit does not go to its queue when it is
// ready; it waits, throttled, until an admission finds a slot and a token
// for it in every group it belongs to. A group is one limit's scope: a
// namespace, a template step, a key rendered from the task's context, or a
// handler. Its concurrency is the number of its steps holding a slot
// (StepState.HoldsSlot); its rate is a token bucket.

// Group names start with their kind.
const (
	GroupNamespace = "namespace:"
	GroupStep      = "step:"
	GroupKey       = "key:"
	GroupHandler   = "handler:"
	GroupHost      = "host:"
)

// PauseScope is what a Retry-After answer to a step of a namespace pauses
// besides the step itself (FlowPolicy.Pauses).
type PauseScope string

// Pause scopes.
const (
	// PauseKey pauses the step's concurrency key: no other step of the key
	// is admitted until the Retry-After has passed.
	PauseKey PauseScope = "key"
	// PauseHost pauses the host of an http step's url.
	PauseHost PauseScope = "host"
)

// Prefix is the prefix of the names of the groups scope pauses; "" for
// none.
func (s PauseScope) Prefix() string {
	switch s {
	case PauseKey:
		return GroupKey
	case PauseHost:
		return GroupHost
	}
	return ""
}

// Paused reports whether a Retry-After pauses group name under scope.
func (s PauseScope) Paused(name string) bool {
	return s.Prefix() != "" && strings.HasPrefix(name, s.Prefix())
}

// MaxKeyLength bounds a rendered concurrency key, in bytes.
const MaxKeyLength = 200

// Rate is a token bucket's refill: Count tokens every Per.
type Rate struct {
	Count int
	Per   time.Duration
}

// ParseRate reads "<count>/<unit>": a unit is s, m or h, or a duration
// such as 500ms or 10s ("100/s", "6/m", "5/500ms").
func ParseRate(s string) (Rate, error) {
	count, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q is not <count>/<unit> (like 100/s, 6/m or 5/500ms)", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(count))
	if err != nil || n < 1 {
		return Rate{}, fmt.Errorf("rate %q: the count must be a whole number of at least 1", s)
	}
	var per time.Duration
	switch unit = strings.TrimSpace(unit); unit {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		if per, err = time.ParseDuration(unit); err != nil || per <= 0 {
			return Rate{}, fmt.Errorf("rate %q: the unit must be s, m, h or a positive duration", s)
		}
	}
	if per/time.Duration(n) < time.Microsecond {
		return Rate{}, fmt.Errorf("rate %q is more than one token per microsecond", s)
	}
	return Rate{Count: n, Per: per}, nil
}

// IsZero reports whether r sets no rate.
func (r Rate) IsZero() bool { return r.Count == 0 }

// Interval is the time between two tokens.
func (r Rate) Interval() time.Duration {
	if r.Count == 0 {
		return 0
	}
	return r.Per / time.Duration(r.Count)
}

// String writes r as ParseRate reads it.
func (r Rate) String() string {
	if r.Count == 0 {
		return ""
	}
	switch r.Per {
	case time.Second:
		return fmt.Sprintf("%d/s", r.Count)
	case time.Minute:
		return fmt.Sprintf("%d/m", r.Count)
	case time.Hour:
		return fmt.Sprintf("%d/h", r.Count)
	}
	return fmt.Sprintf("%d/%s", r.Count, r.Per)
}

// PerSecond is r in tokens per second.
func (r Rate) PerSecond() float64 {
	if r.Count == 0 {
		return 0
	}
	return float64(r.Count) / r.Per.Seconds()
}

// Limit is what a group allows: at most MaxInFlight steps holding a slot
// (0: no bound) and tokens at Rate with up to Burst at once (Burst 0
// means 1).
type Limit struct {
	MaxInFlight int
	Rate        Rate
	Burst       int
}

// IsZero reports whether l limits nothing.
func (l Limit) IsZero() bool { return l.MaxInFlight == 0 && l.Rate.IsZero() }

// Group is one flow group of a step, with its limit.
type Group struct {
	Name string
	Limit
}

// StepFlow is the flow control a template declares for one of its steps.
type StepFlow struct {
	// Concurrency bounds the steps of this template step in flight across
	// its tasks; 0 means none.
	Concurrency int
	// Key is the concurrency key's text with {{context...}} placeholders;
	// empty means none. KeyScope names the template (or step) that declared
	// it, so two templates' keys never share a group.
	Key      string
	KeyScope string
	// KeyLimit is the limit of each key's group.
	KeyLimit Limit
}

// IsZero reports whether f declares nothing.
func (f StepFlow) IsZero() bool { return f.Concurrency == 0 && f.Key == "" }

// FlowPolicy is the flow control a node's configuration sets: per
// namespace and per handler, and the aging of priorities.
type FlowPolicy struct {
	Namespaces map[string]Limit
	Handlers   map[string]Limit
	// Aging raises a waiting step's priority by one level per interval.
	Aging time.Duration
	// Pauses says, per namespace, what a step's Retry-After answer (an
	// http 429 or 503) pauses for as long: the step's key or its host.
	Pauses map[string]PauseScope
}

// Current is g with the limit the policy sets now, for the groups the
// configuration owns (namespace and handler groups): a changed
// configuration applies to steps already waiting.
func (p FlowPolicy) Current(g Group) Group {
	switch {
	case strings.HasPrefix(g.Name, GroupNamespace):
		g.Limit = p.Namespaces[strings.TrimPrefix(g.Name, GroupNamespace)]
	case strings.HasPrefix(g.Name, GroupHandler):
		g.Limit = p.Handlers[strings.TrimPrefix(g.Name, GroupHandler)]
	}
	return g
}

// Arrays lists the groups the policy limits, for a statement: their
// names, their max in flight, and whether only an admission round may let
// their steps through. That is so for a rated group (tokens are the
// round's) and for a handler's concurrency limit (its slots span
// namespaces, so only a round holding the handler's lock counts them; see
// SharedSlots).
func (p FlowPolicy) Arrays() (names []string, maxInFlight []int32, byRound []bool) {
	add := func(prefix string, m map[string]Limit) {
		for _, name := range slices.Sorted(maps.Keys(m)) {
			l := m[name]
			g := Group{Name: prefix + name, Limit: l}
			names, maxInFlight = append(names, g.Name), append(maxInFlight, int32(l.MaxInFlight))
			byRound = append(byRound, !l.Rate.IsZero() || g.SharedSlots())
		}
	}
	add(GroupNamespace, p.Namespaces)
	add(GroupHandler, p.Handlers)
	return names, maxInFlight, byRound
}

// SharedSlots reports whether g's slots are shared by the steps of several
// namespaces: a handler's concurrency limit. The admissions of different
// namespaces take turns on it, not only on their namespace.
func (g Group) SharedSlots() bool {
	return g.MaxInFlight > 0 && strings.HasPrefix(g.Name, GroupHandler)
}

// StepGroups lays out the flow groups of a new step of namespace/template
// from its flow, the policy and the task's context, and returns them with
// the step's key (the round-robin key; "" without one). It fails when the
// key cannot be rendered from the context, naming the placeholder.
func StepGroups(p FlowPolicy, namespace, template string, st StepTemplate, context json.RawMessage) ([]Group, string, error) {
	var groups []Group
	if l := p.Namespaces[namespace]; !l.IsZero() {
		groups = append(groups, Group{Name: GroupNamespace + namespace, Limit: l})
	}
	if l := p.Handlers[st.Handler]; !l.IsZero() {
		groups = append(groups, Group{Name: GroupHandler + st.Handler, Limit: l})
	}
	f := st.Flow
	if f.Concurrency > 0 {
		groups = append(groups, Group{Name: GroupStep + namespace + "/" + template + "/" + st.Name,
			Limit: Limit{MaxInFlight: f.Concurrency}})
	}
	key := ""
	if f.Key != "" {
		k, err := RenderKey(f.Key, context)
		if err != nil {
			return nil, "", fmt.Errorf("step %s: concurrency_key %q: %w", st.Name, f.Key, err)
		}
		key = GroupKey + f.KeyScope + "=" + k
		if !f.KeyLimit.IsZero() {
			groups = append(groups, Group{Name: key, Limit: f.KeyLimit})
		}
	}
	if p.Pauses[namespace] == PauseHost {
		if host := StepHost(st, context); host != "" {
			groups = append(groups, Group{Name: GroupHost + host})
		}
	}
	return groups, key, nil
}

// StepHost is the host an http step calls, from its url rendered with the
// task's context; "" for another handler, or when the host comes from a
// parent's result (known only when the step runs) or does not render.
func StepHost(st StepTemplate, context json.RawMessage) string {
	if st.Handler != "http" {
		return ""
	}
	var cfg struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(st.Config, &cfg); err != nil || cfg.URL == "" {
		return ""
	}
	// Only the authority names the host: placeholders in the path may
	// come from parents.
	_, authority, ok := strings.Cut(cfg.URL, "://")
	if !ok {
		return ""
	}
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	if strings.Contains(authority, "{{parents") {
		return ""
	}
	rendered, err := NewPlaceholders(StepInput{Context: context}).Expand(authority, nil)
	if err != nil {
		return ""
	}
	return authorityHost(rendered)
}

// authorityHost is the host of a url's authority, lower case, without user
// information or port; "" when there is none.
func authorityHost(authority string) string {
	rest := authority
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	var host string
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return ""
		}
		host = rest[1:end]
	} else {
		host, _, _ = strings.Cut(rest, ":")
	}
	if host == "" || len(host) > MaxKeyLength || strings.ContainsAny(host, " \t\n{}/?#") {
		return ""
	}
	return strings.ToLower(host)
}

// RenderKey renders a concurrency key from a task's context: the same
// {{context.a.b}} placeholders as a step's config. The key must come out
// non-empty and at most MaxKeyLength bytes.
func RenderKey(text string, context json.RawMessage) (string, error) {
	if strings.Contains(text, "{{parents") {
		return "", fmt.Errorf("a key is rendered when the task is created, before any parent's result: only {{context...}} placeholders")
	}
	k, err := NewPlaceholders(StepInput{Context: context}).Expand(text, nil)
	if err != nil {
		return "", err
	}
	switch {
	case k == "":
		return "", fmt.Errorf("renders empty")
	case len(k) > MaxKeyLength:
		return "", fmt.Errorf("renders %d bytes, more than %d", len(k), MaxKeyLength)
	}
	return k, nil
}

// EffectivePriority is a waiting step's priority after aging: one level
// more per aging interval waited (none when aging is 0). The admission
// statement computes the same (flow_candidates in store/sql/flow.sql).
func EffectivePriority(priority int, waited, aging time.Duration) int {
	if aging <= 0 || waited <= 0 {
		return priority
	}
	return int(min(int64(priority)+int64(waited/aging), math.MaxInt32))
}

// Candidate is a throttled step offered to an admission, with its groups'
// current limits.
type Candidate struct {
	Step   uuid.UUID
	Groups []Group
}

// Admitted is a step an admission lets through, to be enqueued after Delay
// (the wait for its tokens).
type Admitted struct {
	Step  uuid.UUID
	Delay time.Duration
}

// Held is a step an admission leaves throttled, and why (a reason that
// stays the same while the same limit holds it).
type Held struct {
	Step   uuid.UUID
	Reason string
	// Group is the group that holds it; Rated is true when it waits for a
	// token rather than a slot, Paused when it waits for a pause of the
	// group to end.
	Group  string
	Rated  bool
	Paused bool
}

// Admission is the outcome of one admission.
type Admission struct {
	Admitted []Admitted
	Held     []Held
	// Buckets holds the new next-token time of each bucket that gave
	// tokens.
	Buckets map[string]time.Time
	// Retry is when the next admission should run for the steps held by a
	// rate or a pause: when the earliest of them comes within the horizon,
	// but not sooner than a sixth of the horizon from now, so that rounds
	// book tokens in runs rather than one at a time (zero when none is held
	// so).
	Retry time.Time
}

// Admit decides which candidates, in the order given (the order of
// fairness and priority), go through at now. A candidate goes when every
// one of its groups has a free slot (in use counts the slots held) and its
// tokens come within horizon; it is then delayed until its last token. A
// bucket is a generic cell rate: tat is the time its next token would be
// due with the bucket empty; a step may start at tat - (burst-1) tokens,
// and each start moves tat one interval on. Taking a slot or a token makes
// it unavailable to the next candidates. A group paused (until the time
// paused gives) lets no step start before then.
func Admit(cands []Candidate, used map[string]int, tat, paused map[string]time.Time, now time.Time, horizon time.Duration) Admission {
	a := Admission{Buckets: map[string]time.Time{}}
	inUse := maps.Clone(used)
	if inUse == nil {
		inUse = map[string]int{}
	}
	bucket := func(name string) time.Time {
		if t, ok := a.Buckets[name]; ok {
			return t
		}
		return tat[name]
	}
	for _, c := range cands {
		held := false
		for _, g := range c.Groups {
			if g.MaxInFlight > 0 && inUse[g.Name] >= g.MaxInFlight {
				a.Held = append(a.Held, Held{Step: c.Step, Group: g.Name,
					Reason: fmt.Sprintf("%s: all %d slots in use", g.Name, g.MaxInFlight)})
				held = true
				break
			}
		}
		if held {
			continue
		}
		start := now
		var (
			slowest Group
			pause   bool
		)
		for _, g := range c.Groups {
			if until, ok := paused[g.Name]; ok && until.After(start) {
				start, slowest, pause = until, g, true
			}
			if g.Rate.IsZero() {
				continue
			}
			tolerance := time.Duration(max(g.Burst, 1)-1) * g.Rate.Interval()
			if at := bucket(g.Name).Add(-tolerance); at.After(start) {
				start, slowest, pause = at, g, false
			}
		}
		if wait := start.Sub(now); wait > horizon {
			h := Held{Step: c.Step, Group: slowest.Name, Rated: !pause, Paused: pause}
			if pause {
				h.Reason = fmt.Sprintf("%s: paused by a Retry-After answer until %s", slowest.Name, start.UTC().Format(time.RFC3339))
			} else {
				h.Reason = fmt.Sprintf("%s: at its rate of %s", slowest.Name, perSecond(slowest.Rate))
			}
			a.Held = append(a.Held, h)
			retry := later(start.Add(-horizon), now.Add(horizon/6))
			if a.Retry.IsZero() || retry.Before(a.Retry) {
				a.Retry = retry
			}
			continue
		}
		for _, g := range c.Groups {
			inUse[g.Name]++
			if !g.Rate.IsZero() {
				a.Buckets[g.Name] = later(bucket(g.Name), start).Add(g.Rate.Interval())
			}
		}
		a.Admitted = append(a.Admitted, Admitted{Step: c.Step, Delay: start.Sub(now)})
	}
	return a
}

// perSecond writes a rate per second, the unit it is shown in.
func perSecond(r Rate) string {
	return strconv.FormatFloat(r.PerSecond(), 'f', -1, 64) + "/s"
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
