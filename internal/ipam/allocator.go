package ipam

import (
	"fmt"
	"io/fs"
	"math"
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

// Allocator hands out addresses from at most one IPv4 and one IPv6 pool.
// Every change is a single Store.Commit; the in-memory index is touched only
// after Commit returned nil. It is safe for concurrent use.
type Allocator struct {
	mu      sync.Mutex
	store   Store
	now     func() time.Time
	pools   []*pool // IPv4 first, then IPv6
	cursors map[string]netip.Addr
	byKey   map[Key]Allocation
	byAddr  map[netip.Addr]Key
}

// pool is one configured pod CIDR.
type pool struct {
	prefix   netip.Prefix
	network  netip.Addr // first address, always reserved
	last     netip.Addr // last address, reserved for IPv4 (broadcast)
	capacity uint64
	used     int // usable (non-reserved) addresses of the pool in use
}

func newPool(p netip.Prefix) (*pool, error) {
	if !p.IsValid() {
		return nil, fmt.Errorf("invalid prefix %s", p)
	}
	if p.Addr().Is4In6() {
		return nil, fmt.Errorf("prefix %s is an IPv4-mapped IPv6 prefix; use the plain IPv4 form", p)
	}
	if p.Masked() != p {
		return nil, fmt.Errorf("prefix %s has host bits set (want %s)", p, p.Masked())
	}
	hostBits := p.Addr().BitLen() - p.Bits()
	reserved := uint64(1) // network address (IPv6: subnet-router anycast)
	if p.Addr().Is4() {
		reserved = 2 // plus broadcast
	}
	var capacity uint64
	if hostBits >= 64 {
		capacity = math.MaxUint64 // exact for a /64 (2^64-1 usable), saturated above
	} else if size := uint64(1) << hostBits; size > reserved {
		capacity = size - reserved
	}
	if capacity == 0 {
		return nil, fmt.Errorf("prefix %s has no usable address", p)
	}
	return &pool{prefix: p, network: p.Addr(), last: lastAddr(p), capacity: capacity}, nil
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		// Bits of byte i that belong to the host part.
		hostInByte := min(max(8*(i+1)-p.Bits(), 0), 8)
		b[i] |= byte(1<<hostInByte - 1)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (p *pool) reserved(a netip.Addr) bool {
	return a == p.network || (a.Is4() && a == p.last)
}

// counts reports whether a occupies a usable address of p.
func (p *pool) counts(a netip.Addr) bool {
	return p.prefix.Contains(a) && !p.reserved(a)
}

// pick returns the first free usable address after cursor, wrapping around.
func (p *pool) pick(cursor netip.Addr, inUse map[netip.Addr]Key) (netip.Addr, error) {
	if uint64(p.used) >= p.capacity {
		return netip.Addr{}, fmt.Errorf("ipam: pool %s exhausted (%d of %d addresses in use): %w",
			p.prefix, p.used, p.capacity, ErrExhausted)
	}
	a := p.network // first candidate is then network+1
	if cursor.IsValid() && p.prefix.Contains(cursor) {
		a = cursor
	}
	// A free usable address exists, so at most used+2 candidates (in use or
	// reserved) are skipped before it is found.
	for range p.used + 3 {
		a = a.Next()
		if !a.IsValid() || !p.prefix.Contains(a) {
			a = p.network
		}
		if p.reserved(a) {
			continue
		}
		if _, busy := inUse[a]; busy {
			continue
		}
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("ipam: pool %s: no free address found although %d of %d are in use (index inconsistent)",
		p.prefix, p.used, p.capacity)
}

// New loads the store's snapshot and returns an Allocator over pools (the
// node's pod CIDRs: at most one IPv4 and one IPv6 prefix). Stored allocations
// outside the pools are kept and reported but their addresses are never
// handed out again. Two stored allocations sharing an address are an error.
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

func newPools(prefixes []netip.Prefix) ([]*pool, error) {
	if len(prefixes) == 0 {
		return nil, fmt.Errorf("no pool configured")
	}
	var v4, v6 *pool
	for _, pfx := range prefixes {
		p, err := newPool(pfx)
		if err != nil {
			return nil, fmt.Errorf("pool: %w", err)
		}
		for _, q := range []*pool{v4, v6} {
			if q != nil && q.prefix.Overlaps(pfx) {
				return nil, fmt.Errorf("pools %s and %s overlap", q.prefix, pfx)
			}
		}
		slot := &v6
		if pfx.Addr().Is4() {
			slot = &v4
		}
		if *slot != nil {
			return nil, fmt.Errorf("pools %s and %s: at most one pool per address family", (*slot).prefix, pfx)
		}
		*slot = p
	}
	var out []*pool
	for _, p := range []*pool{v4, v6} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out, nil
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
// written. A new allocation holds one address per pool (IPv4 first), picked
// round-robin after each pool's cursor; it and the advanced cursors are
// persisted in one Commit. If any pool is full the error wraps ErrExhausted
// and nothing is committed.
func (a *Allocator) Allocate(o Owner) (Allocation, bool, error) {
	if err := validKey(o.Key); err != nil {
		return Allocation{}, false, fmt.Errorf("ipam: allocate: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if al, ok := a.byKey[o.Key]; ok {
		return cloneAlloc(al), false, nil
	}
	al := Allocation{Owner: o, Created: a.now().Round(0).UTC()}
	cursors := make(map[string]netip.Addr, len(a.pools))
	for _, p := range a.pools {
		ad, err := p.pick(a.cursors[p.prefix.String()], a.byAddr)
		if err != nil {
			return Allocation{}, false, err
		}
		al.Addrs = append(al.Addrs, ad)
		cursors[p.prefix.String()] = ad
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

// Pools returns the configured pools, IPv4 first.
func (a *Allocator) Pools() []netip.Prefix {
	out := make([]netip.Prefix, len(a.pools))
	for i, p := range a.pools {
		out[i] = p.prefix
	}
	return out
}

// Usage reports capacity and use per pool, IPv4 first.
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
