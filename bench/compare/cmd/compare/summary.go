package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Stat is the median of the rounds with their minimum and maximum.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// SystemSummary summarises one system over the rounds.
type SystemSummary struct {
	Rate           Stat `json:"rate"`
	CommitsPerUnit Stat `json:"pg_commits_per_unit"`
	RowsPerUnit    Stat `json:"rows_written_per_unit"`
	WALPerUnit     Stat `json:"wal_bytes_per_unit"`
}

// Summary summarises the rounds; the ratios are each round's, summarised.
type Summary struct {
	Pgbench          SystemSummary `json:"pgbench"`
	River            SystemSummary `json:"river"`
	Tasker           SystemSummary `json:"tasker"`
	TaskerPerRiver   Stat          `json:"tasker_per_river"`
	TaskerPerPgbench Stat          `json:"tasker_per_pgbench"`
}

// stat summarises values; the median of an even count is the mean of the two
// middle values.
func stat(values []float64) Stat {
	if len(values) == 0 {
		return Stat{}
	}
	v := slices.Clone(values)
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Stat{Median: med, Min: v[0], Max: v[len(v)-1]}
}

func summarize(rounds []Round) Summary {
	system := func(pick func(Round) Measurement) SystemSummary {
		var rate, commits, rows, wal []float64
		for _, r := range rounds {
			m := pick(r)
			rate = append(rate, m.Rate)
			commits = append(commits, m.CommitsPerUnit)
			rows = append(rows, m.RowsPerUnit)
			wal = append(wal, m.WALPerUnit)
		}
		return SystemSummary{Rate: stat(rate), CommitsPerUnit: stat(commits), RowsPerUnit: stat(rows), WALPerUnit: stat(wal)}
	}
	var perRiver, perPgbench []float64
	for _, r := range rounds {
		perRiver = append(perRiver, r.TaskerPerRiver)
		perPgbench = append(perPgbench, r.TaskerPerPgbench)
	}
	return Summary{
		Pgbench:          system(func(r Round) Measurement { return r.Pgbench }),
		River:            system(func(r Round) Measurement { return r.River }),
		Tasker:           system(func(r Round) Measurement { return r.Tasker }),
		TaskerPerRiver:   stat(perRiver),
		TaskerPerPgbench: stat(perPgbench),
	}
}

func printTable(w io.Writer, res *Result) {
	o := res.Options
	fmt.Fprintf(w, "server %s: PostgreSQL %s, synchronous_commit=%s, autovacuum=%s; %d CPUs; rounds: %d, a fresh database for each run\n",
		res.Server, res.PostgresVersion, res.SynchronousCommit, res.Autovacuum, res.CPUs, len(res.Rounds))
	if res.OtherClients > 0 {
		fmt.Fprintf(w, "warning: %d other client connections on the server at the start\n", res.OtherClients)
	}
	fmt.Fprintln(w)
	riverVersion := ""
	if len(res.Rounds) > 0 {
		var rep struct {
			Version string `json:"river_version"`
		}
		if json.Unmarshal(res.Rounds[0].River.Report, &rep) == nil && rep.Version != "" {
			riverVersion = " " + rep.Version
		}
	}
	s := res.Summary
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "work\trate, median (min–max)\tcommits/unit\trows written/unit\tWAL/unit")
	for _, row := range []struct {
		name, unit string
		s          SystemSummary
	}{
		{fmt.Sprintf("pgbench -N, %d clients, %s", o.PgbenchClients, o.PgbenchDuration), "tps", s.Pgbench},
		{fmt.Sprintf("River%s, burn-down of %s no-op jobs", riverVersion, thousands(float64(o.RiverJobs))), "jobs/s", s.River},
		{fmt.Sprintf("tasker bench, burn-down of %s %s tasks", thousands(float64(o.TaskerTasks)), o.TaskerPattern), "steps/s", s.Tasker},
	} {
		fmt.Fprintf(tw, "%s\t%s %s (%s–%s)\t%s\t%.2f\t%s\n", row.name,
			thousands(row.s.Rate.Median), row.unit, thousands(row.s.Rate.Min), thousands(row.s.Rate.Max),
			perUnit(row.s.CommitsPerUnit.Median), row.s.RowsPerUnit.Median, kB(row.s.WALPerUnit.Median))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ratio of each round's rates	median (min–max)")
	fmt.Fprintf(tw, "Tasker/River\t%s\n", ratioText(s.TaskerPerRiver))
	fmt.Fprintf(tw, "Tasker/pgbench\t%s\n", ratioText(s.TaskerPerPgbench))
	_ = tw.Flush()
	fmt.Fprintln(w, "\nper unit: a transaction, a job, a step; the database's figures, set-up included (not pgbench -i); WAL counts the whole server")
}

func ratioText(s Stat) string {
	return fmt.Sprintf("%.3f× (%.3f–%.3f)", s.Median, s.Min, s.Max)
}

// perUnit formats a figure per unit with two decimals, or four below 0.1
// (River commits a batch of jobs at a time).
func perUnit(v float64) string {
	if v != 0 && v < 0.1 {
		return fmt.Sprintf("%.4f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func kB(bytes float64) string {
	return fmt.Sprintf("%.1f kB", bytes/1000)
}

// thousands formats v rounded to a whole number with comma separators.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
