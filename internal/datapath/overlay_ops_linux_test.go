package datapath

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/strait-net/strait/internal/testutil"
)

// newOvSingle is one node (underlay up0: 10.90.0.2/24, fd42:90::2/64, MTU
// 1500) with its VXLAN devices; its peers need not exist.
func newOvSingle(t testing.TB) (*testutil.NS, *Datapath, []VTEPConfig) {
	t.Helper()
	node, dp := newNode(t, false)
	addUplink(t, node)
	vteps := []VTEPConfig{
		{Family: 4, LocalIP: netip.MustParseAddr("10.90.0.2"), MAC: VTEPMAC("self", 4), TunnelAddr: netip.MustParseAddr("10.244.1.0")},
		{Family: 6, LocalIP: netip.MustParseAddr("fd42:90::2"), MAC: VTEPMAC("self", 6), TunnelAddr: netip.MustParseAddr("fd42:244:0:1::")},
	}
	if err := dp.EnsureVTEPs(context.Background(), vteps); err != nil {
		t.Fatal(err)
	}
	return node, dp, vteps
}

// encapPeer owns 10.244.i.0/24 and fd42:244:0:i::/64 behind 10.90.0.(10+i).
func encapPeer(name string, i int) Peer {
	return Peer{Name: name, Routes: []PeerRoute{
		{Dst: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i)), Encap: true, Gateway: netip.MustParseAddr(fmt.Sprintf("10.244.%d.0", i)),
			VTEPMAC: VTEPMAC(name, 4), VTEPIP: netip.MustParseAddr(fmt.Sprintf("10.90.0.%d", 10+i))},
		{Dst: netip.MustParsePrefix(fmt.Sprintf("fd42:244:0:%d::/64", i)), Encap: true, Gateway: netip.MustParseAddr(fmt.Sprintf("fd42:244:0:%d::", i)),
			VTEPMAC: VTEPMAC(name, 6), VTEPIP: netip.MustParseAddr(fmt.Sprintf("fd42:90::%d", 10+i))},
	}}
}

// nativePeer owns the same blocks, routed natively via up0.
func nativePeer(name string, i int) Peer {
	return Peer{Name: name, Routes: []PeerRoute{
		{Dst: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i)), Gateway: netip.MustParseAddr(fmt.Sprintf("10.90.0.%d", 10+i)), Dev: "up0"},
		{Dst: netip.MustParsePrefix(fmt.Sprintf("fd42:244:0:%d::/64", i)), Gateway: netip.MustParseAddr(fmt.Sprintf("fd42:90::%d", 10+i)), Dev: "up0"},
	}}
}

// overlayDump is the node's overlay state as iproute2 shows it.
func overlayDump(t testing.TB, n *testutil.NS) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(routes(t, n))
	for _, dev := range []string{VTEPDevice4, VTEPDevice6} {
		if !linkExists(n, dev) {
			continue
		}
		b.WriteString(n.MustRun(t, "ip", "neigh", "show", "dev", dev, "nud", "permanent"))
		b.WriteString(n.MustRun(t, "bridge", "fdb", "show", "dev", dev))
	}
	return b.String()
}

func expectOps(t *testing.T, what string, got OpStats, err error, want OpStats) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != want {
		t.Errorf("%s: ops %+v, want %+v", what, got, want)
	}
}

func contains(t *testing.T, state string, present bool, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if strings.Contains(state, l) != present {
			t.Errorf("present=%v expected for %q in\n%s", present, l, state)
		}
	}
}

