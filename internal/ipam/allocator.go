package ipam

import (
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// PoolUsage reports how full one pool is. Capacity counts the addresses that
// can be handed out (reserved addresses excluded) and saturates at
// math.MaxUint64 for IPv6 pools larger than a /64. InUse counts allocated
// addresses inside the pool.
type PoolUsage struct {
	Prefix   netip.Prefix `json:"prefix"`
	Capacity uint64       `json:"capacity"`
	InUse    int          `json:"inUse"`
}

// Option configures an Allocator.
type Option func(*Allocator)

// WithClock sets the clock used for Allocation.Created (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(a *Allocator) {
		if now != nil {
			a.now = now
		}
	}
}

// Allocator hands out addresses from a set of pools: any number of
// non-overlapping prefixes per address family (a node's pod CIDRs, or the
// IPAM blocks the node holds), changeable at run time with SetPools, AddPool
// and RemovePool. Every change to allocations is a single Store.Commit; the
// in-memory index is touched only after Commit returned nil. The pool set is
// configuration, not state: it is never persisted. It is safe for concurrent
// use.
type Allocator struct {
	mu      sync.Mutex
	store   Store
	now     func() time.Time
	pools   []*pool // IPv4 first, then IPv6
	cursors map[string]netip.Addr
	byKey   map[Key]Allocation
	byAddr  map[netip.Addr]Key
}

// New loads the store's snapshot and returns an Allocator over pools (see
// SetPools for the rules; none is allowed, e.g. until the node has claimed
// its first IPAM block, and Allocate then fails with ErrExhausted). Stored
// allocations outside the pools are kept and reported but their addresses
// are never handed out again. Two stored allocations sharing an address are
// an error.
func New(store Store, pools []netip.Prefix, opts ...Option) (*Allocator, error) {
	if store == nil {
		return nil, fmt.Errorf("ipam: new: nil store")
	}
	ps, err := newPools(pools)
	if err != nil {
		return nil, fmt.Errorf("ipam: new: %w", err)
	}
	snap, err := store.Load()
	if err != nil {
		return nil, fmt.Errorf("ipam: new: load: %w", err)
	}
	a := &Allocator{
		store:   store,
		now:     time.Now,
		pools:   ps,
		cursors: make(map[string]netip.Addr, len(snap.Cursors)),
		byKey:   make(map[Key]Allocation, len(snap.Allocations)),
		byAddr:  make(map[netip.Addr]Key),
	}
	for _, o := range opts {
		o(a)
	}
	for k, v := range snap.Cursors {
		a.cursors[k] = v
	}
	for _, al := range snap.Allocations {
		if _, dup := a.byKey[al.Key]; dup {
			return nil, fmt.Errorf("ipam: new: key %s stored twice", al.Key)
		}
		for _, ad := range al.Addrs {
			if !ad.IsValid() {
				return nil, fmt.Errorf("ipam: new: allocation %s has an invalid address", al.Key)
			}
			if other, dup := a.byAddr[ad]; dup {
				return nil, fmt.Errorf("ipam: new: address %s is allocated to both %s and %s", ad, other, al.Key)
			}
			a.byAddr[ad] = al.Key
		}
		a.index(cloneAlloc(al))
	}
	return a, nil
}

// index adds al (owned by the allocator) to the in-memory maps.
func (a *Allocator) index(al Allocation) {
	a.byKey[al.Key] = al
	for _, ad := range al.Addrs {
		a.byAddr[ad] = al.Key
		for _, p := range a.pools {
			if p.counts(ad) {
				p.used++
			}
		}
	}
}

// unindex removes al from the in-memory maps.
func (a *Allocator) unindex(al Allocation) {
	delete(a.byKey, al.Key)
	for _, ad := range al.Addrs {
		if a.byAddr[ad] == al.Key {
			delete(a.byAddr, ad)
		}
		for _, p := range a.pools {
			if p.counts(ad) {
				p.used--
			}
		}
	}
}

func validKey(k Key) error {
	for _, f := range []struct{ name, v string }{
		{"network", k.Network}, {"containerID", k.ContainerID}, {"ifName", k.IfName},
	} {
		if f.v == "" {
			return fmt.Errorf("invalid key %q: empty %s", k, f.name)
		}
		if strings.Contains(f.v, "/") {
			return fmt.Errorf("invalid key %q: %s contains '/'", k, f.name)
		}
	}
	return nil
}

