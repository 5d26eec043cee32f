package ipam

import (
	"errors"
	"io/fs"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestUpdate(t *testing.T) {
	m := NewMemStore()
	a := newAlloc(t, m, "10.0.0.0/24")
	al := mustAllocate(t, a, owner(1))
	if err := a.Update(owner(1).Key, func(o *Owner) { o.HostIface = "veth1234" }); err != nil {
		t.Fatal(err)
	}
	commits := m.Commits()
	if err := a.Update(owner(1).Key, func(o *Owner) {}); err != nil || m.Commits() != commits {
		t.Fatalf("no-op Update: err=%v, commits %d -> %d", err, commits, m.Commits())
	}
	if err := a.Update(owner(1).Key, func(o *Owner) { o.IfName = "eth1" }); err == nil {
		t.Fatal("Update changing the key succeeded")
	}
	if err := a.Update(owner(2).Key, func(o *Owner) {}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Update of missing key: %v, want fs.ErrNotExist", err)
	}
	b := newAlloc(t, m, "10.0.0.0/24")
	got, ok := b.Get(owner(1).Key)
	if !ok || got.HostIface != "veth1234" || !slices.Equal(got.Addrs, al.Addrs) {
		t.Fatalf("reloaded = %+v, want HostIface veth1234 and addrs %v", got, al.Addrs)
	}
	if o, _ := b.Owner(al.Addrs[0]); o.HostIface != "veth1234" {
		t.Fatalf("Owner lookup after update: %+v", o)
	}
}

func TestOwnerLookupAndClock(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	a, err := New(NewMemStore(), []netip.Prefix{pfx("10.0.0.0/24"), pfx("fd00::/64")}, WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	al := mustAllocate(t, a, owner(7))
	if !al.Created.Equal(now) {
		t.Fatalf("Created = %v, want %v", al.Created, now)
	}
	for _, ad := range al.Addrs {
		got, ok := a.Owner(ad)
		if !ok || got.PodName != "pod7" {
			t.Fatalf("Owner(%s) = %+v, %v", ad, got, ok)
		}
	}
	if _, ok := a.Owner(ip("10.0.0.200")); ok {
		t.Fatal("Owner of a free address found something")
	}
	mustRelease(t, a, owner(7).Key)
	if _, ok := a.Owner(al.Addrs[0]); ok {
		t.Fatal("Owner found a released address")
	}
}

func TestUsage(t *testing.T) {
	a := newAlloc(t, NewMemStore(), "fd00::/64", "10.0.0.0/24")
	for i := range 5 {
		mustAllocate(t, a, owner(i))
	}
	mustRelease(t, a, owner(0).Key)
	want := []PoolUsage{{pfx("10.0.0.0/24"), 254, 4}, {pfx("fd00::/64"), 1<<64 - 1, 4}}
	if got := a.Usage(); !slices.Equal(got, want) {
		t.Fatalf("Usage = %v, want %v", got, want)
	}
}

// TestConcurrentAllocate: many goroutines, unique addresses, consistent store.
func TestConcurrentAllocate(t *testing.T) {
	m := NewMemStore()
	a := newAlloc(t, m, "10.1.0.0/22", "fd00::/64")
	const workers, per = 32, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				o := owner(w*per + i)
				if _, _, err := a.Allocate(o); err != nil {
					errs <- err
					return
				}
				if _, _, err := a.Allocate(o); err != nil { // idempotent under contention
					errs <- err
					return
				}
				if i%5 == 0 {
					if _, _, err := a.Release(o.Key); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	list := a.List()
	if want := workers * per * 4 / 5; len(list) != want {
		t.Fatalf("%d allocations, want %d", len(list), want)
	}
	checkUnique(t, list)
	b := newAlloc(t, m, "10.1.0.0/22", "fd00::/64")
	if !slices.EqualFunc(b.List(), list, allocEqual) {
		t.Fatal("store differs from memory after concurrent use")
	}
}

func checkUnique(t testing.TB, list []Allocation) {
	t.Helper()
	seen := map[netip.Addr]Key{}
	for _, al := range list {
		for _, ad := range al.Addrs {
			if k, dup := seen[ad]; dup {
				t.Fatalf("address %s held by %s and %s", ad, k, al.Key)
			}
			seen[ad] = al.Key
		}
	}
}

// TestGCListRelease: the garbage-collection pattern (list, release those not
// alive) frees exactly the dead entries; releases are idempotent.
func TestGCListRelease(t *testing.T) {
	m := NewMemStore()
	a := newAlloc(t, m, "10.0.0.0/24")
	for i := range 10 {
		mustAllocate(t, a, owner(i))
	}
	alive := map[string]bool{"c0001": true, "c0004": true, "c0009": true}
	for _, al := range a.List() {
		if !alive[al.ContainerID] {
			mustRelease(t, a, al.Key)
		}
	}
	var left []string
	for _, al := range a.List() {
		left = append(left, al.ContainerID)
	}
	if !slices.Equal(left, []string{"c0001", "c0004", "c0009"}) {
		t.Fatalf("after GC: %v", left)
	}
	commits := m.Commits()
	if _, ok, err := a.Release(owner(0).Key); ok || err != nil {
		t.Fatalf("second Release = %v, %v; want false, nil", ok, err)
	}
	if m.Commits() != commits {
		t.Fatal("Release of an unknown key wrote to the store")
	}
	if u := a.Usage(); u[0].InUse != 3 {
		t.Fatalf("InUse = %d, want 3", u[0].InUse)
	}
}
