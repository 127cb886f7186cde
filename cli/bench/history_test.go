package bench

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestInChunks(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		ranges [][2]int64
		wrote  int64
	)
	write := func(_ context.Context, from, to int64) (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		ranges = append(ranges, [2]int64{from, to})
		return to - from, nil
	}
	total := int64(2*historyChunk + 1)
	require.NoError(t, inChunks(context.Background(), total, write, func(n int64) { wrote += n }))
	slices.SortFunc(ranges, func(a, b [2]int64) int { return int(a[0] - b[0]) })
	require.Equal(t, [][2]int64{{0, historyChunk}, {historyChunk, 2 * historyChunk}, {2 * historyChunk, total}}, ranges)
	require.Equal(t, total, wrote)

	// The first error stops the rest and is returned.
	boom := errors.New("boom")
	calls := 0
	err := inChunks(context.Background(), 100*historyChunk, func(ctx context.Context, from, to int64) (int64, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		if from == 0 {
			return 0, boom
		}
		<-ctx.Done()
		return 0, ctx.Err()
	}, func(int64) {})
	require.ErrorIs(t, err, boom)
	require.Less(t, calls, 100)
}
