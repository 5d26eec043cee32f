package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func owner(i int) Owner {
	return Owner{Key: Key{Network: "strait", ContainerID: fmt.Sprintf("c%04d", i), IfName: "eth0"}, PodNamespace: "ns", PodName: fmt.Sprintf("pod%d", i)}
}

func newAlloc(t testing.TB, store Store, pools ...string) *Allocator {
	t.Helper()
	var ps []netip.Prefix
	for _, p := range pools {
		ps = append(ps, pfx(p))
	}
	a, err := New(store, ps)
	if err != nil {
		t.Fatalf("New(%v): %v", pools, err)
	}
	return a
}

func mustAllocate(t testing.TB, a *Allocator, o Owner) Allocation {
	t.Helper()
	al, created, err := a.Allocate(o)
	if err != nil {
		t.Fatalf("Allocate(%s): %v", o.Key, err)
	}
	if !created {
		t.Fatalf("Allocate(%s): created=false for a new key", o.Key)
	}
	return al
}

func mustRelease(t testing.TB, a *Allocator, k Key) {
	t.Helper()
	if _, ok, err := a.Release(k); err != nil || !ok {
		t.Fatalf("Release(%s) = %v, %v; want true, nil", k, ok, err)
	}
}

func TestNewValidation(t *testing.T) {
	cases := []struct {
		name  string
		pools []netip.Prefix
		want  string
	}{
		{"twice v4", []netip.Prefix{pfx("10.244.0.0/24"), pfx("10.245.0.0/24"), pfx("10.244.0.0/24")}, "pool 10.244.0.0/24 listed twice"},
		{"overlap v6", []netip.Prefix{pfx("fd00::/64"), pfx("fd01::/64"), pfx("fd00::/120")}, "pools fd00::/64 and fd00::/120 overlap"},
		{"overlap v4", []netip.Prefix{pfx("10.244.0.0/16"), pfx("10.244.1.0/24")}, "overlap"},
		{"invalid", []netip.Prefix{{}}, "invalid prefix"},
		{"host bits", []netip.Prefix{pfx("10.244.0.5/24")}, "host bits set (want 10.244.0.0/24)"},
		{"4in6", []netip.Prefix{pfx("::ffff:10.0.0.0/120")}, "IPv4-mapped"},
		{"v4 /31", []netip.Prefix{pfx("10.0.0.0/31")}, "no usable address"},
		{"v4 /32", []netip.Prefix{pfx("10.0.0.0/32")}, "no usable address"},
		{"v6 /128", []netip.Prefix{pfx("fd00::/128")}, "no usable address"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(NewMemStore(), c.pools)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New(%v) error = %v, want containing %q", c.pools, err, c.want)
			}
		})
	}
	// No pool is valid (a node before its first IPAM block): Allocate then
	// says try again later.
	a := newAlloc(t, NewMemStore())
	if _, _, err := a.Allocate(owner(1)); !errors.Is(err, ErrExhausted) || err.Error() != "ipam: no pool configured" {
		t.Fatalf("Allocate without pools: %v, want ErrExhausted \"ipam: no pool configured\"", err)
	}
	// Valid edge cases: a /127 has exactly one usable address.
	a = newAlloc(t, NewMemStore(), "fd00::/64", "10.0.0.0/30")
	if got := a.Pools(); !slices.Equal(got, []netip.Prefix{pfx("10.0.0.0/30"), pfx("fd00::/64")}) {
		t.Fatalf("Pools() = %v, want IPv4 first", got)
	}
	a = newAlloc(t, NewMemStore(), "fd00::/127")
	if al := mustAllocate(t, a, owner(1)); al.Addrs[0] != ip("fd00::1") {
		t.Fatalf("/127 allocation = %v, want fd00::1", al.Addrs)
	}
}

func TestAllocateIdempotent(t *testing.T) {
	m := NewMemStore()
	a := newAlloc(t, m, "10.244.0.0/24", "fd00::/64")
	first := mustAllocate(t, a, owner(1))
	commits := m.Commits()
	o := owner(1)
	o.PodName = "other" // same Key, different details: still the same allocation
	again, created, err := a.Allocate(o)
	if err != nil || created {
		t.Fatalf("second Allocate: created=%v err=%v", created, err)
	}
	if !slices.Equal(again.Addrs, first.Addrs) || again.PodName != first.PodName {
		t.Fatalf("second Allocate = %+v, want %+v", again, first)
	}
	if m.Commits() != commits {
		t.Fatalf("idempotent Allocate wrote to the store (%d -> %d commits)", commits, m.Commits())
	}
	// Returned slices are copies.
	again.Addrs[0] = ip("1.2.3.4")
	if got, _ := a.Get(owner(1).Key); got.Addrs[0] != first.Addrs[0] {
		t.Fatalf("mutating a returned Allocation changed the allocator: %v", got.Addrs)
	}
}

