package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/strait-net/strait/internal/bgp"
	"github.com/strait-net/strait/internal/datapath"
	"github.com/strait-net/strait/internal/testutil"
)

func TestNativeRoutes(t *testing.T) {
	p := netip.MustParsePrefix
	route := func(prefix, nh, peer string) bgp.Route {
		return bgp.Route{Prefix: p(prefix), NextHop: netip.MustParseAddr(nh), Peer: peer, Best: true}
	}
	in := nativeInputs{
		Pools: []poolSettings{
			{CIDR: p("10.244.0.0/16"), Encapsulation: EncapNone},
			{CIDR: p("10.245.0.0/16"), Encapsulation: EncapVXLANCrossSubnet},
			{CIDR: p("10.246.0.0/16"), Encapsulation: EncapVXLAN},
			{CIDR: p("fd10:244::/56"), Encapsulation: EncapNone},
			{CIDR: p("10.244.128.0/17"), Encapsulation: EncapVXLAN}, // more specific than the None pool
		},
		Own:     []netip.Prefix{p("10.244.1.0/26"), p("fd10:244:0:1::/64")},
		Subnets: []netip.Prefix{p("198.51.100.0/24"), p("2001:db8:100::/64")},
	}
	learned := []bgp.Route{
		route("10.244.3.0/26", "198.51.100.3", "mesh-n3"),
		route("10.244.2.0/26", "203.0.113.2", "mesh-n2"), // None: the datapath checks reachability
		route("fd10:244:0:2::/64", "2001:db8:100::2", "mesh-n2"),
		route("10.245.2.0/26", "198.51.100.2", "mesh-n2"),
		route("10.245.4.0/26", "203.0.113.4", "mesh-n4"),
		route("10.246.2.0/26", "198.51.100.2", "mesh-n2"),
		route("10.244.130.0/26", "198.51.100.2", "mesh-n2"),
		route("10.244.1.0/26", "198.51.100.9", "mesh-n9"),
		route("10.244.0.0/16", "198.51.100.9", "mesh-n9"),
		route("10.244.5.0/26", "198.51.100.254", "frr"),
		route("10.96.0.0/16", "198.51.100.2", "mesh-n2"),
	}
	routes, ignored := nativeRoutes(learned, in)
	lr := func(prefix, gw string) datapath.LearnedRoute {
		return datapath.LearnedRoute{Prefix: p(prefix), Gateway: netip.MustParseAddr(gw)}
	}
	want := []datapath.LearnedRoute{
		lr("10.244.2.0/26", "203.0.113.2"),
		lr("10.244.3.0/26", "198.51.100.3"),
		lr("10.245.2.0/26", "198.51.100.2"),
		lr("fd10:244:0:2::/64", "2001:db8:100::2"),
	}
	if len(routes) != len(want) {
		t.Fatalf("routes %v, want %v", routes, want)
	}
	for i := range want {
		if routes[i] != want[i] {
			t.Errorf("route %d = %v, want %v", i, routes[i], want[i])
		}
	}
	wantIgnored := []string{
		"10.245.4.0/26 via 203.0.113.4 from mesh-n4: VXLANCrossSubnet pool and the next hop is in another subnet",
		"10.246.2.0/26 via 198.51.100.2 from mesh-n2: pool 10.246.0.0/16 has encapsulation VXLAN",
		"10.244.130.0/26 via 198.51.100.2 from mesh-n2: pool 10.244.128.0/17 has encapsulation VXLAN",
		"10.244.1.0/26 via 198.51.100.9 from mesh-n9: overlaps a block of this node",
		"10.244.0.0/16 via 198.51.100.9 from mesh-n9: overlaps a block of this node",
		"10.244.5.0/26 via 198.51.100.254 from frr: not from a node-to-node mesh peer",
		"10.96.0.0/16 via 198.51.100.2 from mesh-n2: outside every IP pool",
	}
	if len(ignored) != len(wantIgnored) {
		t.Fatalf("ignored:\n%s", strings.Join(ignored, "\n"))
	}
	for i, w := range wantIgnored {
		if !strings.HasPrefix(ignored[i], w) {
			t.Errorf("ignored[%d] = %q, want prefix %q", i, ignored[i], w)
		}
	}
	// Nothing learned: nothing to install (withdrawn routes are removed by
	// the datapath's declarative set).
	if routes, ignored := nativeRoutes(nil, in); len(routes) != 0 || len(ignored) != 0 {
		t.Errorf("empty input gave %v %v", routes, ignored)
	}
}

// learnedRouteNode is a node namespace holding 198.51.100.1/24 on eth0 (a
// veth to a namespace holding .2), and a real datapath programming it.
func learnedRouteNode(t *testing.T) (*testutil.NS, *datapath.Datapath) {
	t.Helper()
	testutil.RequireRoot(t)
	node, lan := testutil.NewNS(t), testutil.NewNS(t)
	node.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", lan.Name)
	node.MustRun(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "eth0")
	lan.MustRun(t, "ip", "addr", "add", "198.51.100.2/24", "dev", "eth0")
	node.MustRun(t, "ip", "link", "set", "eth0", "up")
	lan.MustRun(t, "ip", "link", "set", "eth0", "up")
	dp, err := datapath.New(datapath.Options{NodeNetns: node.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	return node, dp
}
