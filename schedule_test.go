package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/testsupport"
)

// tickTOML declares a schedule firing every second that sends every fire
// it finds due, late ones included (catch_up = "all").
const tickTOML = `
[[schedules]]
name = "tick"
namespace = "linear_workflow"
template = "mathematical_sequence"
cron = "* * * * * *"
context = { even_number = 2 }
overlap = "allow"
catch_up = "all"
catch_up_limit = 100
`

// TestScheduleFiresOnceAcrossNodes runs a schedule firing every second on
// three node processes for 60 s, SIGKILLs one of them a third of the way
// and starts it again at two thirds: every second of the window fired
// exactly once. Then every node is killed for 30 s; the one started again
// sends each fire missed meanwhile, once, as its catch-up policy says.
func TestScheduleFiresOnceAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three node processes for a minute and a half")
	}
	m := newMultiNode(t)
	a := m.start("node-a", tickTOML)
	b := m.start("node-b", tickTOML)
	c := m.start("node-c", tickTOML)

	// fired counts the fires sent at or after a fire time.
	fired := func(since time.Time) int {
		return m.count(`SELECT count(*) FROM tasker.schedule_fires WHERE schedule = 'tick' AND request_id IS NOT NULL AND fire_at >= $1`, since)
	}
	var firstFire *time.Time
	testsupport.WaitFor(t, 30*time.Second, "the first fire", func() (bool, error) {
		err := m.db.QueryRow(t.Context(), `SELECT min(fire_at) FROM tasker.schedule_fires WHERE schedule = 'tick'`).Scan(&firstFire)
		return firstFire != nil, err
	})
	start := firstFire.Add(time.Second) // a whole second after the first fire
	end := start.Add(60 * time.Second)
	testsupport.WaitFor(t, 40*time.Second, "20 s of fires", func() (bool, error) { return fired(start) >= 20, nil })
	b.Kill()
	_, err := b.Wait(10 * time.Second)
	require.NoError(t, err)
	testsupport.WaitFor(t, 40*time.Second, "40 s of fires", func() (bool, error) { return fired(start) >= 40, nil })
	b = m.start("node-b", tickTOML)
	testsupport.WaitFor(t, 40*time.Second, "60 s of fires", func() (bool, error) { return fired(start) >= 61, nil })

	var sent, distinct int
	var first, last time.Time
	require.NoError(t, m.db.QueryRow(t.Context(), `
		SELECT count(*), count(DISTINCT fire_at), min(fire_at), max(fire_at) FROM tasker.schedule_fires
		WHERE schedule = 'tick' AND request_id IS NOT NULL AND fire_at >= $1 AND fire_at < $2`, start, end).
		Scan(&sent, &distinct, &first, &last))
	t.Logf("60 s window from %s: %d fires sent, %d distinct fire times, first %s, last %s", start.UTC().Format(time.RFC3339), sent, distinct, first.UTC().Format(time.TimeOnly), last.UTC().Format(time.TimeOnly))
	require.Equal(t, 60, sent, "one fire per second of the window")
	require.Equal(t, 60, distinct, "no fire time twice")
	require.Zero(t, m.count(`SELECT count(*) FROM tasker.schedule_fires WHERE schedule = 'tick' AND outcome IN ('missed', 'skipped')`))
	nodes := m.count(`SELECT count(DISTINCT node_id) FROM tasker.schedule_fires WHERE schedule = 'tick'`)
	t.Logf("fires sent by %d nodes", nodes)

	// Every fire became one task, and every task ran to the end.
	testsupport.WaitFor(t, time.Minute, "every fire's task to complete", func() (bool, error) {
		var open int
		err := m.db.QueryRow(t.Context(), `
			SELECT count(*) FROM tasker.schedule_fires f LEFT JOIN tasker.tasks k ON k.request_id = f.request_id
			WHERE f.schedule = 'tick' AND f.request_id IS NOT NULL AND f.fire_at < $1 AND k.state IS DISTINCT FROM 'complete'`, end).Scan(&open)
		return open == 0, err
	})
	require.Zero(t, m.count(`SELECT count(*) FROM tasker.tasks k WHERE requested_by = 'schedule:tick'
		AND NOT EXISTS (SELECT FROM tasker.schedule_fires f WHERE f.request_id = k.request_id)`), "every task is a fire's")

	// Downtime: no node runs for 30 s.
	for _, p := range []*testsupport.Process{a, b, c} {
		p.Kill()
		_, err := p.Wait(10 * time.Second)
		require.NoError(t, err)
	}
	var down time.Time
	require.NoError(t, m.db.QueryRow(t.Context(), `SELECT max(fire_at) FROM tasker.schedule_fires WHERE schedule = 'tick'`).Scan(&down))
	testsupport.WaitFor(t, time.Minute, "30 s of downtime", func() (bool, error) {
		var passed bool
		err := m.db.QueryRow(t.Context(), `SELECT now() >= $1::timestamptz + interval '30 seconds'`, down).Scan(&passed)
		return passed, err
	})
	m.start("node-a", tickTOML)
	var backAt *time.Time
	testsupport.WaitFor(t, 30*time.Second, "the catch-up", func() (bool, error) {
		err := m.db.QueryRow(t.Context(), `SELECT min(fire_at) FROM tasker.schedule_fires WHERE schedule = 'tick' AND outcome = 'on_time' AND fire_at > $1::timestamptz + interval '30 seconds'`, down).Scan(&backAt)
		return backAt != nil, err
	})
	back := *backAt
	caught := m.count(`SELECT count(*) FROM tasker.schedule_fires WHERE schedule = 'tick' AND outcome = 'caught_up' AND fire_at > $1 AND fire_at < $2`, down, back)
	seconds := int(back.Sub(down) / time.Second)
	t.Logf("after %d s with no node: %d missed fires sent on restart", seconds, caught)
	require.GreaterOrEqual(t, caught, 29, "catch_up = all sends the fires missed in 30 s")
	require.Equal(t, seconds, m.count(`SELECT count(DISTINCT fire_at) FROM tasker.schedule_fires WHERE schedule = 'tick' AND request_id IS NOT NULL AND fire_at > $1 AND fire_at <= $2`, down, back),
		"every second of the downtime fired")
	require.Equal(t, seconds, m.count(`SELECT count(*) FROM tasker.schedule_fires WHERE schedule = 'tick' AND request_id IS NOT NULL AND fire_at > $1 AND fire_at <= $2`, down, back),
		"none twice")
	require.Zero(t, m.count(`SELECT count(*) FROM tasker.schedule_fires WHERE schedule = 'tick' AND outcome IN ('missed', 'skipped')`))
}
