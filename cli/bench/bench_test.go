package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/cli/bench"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/testsupport"
)

func TestMain(m *testing.M) { testsupport.Main(m) }

// benchConfig is the test environment's configuration on a fresh database,
// without the bundled templates (the bench brings its own).
func benchConfig(t *testing.T) *config.Config {
	cfg := config.Default(config.EnvTest)
	cfg.Database.URL = testsupport.NewDatabaseURL(t)
	cfg.Templates.Bundled = false
	return cfg
}

func run(t *testing.T, cfg *config.Config, o bench.Options) *bench.Report {
	t.Helper()
	logs := &bytes.Buffer{}
	o.LogOutput = logs
	o.Timeout = 2 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, cfg, o)
	require.NoError(t, err, "node log:\n%s", logs)
	require.NotNil(t, rep)
	return rep
}

// requireSane checks what holds for any complete run, whatever the
// machine's speed.
func requireSane(t *testing.T, rep *bench.Report, tasks int64) {
	t.Helper()
	require.True(t, rep.Complete)
	require.Equal(t, tasks, rep.TasksSubmitted)
	require.Equal(t, tasks, rep.TasksCreated)
	require.Equal(t, tasks, rep.TasksComplete)
	require.Zero(t, rep.TasksError)
	require.Zero(t, rep.TasksRejected)
	steps := tasks * int64(rep.StepsPerTask)
	require.Equal(t, steps, rep.Steps)
	require.Equal(t, steps, rep.StepsComplete)
	require.GreaterOrEqual(t, rep.Attempts, steps)

	require.Positive(t, rep.WindowS)
	require.Positive(t, rep.TasksPerSec)
	require.Positive(t, rep.StepsPerSec)
	require.InDelta(t, float64(rep.StepsPerTask), rep.StepsPerSec/rep.TasksPerSec, 0.01)

	for name, p := range map[string]bench.Percentiles{
		"submit→complete": rep.SubmitToComplete, "created→complete": rep.CreatedToComplete, "dispatch": rep.Dispatch,
		"start→complete": rep.StartToComplete,
	} {
		requireOrdered(t, name, p)
	}
	require.Equal(t, int(tasks), rep.SubmitToComplete.N)
	require.Equal(t, int(tasks), rep.CreatedToComplete.N)
	require.Equal(t, int(steps), rep.Dispatch.N)
	require.Equal(t, int(steps), rep.StartToComplete.N)
	require.GreaterOrEqual(t, rep.SubmitToComplete.P50, rep.CreatedToComplete.P50,
		"a task is created after its request is sent")
	require.Len(t, rep.DispatchByStep, rep.StepsPerTask)
	n := 0
	for _, s := range rep.DispatchByStep {
		requireOrdered(t, "dispatch of "+s.Step, s.Percentiles)
		n += s.N
	}
	require.Equal(t, rep.Dispatch.N, n)
	require.True(t, rep.DispatchByStep[0].Root)

	require.Positive(t, rep.Commits)
	require.Positive(t, rep.CommitsPerStep)
	require.Positive(t, rep.CPUSeconds)
	require.Positive(t, rep.CPUSecondsPer1KSteps)
	require.InDelta(t, rep.CPUSecondsPer1KSteps, rep.NodeCPUMSPerStep, 1e-9)
	require.Positive(t, rep.PeakRSSBytes)
	requirePostgres(t, rep)
}

