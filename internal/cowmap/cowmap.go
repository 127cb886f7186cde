// Package cowmap is a small map read on hot paths by many goroutines and
// written rarely: readers load it without a lock and index it directly (so
// that m[string(b)] allocates nothing), and each write copies it. It holds
// at most a fixed number of entries, so that keys from outside cannot grow
// it without end; past that, writes are dropped.
package cowmap

import (
	"maps"
	"sync/atomic"
)

// Map is a bounded copy-on-write map. The zero value is not usable: see New.
type Map[K comparable, V any] struct {
	limit int
	p     atomic.Pointer[map[K]V]
}

// New returns an empty Map of at most limit entries.
func New[K comparable, V any](limit int) *Map[K, V] { return &Map[K, V]{limit: limit} }

// Load returns the current map, to read only; it may be nil (reading a nil
// map finds nothing).
func (m *Map[K, V]) Load() map[K]V {
	if p := m.p.Load(); p != nil {
		return *p
	}
	return nil
}

// Add stores k → v unless the map is full. Two adds at once may lose one of
// them, which a later add puts back: the map is a cache of values that can
// always be made again.
func (m *Map[K, V]) Add(k K, v V) {
	old := m.p.Load()
	if old != nil && len(*old) >= m.limit {
		return
	}
	next := map[K]V{}
	if old != nil {
		next = maps.Clone(*old)
	}
	next[k] = v
	m.p.CompareAndSwap(old, &next)
}

// Len is how many entries the map holds.
func (m *Map[K, V]) Len() int { return len(m.Load()) }
