package cowmap

import (
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// A Map holds what is added up to its bound, is read without allocating,
// and stays whole under concurrent adds.
func TestMapBoundedAndConcurrent(t *testing.T) {
	m := New[string, int](100)
	require.Nil(t, m.Load())
	m.Add("a", 1)
	b := []byte("a")
	require.Zero(t, testing.AllocsPerRun(100, func() {
		if m.Load()[string(b)] != 1 {
			t.Fatal("a is not 1")
		}
	}))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				k := strconv.Itoa(g*50 + i)
				m.Add(k, i)
			}
		})
	}
	wg.Wait()
	require.LessOrEqual(t, m.Len(), 100)
	require.Equal(t, 1, m.Load()["a"])
	for k, v := range m.Load() {
		if k != "a" {
			n, err := strconv.Atoi(k)
			require.NoError(t, err)
			require.Equal(t, n%50, v)
		}
	}
}