// requirePostgres checks PostgreSQL's side of a complete run: rows and WAL
// written, a named CPU source, the tables' statistics, and no unnamed
// session of the bench or its node on the run's database.
func requirePostgres(t *testing.T, rep *bench.Report) {
	t.Helper()
	require.Positive(t, rep.RowsWritten)
	require.Equal(t, rep.RowsWritten, rep.RowsInserted+rep.RowsUpdated+rep.RowsDeleted)
	require.Positive(t, rep.RowsWrittenPerStep)
	// Every step is a row inserted and updated, and a queue message sent
	// and deleted.
	require.GreaterOrEqual(t, rep.InsertsPerStep, 2.0)
	require.GreaterOrEqual(t, rep.UpdatesPerStep, 1.0)
	require.Positive(t, rep.DeletesPerStep)
	require.InDelta(t, rep.RowsWrittenPerStep, rep.InsertsPerStep+rep.UpdatesPerStep+rep.DeletesPerStep, 1e-9)
	var steps *bench.TableWrites
	var sum int64
	for i, tw := range rep.TablesWritten {
		sum += tw.Rows()
		if tw.Table == "tasker.steps" {
			steps = &rep.TablesWritten[i]
		}
	}
	require.Equal(t, rep.RowsWritten, sum)
	require.NotNil(t, steps, "tasker.steps among %v", rep.TablesWritten)
	require.Equal(t, rep.Steps, steps.Inserts)
	require.Positive(t, rep.WALBytes)
	require.Positive(t, rep.WALBytesPerStep)

	// The test server runs on this machine (127.0.0.1 or the embedded
	// one), so its processes can be read unless pg_stat_statements is
	// installed; either way the source is named.
	switch rep.PGCPUSource {
	case "server processes", "pg_stat_statements statement time":
		require.Positive(t, rep.PGCPUMS)
		require.Positive(t, rep.PGCPUMSPerStep)
	default:
		require.Fail(t, "PostgreSQL's CPU unavailable", "%s", rep.PGCPUSource)
	}

	var tables []string
	for _, s := range rep.Statistics {
		tables = append(tables, s.Table)
		require.GreaterOrEqual(t, s.Reltuples, -1.0, s.Table)
	}
	require.Equal(t, []string{"tasker.tasks", "tasker.steps", "pgmq.q_orchestration_task_requests",
		"pgmq.q_bench_queue", "pgmq.q_orchestration_step_results"}, tables)

	require.Positive(t, rep.ActivitySamples)
	for _, c := range rep.OtherClients {
		require.NotEqual(t, rep.DatabaseName, c.Database, "a session on the run's database counted as another client: %+v", c)
	}

	var text bytes.Buffer
	require.NoError(t, rep.WriteText(&text))
	for _, want := range []string{"rows written per step (", "WAL ", "cpu/step:   node ", "PostgreSQL " + fmt.Sprintf("%.3f ms", rep.PGCPUMSPerStep),
		"(" + rep.PGCPUSource, "statistics: tasker.tasks ", "autovacuum ", "rows written per step, by table", "tasker.steps"} {
		require.Contains(t, text.String(), want)
	}
}

func requireOrdered(t *testing.T, name string, p bench.Percentiles) {
	t.Helper()
	require.Positive(t, p.N, name)
	require.GreaterOrEqual(t, p.P50, 0.0, name)
	require.LessOrEqual(t, p.P50, p.P95, name)
	require.LessOrEqual(t, p.P95, p.P99, name)
	require.LessOrEqual(t, p.P99, p.Max, name)
}

func TestBurnDown(t *testing.T) {
	t.Parallel()
	cfg := benchConfig(t)
	rep := run(t, cfg, bench.Options{Mode: bench.ModeBurnDown, Tasks: 50, Pattern: bench.PatternLinear, Workers: 2})
	requireSane(t, rep, 50)
	require.Equal(t, 4, rep.StepsPerTask)
	require.Equal(t, 2, rep.Workers)
	require.Equal(t, int64(200), rep.Attempts, "noop steps succeed at once")

	// The report survives a round trip through JSON, and the text names
	// every figure.
	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	var back bench.Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	require.Equal(t, rep.StepsComplete, back.StepsComplete)
	require.Equal(t, rep.Dispatch, back.Dispatch)
	var text bytes.Buffer
	require.NoError(t, rep.WriteText(&text))
	for _, want := range []string{"steps/s", "submit → complete", "dispatch, a (root)", "step start → complete", "per step", "CPU s per 1,000 steps", "peak RSS"} {
		require.Contains(t, text.String(), want)
	}
}

