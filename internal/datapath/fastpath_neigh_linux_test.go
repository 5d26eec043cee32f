package datapath

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The next hops the fast path keeps resolved, from a main table: gateways
// of routes into the pod ranges out of an uplink, and each VTEP's underlay
// next hop by longest match (lowest metric among equals).
func TestFPNextHops(t *testing.T) {
	const eth0, eth1, vx = 2, 3, 9 // eth0 and eth1 are uplinks, vx a VXLAN device
	uplinks := map[int]bool{eth0: true, eth1: true}
	route := func(dst, gw string, idx, prio int) netlink.Route {
		r := netlink.Route{Type: unix.RTN_UNICAST, LinkIndex: idx, Priority: prio, Family: unix.AF_INET}
		if dst != "" {
			p := netip.MustParsePrefix(dst)
			r.Dst = ipNet(p)
			if p.Addr().Is6() {
				r.Family = unix.AF_INET6
			}
		}
		if gw != "" {
			r.Gw = net.IP(netip.MustParseAddr(gw).AsSlice())
		}
		return r
	}
	routes := []netlink.Route{
		route("", "10.90.1.1", eth0, 0),                 // default: no pod range
		route("10.90.1.0/24", "", eth0, 0),              // connected underlay
		route("10.90.7.0/24", "10.90.1.7", eth0, 100),   // a VTEP's subnet, two metrics:
		route("10.90.7.0/24", "10.90.1.8", eth1, 50),    // the lower wins
		route("10.244.2.0/26", "10.90.1.12", eth0, 0),   // native pod route
		route("10.244.3.0/26", "10.244.3.0", vx, 0),     // through VXLAN: not an uplink
		route("10.244.4.0/26", "10.90.1.14", 7, 0),      // out of a device not managed
		route("10.245.0.0/26", "10.90.1.15", eth0, 0),   // outside the pod ranges
		route("fd42:244:0:2::/64", "fe80::12", eth0, 0), // IPv6 native, link-local gateway
		route("10.240.0.0/12", "10.90.1.16", eth0, 0),   // covers the pod range, not inside it
	}
	ecmp := route("10.244.5.0/26", "", 0, 0)
	ecmp.MultiPath = []*netlink.NexthopInfo{
		{LinkIndex: eth0, Gw: net.IP(netip.MustParseAddr("10.90.1.21").AsSlice())},
		{LinkIndex: eth1, Gw: net.IP(netip.MustParseAddr("10.90.2.21").AsSlice())},
	}
	routes = append(routes, ecmp)
	ranges := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd42:244::/48")}
	vteps := map[fpVTEPKey][4]byte{
		{MAC: [6]byte{2, 0, 0, 0, 0, 1}}: {10, 90, 1, 13}, // on-link: itself
		{MAC: [6]byte{2, 0, 0, 0, 0, 2}}: {10, 90, 7, 3},  // behind 10.90.1.8 (metric 50) on eth1
		{MAC: [6]byte{2, 0, 0, 0, 0, 3}}: {10, 90, 9, 3},  // default route
	}
	got := fpNextHops(routes, uplinks, ranges, vteps)
	want := []fpNextHop{
		{eth0, netip.MustParseAddr("10.90.1.1")},
		{eth0, netip.MustParseAddr("10.90.1.12")},
		{eth0, netip.MustParseAddr("10.90.1.13")},
		{eth0, netip.MustParseAddr("10.90.1.21")},
		{eth0, netip.MustParseAddr("fe80::12")},
		{eth1, netip.MustParseAddr("10.90.1.8")},
		{eth1, netip.MustParseAddr("10.90.2.21")},
	}
	var list []fpNextHop
	for k := range got {
		list = append(list, k)
	}
	slices.SortFunc(list, func(a, b fpNextHop) int {
		if a.ifindex != b.ifindex {
			return a.ifindex - b.ifindex
		}
		return a.ip.Compare(b.ip)
	})
	if !slices.Equal(list, want) {
		t.Errorf("next hops\n got %v\nwant %v", list, want)
	}
}