func TestOverlaySetPeerOps(t *testing.T) {
	node, dp, _ := newOvSingle(t)
	ctx := context.Background()
	a, b := encapPeer("a", 3), nativePeer("b", 4)

	st, err := dp.SetPeer(ctx, a)
	expectOps(t, "add a", st, err, OpStats{RouteAdds: 2, NeighAdds: 2, FDBAdds: 2})
	st, err = dp.SetPeer(ctx, a)
	expectOps(t, "set a again", st, err, OpStats{})
	st, err = dp.SetPeer(ctx, b)
	expectOps(t, "add b", st, err, OpStats{RouteAdds: 2})
	bRoutes := []string{"10.244.4.0/24 via 10.90.0.14 dev up0 proto 83", "fd42:244:0:4::/64 via fd42:90::14 dev up0 proto 83"}
	contains(t, overlayDump(t, node), true, bRoutes...)

	// One block of a moves: one route added, one deleted, nothing else.
	a.Routes[0].Dst = netip.MustParsePrefix("10.244.33.0/24")
	st, err = dp.SetPeer(ctx, a)
	expectOps(t, "move a's IPv4 block", st, err, OpStats{RouteAdds: 1, RouteDels: 1})
	state := overlayDump(t, node)
	contains(t, state, true, append(bRoutes, "10.244.33.0/24 via 10.244.3.0 dev strait.vxlan4 proto 83 onlink")...)
	contains(t, state, false, "10.244.3.0/24")

	// a's underlay address changes: the FDB entry is replaced in place.
	a.Routes[0].VTEPIP = netip.MustParseAddr("10.90.0.99")
	st, err = dp.SetPeer(ctx, a)
	expectOps(t, "change a's VTEP address", st, err, OpStats{FDBAdds: 1})
	mac := VTEPMAC("a", 4).String()
	fdb := node.MustRun(t, "bridge", "fdb", "show", "dev", VTEPDevice4)
	if strings.Count(fdb, mac) != 1 || !strings.Contains(fdb, mac+" dst 10.90.0.99 self permanent") {
		t.Errorf("want exactly %s dst 10.90.0.99:\n%s", mac, fdb)
	}

	// a's VXLAN device is recreated with another MAC.
	a.Routes[0].VTEPMAC = VTEPMAC("a-reinstalled", 4)
	st, err = dp.SetPeer(ctx, a)
	expectOps(t, "change a's VTEP MAC", st, err, OpStats{NeighAdds: 1, FDBAdds: 1, FDBDels: 1})
	contains(t, overlayDump(t, node), false, mac)

	// c claims b's IPv4 block (a block moving between nodes): the last
	// writer wins, and b's route comes back when c lets go.
	c := Peer{Name: "c", Routes: []PeerRoute{{Dst: b.Routes[0].Dst, Encap: true, Gateway: netip.MustParseAddr("10.244.5.0"),
		VTEPMAC: VTEPMAC("c", 4), VTEPIP: netip.MustParseAddr("10.90.0.15")}}}
	st, err = dp.SetPeer(ctx, c)
	expectOps(t, "c claims b's block", st, err, OpStats{RouteAdds: 1, NeighAdds: 1, FDBAdds: 1})
	contains(t, overlayDump(t, node), true, "10.244.4.0/24 via 10.244.5.0 dev strait.vxlan4 proto 83 onlink")
	st, err = dp.DeletePeer(ctx, "c")
	expectOps(t, "delete c", st, err, OpStats{RouteAdds: 1, NeighDels: 1, FDBDels: 1})
	contains(t, overlayDump(t, node), true, bRoutes...)

	st, err = dp.DeletePeer(ctx, "a")
	expectOps(t, "delete a", st, err, OpStats{RouteDels: 2, NeighDels: 2, FDBDels: 2})
	state = overlayDump(t, node)
	contains(t, state, true, bRoutes...)
	contains(t, state, false, "10.244.33.0", "fd42:244:0:3::", "lladdr", "dst ")
	st, err = dp.DeletePeer(ctx, "a")
	expectOps(t, "delete a again", st, err, OpStats{})

	entries, err := dp.OverlayState(ctx)
	if err != nil || len(entries) != 2 || entries[0].Peer != "b" || entries[1].Peer != "b" {
		t.Errorf("OverlayState = %v, %v; want b's two routes", entries, err)
	}

	for _, bad := range []Peer{
		{Name: "bad", Routes: []PeerRoute{{Dst: netip.MustParsePrefix("10.244.7.1/24"), Gateway: netip.MustParseAddr("10.90.0.1"), Dev: "up0"}}},
		{Name: "bad", Routes: []PeerRoute{{Dst: netip.MustParsePrefix("10.244.7.0/24"), Encap: true, Gateway: netip.MustParseAddr("10.244.7.0"), VTEPIP: netip.MustParseAddr("fd42:90::7"), VTEPMAC: VTEPMAC("x", 4)}}},
		{Name: "", Routes: b.Routes},
	} {
		if st, err := dp.SetPeer(ctx, bad); err == nil || st.Total() != 0 {
			t.Errorf("SetPeer(%+v) = %+v, %v; want an error and no ops", bad, st, err)
		}
	}
}