func TestBurnDownWarnsOfOtherClients(t *testing.T) {
	t.Parallel()
	cfg := benchConfig(t)
	// Another client of the run's database, in a transaction for the
	// whole run: active, for pg_stat_activity.
	ctx := context.Background()
	conf, err := pgx.ParseConfig(cfg.Database.URL)
	require.NoError(t, err)
	conf.RuntimeParams["application_name"] = "bench-test-other"
	conn, err := pgx.ConnectConfig(ctx, conf)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "SELECT 1")
	require.NoError(t, err)

	rep := run(t, cfg, bench.Options{Mode: bench.ModeBurnDown, Tasks: 20, Workers: 2})
	require.True(t, rep.Complete)
	require.Equal(t, int64(20), rep.TasksComplete)
	require.NoError(t, tx.Rollback(ctx))

	require.Positive(t, rep.ActivitySamples)
	require.NotEmpty(t, rep.OtherClients)
	require.Equal(t, bench.OtherClients{Database: rep.DatabaseName, ApplicationName: "bench-test-other",
		Sessions: 1, Samples: rep.ActivitySamples}, rep.OtherClients[0], "this database's first")
	for _, c := range rep.OtherClients[1:] {
		require.NotEqual(t, rep.DatabaseName, c.Database, "only the test's session on the run's database: %+v", c)
	}
	var text bytes.Buffer
	require.NoError(t, rep.WriteText(&text))
	require.Contains(t, text.String(), "WARNING:    other clients were active")
	require.Contains(t, text.String(), fmt.Sprintf("bench-test-other on this database (1 session, active in %d of %d samples)",
		rep.ActivitySamples, rep.ActivitySamples))
}

func TestSteady(t *testing.T) {
	t.Parallel()
	cfg := benchConfig(t)
	rep := run(t, cfg, bench.Options{Mode: bench.ModeSteady, Rate: 20, Duration: 2 * time.Second, Pattern: bench.PatternDiamond})
	requireSane(t, rep, 40)
	require.Positive(t, rep.SubmitRate)
}

func TestMixedWithFailuresAndBaseline(t *testing.T) {
	t.Parallel()
	cfg := benchConfig(t)
	rep := run(t, cfg, bench.Options{
		Mode: bench.ModeBurnDown, Tasks: 20, Pattern: bench.PatternMixed,
		FailureRate: 0.2, HandlerDuration: time.Millisecond,
		Baseline: true, BaselineClients: 2, BaselineDuration: 500 * time.Millisecond,
	})
	requireSane(t, rep, 20)
	require.Equal(t, 7, rep.StepsPerTask)
	require.NotNil(t, rep.Baseline)
	require.Positive(t, rep.Baseline.Cycles)
	require.Positive(t, rep.Baseline.CyclesPerSec)
	require.Positive(t, rep.Baseline.CommitsPerCycle)
	// A cycle inserts, updates (the read) and deletes a message.
	require.InDelta(t, 3.0, rep.Baseline.RowsWrittenPerCycle, 0.5)
	require.Positive(t, rep.Baseline.WALBytesPerCycle)
	require.Positive(t, rep.Baseline.PGCPUMSPerCycle, rep.Baseline.PGCPUSource)
	var text bytes.Buffer
	require.NoError(t, rep.WriteText(&text))
	require.Contains(t, text.String(), "per cycle: ")
	require.Positive(t, rep.BaselineRatio)
}

func TestRunsTwiceOnOneDatabase(t *testing.T) {
	t.Parallel()
	// A second run on the same database reports only its own tasks: the
	// first run's, kept, do not count.
	cfg := benchConfig(t)
	first := run(t, cfg, bench.Options{Mode: bench.ModeBurnDown, Tasks: 10, Keep: true})
	requireSane(t, first, 10)
	second := run(t, cfg, bench.Options{Mode: bench.ModeBurnDown, Tasks: 15})
	requireSane(t, second, 15)
}

