package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Kinds of HorizonHolder.
const (
	HolderBackend         = "backend"
	HolderPrepared        = "prepared"
	HolderReplicationSlot = "replication_slot"
)

// HorizonHolder is what holds back the xmin horizon of a database: the
// oldest row version VACUUM must keep. While it is held, every deleted queue
// message and every replaced step row stays in its table and its indexes,
// and a queue read walks them all.
type HorizonHolder struct {
	// Kind is HolderBackend (a session with an open snapshot or transaction
	// id), HolderPrepared (a prepared transaction) or HolderReplicationSlot.
	Kind string
	// PID is the backend's process id; a slot's active_pid; 0 for a
	// prepared transaction or an inactive slot.
	PID int32
	// Name is a prepared transaction's gid or a slot's name; "" for a
	// backend.
	Name string
	// ApplicationName is a backend's application_name.
	ApplicationName string
	// State is a backend's state (active, idle in transaction, …);
	// "prepared"; a slot's "active" or "inactive".
	State string
	// Since is when the backend's transaction began or the transaction was
	// prepared; zero for a slot, whose age in time is not known.
	Since time.Time
	// Age is the time since Since (on the database's clock); 0 for a slot.
	Age time.Duration
	// XidAge is the age of the horizon it holds, in transactions.
	XidAge int64
}

// String names the holder for an operator: kind, pid or name, application
// and age.
func (h HorizonHolder) String() string {
	who := fmt.Sprintf("pid %d", h.PID)
	switch h.Kind {
	case HolderPrepared:
		who = fmt.Sprintf("prepared transaction %q", h.Name)
	case HolderReplicationSlot:
		who = fmt.Sprintf("replication slot %q (%s)", h.Name, h.State)
	}
	if h.ApplicationName != "" {
		who += fmt.Sprintf(" (application %q, %s)", h.ApplicationName, h.State)
	} else if h.Kind == HolderBackend {
		who += fmt.Sprintf(" (no application_name, %s)", h.State)
	}
	if h.Kind == HolderReplicationSlot {
		return fmt.Sprintf("%s, %d transactions behind", who, h.XidAge)
	}
	return fmt.Sprintf("%s for %s, %d transactions behind", who, h.Age.Round(time.Second), h.XidAge)
}

// OldestHorizonHolder returns what holds the xmin horizon of the database
// back furthest: the backend, prepared transaction or replication slot with
// the oldest xmin or transaction id, leaving out the calling session and
// autovacuum. ok is false when nothing holds it (an idle database). The
// node's own statements hold it for their few milliseconds, so a caller
// judges the holder by its Age. Backends of other roles are visible only
// with pg_read_all_stats (or as superuser).
func OldestHorizonHolder(ctx context.Context, d db) (h HorizonHolder, ok bool, err error) {
	var since *time.Time
	var age float64
	err = stmt("horizon_holder").queryRow(ctx, d, nil).Scan(&h.Kind, &h.PID, &h.Name, &h.ApplicationName,
		&h.State, &since, &age, &h.XidAge)
	if errors.Is(err, pgx.ErrNoRows) {
		return HorizonHolder{}, false, nil
	}
	if err != nil {
		return HorizonHolder{}, false, fmt.Errorf("reading the xmin horizon's holder: %w", err)
	}
	if since != nil {
		h.Since = *since
	}
	h.Age = time.Duration(age * float64(time.Second))
	return h, true, nil
}
