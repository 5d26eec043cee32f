package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// MemStore is an in-memory Store for tests. Its data survives Close, so the
// same MemStore passed to a second New simulates an agent restart. It does not
// validate what is committed (tests may seed inconsistent states).
type MemStore struct {
	mu       sync.Mutex
	allocs   map[Key]Allocation
	cursors  map[string]netip.Addr
	failNext error
	commits  int
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{allocs: map[Key]Allocation{}, cursors: map[string]netip.Addr{}}
}

// Load returns a deep copy of the stored state, allocations sorted by key.
func (m *MemStore) Load() (Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Snapshot{Cursors: make(map[string]netip.Addr, len(m.cursors))}
	for _, al := range m.allocs {
		s.Allocations = append(s.Allocations, cloneAlloc(al))
	}
	slices.SortFunc(s.Allocations, func(x, y Allocation) int { return strings.Compare(x.Key.String(), y.Key.String()) })
	for k, v := range m.cursors {
		s.Cursors[k] = v
	}
	return s, nil
}

// Commit applies c atomically: deletes first, then puts, then cursors. If a
// failure was armed with FailNextCommit, Commit returns it (wrapped) and
// changes nothing.
func (m *MemStore) Commit(c Change) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.failNext; err != nil {
		m.failNext = nil
		return fmt.Errorf("ipam memstore: commit: %w", err)
	}
	for _, k := range c.Delete {
		delete(m.allocs, k)
	}
	for _, al := range c.Put {
		m.allocs[al.Key] = cloneAlloc(al)
	}
	for k, v := range c.Cursors {
		m.cursors[k] = v
	}
	m.commits++
	return nil
}

// Close is a no-op; the data stays available to a later Load.
func (m *MemStore) Close() error { return nil }

// FailNextCommit makes the next Commit fail with err and change nothing.
// A nil err disarms a pending failure.
func (m *MemStore) FailNextCommit(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failNext = err
}

// Commits returns how many commits succeeded.
func (m *MemStore) Commits() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.commits
}
