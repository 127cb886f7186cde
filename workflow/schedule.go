package workflow

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/robfig/cron/v3"
)

// A schedule starts a task from a template at the times of a cron
// expression. Each fire is one task request with a request id derived
// from the schedule and the fire time (FireRequestID), so that a fire
// creates one task however many nodes see it due.

// OverlapPolicy says what a fire does while the task of the schedule's
// previous fire has not finished.
type OverlapPolicy string

// Overlap policies.
const (
	// OverlapSkip records the fire as skipped: one task of the schedule
	// runs at a time. A previous request not yet turned into a task counts
	// as running.
	OverlapSkip OverlapPolicy = "skip"
	// OverlapAllow fires anyway.
	OverlapAllow OverlapPolicy = "allow"
	// OverlapCancelPrevious cancels the previous fire's task, then fires.
	OverlapCancelPrevious OverlapPolicy = "cancel_previous"
)

// CatchUpPolicy says what becomes of the fires that were missed: due
// while no node checked the schedule (all nodes down, or the database
// unreachable).
type CatchUpPolicy string

// Catch-up policies.
const (
	// CatchUpNone records missed fires and sends nothing for them.
	CatchUpNone CatchUpPolicy = "none"
	// CatchUpOne sends one task for all the fires missed together: the
	// latest of them.
	CatchUpOne CatchUpPolicy = "one"
	// CatchUpAll sends a task for each missed fire, the latest
	// CatchUpLimit of them; the older ones are recorded as missed.
	CatchUpAll CatchUpPolicy = "all"
)

// Schedule defaults and limits.
const (
	// CatchUpLimitDefault is CatchUpLimit when a schedule leaves it 0.
	CatchUpLimitDefault = 10
	// CatchUpLimitMax bounds CatchUpLimit.
	CatchUpLimitMax = 1000
	// MisfireGrace is how late the latest due fire may be seen and still
	// count as on time; a fire seen later, and every due fire before the
	// latest, was missed and follows the catch-up policy.
	MisfireGrace = 15 * time.Second
	// MaxScheduleNameLen bounds a schedule's name.
	MaxScheduleNameLen = 64
	// maxMissedWalk bounds how many missed fire times one check walks
	// through; past it the fires are counted as at least this many and the
	// schedule starts again from the check's time.
	maxMissedWalk = 100_000
)

// Schedule is the definition of a schedule. Zero policies take their
// defaults (Normalize).
type Schedule struct {
	// Name identifies the schedule: IdentPattern, up to MaxScheduleNameLen
	// characters.
	Name string `json:"name"`
	// Namespace, Template and Version select the template; an empty
	// Version means the newest when the fire's request is accepted.
	Namespace string `json:"namespace"`
	Template  string `json:"template"`
	Version   string `json:"version,omitempty"`
	// Cron is a cron expression of five fields (minute hour day-of-month
	// month day-of-week), or six with seconds first, or a descriptor such
	// as "@hourly" or "@every 30s".
	Cron string `json:"cron"`
	// TimeZone is the IANA zone the expression is read in. Defaults to
	// "UTC".
	TimeZone string `json:"time_zone"`
	// Context is each task's context: a JSON object. Defaults to {}.
	Context json.RawMessage `json:"context"`
	// Priority is each task request's priority. Defaults to 0.
	Priority int `json:"priority,omitempty"`
	// Overlap defaults to OverlapSkip.
	Overlap OverlapPolicy `json:"overlap"`
	// CatchUp defaults to CatchUpOne.
	CatchUp CatchUpPolicy `json:"catch_up"`
	// CatchUpLimit bounds the missed fires CatchUpAll sends. Defaults to
	// CatchUpLimitDefault.
	CatchUpLimit int `json:"catch_up_limit"`
}

// cronParser reads five fields, six with seconds first, and descriptors.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ScheduleError is a schedule definition that cannot be used; it names
// the field.
type ScheduleError struct {
	Schedule string
	Field    string
	Problem  string
}

func (e *ScheduleError) Error() string {
	if e.Schedule == "" {
		return fmt.Sprintf("schedule: %s: %s", e.Field, e.Problem)
	}
	return fmt.Sprintf("schedule %q: %s: %s", e.Schedule, e.Field, e.Problem)
}