func TestAllocateInvalidKey(t *testing.T) {
	a := newAlloc(t, NewMemStore(), "10.244.0.0/24")
	for _, k := range []Key{{ContainerID: "c", IfName: "eth0"}, {Network: "n", IfName: "eth0"}, {Network: "n", ContainerID: "c"}, {Network: "n", ContainerID: "a/b", IfName: "eth0"}} {
		if _, _, err := a.Allocate(Owner{Key: k}); err == nil {
			t.Errorf("Allocate(%q) succeeded, want error", k)
		}
	}
}

func TestDualStack(t *testing.T) {
	a := newAlloc(t, NewMemStore(), "fd00:10::/64", "10.244.1.0/24")
	seen := map[netip.Addr]bool{}
	for i := range 10 {
		al := mustAllocate(t, a, owner(i))
		if len(al.Addrs) != 2 || !al.Addrs[0].Is4() || !al.Addrs[1].Is6() {
			t.Fatalf("allocation %d = %v, want one IPv4 then one IPv6", i, al.Addrs)
		}
		if !pfx("10.244.1.0/24").Contains(al.Addrs[0]) || !pfx("fd00:10::/64").Contains(al.Addrs[1]) {
			t.Fatalf("allocation %d = %v outside pools", i, al.Addrs)
		}
		for _, ad := range al.Addrs {
			if seen[ad] {
				t.Fatalf("address %s handed out twice", ad)
			}
			seen[ad] = true
		}
	}
	al, _ := a.Get(owner(0).Key)
	if !slices.Equal(al.Addrs, []netip.Addr{ip("10.244.1.1"), ip("fd00:10::1")}) {
		t.Fatalf("first allocation = %v, want [10.244.1.1 fd00:10::1]", al.Addrs)
	}
}

func TestSingleStack(t *testing.T) {
	for _, c := range []struct{ pool, first, second string }{
		{"10.244.0.0/24", "10.244.0.1", "10.244.0.2"},
		{"fd00::/120", "fd00::1", "fd00::2"},
	} {
		a := newAlloc(t, NewMemStore(), c.pool)
		got := []netip.Addr{mustAllocate(t, a, owner(1)).Addrs[0], mustAllocate(t, a, owner(2)).Addrs[0]}
		if !slices.Equal(got, []netip.Addr{ip(c.first), ip(c.second)}) {
			t.Errorf("pool %s: got %v, want [%s %s]", c.pool, got, c.first, c.second)
		}
		if al, _ := a.Get(owner(1).Key); len(al.Addrs) != 1 {
			t.Errorf("pool %s: allocation has %d addresses, want 1", c.pool, len(al.Addrs))
		}
	}
}

// TestReservedAndExhausted: a /30 gives exactly .1 and .2 (not network .0,
// not broadcast .3); a /126 gives exactly ::1..::3 (not the anycast ::0).
func TestReservedAndExhausted(t *testing.T) {
	for _, c := range []struct {
		pool string
		want []string
		msg  string
	}{
		{"10.244.0.0/30", []string{"10.244.0.1", "10.244.0.2"}, "ipam: pool 10.244.0.0/30 exhausted (2 of 2 addresses in use)"},
		{"fd00::/126", []string{"fd00::1", "fd00::2", "fd00::3"}, "ipam: pool fd00::/126 exhausted (3 of 3 addresses in use)"},
	} {
		m := NewMemStore()
		a := newAlloc(t, m, c.pool)
		// Allocate/release repeatedly to push the cursor through several wraps.
		var got []string
		for round := range 3 {
			got = got[:0]
			for i := range len(c.want) {
				got = append(got, mustAllocate(t, a, owner(i)).Addrs[0].String())
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Fatalf("pool %s round %d: got %v, want %v", c.pool, round, got, c.want)
			}
			commits := m.Commits()
			_, _, err := a.Allocate(owner(99))
			if !errors.Is(err, ErrExhausted) || !strings.HasPrefix(err.Error(), c.msg) {
				t.Fatalf("pool %s: Allocate on full pool: err = %v, want ErrExhausted %q", c.pool, err, c.msg)
			}
			if m.Commits() != commits {
				t.Fatalf("pool %s: exhausted Allocate committed", c.pool)
			}
			if _, ok := a.Get(owner(99).Key); ok {
				t.Fatalf("pool %s: exhausted Allocate left an allocation", c.pool)
			}
			for i := range len(c.want) {
				mustRelease(t, a, owner(i).Key)
			}
		}
	}
}

