package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// poolModel is FuzzPoolChanges' reference: live allocations and the pool
// set, with the rules of the pool methods written out plainly.
type poolModel struct {
	allocs map[Key][]netip.Addr
	pools  []netip.Prefix // IPv4 first, each family in insertion order
}

func modelReserved(p netip.Prefix, a netip.Addr) bool {
	return a == p.Addr() || (a.Is4() && a == lastAddr(p))
}

func modelCapacity(p netip.Prefix) int {
	n := 1 << (p.Addr().BitLen() - p.Bits()) // small prefixes only
	if p.Addr().Is4() {
		return n - 2
	}
	return n - 1
}

// inUse counts live addresses inside p; usable only those not reserved in p.
func (m *poolModel) inUse(p netip.Prefix, usable bool) int {
	n := 0
	for _, addrs := range m.allocs {
		for _, a := range addrs {
			if p.Contains(a) && !(usable && modelReserved(p, a)) {
				n++
			}
		}
	}
	return n
}

// normalize orders prefixes IPv4 first, keeping the order within a family,
// and reports whether the set is valid (no overlap).
func normalize(ps []netip.Prefix) ([]netip.Prefix, bool) {
	for i, p := range ps {
		for _, q := range ps[:i] {
			if p.Overlaps(q) {
				return nil, false
			}
		}
	}
	var v4, v6 []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	return append(v4, v6...), true
}

// expect returns, for a new allocation, the pool each address must come
// from, or the family whose pools are all full (0: there is no pool).
func (m *poolModel) expect() (from []netip.Prefix, fullFamily int, full bool) {
	if len(m.pools) == 0 {
		return nil, 0, true
	}
	for _, fam := range []int{4, 6} {
		var has, found bool
		for _, p := range m.pools {
			if family(p) != fam {
				continue
			}
			has = true
			if m.inUse(p, true) < modelCapacity(p) {
				from = append(from, p)
				found = true
				break
			}
		}
		if has && !found {
			return nil, fam, true
		}
	}
	return from, 0, false
}