// Allocate returns the allocation for o.Key, creating it if needed. An
// existing allocation is returned unchanged with created=false and nothing is
// written. A new allocation holds one address per address family present in
// the pool set (IPv4 first): the family's pools are tried in order and the
// first one not full gives the next free address after its cursor
// (round-robin). The allocation and the advanced cursors are persisted in
// one Commit. If every pool of some family is full the error is an
// *ExhaustedError (naming the family, matching ErrExhausted) and nothing is
// committed; so it is, with Family 0, when there is no pool at all.
func (a *Allocator) Allocate(o Owner) (Allocation, bool, error) {
	if err := validKey(o.Key); err != nil {
		return Allocation{}, false, fmt.Errorf("ipam: allocate: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if al, ok := a.byKey[o.Key]; ok {
		return cloneAlloc(al), false, nil
	}
	if len(a.pools) == 0 {
		return Allocation{}, false, &ExhaustedError{}
	}
	al := Allocation{Owner: o, Created: a.now().Round(0).UTC()}
	cursors := make(map[string]netip.Addr, 2)
	for _, ps := range a.families() {
		ad, key, err := a.pickFamily(ps)
		if err != nil {
			return Allocation{}, false, err
		}
		al.Addrs = append(al.Addrs, ad)
		cursors[key] = ad
	}
	if err := a.store.Commit(Change{Put: []Allocation{cloneAlloc(al)}, Cursors: cursors}); err != nil {
		return Allocation{}, false, fmt.Errorf("ipam: allocate %s: commit: %w", o.Key, err)
	}
	for k, v := range cursors {
		a.cursors[k] = v
	}
	a.index(cloneAlloc(al))
	return al, true, nil
}

// Release deletes the allocation for k in one Commit and returns it. Releasing
// an unknown key returns false and no error, without writing.
func (a *Allocator) Release(k Key) (Allocation, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.byKey[k]
	if !ok {
		return Allocation{}, false, nil
	}
	if err := a.store.Commit(Change{Delete: []Key{k}}); err != nil {
		return Allocation{}, false, fmt.Errorf("ipam: release %s: commit: %w", k, err)
	}
	a.unindex(al)
	return cloneAlloc(al), true, nil
}

// Update rewrites the recorded owner fields of the allocation for k in one
// Commit. mutate must not change the Key. A missing allocation yields an
// error wrapping fs.ErrNotExist; an unchanged owner writes nothing.
func (a *Allocator) Update(k Key, mutate func(*Owner)) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.byKey[k]
	if !ok {
		return fmt.Errorf("ipam: update %s: %w", k, fs.ErrNotExist)
	}
	o := al.Owner
	mutate(&o)
	if o.Key != k {
		return fmt.Errorf("ipam: update %s: key must not change (got %s)", k, o.Key)
	}
	if o == al.Owner {
		return nil
	}
	upd := cloneAlloc(al)
	upd.Owner = o
	if err := a.store.Commit(Change{Put: []Allocation{cloneAlloc(upd)}}); err != nil {
		return fmt.Errorf("ipam: update %s: commit: %w", k, err)
	}
	a.byKey[k] = upd // same addresses: byAddr and usage unchanged
	return nil
}

// Get returns the allocation for k.
func (a *Allocator) Get(k Key) (Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.byKey[k]
	if !ok {
		return Allocation{}, false
	}
	return cloneAlloc(al), true
}

// Owner returns the allocation holding addr.
func (a *Allocator) Owner(addr netip.Addr) (Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k, ok := a.byAddr[addr.Unmap()]
	if !ok {
		return Allocation{}, false
	}
	return cloneAlloc(a.byKey[k]), true
}

// List returns all allocations, including those outside the current pools,
// sorted by Key string.
func (a *Allocator) List() []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Allocation, 0, len(a.byKey))
	for _, al := range a.byKey {
		out = append(out, cloneAlloc(al))
	}
	slices.SortFunc(out, func(x, y Allocation) int { return strings.Compare(x.Key.String(), y.Key.String()) })
	return out
}

// Pools returns the configured pools, IPv4 first, each family in the order
// its pools are tried.
func (a *Allocator) Pools() []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.prefixesLocked()
}

// Usage reports capacity and use per pool, in the order of Pools.
func (a *Allocator) Usage() []PoolUsage {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]PoolUsage, len(a.pools))
	for i, p := range a.pools {
		out[i] = PoolUsage{Prefix: p.prefix, Capacity: p.capacity, InUse: p.used}
	}
	return out
}

func cloneAlloc(al Allocation) Allocation {
	al.Addrs = slices.Clone(al.Addrs)
	return al
}