// TestExhaustedOneFamilyCommitsNothing: with the IPv4 pool full, a dual-stack
// Allocate fails naming the IPv4 pool and takes no IPv6 address.
func TestExhaustedOneFamilyCommitsNothing(t *testing.T) {
	m := NewMemStore()
	a := newAlloc(t, m, "10.0.0.0/30", "fd00::/120")
	mustAllocate(t, a, owner(1))
	mustAllocate(t, a, owner(2))
	before := a.Usage()
	snap, _ := m.Load()
	_, _, err := a.Allocate(owner(3))
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.0.0.0/30") {
		t.Fatalf("err = %v, want ErrExhausted naming 10.0.0.0/30", err)
	}
	if after := a.Usage(); !slices.Equal(after, before) {
		t.Fatalf("usage changed %v -> %v", before, after)
	}
	if snap2, _ := m.Load(); snap2.Cursors["fd00::/120"] != snap.Cursors["fd00::/120"] {
		t.Fatalf("IPv6 cursor moved on failed allocation")
	}
	mustRelease(t, a, owner(1).Key)
	if al := mustAllocate(t, a, owner(3)); al.Addrs[1] != ip("fd00::3") {
		t.Fatalf("next IPv6 = %v, want fd00::3 (cursor must not have advanced)", al.Addrs[1])
	}
}

// TestRoundRobinNoImmediateReuse: a released address is not handed out again
// until the cursor wraps around.
func TestRoundRobinNoImmediateReuse(t *testing.T) {
	a := newAlloc(t, NewMemStore(), "10.0.0.0/29") // usable .1 - .6
	want := func(i int, addr string) {
		t.Helper()
		if got := mustAllocate(t, a, owner(i)).Addrs[0]; got != ip(addr) {
			t.Fatalf("allocation %d = %s, want %s", i, got, addr)
		}
	}
	want(1, "10.0.0.1")
	want(2, "10.0.0.2")
	mustRelease(t, a, owner(1).Key)
	want(3, "10.0.0.3") // not .1
	mustRelease(t, a, owner(3).Key)
	want(4, "10.0.0.4") // not .3, not .1
	want(5, "10.0.0.5")
	want(6, "10.0.0.6")
	// Wrap: .7 is broadcast, .0 network, .1 free again, .2 still held.
	want(7, "10.0.0.1")
	want(8, "10.0.0.3") // skips .2 (in use)
	// Now all six are used.
	if _, _, err := a.Allocate(owner(9)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v, want ErrExhausted", err)
	}
	mustRelease(t, a, owner(5).Key)
	want(10, "10.0.0.5") // only free address, cursor is at .3
}

