package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// FuzzAllocateRelease drives an Allocator over a MemStore with a byte-coded
// operation sequence and checks after every step against a simple model:
// idempotency, uniqueness, addresses inside their pool and never reserved,
// exhaustion exactly when the smaller pool is full, failed commits changing
// nothing, and a reload reproducing the same state.
//
// Each byte: low 3 bits select one of 8 keys, bits 3-5 the operation.
func FuzzAllocateRelease(f *testing.F) {
	for _, seed := range [][]byte{
		{},
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 0}, // fill both, exhaust, repeat
		{0, 8, 0, 1, 9, 1, 16, 24, 32, 40, 48, 56},      // release, re-allocate, failures, reload
		{0, 1, 2, 3, 4, 5, 24, 25, 6, 7, 26, 0, 1, 2},   // fill, release two, wrap around
		{40, 0, 41, 1, 42, 8, 48, 1, 56, 3, 4, 5, 6, 7}, // failures mixed in
	} {
		f.Add(seed)
	}
	v4, v6 := pfx("10.0.0.0/29"), pfx("fd00::/125") // 6 and 7 usable
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 256 {
			ops = ops[:256]
		}
		m := NewMemStore()
		a, err := New(m, []netip.Prefix{v4, v6})
		if err != nil {
			t.Fatal(err)
		}
		model := map[Key][]netip.Addr{}
		boom := errors.New("injected")
		for step, b := range ops {
			o := owner(int(b & 7))
			k := o.Key
			held, exists := model[k]
			switch op := (b >> 3) & 7; {
			case op <= 2: // allocate (most frequent)
				al, created, err := a.Allocate(o)
				switch {
				case exists:
					if err != nil || created || !slices.Equal(al.Addrs, held) {
						t.Fatalf("step %d: re-Allocate(%s) = %v, %v, %v; want %v, false, nil", step, k, al.Addrs, created, err, held)
					}
				case len(model) >= 6:
					if !errors.Is(err, ErrExhausted) {
						t.Fatalf("step %d: Allocate with v4 pool full: %v, want ErrExhausted", step, err)
					}
				default:
					if err != nil || !created {
						t.Fatalf("step %d: Allocate(%s) = %v, %v", step, k, created, err)
					}
					model[k] = al.Addrs
				}
			case op <= 4: // release
				al, ok, err := a.Release(k)
				if err != nil || ok != exists || (exists && !slices.Equal(al.Addrs, held)) {
					t.Fatalf("step %d: Release(%s) = %v, %v, %v; model has %v", step, k, al.Addrs, ok, err, held)
				}
				delete(model, k)
			case op == 5: // failed commit on an operation that would write
				before := a.List()
				m.FailNextCommit(boom)
				if exists {
					_, _, err = a.Release(k)
				} else if len(model) < 6 {
					_, _, err = a.Allocate(o)
				} else {
					m.FailNextCommit(nil)
					break
				}
				if !errors.Is(err, boom) {
					t.Fatalf("step %d: injected failure not reported: %v", step, err)
				}
				if after := a.List(); !slices.EqualFunc(after, before, allocEqual) {
					t.Fatalf("step %d: failed commit changed state", step)
				}
			case op == 6: // restart over the same store
				before := a.List()
				if a, err = New(m, []netip.Prefix{v4, v6}); err != nil {
					t.Fatalf("step %d: reload: %v", step, err)
				}
				if after := a.List(); !slices.EqualFunc(after, before, allocEqual) {
					t.Fatalf("step %d: reload changed state", step)
				}
			default: // get / owner lookup
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
			checkInvariants(t, a, model, v4, v6)
		}
	})
}

func checkInvariants(t *testing.T, a *Allocator, model map[Key][]netip.Addr, v4, v6 netip.Prefix) {
	t.Helper()
	list := a.List()
	if len(list) != len(model) {
		t.Fatalf("List has %d, model %d", len(list), len(model))
	}
	checkUnique(t, list)
	for _, al := range list {
		if !slices.Equal(al.Addrs, model[al.Key]) {
			t.Fatalf("%s = %v, model %v", al.Key, al.Addrs, model[al.Key])
		}
		if len(al.Addrs) != 2 || !v4.Contains(al.Addrs[0]) || !v6.Contains(al.Addrs[1]) {
			t.Fatalf("%s = %v not one address in each of %s, %s", al.Key, al.Addrs, v4, v6)
		}
		if al.Addrs[0] == ip("10.0.0.0") || al.Addrs[0] == ip("10.0.0.7") || al.Addrs[1] == ip("fd00::") {
			t.Fatalf("%s got reserved address %v", al.Key, al.Addrs)
		}
	}
	if u := a.Usage(); u[0].InUse != len(model) || u[1].InUse != len(model) {
		t.Fatalf("Usage = %v, model %d", u, len(model))
	}
}
