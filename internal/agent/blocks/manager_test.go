package blocks

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/strait-net/strait/api/v1alpha1"
)

// TestClaimRace: 8 Managers for 2 nodes, 4 goroutines each, claim from one
// /24 pool of /28 blocks until it is exhausted: every block is claimed
// exactly once, by the node its IPAMBlock names, and everyone ends with
// ErrPoolsExhausted.
func TestClaimRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.node("n1", nil)
	e.node("n2", nil)
	e.pool("small", "10.10.0.0/24", 28, nil)

	type claim struct {
		b    Block
		node string
	}
	var mu sync.Mutex
	var claims []claim
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	t0 := time.Now()
	var logs logBuf
	for i := range 8 {
		node := fmt.Sprintf("n%d", 1+i%2)
		m := NewManager(Config{Client: e.dyn, Kube: e.kube, NodeName: node, Log: testLogger(t, &logs)})
		for range 4 {
			wg.Go(func() {
				for {
					b, err := m.Claim(e.ctx, 4)
					if errors.Is(err, ErrPoolsExhausted) {
						errs <- nil
						return
					}
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					claims = append(claims, claim{b, node})
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a claimer ended with %v, want ErrPoolsExhausted", err)
		}
	}
	t.Logf("32 claimers took 16 blocks in %v, %d Creates lost the race (AlreadyExists)",
		time.Since(t0).Round(time.Millisecond), strings.Count(logs.String(), "block taken meanwhile"))
	pool := netip.MustParsePrefix("10.10.0.0/24")
	seen := map[netip.Prefix]string{}
	perNode := map[string]int{}
	for _, c := range claims {
		if prev, dup := seen[c.b.CIDR]; dup {
			t.Fatalf("block %s claimed twice (%s and %s)", c.b.CIDR, prev, c.node)
		}
		seen[c.b.CIDR] = c.node
		perNode[c.node]++
		if c.b.Node != c.node || c.b.Pool != "small" || c.b.CIDR.Bits() != 28 || !pool.Contains(c.b.CIDR.Addr()) ||
			c.b.Name != v1alpha1.BlockName(c.b.CIDR) {
			t.Fatalf("claimed block %+v by %s", c.b, c.node)
		}
	}
	if len(seen) != 16 {
		t.Fatalf("%d distinct blocks claimed, want all 16", len(seen))
	}
	objs := e.blockObjects()
	if len(objs) != 16 {
		t.Fatalf("%d IPAMBlocks, want 16", len(objs))
	}
	for _, o := range objs {
		b, err := blockFromObject(o)
		must(t, err, "read block")
		if seen[b.CIDR] != b.Node {
			t.Fatalf("IPAMBlock %s names node %s, claimed by %s", o.GetName(), b.Node, seen[b.CIDR])
		}
	}
	for _, node := range []string{"n1", "n2"} {
		own, err := e.manager(node).Owned(e.ctx)
		must(t, err, "Owned(%s)", node)
		if len(own) != perNode[node] {
			t.Fatalf("Owned(%s) = %d blocks, claimed %d", node, len(own), perNode[node])
		}
		// Both still exhausted (one more try each, sequentially).
		if _, err := e.manager(node).Claim(e.ctx, 4); !errors.Is(err, ErrPoolsExhausted) {
			t.Fatalf("Claim by %s after exhaustion: %v", node, err)
		}
	}
	t.Logf("blocks per node: %v", perNode)
}

// TestPoolSelection: nodeSelector and disabled pools are respected, for
// IPv4 and IPv6 pools; EnsureOne claims one block per missing family;
// Owned, ReportAllocations and Release behave.
func TestPoolSelection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.node("a", map[string]string{"zone": "a"})
	e.node("b", map[string]string{"zone": "b"})
	e.node("c", nil)
	sel := func(zone string) map[string]any {
		return map[string]any{"nodeSelector": map[string]any{"matchLabels": map[string]any{"zone": zone}}}
	}
	e.pool("pa", "10.1.0.0/26", 28, map[string]any{
		"nodeSelector": map[string]any{"matchLabels": map[string]any{"zone": "a"}}, "encapsulation": "VXLAN", "natOutgoing": false})
	e.pool("pb", "10.2.0.0/26", 28, sel("b"))
	e.pool("pdis", "10.3.0.0/26", 28, map[string]any{"disabled": true})
	e.pool("pv6", "fd00:1::/120", 124, nil)
	e.pool("pv6-dis", "fd00:2::/120", 124, map[string]any{"disabled": true})

	ma, mb, mc := e.manager("a"), e.manager("b"), e.manager("c")
	var aBlocks []Block
	for range 4 {
		b, err := ma.Claim(e.ctx, 4)
		must(t, err, "claim for a")
		if b.Pool != "pa" || !netip.MustParsePrefix("10.1.0.0/26").Contains(b.CIDR.Addr()) || b.Encapsulation != "VXLAN" || b.NATOutgoing {
			t.Fatalf("a got %+v, want a block of pa with its settings", b)
		}
		aBlocks = append(aBlocks, b)
	}
	if _, err := ma.Claim(e.ctx, 4); !errors.Is(err, ErrPoolsExhausted) {
		t.Fatalf("a's fifth IPv4 claim: %v, want ErrPoolsExhausted (pdis is disabled, pb selects b)", err)
	}
	if b, err := mb.Claim(e.ctx, 4); err != nil || b.Pool != "pb" || b.Encapsulation != "VXLANCrossSubnet" || !b.NATOutgoing {
		t.Fatalf("b: %+v, %v; want a block of pb with default settings", b, err)
	}
	if _, err := mc.Claim(e.ctx, 4); !errors.Is(err, ErrNoPool) {
		t.Fatalf("c (no zone) IPv4: %v, want ErrNoPool", err)
	}
	v6 := map[netip.Prefix]bool{}
	for _, m := range []*Manager{ma, mb, mc} {
		b, err := m.Claim(e.ctx, 6)
		must(t, err, "IPv6 claim")
		if b.Pool != "pv6" || b.CIDR.Bits() != 124 || !netip.MustParsePrefix("fd00:1::/120").Contains(b.CIDR.Addr()) || v6[b.CIDR] {
			t.Fatalf("IPv6 block %+v (have %v)", b, v6)
		}
		v6[b.CIDR] = true
	}
	if _, err := ma.Claim(e.ctx, 5); err == nil {
		t.Fatal("Claim of family 5 succeeded")
	}

	// EnsureOne: d (no labels) gets only an IPv6 block; a already holds both.
	e.node("d", nil)
	bs, err := e.manager("d").EnsureOne(e.ctx)
	if err != nil || len(bs) != 1 || bs[0].Family() != 6 {
		t.Fatalf("EnsureOne(d) = %+v, %v; want one IPv6 block", bs, err)
	}
	n := len(e.blockObjects())
	own, err := ma.EnsureOne(e.ctx)
	if err != nil || len(own) != 5 || len(e.blockObjects()) != n {
		t.Fatalf("EnsureOne(a) = %d blocks, %v; claimed more: %d -> %d objects", len(own), err, n, len(e.blockObjects()))
	}
	// Owned: IPv4 first, oldest first; the API has second resolution, so
	// equal timestamps fall back to the name.
	var want []string
	for _, b := range aBlocks {
		want = append(want, b.Name)
	}
	var got []string
	for _, b := range own[:4] {
		got = append(got, b.Name)
	}
	slices.Sort(want)
	if gotSorted := slices.Sorted(slices.Values(got)); !slices.Equal(gotSorted, want) || own[4].Family() != 6 {
		t.Fatalf("Owned(a) = %v + %s, want %v + an IPv6 block", got, own[4].CIDR, want)
	}

	// ReportAllocations writes status through the subresource, once.
	b0 := aBlocks[0]
	must(t, ma.ReportAllocations(e.ctx, b0, 5), "report")
	obj := e.blockObjects()[b0.Name]
	if n, _, _ := unstructured.NestedInt64(obj.Object, "status", "allocations"); n != 5 {
		t.Fatalf("status.allocations = %d, want 5", n)
	}
	rv := obj.GetResourceVersion()
	must(t, ma.ReportAllocations(e.ctx, b0, 5), "report again")
	if got := e.blockObjects()[b0.Name].GetResourceVersion(); got != rv {
		t.Fatalf("unchanged report wrote (resourceVersion %s -> %s)", rv, got)
	}
	if err := mb.ReportAllocations(e.ctx, b0, 1); err == nil {
		t.Fatal("b reported on a's block")
	}
	must(t, ma.ReportAllocations(e.ctx, b0, 0), "report 0")
	if n, _, _ := unstructured.NestedInt64(e.blockObjects()[b0.Name].Object, "status", "allocations"); n != 0 {
		t.Fatalf("status.allocations = %d after reporting 0", n)
	}

	// Release: only the owner, idempotent; the block can be claimed again.
	if err := mb.Release(e.ctx, b0); err == nil {
		t.Fatal("b released a's block")
	}
	must(t, ma.Release(e.ctx, b0), "release")
	must(t, ma.Release(e.ctx, b0), "release again")
	if _, err := e.dyn.Resource(gvr(resourceBlocks)).Get(e.ctx, b0.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("released block still there: %v", err)
	}
	if b, err := ma.Claim(e.ctx, 4); err != nil || b.CIDR != b0.CIDR {
		t.Fatalf("claim after release = %+v, %v; want %s again", b, err, b0.CIDR)
	}
}

// TestClaimSeesPoolChanges: a pool created, or a node relabelled, while the
// Manager runs is used by the next Claim.
func TestClaimSeesPoolChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.node("x", map[string]string{"role": "edge"})
	e.pool("first", "10.5.0.0/28", 28, nil) // one block
	m := e.manager("x")
	b, err := m.Claim(e.ctx, 4)
	must(t, err, "first claim")
	if b.CIDR.String() != "10.5.0.0/28" {
		t.Fatalf("first claim = %s", b.CIDR)
	}
	if _, err := m.Claim(e.ctx, 4); !errors.Is(err, ErrPoolsExhausted) {
		t.Fatalf("second claim: %v, want ErrPoolsExhausted", err)
	}
	e.pool("second", "10.6.0.0/27", 28, map[string]any{"nodeSelector": map[string]any{"matchLabels": map[string]any{"role": "edge"}}})
	e.pool("third", "10.7.0.0/28", 28, map[string]any{"nodeSelector": map[string]any{
		"matchExpressions": []any{map[string]any{"key": "role", "operator": "In", "values": []any{"core"}}}}})
	for _, want := range []string{"second", "second"} {
		b, err := m.Claim(e.ctx, 4)
		if err != nil || b.Pool != want {
			t.Fatalf("claim = %+v, %v; want a block of %s", b, err, want)
		}
	}
	if _, err := m.Claim(e.ctx, 4); !errors.Is(err, ErrPoolsExhausted) {
		t.Fatalf("claim with second full: %v", err)
	}
	n, err := e.kube.CoreV1().Nodes().Get(e.ctx, "x", metav1.GetOptions{})
	must(t, err, "get node")
	n.Labels["role"] = "core"
	_, err = e.kube.CoreV1().Nodes().Update(e.ctx, n, metav1.UpdateOptions{})
	must(t, err, "relabel node")
	if b, err := m.Claim(e.ctx, 4); err != nil || b.Pool != "third" {
		t.Fatalf("claim after relabelling = %+v, %v; want a block of third", b, err)
	}
	own, err := m.Owned(e.ctx)
	must(t, err, "owned")
	if len(own) != 4 || own[0].CIDR.String() != "10.5.0.0/28" {
		t.Fatalf("Owned = %+v, want 4 blocks, the first one first", own)
	}
}
