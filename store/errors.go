package store

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrNotFound means the task, step or template does not exist.
	ErrNotFound = errors.New("not found")
	// ErrDuplicate means a unique key already exists.
	ErrDuplicate = errors.New("already exists")
	// ErrStale means the message refers to a state that has moved on: the
	// step was cancelled or finished, or another attempt is current. The
	// caller acknowledges the message and carries on.
	ErrStale = errors.New("stale message")
)

// RefusedError is an operator action or transition the state machine does
// not allow, with the reason a person can act on.
type RefusedError struct {
	Action string
	Reason string
	// missing marks a task request for a template not registered (yet).
	missing bool
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s refused: %s", e.Action, e.Reason)
}

// translate maps driver errors to this package's errors. It is the only place
// that knows about pgx error values.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return fmt.Errorf("%w: %s", ErrDuplicate, pgErr.ConstraintName)
	}
	return err
}

// undefinedTable reports whether err is PostgreSQL's "relation does not
// exist": a queue whose tables are not there.
func undefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01"
}
