package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func pfxs(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = pfx(s)
	}
	return out
}

func addrsOf(t testing.TB, a *Allocator, from, n int) []string {
	t.Helper()
	var out []string
	for i := from; i < from+n; i++ {
		for _, ad := range mustAllocate(t, a, owner(i)).Addrs {
			out = append(out, ad.String())
		}
	}
	return out
}

// TestBlocksTriedInOrder: several pools per family are filled in the given
// order; the error names the family only when all of them are full, and an
// added block makes the retry succeed.
func TestBlocksTriedInOrder(t *testing.T) {
	m := NewMemStore()
	a := newAlloc(t, m, "10.0.0.8/30", "fd00::/64", "10.0.0.0/30")
	if got := a.Pools(); !slices.Equal(got, pfxs("10.0.0.8/30", "10.0.0.0/30", "fd00::/64")) {
		t.Fatalf("Pools() = %v, want IPv4 first in the given order", got)
	}
	got := addrsOf(t, a, 0, 4)
	want := []string{"10.0.0.9", "fd00::1", "10.0.0.10", "fd00::2", "10.0.0.1", "fd00::3", "10.0.0.2", "fd00::4"}
	if !slices.Equal(got, want) {
		t.Fatalf("allocations = %v, want %v", got, want)
	}
	commits := m.Commits()
	_, _, err := a.Allocate(owner(4))
	var ex *ExhaustedError
	if !errors.Is(err, ErrExhausted) || !errors.As(err, &ex) || ex.Family != 4 || len(ex.Pools) != 2 {
		t.Fatalf("err = %#v, want *ExhaustedError for IPv4 with 2 pools", err)
	}
	if msg := "ipam: all 2 IPv4 pools exhausted (10.0.0.8/30: 2 of 2, 10.0.0.0/30: 2 of 2 addresses in use)"; err.Error() != msg {
		t.Fatalf("err = %q, want %q", err, msg)
	}
	if m.Commits() != commits {
		t.Fatal("exhausted Allocate committed")
	}
	// The caller claims another block and retries.
	if err := a.AddPool(pfx("10.0.0.16/30")); err != nil {
		t.Fatal(err)
	}
	if got := mustAllocate(t, a, owner(4)).Addrs; !slices.Equal(got, []netip.Addr{ip("10.0.0.17"), ip("fd00::5")}) {
		t.Fatalf("after AddPool: %v, want [10.0.0.17 fd00::5]", got)
	}
	// A freed address in an earlier block is preferred over a later block.
	mustRelease(t, a, owner(1).Key)
	if got := mustAllocate(t, a, owner(5)).Addrs[0]; got != ip("10.0.0.10") {
		t.Fatalf("after releasing 10.0.0.10: got %s, want it again (first pool with room)", got)
	}
	// Single pool per family keeps the old message.
	b := newAlloc(t, NewMemStore(), "fd00::/126")
	addrsOf(t, b, 0, 3)
	_, _, err = b.Allocate(owner(3))
	if !errors.As(err, &ex) || ex.Family != 6 || err.Error() != "ipam: pool fd00::/126 exhausted (3 of 3 addresses in use), no other IPv6 pool" {
		t.Fatalf("err = %v", err)
	}
}

// TestBlockReservation: every block reserves its own network address (the
// first block's becomes the node's tunnel address) and, for IPv4, its last.
func TestBlockReservation(t *testing.T) {
	seen := map[netip.Addr]bool{}
	for _, c := range []struct {
		pools []string
		n     int
	}{{[]string{"10.244.1.0/26", "10.244.1.64/26"}, 124}, {[]string{"fd00::/124", "fd00::10/124"}, 30}} {
		a := newAlloc(t, NewMemStore(), c.pools...)
		for _, u := range a.Usage() {
			if u.Capacity*2 != uint64(c.n) {
				t.Fatalf("Usage = %v, want capacity %d each", a.Usage(), c.n/2)
			}
		}
		for i := range c.n {
			seen[mustAllocate(t, a, owner(i)).Addrs[0]] = true
		}
		if _, _, err := a.Allocate(owner(999)); !errors.Is(err, ErrExhausted) {
			t.Fatalf("%v: err = %v, want ErrExhausted after %d addresses", c.pools, err, c.n)
		}
	}
	for _, r := range []string{"10.244.1.0", "10.244.1.63", "10.244.1.64", "10.244.1.127", "fd00::", "fd00::10"} {
		if seen[ip(r)] {
			t.Errorf("reserved %s handed out", r)
		}
	}
	if !seen[ip("fd00::f")] || !seen[ip("fd00::1f")] {
		t.Error("IPv6 blocks' last addresses are usable and were not handed out")
	}
}

