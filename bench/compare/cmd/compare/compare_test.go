package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStatMedianOfOddAndEvenCounts(t *testing.T) {
	if got := stat([]float64{5, 1, 3}); got != (Stat{Median: 3, Min: 1, Max: 5}) {
		t.Errorf("odd count: got %+v", got)
	}
	if got := stat([]float64{4, 1, 3, 10}); got != (Stat{Median: 3.5, Min: 1, Max: 10}) {
		t.Errorf("even count: got %+v", got)
	}
	if got := stat(nil); got != (Stat{}) {
		t.Errorf("no values: got %+v", got)
	}
}

func TestStatLeavesItsInputInOrder(t *testing.T) {
	v := []float64{3, 1, 2}
	stat(v)
	if v[0] != 3 || v[1] != 1 || v[2] != 2 {
		t.Errorf("stat reordered its input: %v", v)
	}
}

// The ratios are each round's, not the ratio of the medians: a slow round of
// River beside a slow round of Tasker gives the same ratio as two fast ones.
func TestSummarizeRatiosArePerRound(t *testing.T) {
	round := func(pg, river, tasker float64) Round {
		return Round{
			Pgbench: Measurement{Rate: pg}, River: Measurement{Rate: river}, Tasker: Measurement{Rate: tasker},
			TaskerPerRiver: ratio(tasker, river), TaskerPerPgbench: ratio(tasker, pg),
		}
	}
	rounds := []Round{round(4000, 10000, 1000), round(2000, 20000, 200), round(4000, 40000, 4000)}
	s := summarize(rounds)
	if s.River.Rate.Median != 20000 || s.Tasker.Rate.Median != 1000 {
		t.Fatalf("medians of the rates: River %v, Tasker %v", s.River.Rate.Median, s.Tasker.Rate.Median)
	}
	// The medians' ratio would be 0.05; the rounds' ratios are 0.1, 0.01, 0.1.
	if want := (Stat{Median: 0.1, Min: 0.01, Max: 0.1}); s.TaskerPerRiver != want {
		t.Errorf("Tasker/River: got %+v, want %+v", s.TaskerPerRiver, want)
	}
	if want := (Stat{Median: 0.25, Min: 0.1, Max: 1}); s.TaskerPerPgbench != want {
		t.Errorf("Tasker/pgbench: got %+v, want %+v", s.TaskerPerPgbench, want)
	}
}

func TestRatioOfZeroRateIsZero(t *testing.T) {
	if got := ratio(500, 0); got != 0 {
		t.Errorf("ratio(500, 0) = %v, want 0", got)
	}
}

const pgbenchOutput = `pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: <builtin: simple update>
scaling factor: 1
query mode: simple
number of clients: 4
number of threads: 1
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 44301
number of failed transactions: 0 (0.000%)
latency average = 0.902 ms
initial connection time = 6.120 ms
tps = 4430.512345 (without initial connection time)
`

func TestParsePgbenchReadsRateAndTransactions(t *testing.T) {
	tps, txs, err := parsePgbench([]byte(pgbenchOutput))
	if err != nil {
		t.Fatal(err)
	}
	if tps != 4430.512345 || txs != 44301 {
		t.Errorf("got %v tps, %d transactions", tps, txs)
	}
}

func TestParsePgbenchRefusesOutputWithoutSummary(t *testing.T) {
	_, _, err := parsePgbench([]byte("pgbench: error: connection to server failed\n"))
	if err == nil || !strings.Contains(err.Error(), "no tps") {
		t.Errorf("got %v, want an error naming the missing tps", err)
	}
}

func TestParseTaskerReadsStepsAndRate(t *testing.T) {
	steps, rate, err := parseTasker([]byte(`{"complete": true, "steps": 80000, "steps_complete": 80000, "steps_per_sec": 481.5}`))
	if err != nil {
		t.Fatal(err)
	}
	if steps != 80000 || rate != 481.5 {
		t.Errorf("got %d steps at %v/s", steps, rate)
	}
}