// Normalize fills in the defaults and checks every field; the error names
// the first field that is wrong.
func (s *Schedule) Normalize() error {
	bad := func(field, format string, args ...any) error {
		return &ScheduleError{Schedule: s.Name, Field: field, Problem: fmt.Sprintf(format, args...)}
	}
	switch {
	case s.Name == "":
		return bad("name", "missing")
	case len(s.Name) > MaxScheduleNameLen || !ValidIdent(s.Name):
		return bad("name", "%q is not a lower-case identifier (%s) of at most %d characters", s.Name, IdentPattern, MaxScheduleNameLen)
	case !ValidNamespace(s.Namespace):
		return bad("namespace", "%q is not a namespace (%s, at most %d characters)", s.Namespace, IdentPattern, MaxNamespaceLen)
	case !ValidName(s.Template):
		return bad("template", "%q is not a template name (%s, at most %d characters)", s.Template, IdentPattern, MaxNameLen)
	case s.Version != "" && !ValidVersion(s.Version):
		return bad("version", "%q is not a semantic version such as 1.0.0 (empty means the newest)", s.Version)
	}
	if s.TimeZone == "" {
		s.TimeZone = "UTC"
	}
	if _, err := s.location(); err != nil {
		return bad("time_zone", "%q is not an IANA time zone such as \"Europe/Paris\": %v", s.TimeZone, err)
	}
	if strings.Contains(s.Cron, "TZ=") {
		return bad("cron", "give the zone in time_zone, not in the expression")
	}
	if _, err := cronParser.Parse(s.Cron); err != nil {
		return bad("cron", "%q: %v", s.Cron, err)
	}
	if len(s.Context) == 0 {
		s.Context = json.RawMessage("{}")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(s.Context, &obj); err != nil || obj == nil {
		return bad("context", "not a JSON object")
	}
	if d := JSONDepth(s.Context); d > MaxJSONDepth {
		return bad("context", "nested %d levels deep, more than the limit of %d", d, MaxJSONDepth)
	}
	if s.Overlap == "" {
		s.Overlap = OverlapSkip
	}
	switch s.Overlap {
	case OverlapSkip, OverlapAllow, OverlapCancelPrevious:
	default:
		return bad("overlap", "%q is not skip, allow or cancel_previous", s.Overlap)
	}
	if s.CatchUp == "" {
		s.CatchUp = CatchUpOne
	}
	switch s.CatchUp {
	case CatchUpNone, CatchUpOne, CatchUpAll:
	default:
		return bad("catch_up", "%q is not none, one or all", s.CatchUp)
	}
	if s.CatchUpLimit == 0 {
		s.CatchUpLimit = CatchUpLimitDefault
	}
	if s.CatchUpLimit < 0 || s.CatchUpLimit > CatchUpLimitMax {
		return bad("catch_up_limit", "%d is not between 1 and %d", s.CatchUpLimit, CatchUpLimitMax)
	}
	return nil
}

func (s *Schedule) location() (*time.Location, error) { return time.LoadLocation(s.TimeZone) }

// Next returns the first fire time after t. The schedule must have been
// normalized. Times are read in the schedule's zone; across a daylight
// saving change the rules of the cron library (robfig/cron v3) apply: a
// time that does not exist that day (clocks moved forward over it) does
// not fire that day, and a time that exists twice (clocks set back) fires
// at both. TestScheduleDaylightSaving pins both.
func (s *Schedule) Next(t time.Time) (time.Time, error) {
	next, err := s.nextFunc()
	if err != nil {
		return time.Time{}, err
	}
	return next(t)
}

// nextFunc parses the expression and the zone once, for walking many fire
// times.
func (s *Schedule) nextFunc() (func(time.Time) (time.Time, error), error) {
	loc, err := s.location()
	if err != nil {
		return nil, err
	}
	spec, err := cronParser.Parse(s.Cron)
	if err != nil {
		return nil, err
	}
	return func(t time.Time) (time.Time, error) {
		n := spec.Next(t.In(loc))
		if n.IsZero() {
			return time.Time{}, &ScheduleError{Schedule: s.Name, Field: "cron", Problem: fmt.Sprintf("%q never fires", s.Cron)}
		}
		return n.UTC(), nil
	}, nil
}

// FireKind says why a fire was sent or not.
type FireKind string

// Fire kinds.
const (
	// FireOnTime is the latest due fire, seen within MisfireGrace.
	FireOnTime FireKind = "on_time"
	// FireCaughtUp is a missed fire sent by the catch-up policy.
	FireCaughtUp FireKind = "caught_up"
	// FireTriggered is a fire an operator asked for.
	FireTriggered FireKind = "triggered"
)

// Fire is one fire time a check sends.
type Fire struct {
	At   time.Time
	Kind FireKind
}

// Missed is the fires a check does not send because they were missed,
// counted: First and Last bound them.
type Missed struct {
	Count       int
	First, Last time.Time
	// AtLeast is set when there were more than a check walks through:
	// Count is then a lower bound.
	AtLeast bool
}

// Due is what a check of a schedule at a time does.
type Due struct {
	// Fires are sent, oldest first.
	Fires []Fire
	// Missed are recorded.
	Missed Missed
	// Next is the schedule's next fire time after the check.
	Next time.Time
}

// Check decides what a check at now does with a schedule whose next fire
// time is next (due when it is not after now). The latest due fire is on
// time if now is at most MisfireGrace after it; every other due fire was
// missed, and the catch-up policy picks which of those are sent. The
// schedule must have been normalized.
func (s *Schedule) Check(next, now time.Time) (Due, error) {
	if next.After(now) {
		return Due{Next: next}, nil
	}
	// Walk the due fire times, keeping the latest CatchUpLimit+2: enough
	// for the on-time fire, the caught-up ones and the last one missed.
	nextAfter, err := s.nextFunc()
	if err != nil {
		return Due{}, err
	}
	keep := s.CatchUpLimit + 2
	buf := make([]time.Time, keep)
	count, atLeast := 0, false
	t := next
	for !t.After(now) {
		buf[count%keep] = t
		count++
		if count >= maxMissedWalk {
			atLeast = true
			break
		}
		n, err := nextAfter(t)
		if err != nil {
			return Due{}, err
		}
		t = n
	}
	// ring is the latest min(count, keep) fire times, oldest first.
	ring := make([]time.Time, 0, min(count, keep))
	for i := max(0, count-keep); i < count; i++ {
		ring = append(ring, buf[i%keep])
	}
	first := next
	due := Due{}
	if atLeast {
		n, err := nextAfter(now)
		if err != nil {
			return Due{}, err
		}
		due.Next = n
	} else {
		due.Next = t
	}
	latest := ring[len(ring)-1]
	missedRing := ring[:len(ring)-1]
	missedCount := count - 1
	var onTime *Fire
	if !atLeast && now.Sub(latest) <= MisfireGrace {
		onTime = &Fire{At: latest, Kind: FireOnTime}
	} else {
		// The latest was missed too.
		missedRing = ring
		missedCount = count
	}
	send := 0
	switch s.CatchUp {
	case CatchUpOne:
		send = min(1, len(missedRing))
	case CatchUpAll:
		send = min(s.CatchUpLimit, len(missedRing))
	}
	for _, at := range missedRing[len(missedRing)-send:] {
		due.Fires = append(due.Fires, Fire{At: at, Kind: FireCaughtUp})
	}
	if onTime != nil {
		due.Fires = append(due.Fires, *onTime)
	}
	if left := missedCount - send; left > 0 {
		due.Missed = Missed{Count: left, First: first, AtLeast: atLeast}
		// The last one not sent is just before the first one sent; the
		// ring holds one more than can be sent, so it is there.
		due.Missed.Last = missedRing[len(missedRing)-send-1]
	}
	return due, nil
}

// scheduleSpace is the UUID namespace of fire request ids.
var scheduleSpace = uuid.MustParse("6f1c3c52-3f0e-5d8e-9a43-5c7d0e1b2a90")

// FireRequestID is the request id of a schedule's fire: a name-based UUID
// of the schedule's identity (which a schedule deleted and created again
// under its name does not share) and the fire time, so every node derives
// the same id for the same fire.
func FireRequestID(scheduleID uuid.UUID, at time.Time, kind FireKind) uuid.UUID {
	name := scheduleID.String() + "@" + at.UTC().Format(time.RFC3339Nano)
	if kind == FireTriggered {
		name += "#triggered"
	}
	return uuid.NewSHA1(scheduleSpace, []byte(name))
}
