package datapath

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/strait-net/strait/internal/testutil"
)

// addLAN gives the node 198.51.100.1/24 and 2001:db8:100::1/64 on lan0, a
// veth to a second namespace holding .2 to .5 (and ::2 to ::5), the
// gateways the learned routes point at.
func addLAN(t *testing.T, node *testutil.NS) {
	t.Helper()
	peer := testutil.NewNS(t)
	peer.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0")
	node.MustRun(t, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", peer.Name)
	node.MustRun(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "lan0")
	node.MustRun(t, "ip", "addr", "add", "2001:db8:100::1/64", "dev", "lan0", "nodad")
	node.MustRun(t, "ip", "link", "set", "lan0", "up")
	for _, a := range []string{"2", "3", "4", "5"} {
		peer.MustRun(t, "ip", "addr", "add", "198.51.100."+a+"/24", "dev", "eth0")
		peer.MustRun(t, "ip", "addr", "add", "2001:db8:100::"+a+"/64", "dev", "eth0", "nodad")
	}
	peer.MustRun(t, "ip", "link", "set", "eth0", "up")
}

func lr(prefix, gw string) LearnedRoute {
	return LearnedRoute{Prefix: netip.MustParsePrefix(prefix), Gateway: netip.MustParseAddr(gw)}
}

// learnedRoutes lists the kernel's learned routes (proto 84), v4 then v6.
func learnedRoutes(t *testing.T, n *testutil.NS) string {
	t.Helper()
	return strings.TrimSpace(n.MustRun(t, "ip", "-4", "route", "show", "proto", "84") +
		n.MustRun(t, "ip", "-6", "route", "show", "proto", "84"))
}

func expectLearned(t *testing.T, what string, got LearnedResult, err error, added, replaced, deleted, skipped int) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got.Added != added || got.Replaced != replaced || got.Deleted != deleted || len(got.Skipped) != skipped {
		t.Fatalf("%s: added %d replaced %d deleted %d skipped %v; want %d %d %d and %d skipped",
			what, got.Added, got.Replaced, got.Deleted, got.Skipped, added, replaced, deleted, skipped)
	}
}

func TestSetLearnedRoutes(t *testing.T) {
	testutil.RequireRoot(t)
	node, dp := newNode(t, false)
	addLAN(t, node)
	ctx := context.Background()
	node.MustRun(t, "ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.3")

	set := []LearnedRoute{
		lr("10.244.2.0/26", "198.51.100.2"),
		lr("10.244.3.0/26", "198.51.100.3"),
		lr("fd10:244:0:2::/64", "2001:db8:100::2"),
		lr("10.244.9.0/26", "10.96.0.9"),       // no route to the gateway
		lr("10.244.8.0/26", "198.51.100.1"),    // our own address
		lr("10.244.2.0/26", "198.51.100.4"),    // duplicate prefix
		lr("10.244.7.0/24", "2001:db8:100::2"), // family mismatch
		lr("10.244.6.0/26", "203.0.113.9"),     // gateway via another gateway
	}
	res, err := dp.SetLearnedRoutes(ctx, set)
	expectLearned(t, "first set", res, err, 3, 0, 0, 5)
	reasons := map[string]string{}
	for _, s := range res.Skipped {
		reasons[s.Route.String()] = s.Reason
	}
	for route, want := range map[string]string{
		"10.244.9.0/26 via 10.96.0.9":       "unreachable",
		"10.244.8.0/26 via 198.51.100.1":    "is an address of this node",
		"10.244.2.0/26 via 198.51.100.4":    "duplicate prefix",
		"10.244.7.0/24 via 2001:db8:100::2": "invalid gateway",
		"10.244.6.0/26 via 203.0.113.9":     "not directly reachable (the kernel routes it via 198.51.100.3)",
	} {
		if !strings.Contains(reasons[route], want) {
			t.Errorf("skip reason of %s = %q, want it to mention %q", route, reasons[route], want)
		}
	}
	want := "10.244.2.0/26 via 198.51.100.2 dev lan0 \n" +
		"10.244.3.0/26 via 198.51.100.3 dev lan0 \n" +
		"fd10:244:0:2::/64 via 2001:db8:100::2 dev lan0 metric 1024 pref medium"
	if got := learnedRoutes(t, node); got != want {
		t.Fatalf("kernel learned routes:\n%s\nwant:\n%s", got, want)
	}

	// Idempotent.
	res, err = dp.SetLearnedRoutes(ctx, set)
	expectLearned(t, "same set again", res, err, 0, 0, 0, 5)
	if res.Installed != 3 {
		t.Errorf("installed %d, want 3", res.Installed)
	}

	// A changed gateway is replaced in place; a gone route deleted.
	set = []LearnedRoute{lr("10.244.3.0/26", "198.51.100.4"), lr("fd10:244:0:2::/64", "2001:db8:100::2")}
	res, err = dp.SetLearnedRoutes(ctx, set)
	expectLearned(t, "change and remove", res, err, 0, 1, 1, 0)
	want = "10.244.3.0/26 via 198.51.100.4 dev lan0 \n" +
		"fd10:244:0:2::/64 via 2001:db8:100::2 dev lan0 metric 1024 pref medium"
	if got := learnedRoutes(t, node); got != want {
		t.Fatalf("after change:\n%s\nwant:\n%s", got, want)
	}

	// Drift: a deleted route comes back, a modified one is put right.
	node.MustRun(t, "ip", "-6", "route", "del", "fd10:244:0:2::/64", "proto", "84")
	node.MustRun(t, "ip", "route", "change", "10.244.3.0/26", "via", "198.51.100.5", "proto", "84")
	res, err = dp.SetLearnedRoutes(ctx, set)
	expectLearned(t, "drift repair", res, err, 1, 1, 0, 0)
	if got := learnedRoutes(t, node); got != want {
		t.Fatalf("after drift repair:\n%s\nwant:\n%s", got, want)
	}

	// Empty set: everything learned goes, nothing else.
	before := node.MustRun(t, "ip", "route", "show")
	res, err = dp.SetLearnedRoutes(ctx, nil)
	expectLearned(t, "empty set", res, err, 0, 0, 2, 0)
	if got := learnedRoutes(t, node); got != "" {
		t.Fatalf("learned routes left: %s", got)
	}
	after := node.MustRun(t, "ip", "route", "show")
	if strings.Contains(after, "10.244.") || !strings.Contains(before, "198.51.100.0/24 dev lan0 proto kernel") ||
		!strings.Contains(after, "198.51.100.0/24 dev lan0 proto kernel") {
		t.Fatalf("routes before:\n%s\nafter:\n%s", before, after)
	}
}

