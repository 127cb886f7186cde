package workflow

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func everySecond(t *testing.T, catchUp CatchUpPolicy, limit int) Schedule {
	t.Helper()
	s := Schedule{Name: "tick", Namespace: "ops", Template: "report", Cron: "* * * * * *", CatchUp: catchUp, CatchUpLimit: limit}
	require.NoError(t, s.Normalize())
	return s
}

func fireTimes(d Due) []time.Time {
	out := make([]time.Time, 0, len(d.Fires))
	for _, f := range d.Fires {
		out = append(out, f.At)
	}
	return out
}

func TestScheduleNormalizeDefaults(t *testing.T) {
	s := Schedule{Name: "nightly", Namespace: "ops", Template: "report", Cron: "0 3 * * *"}
	require.NoError(t, s.Normalize())
	assert.Equal(t, "UTC", s.TimeZone)
	assert.Equal(t, OverlapSkip, s.Overlap)
	assert.Equal(t, CatchUpOne, s.CatchUp)
	assert.Equal(t, CatchUpLimitDefault, s.CatchUpLimit)
	assert.JSONEq(t, `{}`, string(s.Context))
}

func TestScheduleNormalizeNamesTheField(t *testing.T) {
	base := Schedule{Name: "nightly", Namespace: "ops", Template: "report", Cron: "0 3 * * *"}
	cases := []struct {
		field string
		edit  func(s *Schedule)
	}{
		{"name", func(s *Schedule) { s.Name = "Nightly Report" }},
		{"name", func(s *Schedule) { s.Name = "" }},
		{"namespace", func(s *Schedule) { s.Namespace = "ops-1" }},
		{"template", func(s *Schedule) { s.Template = "" }},
		{"version", func(s *Schedule) { s.Version = "v1" }},
		{"cron", func(s *Schedule) { s.Cron = "61 * * * *" }},
		{"cron", func(s *Schedule) { s.Cron = "CRON_TZ=Europe/Paris 0 3 * * *" }},
		{"time_zone", func(s *Schedule) { s.TimeZone = "Mars/Olympus" }},
		{"context", func(s *Schedule) { s.Context = json.RawMessage(`[1]`) }},
		{"overlap", func(s *Schedule) { s.Overlap = "queue" }},
		{"catch_up", func(s *Schedule) { s.CatchUp = "some" }},
		{"catch_up_limit", func(s *Schedule) { s.CatchUpLimit = CatchUpLimitMax + 1 }},
	}
	for _, c := range cases {
		s := base
		c.edit(&s)
		err := s.Normalize()
		var se *ScheduleError
		require.ErrorAs(t, err, &se, c.field)
		assert.Equal(t, c.field, se.Field, err.Error())
	}
}

func TestScheduleCheckNotDue(t *testing.T) {
	s := everySecond(t, CatchUpAll, 100)
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	d, err := s.Check(t0.Add(time.Second), t0)
	require.NoError(t, err)
	assert.Empty(t, d.Fires)
	assert.Equal(t, t0.Add(time.Second), d.Next)
}

func TestScheduleCheckOnTime(t *testing.T) {
	s := everySecond(t, CatchUpNone, 0)
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	d, err := s.Check(t0, t0.Add(300*time.Millisecond))
	require.NoError(t, err)
	assert.Equal(t, []Fire{{At: t0, Kind: FireOnTime}}, d.Fires)
	assert.Zero(t, d.Missed.Count)
	assert.Equal(t, t0.Add(time.Second), d.Next)
}