func TestOverlayResyncStale(t *testing.T) {
	node, dp, _ := newOvSingle(t)
	ctx := context.Background()
	peers := []Peer{encapPeer("a", 3), nativePeer("b", 4)}
	for _, p := range peers {
		if _, err := dp.SetPeer(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	foreign := []string{
		"10.244.98.0/24 via 10.90.0.1 dev up0 proto static",
		"10.244.97.0/24 via 10.90.0.1 dev up0 proto 80",
		"fd42:244:0:98::/64 via fd42:90::1 dev up0 proto static",
	}
	for _, cmd := range []string{
		"ip route add 10.244.99.0/24 via 10.90.0.1 dev up0 proto 83",
		"ip -6 route add fd42:244:0:99::/64 via fd42:90::1 dev up0 proto 83",
		"ip route replace 10.244.4.0/24 via 10.90.0.1 dev up0 proto 83", // b's route, wrong gateway
		"ip route add " + foreign[0],
		"ip route add " + foreign[1],
		"ip -6 route add " + foreign[2],
		"ip neigh add 10.244.96.0 lladdr 02:00:00:00:00:96 dev strait.vxlan4 nud permanent",
		"bridge fdb add 02:00:00:00:00:96 dev strait.vxlan4 dst 10.90.0.96 self permanent",
		"bridge fdb append 00:00:00:00:00:00 dev strait.vxlan4 dst 10.90.0.95 self permanent", // flooding
	} {
		node.MustRun(t, strings.Fields(cmd)...)
	}
	entries, err := dp.OverlayState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unknown := 0
	for _, e := range entries {
		if e.Peer == UnknownPeer {
			unknown++
		}
	}
	if unknown != 5 {
		t.Errorf("OverlayState: %d entries of unknown peers, want 5: %v", unknown, entries)
	}

	st, repaired, err := dp.Resync(ctx, peers)
	t.Logf("repaired:\n%s", strings.Join(repaired, "\n"))
	expectOps(t, "resync", st, err, OpStats{RouteAdds: 1, RouteDels: 2, NeighDels: 1, FDBDels: 2})
	if len(repaired) != 6 {
		t.Errorf("%d repairs reported, want 6", len(repaired))
	}
	want := "route 10.244.4.0/24 via 10.90.0.14 dev up0 (peer b): was route 10.244.4.0/24 via 10.90.0.1 dev up0, replaced"
	if !hasItem(repaired, want) {
		t.Errorf("no %q among the repairs", want)
	}
	state := overlayDump(t, node)
	contains(t, state, true, foreign...)
	contains(t, state, true, "10.244.4.0/24 via 10.90.0.14 dev up0 proto 83")
	contains(t, state, false, "10.244.99.0", "fd42:244:0:99::", "10.244.96.0", "02:00:00:00:00:96", "00:00:00:00:00:00")

	st, repaired, err = dp.Resync(ctx, peers)
	expectOps(t, "resync again", st, err, OpStats{})
	if len(repaired) != 0 {
		t.Errorf("second resync repaired %v", repaired)
	}
}

func TestOverlayEnsureVTEPs(t *testing.T) {
	node, dp, vteps := newOvSingle(t)
	ctx := context.Background()
	show := func(dev string) string { return node.MustRun(t, "ip", "-d", "addr", "show", "dev", dev) }
	index := func(dev string) string { return strings.SplitN(show(dev), ":", 2)[0] }

	v4, v6 := show(VTEPDevice4), show(VTEPDevice6)
	contains(t, v4, true, "mtu 1450", "state UNKNOWN", "link/ether "+VTEPMAC("self", 4).String(),
		"vxlan id 4096 local 10.90.0.2 srcport 0 0 dstport 4789 nolearning", "inet 10.244.1.0/32 scope global strait.vxlan4")
	contains(t, v6, true, "mtu 1430", "link/ether "+VTEPMAC("self", 6).String(),
		"vxlan id 4097 local fd42:90::2 srcport 0 0 dstport 4789 nolearning", "inet6 fd42:244:0:1::/128 scope global nodad")
	t.Logf("%s", v4)

	if err := dp.EnsureVTEPs(ctx, vteps); err != nil {
		t.Fatal(err)
	}
	if again := show(VTEPDevice4); again != v4 {
		t.Errorf("second EnsureVTEPs changed the device:\n%s\nwas\n%s", again, v4)
	}

	// Drift that can be fixed in place.
	idx4 := index(VTEPDevice4)
	node.MustRun(t, "ip", "addr", "add", "10.244.200.1/32", "dev", VTEPDevice4)
	node.MustRun(t, "ip", "link", "set", VTEPDevice4, "down", "mtu", "1300")
	if err := dp.EnsureVTEPs(ctx, vteps); err != nil {
		t.Fatal(err)
	}
	if got := show(VTEPDevice4); got != v4 {
		t.Errorf("drift not repaired in place:\n%s\nwant\n%s", got, v4)
	}

	// Configured MTU, in place.
	vteps[0].MTU = 1400
	if err := dp.EnsureVTEPs(ctx, vteps); err != nil {
		t.Fatal(err)
	}
	contains(t, show(VTEPDevice4), true, "mtu 1400")
	if index(VTEPDevice4) != idx4 {
		t.Errorf("MTU change recreated the device")
	}

	// A new VNI needs a new device; its entries come back with it.
	a := encapPeer("a", 3)
	if _, err := dp.SetPeer(ctx, a); err != nil {
		t.Fatal(err)
	}
	before := overlayDump(t, node)
	vteps[0].VNI = 5000
	if err := dp.EnsureVTEPs(ctx, vteps); err != nil {
		t.Fatal(err)
	}
	contains(t, show(VTEPDevice4), true, "vxlan id 5000 ", "mtu 1400", "inet 10.244.1.0/32")
	if index(VTEPDevice4) == idx4 {
		t.Errorf("VNI change did not recreate the device")
	}
	if after := overlayDump(t, node); after != before {
		t.Errorf("entries not restored after recreation:\n%s\nwas\n%s", after, before)
	}
	if st, err := dp.SetPeer(ctx, a); err != nil || st.Total() != 0 {
		t.Errorf("SetPeer after recreation = %+v, %v; want no ops", st, err)
	}

	// Unlisted Strait VXLAN devices go.
	node.MustRun(t, "ip", "link", "add", "strait.vxlan9", "type", "vxlan", "id", "9", "dstport", "4789")
	if err := dp.EnsureVTEPs(ctx, vteps[:1]); err != nil {
		t.Fatal(err)
	}
	if linkExists(node, "strait.vxlan9") || linkExists(node, VTEPDevice6) || !linkExists(node, VTEPDevice4) {
		t.Errorf("want only %s left:\n%s", VTEPDevice4, node.MustRun(t, "ip", "link"))
	}

	for _, bad := range [][]VTEPConfig{
		{{Family: 4, Device: "vxlan0", LocalIP: vteps[0].LocalIP, MAC: vteps[0].MAC, TunnelAddr: vteps[0].TunnelAddr}},
		{vteps[0], vteps[0]},
		{{Family: 4, LocalIP: vteps[1].LocalIP, MAC: vteps[0].MAC, TunnelAddr: vteps[0].TunnelAddr}},
		{{Family: 4, LocalIP: vteps[0].LocalIP, MAC: VTEPMAC("x", 4)[:5], TunnelAddr: vteps[0].TunnelAddr}},
	} {
		if err := dp.EnsureVTEPs(ctx, bad); err == nil {
			t.Errorf("EnsureVTEPs(%+v) accepted", bad)
		}
	}
	if !linkExists(node, VTEPDevice4) {
		t.Errorf("a rejected config changed the devices")
	}
}
