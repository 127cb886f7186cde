package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/store"
)

func TestMessageFault(t *testing.T) {
	for err, fault := range map[error]bool{
		errors.New("boom"): true,
		&pgconn.PgError{Code: "22P02", Message: "invalid input"}: true,
		&pgconn.PgError{Code: "23503", Message: "foreign key"}:   true,
		fmt.Errorf("apply: %w", context.DeadlineExceeded):        false,
		context.Canceled: false,
		&pgconn.PgError{Code: "40P01", Message: "deadlock"}:     false,
		&pgconn.PgError{Code: "57014", Message: "canceled"}:     false,
		&pgconn.PgError{Code: "53300", Message: "too many"}:     false,
		&pgconn.PgError{Code: "08006", Message: "conn failure"}: false,
	} {
		require.Equal(t, fault, store.MessageFault(err), err.Error())
	}
	require.False(t, store.MessageFault(nil))
}

// A delivery tried several times counts once; the error is kept, cut to a
// bound and valid UTF-8.
func TestApplyFailedCountsDeliveries(t *testing.T) {
	h := newHarness(t, store.Options{})
	n, last, err := h.st.ApplyFailures(h.ctx, "orchestration_step_results", 7)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Empty(t, last)
	for _, read := range []int{1, 1, 2, 2, 2} {
		require.NoError(t, h.st.ApplyFailed(h.ctx, "orchestration_step_results", 7, read, errors.New("boom")))
	}
	n, last, err = h.st.ApplyFailures(h.ctx, "orchestration_step_results", 7)
	require.NoError(t, err)
	require.Equal(t, 2, n, "two deliveries, each tried more than once")
	require.Equal(t, "boom", last)
	long := strings.Repeat("é", 3000)
	require.NoError(t, h.st.ApplyFailed(h.ctx, "orchestration_step_results", 7, 3, errors.New(long)))
	n, last, err = h.st.ApplyFailures(h.ctx, "orchestration_step_results", 7)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.LessOrEqual(t, len(last), 2000)
	require.True(t, strings.HasPrefix(long, last))
	other, _, err := h.st.ApplyFailures(h.ctx, "orchestration_task_requests", 7)
	require.NoError(t, err)
	require.Zero(t, other, "per queue")
}