func TestParseTaskerRefusesAnIncompleteRun(t *testing.T) {
	_, _, err := parseTasker([]byte(`{"complete": false, "steps": 80000, "steps_complete": 1200, "steps_per_sec": 40}`))
	if err == nil || !strings.Contains(err.Error(), "1200 of 80000") {
		t.Errorf("got %v, want an error with the steps complete", err)
	}
}

func TestWithDatabaseReplacesOnlyTheDatabase(t *testing.T) {
	got, err := withDatabase("postgres://u:p@db.example:6543/postgres?sslmode=require", "compare_1_river_2")
	if err != nil {
		t.Fatal(err)
	}
	if want := "postgres://u:p@db.example:6543/compare_1_river_2?sslmode=require"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestParseFlagsDefaults(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Server != defaultServer || o.Rounds != 3 || o.PgbenchClients != 4 || o.PgbenchDuration != 10*time.Second ||
		o.RiverJobs != 200000 || o.TaskerTasks != 20000 || o.TaskerPattern != "linear" {
		t.Errorf("defaults: %+v", o)
	}
}

func TestParseFlagsRefusesBadInputByName(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rounds", "0"}, "--rounds"},
		{[]string{"--server", "mysql://x/y"}, "--server"},
		{[]string{"--pgbench-duration", "1500ms"}, "--pgbench-duration"},
		{[]string{"--river-jobs", "0"}, "--river-jobs"},
		{[]string{"--tasker-tasks", "-1"}, "--tasker-tasks"},
		{[]string{"--tasker-workers", "-1"}, "--tasker-workers"},
		{[]string{"extra"}, `"extra"`},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}

func TestFindRepoWalksUpToTaskersModule(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module github.com/tasker-run/tasker\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(root, "bench", "compare")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	// The comparison module's own go.mod is passed over.
	if err := os.WriteFile(filepath.Join(nested, "go.mod"), []byte("module github.com/tasker-run/tasker/bench/compare\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := findRepo(nested)
	if err != nil {
		t.Fatal(err)
	}
	if got != root {
		t.Errorf("got %s, want %s", got, root)
	}
	if _, err := findRepo(t.TempDir()); err == nil || !strings.Contains(err.Error(), "--repo") {
		t.Errorf("outside a repository: got %v, want an error pointing to --repo", err)
	}
}

func TestPrintTableShowsMediansRangesAndRatios(t *testing.T) {
	rounds := []Round{
		{Pgbench: Measurement{Rate: 4430, CommitsPerUnit: 1, RowsPerUnit: 2, WALPerUnit: 2200},
			River:  Measurement{Rate: 16006, CommitsPerUnit: 0.0036, Report: []byte(`{"river_version": "v0.51.2"}`)},
			Tasker: Measurement{Rate: 481, RowsPerUnit: 17.25}, TaskerPerRiver: 0.03, TaskerPerPgbench: 0.11},
	}
	res := &Result{Server: "postgres://h/db", PostgresVersion: "15", Rounds: rounds, Summary: summarize(rounds),
		Options: options{PgbenchClients: 4, PgbenchDuration: 10 * time.Second, RiverJobs: 200000, TaskerTasks: 20000, TaskerPattern: "linear"}}
	var b bytes.Buffer
	printTable(&b, res)
	for _, want := range []string{
		"4,430 tps (4,430–4,430)", "River v0.51.2, burn-down of 200,000 no-op jobs", "16,006 jobs/s",
		"burn-down of 20,000 linear tasks", "481 steps/s", "17.25", "2.2 kB", "0.0036",
		"Tasker/River", "0.030× (0.030–0.030)", "Tasker/pgbench", "0.110×",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 200000: "200,000", 1234567.6: "1,234,568", -4500: "-4,500"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %s, want %s", in, got, want)
		}
	}
}
