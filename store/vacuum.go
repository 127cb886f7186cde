package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
)

// VacuumDead stands in for autovacuum where the server runs without it
// (autovacuum = off, as some CI and managed setups do): each of Tasker's
// tables, and each table and archive of the queues given, whose dead rows
// pass autovacuum's own threshold (50 plus 20% of its live rows) is
// vacuumed, skipping one another session holds a lock on. It returns the
// tables vacuumed; with autovacuum on it does nothing.
func (s *Store) VacuumDead(ctx context.Context, queues []string) ([]string, error) {
	var on bool
	if err := stmt("autovacuum_on").queryRow(ctx, s.pool, args{}).Scan(&on); err != nil {
		return nil, fmt.Errorf("reading the autovacuum setting: %w", translate(err))
	}
	if on {
		return nil, nil
	}
	names := make([]string, 0, 2*len(queues))
	for _, q := range queues {
		t, err := queue.Table(q)
		if err != nil {
			return nil, err
		}
		a, err := queue.ArchiveTable(q)
		if err != nil {
			return nil, err
		}
		names = append(names, unquoteTable(t), unquoteTable(a))
	}
	rows, err := stmt("tables_dead").query(ctx, s.pool, args{"queue_tables": names})
	if err != nil {
		return nil, fmt.Errorf("finding tables to vacuum: %w", translate(err))
	}
	due, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("finding tables to vacuum: %w", translate(err))
	}
	var done []string
	for _, t := range due {
		if _, err := s.pool.Exec(ctx, "VACUUM (SKIP_LOCKED) "+t); err != nil {
			return done, fmt.Errorf("vacuuming %s: %w", t, translate(err))
		}
		done = append(done, t)
	}
	return done, nil
}

// unquoteTable turns "pgmq"."q_x" into pgmq.q_x, the form pg_stat_user_tables
// is matched against (queue names are lower-case identifiers).
func unquoteTable(t string) string { return strings.ReplaceAll(t, `"`, "") }