// After 30 s with no node checking, a check at t0+31s sees 31 due fires:
// the latest is on time, 30 were missed.
func TestScheduleCheckAfterDowntime(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	next, now := t0.Add(time.Second), t0.Add(31*time.Second+200*time.Millisecond)
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

	s := everySecond(t, CatchUpNone, 0)
	d, err := s.Check(next, now)
	require.NoError(t, err)
	assert.Equal(t, []time.Time{sec(31)}, fireTimes(d))
	assert.Equal(t, Missed{Count: 30, First: sec(1), Last: sec(30)}, d.Missed)
	assert.Equal(t, sec(32), d.Next)

	s = everySecond(t, CatchUpOne, 0)
	d, err = s.Check(next, now)
	require.NoError(t, err)
	assert.Equal(t, []Fire{{At: sec(30), Kind: FireCaughtUp}, {At: sec(31), Kind: FireOnTime}}, d.Fires)
	assert.Equal(t, Missed{Count: 29, First: sec(1), Last: sec(29)}, d.Missed)

	s = everySecond(t, CatchUpAll, 100)
	d, err = s.Check(next, now)
	require.NoError(t, err)
	require.Len(t, d.Fires, 31)
	assert.Equal(t, sec(1), d.Fires[0].At)
	assert.Equal(t, FireCaughtUp, d.Fires[0].Kind)
	assert.Equal(t, Fire{At: sec(31), Kind: FireOnTime}, d.Fires[30])
	assert.Zero(t, d.Missed.Count)

	s = everySecond(t, CatchUpAll, 10)
	d, err = s.Check(next, now)
	require.NoError(t, err)
	require.Len(t, d.Fires, 11)
	assert.Equal(t, sec(21), d.Fires[0].At)
	assert.Equal(t, Missed{Count: 20, First: sec(1), Last: sec(20)}, d.Missed)
}

// A fire seen more than MisfireGrace late was missed too: with catch_up
// none nothing is sent for it.
func TestScheduleCheckLateBeyondGrace(t *testing.T) {
	s := Schedule{Name: "hourly", Namespace: "ops", Template: "report", Cron: "@hourly", CatchUp: CatchUpNone}
	require.NoError(t, s.Normalize())
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	d, err := s.Check(t0, t0.Add(20*time.Minute))
	require.NoError(t, err)
	assert.Empty(t, d.Fires)
	assert.Equal(t, Missed{Count: 1, First: t0, Last: t0}, d.Missed)
	assert.Equal(t, t0.Add(time.Hour), d.Next)

	s.CatchUp = CatchUpOne
	d, err = s.Check(t0, t0.Add(20*time.Minute))
	require.NoError(t, err)
	assert.Equal(t, []Fire{{At: t0, Kind: FireCaughtUp}}, d.Fires)
	assert.Zero(t, d.Missed.Count)
}

func TestScheduleCheckBoundsTheWalk(t *testing.T) {
	s := everySecond(t, CatchUpNone, 0)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(30 * 24 * time.Hour)
	d, err := s.Check(t0, now)
	require.NoError(t, err)
	assert.True(t, d.Missed.AtLeast)
	assert.Equal(t, maxMissedWalk, d.Missed.Count)
	assert.Empty(t, d.Fires)
	assert.Equal(t, now.Add(time.Second).Truncate(time.Second), d.Next)
}

func TestScheduleTimeZone(t *testing.T) {
	s := Schedule{Name: "paris", Namespace: "ops", Template: "report", Cron: "0 9 * * *", TimeZone: "Europe/Paris"}
	require.NoError(t, s.Normalize())
	n, err := s.Next(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC), n)
}

// The cron library's documented behaviour across daylight saving: a time
// skipped when clocks move forward does not fire that day; a time that
// happens twice when they move back fires twice.
func TestScheduleDaylightSaving(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	s := Schedule{Name: "night", Namespace: "ops", Template: "report", Cron: "30 2 * * *", TimeZone: "America/New_York"}
	require.NoError(t, s.Normalize())
	n, err := s.Next(time.Date(2026, 3, 7, 12, 0, 0, 0, ny))
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 3, 9, 2, 30, 0, 0, ny), n.In(ny), "2:30 does not exist on 8 March 2026")

	s.Cron = "30 1 * * *"
	first, err := s.Next(time.Date(2026, 10, 31, 12, 0, 0, 0, ny))
	require.NoError(t, err)
	second, err := s.Next(first)
	require.NoError(t, err)
	assert.Equal(t, time.Hour, second.Sub(first), "1:30 happens twice on 1 November 2026")
}

func TestFireRequestID(t *testing.T) {
	id := uuid.MustParse("0193e7a0-0000-7000-8000-0000000000aa")
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	a := FireRequestID(id, at, FireOnTime)
	assert.Equal(t, a, FireRequestID(id, at.In(time.FixedZone("x", 3600)), FireCaughtUp), "same fire, same id")
	assert.NotEqual(t, a, FireRequestID(id, at.Add(time.Second), FireOnTime))
	assert.NotEqual(t, a, FireRequestID(uuid.MustParse("0193e7a0-0000-7000-8000-0000000000ab"), at, FireOnTime))
	assert.NotEqual(t, a, FireRequestID(id, at, FireTriggered))
}