func TestWrapAroundIPv6(t *testing.T) {
	// The very last IPv6 address: Next() is invalid, wrap must still work.
	a := newAlloc(t, NewMemStore(), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126")
	var got []netip.Addr
	for i := range 3 {
		got = append(got, mustAllocate(t, a, owner(i)).Addrs[0])
	}
	mustRelease(t, a, owner(0).Key)
	got = append(got, mustAllocate(t, a, owner(3)).Addrs[0])
	want := []netip.Addr{ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
		ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd")}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestOutOfPoolAllocationsKept: allocations from a former pool configuration
// stay listed, findable and releasable, and their addresses (also a now
// reserved one) are never handed out.
func TestOutOfPoolAllocationsKept(t *testing.T) {
	m := NewMemStore()
	old := newAlloc(t, m, "10.0.0.0/23")
	for i := range 256 {
		mustAllocate(t, old, owner(i)) // 10.0.0.1 .. 10.0.1.0
	}
	stale := Allocation{Owner: owner(1000), Addrs: []netip.Addr{ip("192.168.0.7")}}
	if err := m.Commit(Change{Put: []Allocation{stale}, Cursors: map[string]netip.Addr{"10.0.1.0/24": ip("99.0.0.1")}}); err != nil {
		t.Fatal(err)
	}
	a := newAlloc(t, m, "10.0.1.0/24")
	if n := len(a.List()); n != 257 {
		t.Fatalf("List has %d entries, want 257", n)
	}
	// Only 10.0.1.0 lies in the new pool and it is the (reserved) network address.
	if u := a.Usage(); u[0].InUse != 0 || u[0].Capacity != 254 {
		t.Fatalf("Usage = %+v, want 0 of 254", u)
	}
	if al, ok := a.Owner(ip("192.168.0.7")); !ok || al.Key != owner(1000).Key {
		t.Fatalf("Owner(192.168.0.7) = %v, %v", al.Key, ok)
	}
	// Cursor outside the pool is ignored: start at the first usable address.
	if got := mustAllocate(t, a, owner(2000)).Addrs[0]; got != ip("10.0.1.1") {
		t.Fatalf("first allocation in new pool = %s, want 10.0.1.1", got)
	}
	for i := 2001; i < 2254; i++ { // 254 usable in total
		ad := mustAllocate(t, a, owner(i)).Addrs[0]
		if ad == ip("10.0.1.0") || ad == ip("10.0.1.255") {
			t.Fatalf("reserved %s handed out", ad)
		}
	}
	if _, _, err := a.Allocate(owner(3000)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v, want ErrExhausted after 254 allocations", err)
	}
	mustRelease(t, a, owner(1000).Key)
	mustRelease(t, a, owner(255).Key) // the 10.0.1.0 holder
	if _, ok := a.Owner(ip("10.0.1.0")); ok {
		t.Fatal("released address still owned")
	}
}

func TestDuplicateAddressOnLoad(t *testing.T) {
	m := NewMemStore()
	x, y := owner(1), owner(2)
	err := m.Commit(Change{Put: []Allocation{
		{Owner: x, Addrs: []netip.Addr{ip("10.0.0.5")}},
		{Owner: y, Addrs: []netip.Addr{ip("10.0.0.5")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(m, []netip.Prefix{pfx("10.0.0.0/24")})
	if err == nil || !strings.Contains(err.Error(), x.Key.String()) || !strings.Contains(err.Error(), y.Key.String()) ||
		!strings.Contains(err.Error(), "10.0.0.5") {
		t.Fatalf("New error = %v, want naming 10.0.0.5, %s and %s", err, x.Key, y.Key)
	}
}

// TestCommitFailureLeavesMemoryUnchanged uses MemStore failure injection on
// each mutating operation.
func TestCommitFailureLeavesMemoryUnchanged(t *testing.T) {
	m := NewMemStore()
	a := newAlloc(t, m, "10.0.0.0/24", "fd00::/64")
	mustAllocate(t, a, owner(1))
	boom := errors.New("disk on fire")
	list, usage := a.List(), a.Usage()
	unchanged := func(op string) {
		t.Helper()
		if got := a.List(); !slices.EqualFunc(got, list, allocEqual) {
			t.Fatalf("%s: List changed: %v -> %v", op, list, got)
		}
		if got := a.Usage(); !slices.Equal(got, usage) {
			t.Fatalf("%s: Usage changed: %v -> %v", op, usage, got)
		}
	}

	m.FailNextCommit(boom)
	if _, _, err := a.Allocate(owner(2)); !errors.Is(err, boom) {
		t.Fatalf("Allocate err = %v, want wrapping %v", err, boom)
	}
	unchanged("allocate")
	// The cursor did not move: the next allocation gets the address the failed one would have had.
	if got := mustAllocate(t, a, owner(2)); !slices.Equal(got.Addrs, []netip.Addr{ip("10.0.0.2"), ip("fd00::2")}) {
		t.Fatalf("after failed commit: %v, want [10.0.0.2 fd00::2]", got.Addrs)
	}
	list, usage = a.List(), a.Usage()

	m.FailNextCommit(boom)
	if _, ok, err := a.Release(owner(1).Key); !errors.Is(err, boom) || ok {
		t.Fatalf("Release = %v, %v; want false, %v", ok, err, boom)
	}
	unchanged("release")
	if _, ok := a.Owner(ip("10.0.0.1")); !ok {
		t.Fatal("address lost after failed release")
	}

	m.FailNextCommit(boom)
	if err := a.Update(owner(1).Key, func(o *Owner) { o.HostIface = "veth1" }); !errors.Is(err, boom) {
		t.Fatalf("Update err = %v, want %v", err, boom)
	}
	unchanged("update")

	// The store agrees with memory: a fresh allocator sees the same state.
	b := newAlloc(t, m, "10.0.0.0/24", "fd00::/64")
	if !slices.EqualFunc(b.List(), list, allocEqual) {
		t.Fatalf("store diverged from memory: %v vs %v", b.List(), list)
	}
}

func allocEqual(x, y Allocation) bool {
	return x.Owner == y.Owner && slices.Equal(x.Addrs, y.Addrs) && x.Created.Equal(y.Created)
}
