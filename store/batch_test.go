package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gate is a flush that records its batches and blocks on release.
type gate struct {
	mu      sync.Mutex
	batches [][]int
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gate) flush(ctx context.Context, reqs []int) ([]answer[int], error) {
	g.mu.Lock()
	g.batches = append(g.batches, append([]int(nil), reqs...))
	g.mu.Unlock()
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	out := make([]answer[int], len(reqs))
	for i, r := range reqs {
		out[i].res = r * 10
	}
	return out, nil
}

// waitBatcher waits until cond, read under b's lock, holds.
func waitBatcher[Req, Res any](t *testing.T, b *batcher[Req, Res], cond func() bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return cond()
	}, 5*time.Second, time.Millisecond)
}

// TestBatcherGroupsWhileAFlushRuns: the first call flushes alone at once;
// calls arriving meanwhile go together in the next flush, except a second
// call of a key already in it, which waits for the one after.
func TestBatcherGroupsWhileAFlushRuns(t *testing.T) {
	g := newGate()
	b := newBatcher(func(r int) any { return r % 100 }, g.flush)
	ctx := context.Background()

	var wg sync.WaitGroup
	got := make([]int, 6)
	call := func(i, req int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := b.do(ctx, req)
			assert.NoError(t, err)
			got[i] = res
		}()
	}
	call(0, 1)
	<-g.entered // the first flush holds call 1 alone
	call(1, 2)
	call(2, 3)
	call(3, 4)
	waitBatcher(t, b, func() bool { return len(b.pending) == 3 })
	call(4, 102) // same key as 2
	waitBatcher(t, b, func() bool { return len(b.pending) == 4 })
	close(g.release)
	wg.Wait()

	assert.Equal(t, []int{10, 20, 30, 40, 1020, 0}, got)
	require.Len(t, g.batches, 3)
	assert.Equal(t, []int{1}, g.batches[0])
	assert.ElementsMatch(t, []int{2, 3, 4}, g.batches[1])
	assert.Equal(t, []int{102}, g.batches[2])
}

// TestBatcherCallerGoesAway: a caller whose context ends returns at once;
// the flush is cancelled when every caller in it is gone.
func TestBatcherCallerGoesAway(t *testing.T) {
	g := newGate()
	b := newBatcher(nil, g.flush)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.do(ctx, 1)
		done <- err
	}()
	<-g.entered
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("the caller did not return when its context ended")
	}
	// The flush saw its context end (it returns without release) and the
	// batcher is free for the next call.
	waitBatcher(t, b, func() bool { return !b.running })

	close(g.release)
	res, err := b.do(context.Background(), 2)
	require.NoError(t, err)
	assert.Equal(t, 20, res)
}

// TestBatcherPanic: a panicking flush fails its calls and the batcher
// keeps working; so does a flush that answers the wrong number of calls.
func TestBatcherPanic(t *testing.T) {
	n := 0
	b := newBatcher(nil, func(ctx context.Context, reqs []int) ([]answer[int], error) {
		n++
		if n == 1 {
			panic("boom")
		}
		return make([]answer[int], len(reqs)), nil
	})
	_, err := b.do(context.Background(), 1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "panicked: boom")
	_, err = b.do(context.Background(), 2)
	require.NoError(t, err)

	short := newBatcher(nil, func(ctx context.Context, reqs []int) ([]answer[int], error) { return nil, nil })
	_, err = short.do(context.Background(), 1)
	require.Error(t, err)
	assert.False(t, errors.Is(err, context.Canceled))
}

// TestBatcherIsolatesAFailedBatch: a batch that fails as a whole is run
// again one call at a time, so only the call that fails alone fails.
func TestBatcherIsolatesAFailedBatch(t *testing.T) {
	g := newGate()
	bad := errors.New("request 13 breaks every batch it is in")
	var (
		mu    sync.Mutex
		sizes []int
	)
	b := newBatcher(nil, func(ctx context.Context, reqs []int) ([]answer[int], error) {
		mu.Lock()
		sizes = append(sizes, len(reqs))
		mu.Unlock()
		if reqs[0] == 0 {
			return g.flush(ctx, reqs) // holds the first flush open
		}
		for _, r := range reqs {
			if r == 13 {
				return nil, bad
			}
		}
		out := make([]answer[int], len(reqs))
		for i, r := range reqs {
			out[i].res = r
		}
		return out, nil
	})
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = b.do(ctx, 0) })
	<-g.entered
	results := map[int]error{}
	var rmu sync.Mutex
	for _, r := range []int{12, 13, 14} {
		wg.Go(func() {
			res, err := b.do(ctx, r)
			if err == nil {
				assert.Equal(t, r, res)
			}
			rmu.Lock()
			results[r] = err
			rmu.Unlock()
		})
	}
	waitBatcher(t, b, func() bool { return len(b.pending) == 3 })
	close(g.release)
	wg.Wait()

	assert.NoError(t, results[12])
	assert.ErrorIs(t, results[13], bad)
	assert.NoError(t, results[14])
	assert.Equal(t, []int{1, 3, 1, 1, 1}, sizes, "the batch of three failed, then each ran alone")
}

// TestBatcherFlushEndsWhenAllCallersLeave: callers leaving at any moment,
// before or while their flush starts, are all counted, so the flush is
// cancelled once the last has gone; while one caller stays, it is not.
func TestBatcherFlushEndsWhenAllCallersLeave(t *testing.T) {
	for round := range 50 {
		stay := round%2 == 1
		g := newGate()
		b := newBatcher(nil, g.flush)
		// A first flush holds the batcher, so the next calls wait in
		// pending and are taken together.
		first := make(chan error, 1)
		go func() { _, err := b.do(context.Background(), 0); first <- err }()
		<-g.entered
		var (
			wg      sync.WaitGroup
			cancels []context.CancelFunc
		)
		for i := range 8 {
			ctx, cancel := context.WithCancel(context.Background())
			cancels = append(cancels, cancel)
			wg.Go(func() {
				res, err := b.do(ctx, i+1)
				if stay && i == 0 {
					assert.NoError(t, err)
					assert.Equal(t, 10, res)
				}
			})
		}
		waitBatcher(t, b, func() bool { return len(b.pending) == 8 })
		// Let the first flush end; the eight are taken while they leave.
		g.release <- struct{}{}
		require.NoError(t, <-first)
		for i, cancel := range cancels {
			if !stay || i != 0 {
				cancel()
			}
		}
		if stay {
			<-g.entered
			g.release <- struct{}{} // the flush waited for its caller: released, it answers
			wg.Wait()
			cancels[0]()
			continue
		}
		wg.Wait()
		// Every caller left: a flush that started returns on its own
		// context's end (the gate is never released again).
		waitBatcher(t, b, func() bool { return !b.running })
	}
}