// FuzzPoolChanges drives Allocate/Release interleaved with AddPool,
// RemovePool, SetPools, failed commits and restarts over overlapping
// candidate blocks (a /29 and its /30 halves, so held addresses become
// reserved ones), checking every step against poolModel: addresses unique,
// from the first pool of their family with room and never reserved there,
// exhaustion exactly when a family is full, RemovePool refused exactly while
// the pool holds an allocation, usage counts, InUse, and reloads.
//
// Each byte: low 3 bits select a key or a candidate, bits 3-7 the
// operation; SetPools takes its candidate mask from the next byte.
func FuzzPoolChanges(f *testing.F) {
	for _, seed := range [][]byte{
		{},
		{0, 1, 2, 3, 8*16 + 2, 0, 1, 2, 3, 8*19 + 1, 8*10 + 0, 8*10 + 1, 8*19 + 1},
		{8*22 + 0, 0x41, 0, 1, 2, 3, 4, 5, 6, 8*22 + 0, 0x06, 8 * 25, 0, 1, 8 * 26},
		{0, 1, 8*24 + 2, 8*24 + 0, 8*16 + 3, 8*16 + 5, 2, 3, 4, 5, 8*20 + 4, 8 * 25},
		{8*22 + 0, 0x01, 0, 1, 2, 3, 4, 5, 8*22 + 0, 0x0e, 6, 7, 8*10 + 2, 8*10 + 3, 2, 8 * 27},
	} {
		f.Add(seed)
	}
	cands := pfxs("10.0.0.0/29", "10.0.0.0/30", "10.0.0.4/30", "10.0.0.8/30", "fd00::/126", "fd00::4/126", "fd00::/125")
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 300 {
			ops = ops[:300]
		}
		store := NewMemStore()
		m := &poolModel{allocs: map[Key][]netip.Addr{}, pools: pfxs("10.0.0.0/30", "fd00::/126")}
		a, err := New(store, m.pools)
		if err != nil {
			t.Fatal(err)
		}
		boom := errors.New("injected")
		for step := 0; step < len(ops); step++ {
			b := ops[step]
			o := owner(int(b & 7))
			k := o.Key
			c := cands[int(b&7)%len(cands)]
			held, exists := m.allocs[k]
			switch op := b >> 3; {
			case op <= 9: // allocate
				from, fam, full := m.expect()
				al, created, err := a.Allocate(o)
				var ex *ExhaustedError
				switch {
				case exists:
					if err != nil || created || !slices.Equal(al.Addrs, held) {
						t.Fatalf("step %d: re-Allocate(%s) = %v, %v, %v; want %v", step, k, al.Addrs, created, err, held)
					}
				case full:
					if !errors.As(err, &ex) || ex.Family != fam || !errors.Is(err, ErrExhausted) {
						t.Fatalf("step %d: Allocate with IPv%d full: %v", step, fam, err)
					}
				default:
					if err != nil || !created || len(al.Addrs) != len(from) {
						t.Fatalf("step %d: Allocate(%s) = %v, %v, %v; want one address from each of %v", step, k, al.Addrs, created, err, from)
					}
					for i, ad := range al.Addrs {
						if !from[i].Contains(ad) || modelReserved(from[i], ad) {
							t.Fatalf("step %d: %s got %s, want a usable address of %s (pools %v)", step, k, ad, from[i], m.pools)
						}
					}
					m.allocs[k] = al.Addrs
				}
			case op <= 15: // release
				al, ok, err := a.Release(k)
				if err != nil || ok != exists || (exists && !slices.Equal(al.Addrs, held)) {
					t.Fatalf("step %d: Release(%s) = %v, %v, %v; model %v", step, k, al.Addrs, ok, err, held)
				}
				delete(m.allocs, k)
			case op <= 18: // add pool
				err := a.AddPool(c)
				next, ok := normalize(append(slices.Clone(m.pools), c))
				switch {
				case slices.Contains(m.pools, c):
					if err != nil {
						t.Fatalf("step %d: AddPool(%s) present: %v", step, c, err)
					}
				case !ok:
					if err == nil {
						t.Fatalf("step %d: AddPool(%s) overlapping %v succeeded", step, c, m.pools)
					}
				default:
					if err != nil {
						t.Fatalf("step %d: AddPool(%s): %v", step, c, err)
					}
					m.pools = next
				}
			case op <= 21: // remove pool
				err := a.RemovePool(c)
				i := slices.Index(m.pools, c)
				switch {
				case i < 0:
					if err != nil {
						t.Fatalf("step %d: RemovePool(%s) absent: %v", step, c, err)
					}
				case m.inUse(c, false) > 0:
					if !errors.Is(err, ErrPoolInUse) {
						t.Fatalf("step %d: RemovePool(%s) holding %d: %v", step, c, m.inUse(c, false), err)
					}
				default:
					if err != nil {
						t.Fatalf("step %d: RemovePool(%s): %v", step, c, err)
					}
					m.pools = slices.Delete(m.pools, i, i+1)
				}
			case op <= 23: // set pools from the next byte's mask
				var mask byte
				if step+1 < len(ops) {
					step++
					mask = ops[step]
				}
				var set []netip.Prefix
				for i, p := range cands {
					if mask&(1<<i) != 0 {
						set = append(set, p)
					}
				}
				if mask&0x80 != 0 {
					slices.Reverse(set)
				}
				err := a.SetPools(set)
				if next, ok := normalize(set); ok != (err == nil) {
					t.Fatalf("step %d: SetPools(%v) = %v, model valid=%v", step, set, err, ok)
				} else if ok {
					m.pools = next
				}
			case op == 24: // failed commit
				before := a.List()
				_, _, full := m.expect()
				store.FailNextCommit(boom)
				if exists {
					_, _, err = a.Release(k)
				} else if !full {
					_, _, err = a.Allocate(o)
				} else {
					store.FailNextCommit(nil)
					break
				}
				if !errors.Is(err, boom) {
					t.Fatalf("step %d: injected failure not reported: %v", step, err)
				}
				if after := a.List(); !slices.EqualFunc(after, before, allocEqual) {
					t.Fatalf("step %d: failed commit changed state", step)
				}
			case op == 25: // restart with the current pool set
				before := a.List()
				if a, err = New(store, m.pools); err != nil {
					t.Fatalf("step %d: reload: %v", step, err)
				}
				if after := a.List(); !slices.EqualFunc(after, before, allocEqual) {
					t.Fatalf("step %d: reload changed state", step)
				}
			default: // lookups
				al, ok := a.Get(k)
				if ok != exists || !slices.Equal(al.Addrs, held) {
					t.Fatalf("step %d: Get(%s) = %v, %v; model %v", step, k, al.Addrs, ok, held)
				}
				for _, ad := range held {
					if got, ok := a.Owner(ad); !ok || got.Key != k {
						t.Fatalf("step %d: Owner(%s) = %v, %v; want %s", step, ad, got.Key, ok, k)
					}
				}
			}
			checkPoolModel(t, step, a, m, cands)
		}
	})
}

func checkPoolModel(t *testing.T, step int, a *Allocator, m *poolModel, cands []netip.Prefix) {
	t.Helper()
	list := a.List()
	if len(list) != len(m.allocs) {
		t.Fatalf("step %d: List has %d, model %d", step, len(list), len(m.allocs))
	}
	checkUnique(t, list)
	for _, al := range list {
		if !slices.Equal(al.Addrs, m.allocs[al.Key]) {
			t.Fatalf("step %d: %s = %v, model %v", step, al.Key, al.Addrs, m.allocs[al.Key])
		}
	}
	if got := a.Pools(); !slices.Equal(got, m.pools) {
		t.Fatalf("step %d: Pools() = %v, model %v", step, got, m.pools)
	}
	for i, u := range a.Usage() {
		p := m.pools[i]
		if u.Prefix != p || u.InUse != m.inUse(p, true) || u.Capacity != uint64(modelCapacity(p)) {
			t.Fatalf("step %d: Usage[%d] = %+v, model %s %d of %d", step, i, u, p, m.inUse(p, true), modelCapacity(p))
		}
	}
	for _, c := range cands {
		if got, want := a.InUse(c), m.inUse(c, false); got != want {
			t.Fatalf("step %d: InUse(%s) = %d, model %d", step, c, got, want)
		}
	}
}
