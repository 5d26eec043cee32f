package datapath

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// TestBatchPartialFailure: changes go to the kernel many per sendmsg; one
// the kernel refuses in the middle of a chunk fails alone, named in the
// error, and the changes around it (before and after, in the same chunk
// and in later chunks) are applied and counted.
func TestBatchPartialFailure(t *testing.T) {
	node, dp, _ := newOvSingle(t)
	ctx := context.Background()
	var peers []Peer
	for i := 1; i <= 100; i++ { // 100 peers x 3 entries: several chunks
		peers = append(peers, Peer{Name: fmt.Sprintf("p%03d", i), Routes: []PeerRoute{{
			Dst: netip.MustParsePrefix(fmt.Sprintf("10.245.%d.0/24", i)), Encap: true, Gateway: netip.MustParseAddr(fmt.Sprintf("10.245.%d.0", i)),
			VTEPMAC: VTEPMAC(fmt.Sprintf("p%03d", i), 4), VTEPIP: netip.MustParseAddr(fmt.Sprintf("10.91.0.%d", i))}}})
	}
	// Native, via a gateway outside up0's subnet and without onlink: the
	// kernel refuses the route (the datapath cannot know in advance).
	peers[10].Routes[0] = PeerRoute{Dst: peers[10].Routes[0].Dst, Gateway: netip.MustParseAddr("10.99.0.1"), Dev: "up0"}
	st, _, err := dp.Resync(ctx, peers)
	if err == nil || !strings.Contains(err.Error(), "10.245.11.0/24") {
		t.Fatalf("Resync = %v; want the refused route named", err)
	}
	if want := (OpStats{RouteAdds: 99, NeighAdds: 99, FDBAdds: 99}); st != want {
		t.Errorf("ops %+v, want %+v", st, want)
	}
	if got := strings.Count(node.MustRun(t, "ip", "route", "show", "proto", fmt.Sprint(RouteProtocol)), "\n"); got != 99 {
		t.Errorf("%d routes in the kernel, want 99", got)
	}
	// The failed change stays dirty: the peer's next SetPeer retries it
	// (and fails the same way, with nothing else to do).
	if st, err := dp.SetPeer(ctx, peers[10]); err == nil || st.Total() != 0 {
		t.Errorf("SetPeer(p011) = %+v, %v; want the same refusal and no other op", st, err)
	}
}

// TestBatchStaleIndex: the VXLAN device is deleted and created again behind
// the datapath's back (a new index under the same name); the next change
// fails with ENODEV on the cached index, is sent again with the new one and
// succeeds.
func TestBatchStaleIndex(t *testing.T) {
	node, dp, _ := newOvSingle(t)
	ctx := context.Background()
	a, b := encapPeer("a", 3), encapPeer("b", 4)
	a.Routes, b.Routes = a.Routes[:1], b.Routes[:1]
	if _, err := dp.SetPeer(ctx, a); err != nil {
		t.Fatal(err)
	}
	old := node.MustRun(t, "ip", "-o", "link", "show", VTEPDevice4)
	node.MustRun(t, "ip", "link", "del", VTEPDevice4)
	node.MustRun(t, "ip", "link", "add", "spacer", "type", "bridge") // the new device must not get the old index back
	node.MustRun(t, "ip", "link", "add", VTEPDevice4, "type", "vxlan", "id", "4096", "local", "10.90.0.2", "dstport", "4789", "nolearning")
	node.MustRun(t, "ip", "link", "set", VTEPDevice4, "up")
	if now := node.MustRun(t, "ip", "-o", "link", "show", VTEPDevice4); strings.Fields(now)[0] == strings.Fields(old)[0] {
		t.Fatalf("the device kept its index %s", strings.Fields(now)[0])
	}
	st, err := dp.SetPeer(ctx, b)
	expectOps(t, "b after the device was recreated", st, err, OpStats{RouteAdds: 1, NeighAdds: 1, FDBAdds: 1})
	contains(t, overlayDump(t, node), true, "10.244.4.0/24 via 10.244.4.0 dev strait.vxlan4 proto 83 onlink",
		VTEPMAC("b", 4).String()+" dst 10.90.0.14 self permanent")
}
