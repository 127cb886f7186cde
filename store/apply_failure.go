package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// maxFailureText bounds the error kept with a failed apply, in bytes.
const maxFailureText = 2000

// MessageFault reports whether err, the failure of applying an
// orchestration message, may be the message's own fault: anything but the
// database being away, slow or busy (a lost connection, a timeout or a
// cancelled context, a serialization failure or a deadlock, a server out
// of resources or shutting down). Only such failures count towards
// queue.max_deliveries (ApplyFailed).
func MessageFault(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return false
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return false
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch pgErr.Code[:2] {
		case "08", "40", "53", "55", "57", "58":
			// Connection, transaction rollback, resources, object in use
			// (a lock not available), operator intervention, system error.
			return false
		}
	}
	return !errors.Is(err, pgx.ErrTxClosed)
}

// ApplyFailed records that the delivery of message msgID of queueName read
// readCount times failed to apply with cause (a MessageFault). A delivery
// tried several times counts once (ApplyFailures).
func (s *Store) ApplyFailed(ctx context.Context, queueName string, msgID int64, readCount int, cause error) error {
	text := cause.Error()
	if len(text) > maxFailureText {
		text = strings.ToValidUTF8(text[:maxFailureText], "")
	}
	if _, err := stmt("apply_failed").exec(ctx, s.pool, args{
		"queue_name": queueName, "msg_id": msgID, "read_count": readCount, "error": text,
	}); err != nil {
		return fmt.Errorf("recording a failed apply of message %d of %s: %w", msgID, queueName, translate(err))
	}
	return nil
}

// ApplyFailures returns how many deliveries of message msgID of queueName
// failed to apply (ApplyFailed) and the last one's error; 0 and "" when none
// did.
func (s *Store) ApplyFailures(ctx context.Context, queueName string, msgID int64) (int, string, error) {
	var (
		n    int
		last string
	)
	err := stmt("apply_failures_read").queryRow(ctx, s.pool, args{"queue_name": queueName, "msg_id": msgID}).Scan(&n, &last)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("reading the failed applies of message %d of %s: %w", msgID, queueName, translate(err))
	}
	return n, last, nil
}
