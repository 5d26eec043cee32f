package ipam

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
)

// ExhaustedError is returned (wrapped) by Allocate when every pool of one
// address family is full, or when there is no pool at all. It matches
// ErrExhausted with errors.Is; callers that can grow the pool set (claim
// another IPAM block) find the family with errors.As and retry after
// AddPool.
type ExhaustedError struct {
	Family int         // 4 or 6; 0 when no pool is configured
	Pools  []PoolUsage // the family's pools, in the order they were tried
}

func (e *ExhaustedError) Error() string {
	if len(e.Pools) == 0 {
		return "ipam: no pool configured"
	}
	if len(e.Pools) == 1 {
		p := e.Pools[0]
		return fmt.Sprintf("ipam: pool %s exhausted (%d of %d addresses in use), no other IPv%d pool",
			p.Prefix, p.InUse, p.Capacity, e.Family)
	}
	parts := make([]string, len(e.Pools))
	for i, p := range e.Pools {
		parts[i] = fmt.Sprintf("%s: %d of %d", p.Prefix, p.InUse, p.Capacity)
	}
	return fmt.Sprintf("ipam: all %d IPv%d pools exhausted (%s addresses in use)",
		len(e.Pools), e.Family, strings.Join(parts, ", "))
}

// Unwrap makes errors.Is(err, ErrExhausted) true.
func (e *ExhaustedError) Unwrap() error { return ErrExhausted }

// pool is one configured prefix: a node's pod CIDR or one IPAM block.
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

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 4
	}
	return 6
}

func (p *pool) reserved(a netip.Addr) bool {
	return a == p.network || (a.Is4() && a == p.last)
}

// counts reports whether a occupies a usable address of p.
func (p *pool) counts(a netip.Addr) bool {
	return p.prefix.Contains(a) && !p.reserved(a)
}

func (p *pool) full() bool { return uint64(p.used) >= p.capacity }

// pick returns the first free usable address after cursor, wrapping around.
// The pool must not be full.
func (p *pool) pick(cursor netip.Addr, inUse map[netip.Addr]Key) (netip.Addr, error) {
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

// newPools validates prefixes (none overlapping another, any number per
// family) and returns their pools: IPv4 first, then IPv6, each family in
// the given order. Usage counters are zero.
func newPools(prefixes []netip.Prefix) ([]*pool, error) {
	var v4, v6 []*pool
	for i, pfx := range prefixes {
		p, err := newPool(pfx)
		if err != nil {
			return nil, fmt.Errorf("pool: %w", err)
		}
		for _, q := range prefixes[:i] {
			if q == pfx {
				return nil, fmt.Errorf("pool %s listed twice", pfx)
			}
			if q.Overlaps(pfx) {
				return nil, fmt.Errorf("pools %s and %s overlap", q, pfx)
			}
		}
		if pfx.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	return append(v4, v6...), nil
}

// pickFamily tries ps (the pools of one family, in order) and returns an
// address of the first one that is not full, with the pool's cursor key.
func (a *Allocator) pickFamily(ps []*pool) (netip.Addr, string, error) {
	for _, p := range ps {
		if p.full() {
			continue
		}
		key := p.prefix.String()
		ad, err := p.pick(a.cursors[key], a.byAddr)
		return ad, key, err
	}
	e := &ExhaustedError{Family: family(ps[0].prefix)}
	for _, p := range ps {
		e.Pools = append(e.Pools, PoolUsage{Prefix: p.prefix, Capacity: p.capacity, InUse: p.used})
	}
	return netip.Addr{}, "", e
}

// families splits a.pools (IPv4 first) into its per-family runs.
func (a *Allocator) families() [][]*pool {
	var out [][]*pool
	for i := 0; i < len(a.pools); {
		j := i + 1
		for j < len(a.pools) && family(a.pools[j].prefix) == family(a.pools[i].prefix) {
			j++
		}
		out = append(out, a.pools[i:j])
		i = j
	}
	return out
}

// setPoolsLocked replaces the pool set with prefixes and recounts usage
// from the allocation index. Nothing is persisted: pools are configuration,
// given to New and to these methods by the caller; cursors stay keyed by
// prefix, so a pool that comes back continues after its last address.
func (a *Allocator) setPoolsLocked(prefixes []netip.Prefix) error {
	ps, err := newPools(prefixes)
	if err != nil {
		return err
	}
	for ad := range a.byAddr {
		for _, p := range ps {
			if p.counts(ad) {
				p.used++
				break // pools do not overlap
			}
		}
	}
	a.pools = ps
	return nil
}

func (a *Allocator) prefixesLocked() []netip.Prefix {
	out := make([]netip.Prefix, len(a.pools))
	for i, p := range a.pools {
		out[i] = p.prefix
	}
	return out
}

// SetPools replaces the pool set (prefixes not overlapping each other, any
// number per family, each family tried in the given order; an empty set is
// allowed and makes Allocate fail with ErrExhausted).
// Allocations outside the new set are kept, listed and releasable, and
// their addresses are never handed out again while they are held. It writes
// nothing to the store. On error the pool set is unchanged.
func (a *Allocator) SetPools(pools []netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.setPoolsLocked(pools); err != nil {
		return fmt.Errorf("ipam: set pools: %w", err)
	}
	return nil
}

// AddPool appends p to the pools of its family (tried after the others).
// Adding a pool already in the set does nothing; one overlapping another
// pool is an error.
func (a *Allocator) AddPool(p netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.prefixesLocked()
	if slices.Contains(cur, p) {
		return nil
	}
	if err := a.setPoolsLocked(append(cur, p)); err != nil {
		return fmt.Errorf("ipam: add pool %s: %w", p, err)
	}
	return nil
}

// RemovePool removes p from the pool set. While any allocation holds an
// address inside p it refuses with an error wrapping ErrPoolInUse, so
// "RemovePool, then give the block back" cannot race with an Allocate
// taking an address from it. Removing a pool not in the set does nothing.
func (a *Allocator) RemovePool(p netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.prefixesLocked()
	i := slices.Index(cur, p)
	if i < 0 {
		return nil
	}
	if n := a.inUseLocked(p); n > 0 {
		return fmt.Errorf("ipam: remove pool %s: %d addresses allocated: %w", p, n, ErrPoolInUse)
	}
	if err := a.setPoolsLocked(slices.Delete(cur, i, i+1)); err != nil {
		return fmt.Errorf("ipam: remove pool %s: %w", p, err)
	}
	return nil
}

// InUse returns how many allocated addresses lie inside p, whether p is a
// pool or not and including addresses that are reserved in the current
// configuration (held since an earlier one). Zero means a block can be
// given back.
func (a *Allocator) InUse(p netip.Prefix) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inUseLocked(p)
}

func (a *Allocator) inUseLocked(p netip.Prefix) int {
	if !p.IsValid() {
		return 0
	}
	p = p.Masked()
	n := 0
	for ad := range a.byAddr {
		if p.Contains(ad) {
			n++
		}
	}
	return n
}