// TestSetPoolsKeepsAllocations: allocations outside a new pool set stay
// listed, findable, counted by InUse and releasable, are never handed out;
// a pool that comes back continues after its persisted cursor.
func TestSetPoolsKeepsAllocations(t *testing.T) {
	m := NewMemStore()
	a := newAlloc(t, m, "10.0.0.0/29") // .1-.6 usable
	addrsOf(t, a, 0, 6)
	// Split the /29 into two /30 blocks: .3 becomes a broadcast address and
	// .4 a network address, both still held.
	if err := a.SetPools(pfxs("10.0.0.0/30", "10.0.0.4/30")); err != nil {
		t.Fatal(err)
	}
	if u := a.Usage(); u[0].InUse != 2 || u[1].InUse != 2 {
		t.Fatalf("Usage = %v, want 2 usable in use per block", u)
	}
	if n := a.InUse(pfx("10.0.0.4/30")); n != 3 {
		t.Fatalf("InUse(10.0.0.4/30) = %d, want 3 (.4 .5 .6, the network address counts)", n)
	}
	if err := a.RemovePool(pfx("10.0.0.4/30")); !errors.Is(err, ErrPoolInUse) {
		t.Fatalf("RemovePool = %v, want ErrPoolInUse", err)
	}
	for i := range 6 {
		mustRelease(t, a, owner(i).Key)
	}
	got := addrsOf(t, a, 10, 4)
	slices.Sort(got)
	if want := []string{"10.0.0.1", "10.0.0.2", "10.0.0.5", "10.0.0.6"}; !slices.Equal(got, want) {
		t.Fatalf("after split: %v, want %v (never .3 or .4)", got, want)
	}

	// Move to another block: the old allocations stay and are releasable.
	if err := a.SetPools(pfxs("10.0.1.0/30")); err != nil {
		t.Fatal(err)
	}
	if n := len(a.List()); n != 4 {
		t.Fatalf("List has %d, want 4", n)
	}
	if n := a.InUse(pfx("10.0.0.0/29")); n != 4 {
		t.Fatalf("InUse(old /29) = %d, want 4", n)
	}
	if got := mustAllocate(t, a, owner(20)).Addrs[0]; got != ip("10.0.1.1") {
		t.Fatalf("new block: %s, want 10.0.1.1", got)
	}
	if al, ok := a.Owner(ip("10.0.0.5")); !ok || !pfx("10.0.0.4/30").Contains(al.Addrs[0]) {
		t.Fatalf("Owner(10.0.0.5) = %v, %v", al, ok)
	}
	mustRelease(t, a, owner(10).Key) // 10.0.0.1, outside the pools

	// Back to the first /30: its cursor (at .2, persisted) continues there, wrapping to .1.
	if err := a.SetPools(pfxs("10.0.0.0/30", "10.0.1.0/30")); err != nil {
		t.Fatal(err)
	}
	b, err := New(m, a.Pools()) // and across a restart
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Allocator{a, b} {
		if got := mustAllocate(t, x, owner(30)).Addrs[0]; got != ip("10.0.0.1") {
			t.Fatalf("got %s, want 10.0.0.1 (only free one)", got)
		}
		mustRelease(t, x, owner(30).Key)
	}
	if !slices.EqualFunc(a.List(), b.List(), allocEqual) {
		t.Fatal("restarted allocator differs")
	}
}