// TestLearnedAndOverlayCoexist: the overlay (proto 83) and the learned
// routes (proto 84) never delete or overwrite each other's routes.
func TestLearnedAndOverlayCoexist(t *testing.T) {
	testutil.RequireRoot(t)
	node, dp := newNode(t, false)
	addLAN(t, node)
	ctx := context.Background()

	peers := []Peer{{Name: "n5", Routes: []PeerRoute{{Dst: netip.MustParsePrefix("10.244.5.0/26"),
		Gateway: netip.MustParseAddr("198.51.100.5"), Dev: "lan0"}}}}
	if _, _, err := dp.Resync(ctx, peers); err != nil {
		t.Fatal(err)
	}
	set := []LearnedRoute{lr("10.244.2.0/26", "198.51.100.2"), lr("10.244.5.0/26", "198.51.100.2")}
	res, err := dp.SetLearnedRoutes(ctx, set)
	expectLearned(t, "set", res, err, 1, 0, 0, 1)
	if r := res.Skipped[0].Reason; !strings.Contains(r, "held by a route of protocol 83") {
		t.Errorf("skip reason %q", r)
	}
	both := "10.244.2.0/26 via 198.51.100.2 dev lan0 proto 84 \n10.244.5.0/26 via 198.51.100.5 dev lan0 proto 83"
	show := func() string {
		return strings.TrimSpace(node.MustRun(t, "ip", "route", "show", "root", "10.244.0.0/16"))
	}
	if got := show(); got != both {
		t.Fatalf("routes:\n%s\nwant:\n%s", got, both)
	}
	// The overlay's resync, with and without its peer, leaves ours alone.
	st, repaired, err := dp.Resync(ctx, peers)
	if err != nil || st.Total() != 0 || len(repaired) != 0 {
		t.Fatalf("overlay resync: %v %+v %v", err, st, repaired)
	}
	if got := show(); got != both {
		t.Fatalf("after overlay resync:\n%s\nwant:\n%s", got, both)
	}
	if _, _, err := dp.Resync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := show(); got != "10.244.2.0/26 via 198.51.100.2 dev lan0 proto 84" {
		t.Fatalf("after overlay resync with no peers: %s", got)
	}
	// Back: and the learned set emptied leaves the overlay's route.
	if _, _, err := dp.Resync(ctx, peers); err != nil {
		t.Fatal(err)
	}
	res, err = dp.SetLearnedRoutes(ctx, nil)
	expectLearned(t, "empty learned set", res, err, 0, 0, 1, 0)
	if got := show(); got != "10.244.5.0/26 via 198.51.100.5 dev lan0 proto 83" {
		t.Fatalf("after emptying the learned set: %s", got)
	}
}
