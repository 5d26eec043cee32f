package blocks

import (
	"net/netip"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestAllocationReporter: Sync writes every owned block's count once,
// rewrites only the blocks whose count changed, skips prefixes that are no
// IPAMBlock, and fails on another node's block.
func TestAllocationReporter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.node("a", nil)
	e.node("b", nil)
	e.pool("p4", "10.7.0.0/24", 26, nil)
	e.pool("p6", "2001:db8:100::/120", 124, nil)
	ma, mb := e.manager("a"), e.manager("b")
	a4, err := ma.Claim(e.ctx, 4)
	must(t, err, "claim a4")
	a6, err := ma.Claim(e.ctx, 6)
	must(t, err, "claim a6")
	b4, err := mb.Claim(e.ctx, 4)
	must(t, err, "claim b4")

	status := func(b Block) (int64, string) {
		t.Helper()
		obj := e.blockObjects()[b.Name]
		if obj == nil {
			t.Fatalf("no block %s", b.Name)
		}
		n, _, _ := unstructured.NestedInt64(obj.Object, "status", "allocations")
		return n, obj.GetResourceVersion()
	}
	r := NewAllocationReporter(ma)
	static := netip.MustParsePrefix("198.51.100.0/28") // no IPAMBlock: skipped
	must(t, r.Sync(e.ctx, map[netip.Prefix]int{a4.CIDR: 3, a6.CIDR: 1, static: 2}), "first sync")
	n4, rv4 := status(a4)
	n6, rv6 := status(a6)
	if n4 != 3 || n6 != 1 {
		t.Fatalf("allocations after the first sync: %s=%d %s=%d, want 3 and 1", a4.CIDR, n4, a6.CIDR, n6)
	}
	must(t, r.Sync(e.ctx, map[netip.Prefix]int{a4.CIDR: 4, a6.CIDR: 1, static: 2}), "second sync")
	if n, rv := status(a4); n != 4 || rv == rv4 {
		t.Fatalf("%s after a change: %d (resourceVersion %s -> %s), want 4, rewritten", a4.CIDR, n, rv4, rv)
	}
	if n, rv := status(a6); n != 1 || rv != rv6 {
		t.Fatalf("%s unchanged, yet %d (resourceVersion %s -> %s)", a6.CIDR, n, rv6, rv)
	}
	// A new reporter (agent restart) checks every block again but writes
	// only what differs.
	_, rv4 = status(a4)
	must(t, NewAllocationReporter(ma).Sync(e.ctx, map[netip.Prefix]int{a4.CIDR: 4, a6.CIDR: 0}), "sync after restart")
	if n, rv := status(a4); n != 4 || rv != rv4 {
		t.Fatalf("%s rewritten with the same count: %d (%s -> %s)", a4.CIDR, n, rv4, rv)
	}
	if n, _ := status(a6); n != 0 {
		t.Fatalf("%s = %d, want 0", a6.CIDR, n)
	}
	if err := r.Sync(e.ctx, map[netip.Prefix]int{b4.CIDR: 1}); err == nil {
		t.Fatal("a reported on b's block")
	}
	if n, _ := status(b4); n != 0 {
		t.Fatalf("b's block = %d after a's refused report", n)
	}
}