// TestPoolSetErrors: invalid changes leave the pool set unchanged.
func TestPoolSetErrors(t *testing.T) {
	m := NewMemStore()
	a := newAlloc(t, m, "10.0.0.0/28", "fd00::/120")
	al := mustAllocate(t, a, owner(1))
	before := a.Pools()
	commits := m.Commits()
	for _, c := range []struct {
		name string
		do   func() error
		want string
	}{
		{"set overlap", func() error { return a.SetPools(pfxs("10.0.0.0/28", "10.0.0.8/29")) }, "overlap"},
		{"set twice", func() error { return a.SetPools(pfxs("10.0.0.0/28", "10.0.0.0/28")) }, "listed twice"},
		{"add overlap", func() error { return a.AddPool(pfx("10.0.0.0/24")) }, "ipam: add pool 10.0.0.0/24: pools 10.0.0.0/28 and 10.0.0.0/24 overlap"},
		{"add host bits", func() error { return a.AddPool(pfx("10.0.1.1/28")) }, "host bits"},
		{"add invalid", func() error { return a.AddPool(netip.Prefix{}) }, "invalid prefix"},
		{"remove in use", func() error { return a.RemovePool(pfx("fd00::/120")) }, "ipam: remove pool fd00::/120: 1 addresses allocated: ipam: pool in use"},
	} {
		err := c.do()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want containing %q", c.name, err, c.want)
		}
		if got := a.Pools(); !slices.Equal(got, before) {
			t.Fatalf("%s: pools changed to %v", c.name, got)
		}
	}
	// No-ops.
	if err := a.AddPool(pfx("10.0.0.0/28")); err != nil {
		t.Fatalf("AddPool of a present pool: %v", err)
	}
	if err := a.RemovePool(pfx("10.9.0.0/28")); err != nil {
		t.Fatalf("RemovePool of an absent pool: %v", err)
	}
	if got := a.Pools(); !slices.Equal(got, before) || m.Commits() != commits {
		t.Fatalf("no-ops changed pools (%v) or wrote (%d commits)", got, m.Commits()-commits)
	}
	// A family can go, and so can the last pool.
	mustRelease(t, a, al.Key)
	if err := a.RemovePool(pfx("fd00::/120")); err != nil {
		t.Fatal(err)
	}
	if got := mustAllocate(t, a, owner(2)).Addrs; len(got) != 1 || !got[0].Is4() {
		t.Fatalf("IPv4-only after removing the IPv6 pool: %v", got)
	}
	mustRelease(t, a, owner(2).Key)
	if err := a.RemovePool(pfx("10.0.0.0/28")); err != nil {
		t.Fatalf("removing the last pool: %v", err)
	}
	var ex *ExhaustedError
	if _, _, err := a.Allocate(owner(3)); !errors.As(err, &ex) || ex.Family != 0 {
		t.Fatalf("Allocate without pools: %v, want *ExhaustedError with Family 0", err)
	}
	if err := a.SetPools(nil); err != nil || len(a.Pools()) != 0 || len(a.Usage()) != 0 {
		t.Fatalf("SetPools(nil) = %v, pools %v", err, a.Pools())
	}
	if m.Commits() != commits+3 {
		t.Fatalf("pool changes wrote to the store: %d commits, want only the two releases and the allocation", m.Commits()-commits)
	}
}

// TestInUse counts per prefix, for pools and any other prefix.
func TestInUse(t *testing.T) {
	a := newAlloc(t, NewMemStore(), "10.0.0.0/28", "10.0.0.16/28", "fd00::/120")
	addrsOf(t, a, 0, 16) // 14 in the first block, 2 in the second
	for _, c := range []struct {
		p    string
		want int
	}{
		{"10.0.0.0/28", 14}, {"10.0.0.16/28", 2}, {"10.0.0.0/24", 16}, {"10.0.0.32/28", 0},
		{"fd00::/120", 16}, {"fd00::/124", 15}, {"0.0.0.0/0", 16}, {"10.0.0.17/28", 2}, // host bits masked
	} {
		if got := a.InUse(pfx(c.p)); got != c.want {
			t.Errorf("InUse(%s) = %d, want %d", c.p, got, c.want)
		}
	}
	if got := a.InUse(netip.Prefix{}); got != 0 {
		t.Errorf("InUse(invalid) = %d", got)
	}
}
