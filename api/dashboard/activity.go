package dashboard

import (
	"math"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// Activity is what the overview charts draw: the results this node
// applied over the last hour, minute by minute (steps completed, tasks
// completed per namespace, the time from a task's creation to its
// completion), and when each breaker last changed state. It is kept in
// memory, fed by the node as it works: reading it costs the database
// nothing, and a restarted node starts a new hour. Only the node that
// applies a result counts it, so a node that runs workers only has none.
// It is safe for concurrent use.
type Activity struct {
	mu       sync.Mutex
	now      func() time.Time
	started  time.Time
	minutes  [activityMinutes]activityMinute
	breakers map[string]BreakerChange
}

// activityMinutes is how far back Activity remembers.
const activityMinutes = 60

// activityMinute is one minute of results.
type activityMinute struct {
	// at is the minute (Unix seconds / 60) the counts are of; a slot whose
	// at is not the minute asked for holds nothing of it.
	at       int64
	steps    int64
	tasks    map[string]int64
	failed   map[string]int64
	latency  [latencyBuckets]uint32
	finished int64
}

// BreakerChange is a breaker's state and when it took it.
type BreakerChange struct {
	State string
	At    time.Time
}

// NewActivity returns an empty record; now is its clock (time.Now when
// nil).
func NewActivity(now func() time.Time) *Activity {
	if now == nil {
		now = time.Now
	}
	return &Activity{now: now, started: now(), breakers: map[string]BreakerChange{}}
}

// slot returns the minute of t, emptied if it held an older minute.
// a.mu is held.
func (a *Activity) slot(t time.Time) *activityMinute {
	at := t.Unix() / 60
	m := &a.minutes[at%activityMinutes]
	if m.at != at {
		*m = activityMinute{at: at, tasks: map[string]int64{}, failed: map[string]int64{}}
	}
	return m
}

// ResultApplied records a result the node applied: a completed step, and
// a task it finished, with the time since the task was created (read off
// its UUIDv7).
func (a *Activity) ResultApplied(out store.ResultOutcome) {
	if out.Ignored || out.Archived {
		return
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.slot(now)
	if out.StepState == workflow.StepStateComplete {
		m.steps++
	}
	switch {
	case out.TaskState == workflow.TaskStateComplete:
		m.tasks[out.Namespace]++
		if created, ok := uuidTime(out.TaskUUID); ok && !created.After(now) {
			m.latency[latencyBucket(now.Sub(created))]++
			m.finished++
		}
	case out.TaskState.Terminal():
		m.failed[out.Namespace]++
	}
}

// BreakerChanged records a breaker's new state.
func (a *Activity) BreakerChanged(component, state string) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.breakers[component] = BreakerChange{State: state, At: now}
}

// BreakerRemoved forgets a breaker dropped from the node.
func (a *Activity) BreakerRemoved(component string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.breakers, component)
}

// uuidTime is the creation time a UUIDv7 carries.
func uuidTime(id uuid.UUID) (time.Time, bool) {
	if id.Version() != 7 {
		return time.Time{}, false
	}
	sec, nsec := id.Time().UnixTime()
	return time.Unix(sec, nsec), true
}

// Latency buckets: bucket i holds durations up to latencyBase × latencyGrowth^i,
// so a percentile read off them is at most a tenth above the truth; the
// last bucket holds everything longer (two days and more).
const (
	latencyBuckets = 200
	latencyBase    = float64(time.Millisecond)
	latencyGrowth  = 1.1
)

func latencyBucket(d time.Duration) int {
	if float64(d) <= latencyBase {
		return 0
	}
	i := int(math.Ceil(math.Log(float64(d)/latencyBase) / math.Log(latencyGrowth)))
	return min(i, latencyBuckets-1)
}

func latencyBound(i int) time.Duration {
	return time.Duration(latencyBase * math.Pow(latencyGrowth, float64(i)))
}

// MinuteStats is one minute of the record.
type MinuteStats struct {
	// At is the minute's start.
	At time.Time
	// StepsPerSecond is the steps completed in the minute over its 60 s
	// (or over the seconds of it gone by, for the current minute).
	StepsPerSecond float64
	// Completed counts the tasks completed; P50 and P99 are the time from
	// their creation to their completion (0 when none completed).
	Completed int64
	P50, P99  time.Duration
}

// ActivitySnapshot is the record as the overview draws it.
type ActivitySnapshot struct {
	// Since is when the record starts: the node's start, or an hour ago.
	Since time.Time
	// Minutes are the last hour, oldest first, the current minute last.
	Minutes []MinuteStats
	// Namespaces are the tasks each namespace completed (and failed, any
	// other end) in each of the last 15 minutes, oldest first.
	Namespaces map[string]NamespaceActivity
	Breakers   map[string]BreakerChange
}

// NamespaceActivity is one namespace's last 15 minutes.
type NamespaceActivity struct {
	Completed []int64
	Failed    []int64
}

// sparkMinutes is the span of a namespace's sparkline.
const sparkMinutes = 15

// Snapshot returns the record now.
func (a *Activity) Snapshot() ActivitySnapshot {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := now.Unix() / 60
	snap := ActivitySnapshot{
		Since:      a.started,
		Minutes:    make([]MinuteStats, activityMinutes),
		Namespaces: map[string]NamespaceActivity{},
		Breakers:   make(map[string]BreakerChange, len(a.breakers)),
	}
	if hour := now.Add(-activityMinutes * time.Minute); snap.Since.Before(hour) {
		snap.Since = hour
	}
	for name, b := range a.breakers {
		snap.Breakers[name] = b
	}
	for i := range activityMinutes {
		at := cur - int64(activityMinutes-1-i)
		st := MinuteStats{At: time.Unix(at*60, 0)}
		m := &a.minutes[at%activityMinutes]
		if m.at == at {
			secs := 60.0
			if at == cur {
				secs = max(1, now.Sub(st.At).Seconds())
			}
			st.StepsPerSecond = float64(m.steps) / secs
			for _, n := range m.tasks {
				st.Completed += n
			}
			st.P50, st.P99 = m.percentile(0.50), m.percentile(0.99)
			if i >= activityMinutes-sparkMinutes {
				for ns, n := range m.tasks {
					snap.namespace(ns).Completed[i-(activityMinutes-sparkMinutes)] = n
				}
				for ns, n := range m.failed {
					snap.namespace(ns).Failed[i-(activityMinutes-sparkMinutes)] = n
				}
			}
		}
		snap.Minutes[i] = st
	}
	return snap
}

func (s *ActivitySnapshot) namespace(ns string) NamespaceActivity {
	na, ok := s.Namespaces[ns]
	if !ok {
		na = NamespaceActivity{Completed: make([]int64, sparkMinutes), Failed: make([]int64, sparkMinutes)}
		s.Namespaces[ns] = na
	}
	return na
}

// percentile is the bound of the bucket holding the q-th latency.
func (m *activityMinute) percentile(q float64) time.Duration {
	if m.finished == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(m.finished)))
	var seen int64
	for i, n := range m.latency {
		seen += int64(n)
		if seen >= rank {
			return latencyBound(i)
		}
	}
	return latencyBound(latencyBuckets - 1)
}
