package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
)

// PostgreSQL's side of a run: the rows the node wrote, the WAL, the
// server's CPU time, what the planner knew of the tables and who else used
// the server meanwhile.

// counters are the server's cumulative counters at one moment.
type counters struct {
	commits int64
	// wal is the server's WAL position in bytes.
	wal int64
	// tables are the row counters of the tables of Tasker's and pgmq's
	// schemas, by qualified name.
	tables map[string]TableWrites
}

// TableWrites count the rows a run wrote to one table (pg_stat_user_tables
// n_tup_ins, n_tup_upd, n_tup_del).
type TableWrites struct {
	Table   string `json:"table"`
	Inserts int64  `json:"inserts"`
	Updates int64  `json:"updates"`
	Deletes int64  `json:"deletes"`
}

// Rows is every row the counts say were written.
func (w TableWrites) Rows() int64 { return w.Inserts + w.Updates + w.Deletes }

func (c counters) rows() int64 {
	var n int64
	for _, t := range c.tables {
		n += t.Rows()
	}
	return n
}

// writesSince is what changed from before to c, by table, the busiest
// first; tables that did not change are left out.
func (c counters) writesSince(before counters) []TableWrites {
	var out []TableWrites
	for name, t := range c.tables {
		b := before.tables[name]
		d := TableWrites{Table: name, Inserts: t.Inserts - b.Inserts, Updates: t.Updates - b.Updates, Deletes: t.Deletes - b.Deletes}
		if d.Rows() != 0 {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b TableWrites) int {
		return cmp.Or(cmp.Compare(b.Rows(), a.Rows()), strings.Compare(a.Table, b.Table))
	})
	return out
}

// counters reads the counters on a connection of its own, so that the
// bench's pooled connections do not sit on stats they have not flushed yet.
func (db *database) counters(ctx context.Context) (counters, error) {
	c := counters{tables: map[string]TableWrites{}}
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return c, fmt.Errorf("reading the server's counters: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var (
		names         []string
		ins, upd, del []int64
	)
	if err := conn.QueryRow(ctx, sqlCounters).Scan(&c.commits, &c.wal, &names, &ins, &upd, &del); err != nil {
		return c, fmt.Errorf("reading the server's counters: %w", err)
	}
	for i, name := range names {
		c.tables[name] = TableWrites{Table: name, Inserts: ins[i], Updates: upd[i], Deletes: del[i]}
	}
	return c, nil
}

// Settling: backends report their counts at the end of a transaction at
// most once a second, and when they exit; the counts of sessions that have
// just closed arrive a moment later.
const (
	settlePoll  = 100 * time.Millisecond
	settleBound = 5 * time.Second
)

// settledCounters reads the counters until two successive reads agree on
// the rows written and on the commits (but the read's own), at most
// settleBound long; it then returns the last read.
func (db *database) settledCounters(ctx context.Context) (counters, error) {
	last, err := db.counters(ctx)
	if err != nil {
		return last, err
	}
	deadline := time.Now().Add(settleBound)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(settlePoll):
		}
		c, err := db.counters(ctx)
		if err != nil {
			return last, err
		}
		// One commit is the previous read's own.
		if c.commits-last.commits <= 1 && c.rows() == last.rows() {
			return c, nil
		}
		last = c
	}
	return last, nil
}

// TableStatistics is what the planner knew of a table when the node
// started.
type TableStatistics struct {
	Table string `json:"table"`
	// Analyzed says the table was analyzed at least once (by ANALYZE or
	// autovacuum).
	Analyzed bool `json:"analyzed"`
	// Reltuples is the row count the planner assumes: -1 before the first
	// analyze or vacuum.
	Reltuples float64 `json:"reltuples"`
	// LiveRows is the live row count the statistics collector counted.
	LiveRows int64 `json:"live_rows"`
}

// statisticsTables are the tables whose statistics the report gives: the
// tasks, the steps and the queues the run uses.
func statisticsTables() []string {
	out := []string{"tasker.tasks", "tasker.steps"}
	for _, q := range []string{queue.TaskRequestsQueue, queue.NamespaceQueue(Namespace), queue.StepResultsQueue} {
		out = append(out, "pgmq.q_"+q)
	}
	return out
}

