package store

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/workflow"
)

// StatementTexts returns every statement's SQL by name, for the tests that
// read them.
func StatementTexts() map[string]string {
	out := make(map[string]string, len(statements))
	for name, st := range statements {
		out[name] = st.sql
	}
	return out
}

// TaskFinalizeInTx runs the finalization of a task in progress in tx and
// returns the task's state afterwards.
func (s *Store) TaskFinalizeInTx(ctx context.Context, tx pgx.Tx, task uuid.UUID) (workflow.TaskState, error) {
	b := &pgx.Batch{}
	state := resultTaskState
	s.queueTasksFinalize(b, []uuid.UUID{task}, resultTaskState, func(_ uuid.UUID, to workflow.TaskState) { state = to })
	err := tx.SendBatch(ctx, b).Close()
	return state, err
}

// Positional is positional, for its test.
var Positional = positional

// DB is what statements run on: the pool or a transaction.
type DB = db

// TemplateResolveOn resolves a template reference as a request does, on d,
// and returns the version found.
func (s *Store) TemplateResolveOn(ctx context.Context, d DB, namespace, name, version string) (string, error) {
	rt, err := s.templateResolve(ctx, d, namespace, name, version)
	return rt.Version, err
}

// MigrateBefore applies the embedded migrations older than version, as a
// database last migrated by an older build has them.
func MigrateBefore(ctx context.Context, pool *pgxpool.Pool, version int) error {
	ms, err := Migrations()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Version >= version {
			break
		}
		if _, err := applyMigration(ctx, pool, m); err != nil {
			return err
		}
	}
	return nil
}
