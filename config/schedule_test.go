package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/workflow"
)

func TestSchedulesParse(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
[retention]
complete_tasks = "1d12h"
archives = "0s"

[[schedules]]
name = "nightly"
namespace = "ops"
template = "report"
cron = "0 3 * * *"
time_zone = "Europe/Paris"
context = { customer = "acme", window = { days = 1 } }

[[schedules]]
name = "tick"
namespace = "ops"
template = "ping"
cron = "*/5 * * * * *"
overlap = "allow"
catch_up = "all"
catch_up_limit = 100
`), EnvDevelopment, nil)
	require.NoError(t, err)
	require.Equal(t, Duration(36*time.Hour), c.Retention.CompleteTasks)
	require.Zero(t, c.Retention.Archives)
	defs := c.ScheduleDefinitions()
	require.Len(t, defs, 2)
	require.JSONEq(t, `{"customer": "acme", "window": {"days": 1}}`, string(defs[0].Context))
	require.Equal(t, workflow.OverlapSkip, defs[0].Overlap)
	require.Equal(t, workflow.CatchUpOne, defs[0].CatchUp)
	require.Equal(t, workflow.CatchUpAll, defs[1].CatchUp)
	require.Equal(t, 100, defs[1].CatchUpLimit)
}

func TestSchedulesProblemsNameTheKey(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(`
[[schedules]]
name = "nightly"
namespace = "ops"
template = "report"
cron = "0 25 * * *"

[[schedules]]
name = "nightly"
namespace = "ops"
template = "report"
cron = "0 3 * * *"
time_zone = "Nowhere/City"

[[schedules]]
name = "tick"
namespace = "ops"
template = "report"
cron = "@hourly"
every = "1s"

[retention]
failed_tasks = "5ms"
`), EnvDevelopment, nil)
	var verr *ValidationError
	require.ErrorAs(t, err, &verr)
	require.Contains(t, verr.Problems, `unknown config key "schedules.every"`)
	joined := err.Error()
	require.Contains(t, joined, `schedules[0].cron "0 25 * * *"`)
	require.Contains(t, joined, `schedules[1].time_zone "Nowhere/City" is not an IANA time zone`)
	require.Contains(t, joined, `retention.failed_tasks must be 0 (keep forever) or at least 1s (got 5ms)`)

	_, err = Parse([]byte(`
[[schedules]]
name = "a"
namespace = "ops"
template = "report"
cron = "@hourly"

[[schedules]]
name = "a"
namespace = "ops"
template = "other"
cron = "@daily"
`), EnvDevelopment, nil)
	require.ErrorContains(t, err, `schedules[1].name "a" is also the name of schedules[0]`)
}