// statistics reads what the planner knows of statisticsTables, and whether
// autovacuum is on.
func (db *database) statistics(ctx context.Context) ([]TableStatistics, bool, error) {
	rows, err := db.pool.Query(ctx, sqlStatistics, statisticsTables())
	if err != nil {
		return nil, false, fmt.Errorf("reading the tables' statistics: %w", err)
	}
	var (
		out        []TableStatistics
		autovacuum bool
	)
	for rows.Next() {
		var s TableStatistics
		if err := rows.Scan(&s.Table, &s.Analyzed, &s.Reltuples, &s.LiveRows, &autovacuum); err != nil {
			rows.Close()
			return nil, false, fmt.Errorf("reading the tables' statistics: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("reading the tables' statistics: %w", err)
	}
	return out, autovacuum, nil
}

// CPU sources.
const (
	cpuSourceProcesses  = "server processes"
	cpuSourceStatements = "pg_stat_statements statement time"
)

// serverCPU is PostgreSQL's CPU (or statement) time at one moment.
type serverCPU struct {
	// statements is pg_stat_statements' statement time; ok says it was
	// read, else why says why not.
	statements       time.Duration
	statementsOK     bool
	statementsReason string
	procs            procSnapshot
	procsOK          bool
	procsReason      string
}

// serverCPU reads the server's statement time, when pg_stat_statements is
// installed, and the CPU time of its processes, when they run on this
// machine.
func (db *database) serverCPU(ctx context.Context) serverCPU {
	var s serverCPU
	if err := db.statementTime(ctx, &s); err != nil {
		s.statementsReason = err.Error()
	} else {
		s.statementsOK = true
	}
	if p, err := db.processes(ctx); err != nil {
		s.procsReason = err.Error()
	} else {
		s.procs, s.procsOK = p, true
	}
	return s
}

var errNoStatements = errors.New("the pg_stat_statements extension is not installed in the database")

func (db *database) statementTime(ctx context.Context, s *serverCPU) error {
	var installed bool
	if err := db.pool.QueryRow(ctx, sqlStatementsInstalled).Scan(&installed); err != nil {
		return fmt.Errorf("looking for pg_stat_statements: %w", err)
	}
	if !installed {
		return errNoStatements
	}
	var total float64
	if err := db.pool.QueryRow(ctx, sqlStatementTime).Scan(&total); err != nil {
		return fmt.Errorf("reading pg_stat_statements: %w", err)
	}
	s.statements = time.Duration(total * float64(time.Millisecond))
	return nil
}

// cpuUse is PostgreSQL's CPU over a run, as the report gives it.
type cpuUse struct {
	// source is cpuSourceStatements or cpuSourceProcesses, or
	// "unavailable: <why>".
	source string
	// counted is the time of the source: for the server processes, this
	// database's sessions, the server's background processes and the
	// postmaster.
	counted time.Duration
	// others and ended are, for the server processes, the CPU of other
	// databases' sessions and of sessions that ended during the run (the
	// postmaster reaped them; whose they were is not known): not counted.
	others, ended time.Duration
}

// cpuBetween is PostgreSQL's CPU from before to after: the statement time
// when pg_stat_statements was read at both ends, else the server
// processes' CPU.
func cpuBetween(before, after serverCPU) cpuUse {
	switch {
	case before.statementsOK && after.statementsOK:
		return cpuUse{source: cpuSourceStatements, counted: after.statements - before.statements}
	case before.procsOK && after.procsOK:
		u := after.procs.since(before.procs)
		u.source = cpuSourceProcesses
		return u
	}
	why := cmp.Or(before.statementsReason, after.statementsReason) + "; " +
		cmp.Or(before.procsReason, after.procsReason, "the server's processes were not read at both ends")
	return cpuUse{source: "unavailable: " + why}
}

// OtherClients are sessions of one application on one database, other
// than the bench and its node, seen active (running or in a transaction)
// while the node ran.
type OtherClients struct {
	Database        string `json:"database"`
	ApplicationName string `json:"application_name"`
	// Sessions counts distinct server processes; Samples how many of the
	// run's samples saw at least one of them active.
	Sessions int `json:"sessions"`
	Samples  int `json:"samples"`
}

// activityEvery is how often the sampler looks at pg_stat_activity.
const activityEvery = time.Second

// activity samples pg_stat_activity for other clients while the node
// runs.
type activity struct {
	db      *database
	mu      sync.Mutex
	samples int
	seen    map[[2]string]*activitySeen
	err     error
}

type activitySeen struct {
	pids    map[int32]bool
	samples int
}

func newActivity(db *database) *activity {
	return &activity{db: db, seen: map[[2]string]*activitySeen{}}
}

// sample reads the active sessions of other clients once.
func (a *activity) sample(ctx context.Context) {
	rows, err := a.db.pool.Query(ctx, sqlActiveOthers, appBench, appNode)
	if err != nil {
		a.fail(ctx, err)
		return
	}
	type session struct {
		key [2]string
		pid int32
	}
	sessions, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (session, error) {
		var s session
		err := r.Scan(&s.key[0], &s.key[1], &s.pid)
		return s, err
	})
	if err != nil {
		a.fail(ctx, err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.samples++
	counted := map[[2]string]bool{}
	for _, s := range sessions {
		seen := a.seen[s.key]
		if seen == nil {
			seen = &activitySeen{pids: map[int32]bool{}}
			a.seen[s.key] = seen
		}
		seen.pids[s.pid] = true
		if !counted[s.key] {
			counted[s.key] = true
			seen.samples++
		}
	}
}

func (a *activity) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err == nil {
		a.err = fmt.Errorf("sampling pg_stat_activity: %w", err)
	}
}

// run samples until ctx ends.
func (a *activity) run(ctx context.Context) {
	tick := time.NewTicker(activityEvery)
	defer tick.Stop()
	for {
		a.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// report returns the number of samples and the other clients seen, this
// database's first.
func (a *activity) report(database string) (int, []OtherClients, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]OtherClients, 0, len(a.seen))
	for k, s := range a.seen {
		out = append(out, OtherClients{Database: k[0], ApplicationName: k[1], Sessions: len(s.pids), Samples: s.samples})
	}
	slices.SortFunc(out, func(x, y OtherClients) int {
		return cmp.Or(-cmp.Compare(boolInt(x.Database == database), boolInt(y.Database == database)),
			cmp.Compare(y.Samples, x.Samples), strings.Compare(x.Database, y.Database), strings.Compare(x.ApplicationName, y.ApplicationName))
	})
	return a.samples, out, a.err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