func TestOptionsValidated(t *testing.T) {
	t.Parallel()
	cfg := config.Default(config.EnvTest)
	for _, o := range []bench.Options{
		{Mode: "sprint"},
		{Pattern: "star"},
		{FailureRate: 1},
		{Workers: -1},
	} {
		o.LogOutput = io.Discard
		_, err := bench.Run(context.Background(), cfg, o)
		require.ErrorIs(t, err, bench.ErrInvalid)
	}
}

func TestStoppedRunLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	cfg := benchConfig(t)
	logs := &bytes.Buffer{}
	rep, err := bench.Run(context.Background(), cfg, bench.Options{
		Mode: bench.ModeBurnDown, Tasks: 100, Workers: 1, HandlerDuration: 100 * time.Millisecond,
		Timeout: 2 * time.Second, LogOutput: logs,
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	if rep != nil {
		require.False(t, rep.Complete)
		require.Less(t, rep.TasksComplete, int64(100))
		var text bytes.Buffer
		require.NoError(t, rep.WriteText(&text))
		require.Contains(t, text.String(), "INCOMPLETE")
	}

	ctx := context.Background()
	pool, err := pgxpool.New(ctx, cfg.Database.URL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	for _, sql := range []string{
		`SELECT count(*) FROM tasker.tasks`,
		`SELECT count(*) FROM pgmq.q_orchestration_task_requests`,
		`SELECT count(*) FROM pgmq.q_bench_queue`,
		`SELECT count(*) FROM pgmq.q_orchestration_step_results`,
	} {
		var n int
		require.NoError(t, pool.QueryRow(ctx, sql).Scan(&n), sql)
		require.Zero(t, n, "%s\nlog:\n%s", sql, logs)
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	cfg := benchConfig(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, cfg.Database.URL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	count := func(sql string) int64 {
		t.Helper()
		var n int64
		require.NoError(t, pool.QueryRow(ctx, sql).Scan(&n), sql)
		return n
	}
	const history = `requested_by = '` + bench.HistoryRequestedBy + `'`
	// rows counts the rows of every table that hold the tasks of cond.
	rows := func(cond string) [5]int64 {
		t.Helper()
		tasks := `(SELECT task_uuid FROM tasker.tasks WHERE ` + cond + `)`
		return [5]int64{
			count(`SELECT count(*) FROM tasker.tasks WHERE ` + cond),
			count(`SELECT count(*) FROM tasker.steps WHERE task_uuid IN ` + tasks),
			count(`SELECT count(*) FROM tasker.step_edges WHERE task_uuid IN ` + tasks),
			count(`SELECT count(*) FROM tasker.task_transitions WHERE task_uuid IN ` + tasks),
			count(`SELECT count(*) FROM tasker.step_transitions WHERE task_uuid IN ` + tasks),
		}
	}
	// Per linear task: 1 task, 4 steps, 3 edges, 3 task and 16 step
	// transitions.
	linear := func(n int64) [5]int64 { return [5]int64{n, 4 * n, 3 * n, 3 * n, 16 * n} }

	// The history is written before the run, which counts only its own
	// tasks; kept, it stays.
	first := run(t, cfg, bench.Options{Mode: bench.ModeBurnDown, Tasks: 10, Workers: 2, History: 50, Keep: true})
	requireSane(t, first, 10)
	require.Equal(t, int64(50), first.HistoryTasks)
	require.Equal(t, linear(50), rows(history))
	require.Equal(t, linear(10), rows(`requested_by = 'tasker-bench'`))
	require.Zero(t, count(`SELECT count(*) FROM tasker.tasks WHERE `+history+
		` AND (state <> 'complete' OR finished_at IS NULL OR updated_at <> finished_at OR namespace <> 'bench' OR name <> 'linear')`))
	var text bytes.Buffer
	require.NoError(t, first.WriteText(&text))
	require.Contains(t, text.String(), "50 finished tasks in the tables")
	// The history was analyzed after it was written: the run started
	// with statistics of a table with rows.
	require.Equal(t, "tasker.tasks", first.Statistics[0].Table)
	require.True(t, first.Statistics[0].Analyzed)
	require.GreaterOrEqual(t, first.Statistics[0].Reltuples, 50.0)
	require.Contains(t, text.String(), "tasker.tasks analyzed (reltuples ")
	require.Contains(t, text.String(), "allocations")
	require.Positive(t, first.AllocsPerStep)
	require.Positive(t, first.AllocBytesPerStep)

	// A history task has the rows of a task the node ran: the same steps,
	// edges and transitions, in the same order, in time order.
	shape := func(cond string) []string {
		t.Helper()
		task := `(SELECT task_uuid FROM tasker.tasks WHERE ` + cond + ` ORDER BY created_at LIMIT 1)`
		return append(append(append(testsupport.TextRows(t, pool, `
			SELECT format('step %s %s %s %s attempts=%s base=%s max=%s %s %s/%s/%s waiting=%s parents=%s children=%s outcome=%s/%s result=%s error=%s retry_after=%s times=%s',
				position, name, namespace, handler, attempts, attempts_base, max_attempts, retryable, timeout_ms,
				backoff_base_ms, backoff_max_ms, waiting_parents, cardinality(parents), cardinality(children),
				outcome_attempt, outcome_ok, result, error, retry_after_ms,
				enqueued_at <= last_attempted_at AND last_attempted_at <= finished_at AND next_attempt_at IS NULL)
			FROM tasker.steps WHERE task_uuid = `+task+` ORDER BY position`),
			testsupport.TextRows(t, pool, `
			SELECT format('edge %s→%s', f.name, c.name)
			FROM tasker.step_edges e JOIN tasker.steps f ON f.step_uuid = e.from_step JOIN tasker.steps c ON c.step_uuid = e.to_step
			WHERE e.task_uuid = `+task+` ORDER BY f.position`)...),
			testsupport.TextRows(t, pool, `
			SELECT format('task %s→%s %s in order %s', from_state, to_state, reason,
				created_at >= lag(created_at, 1, '-infinity') OVER (ORDER BY id))
			FROM tasker.task_transitions WHERE task_uuid = `+task+` ORDER BY id`)...),
			testsupport.TextRows(t, pool, `
			SELECT format('step %s %s→%s %s attempt %s in order %s', s.name, x.from_state, x.to_state, x.reason, x.attempt,
				x.created_at >= lag(x.created_at, 1, '-infinity') OVER (ORDER BY x.id))
			FROM tasker.step_transitions x JOIN tasker.steps s USING (step_uuid)
			WHERE x.task_uuid = `+task+` ORDER BY x.id`)...)
	}
	ran := shape(`requested_by = 'tasker-bench'`)
	require.Len(t, ran, 4+3+3+16)
	require.Equal(t, ran, shape(history))

	// A second run finds enough finished tasks and writes none; it counts
	// only its own tasks, and deletes them.
	second := run(t, cfg, bench.Options{Mode: bench.ModeBurnDown, Tasks: 15, History: 50})
	requireSane(t, second, 15)
	require.Equal(t, int64(60), second.HistoryTasks, "the history and the first run's kept tasks")
	require.Equal(t, linear(50), rows(history))
	require.Equal(t, linear(10), rows(`requested_by = 'tasker-bench'`))

	// A third writes what is missing and, not kept, deletes it again with
	// everything it hangs on, leaving the earlier history alone.
	third := run(t, cfg, bench.Options{Mode: bench.ModeBurnDown, Tasks: 5, History: 100})
	requireSane(t, third, 5)
	require.Equal(t, int64(100), third.HistoryTasks)
	require.Equal(t, linear(50), rows(history))
	require.Equal(t, linear(60), rows(`true`))
}
