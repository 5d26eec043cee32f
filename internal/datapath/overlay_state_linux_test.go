package datapath

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// Unprivileged tests of the overlay's bookkeeping.

func TestVTEPMAC(t *testing.T) {
	a4, a6, b4 := VTEPMAC("node-a", 4), VTEPMAC("node-a", 6), VTEPMAC("node-b", 4)
	if a4.String() != VTEPMAC("node-a", 4).String() {
		t.Error("VTEPMAC is not deterministic")
	}
	if a4.String() == a6.String() || a4.String() == b4.String() {
		t.Errorf("VTEPMAC collides: %s %s %s", a4, a6, b4)
	}
	for _, mac := range [][]byte{a4, a6, b4} {
		if len(mac) != 6 || mac[0]&0x01 != 0 || mac[0]&0x02 == 0 {
			t.Errorf("%x is not a locally administered unicast MAC", mac)
		}
	}
}

// simulate plans a peer change and records every operation as successful.
func simulate(t *testing.T, o *overlayState, name string, p *Peer) OpStats {
	t.Helper()
	var want map[entryKey]entryVal
	if p != nil {
		var err error
		if want, err = o.peerEntries(*p); err != nil {
			t.Fatal(err)
		}
	}
	var st OpStats
	for _, c := range o.plan(o.setPeer(name, want)) {
		o.applied(c, name, nil)
		st.count(c)
	}
	return st
}

func TestOverlayBookkeeping(t *testing.T) {
	var o overlayState
	o.init()
	a, b := encapPeer("a", 3), nativePeer("b", 4)
	if st := simulate(t, &o, "a", &a); st != (OpStats{RouteAdds: 2, NeighAdds: 2, FDBAdds: 2}) {
		t.Errorf("add a: %+v", st)
	}
	if st := simulate(t, &o, "a", &a); st.Total() != 0 {
		t.Errorf("a again: %+v", st)
	}
	simulate(t, &o, "b", &b)

	// Installs run FDB, neighbour, route; deletions route, neighbour, FDB.
	moved := encapPeer("a", 3)
	moved.Routes[0].Dst = netip.MustParsePrefix("10.244.30.0/24")
	moved.Routes[0].VTEPMAC = VTEPMAC("a2", 4)
	want, _ := o.peerEntries(moved)
	var kinds []string
	for _, c := range o.plan(o.setPeer("a", want)) {
		op := "+"
		if c.del {
			op = "-"
		}
		kinds = append(kinds, op+c.key.kind.String())
		o.applied(c, "a", nil)
	}
	if wantOrder := []string{"+fdb", "+neigh", "+route", "-route", "-fdb"}; !slices.Equal(kinds, wantOrder) {
		t.Errorf("operation order %v, want %v", kinds, wantOrder)
	}

	// A failed delete stays dirty for its peer and is retried by that
	// peer's next call only.
	gone := entryKey{kind: kindRoute, dst: netip.MustParsePrefix("10.244.99.0/24")}
	o.installed[gone] = entryVal{ip: netip.MustParseAddr("10.90.0.1"), dev: "up0"}
	o.applied(change{key: gone, del: true}, "b", errors.New("EBUSY"))
	if cs := o.plan(o.setPeer("a", want)); len(cs) != 0 {
		t.Errorf("a's call retried b's dirty entry: %+v", cs)
	}
	cs := o.plan(o.setPeer("b", o.peers["b"]))
	if len(cs) != 1 || cs[0].key != gone || !cs[0].del {
		t.Errorf("b's call did not retry its dirty entry: %+v", cs)
	}

	// Invalid peers.
	for _, p := range []Peer{
		{Name: "x", Routes: []PeerRoute{{Dst: netip.MustParsePrefix("10.244.5.0/24"), Encap: true, Gateway: netip.MustParseAddr("10.244.5.0"), VTEPIP: netip.MustParseAddr("10.90.0.5")}}},
		{Name: "x", Routes: []PeerRoute{{Dst: netip.MustParsePrefix("10.244.5.0/24"), Gateway: netip.MustParseAddr("fd42:90::5"), Dev: "up0"}}},
		{Name: "x", Routes: []PeerRoute{{Dst: netip.MustParsePrefix("10.244.5.0/24"), Gateway: netip.MustParseAddr("10.90.0.5")}}},
		{Name: "x", Routes: []PeerRoute{
			{Dst: netip.MustParsePrefix("10.244.5.0/24"), Gateway: netip.MustParseAddr("10.90.0.5"), Dev: "up0"},
			{Dst: netip.MustParsePrefix("10.244.5.0/24"), Gateway: netip.MustParseAddr("10.90.0.6"), Dev: "up0"},
		}},
	} {
		if _, err := o.peerEntries(p); err == nil {
			t.Errorf("peerEntries accepted %+v", p)
		}
	}
}

func TestVTEPConfigNormalize(t *testing.T) {
	c, err := VTEPConfig{Family: 6, LocalIP: netip.MustParseAddr("fd42:90::2"), MAC: VTEPMAC("n", 6), TunnelAddr: netip.MustParseAddr("fd42:244:0:1::")}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	if c.Device != VTEPDevice6 || c.VNI != DefaultVNI6 || c.Port != DefaultVXLANPort {
		t.Errorf("defaults not applied: %+v", c)
	}
	for _, bad := range []VTEPConfig{
		{Family: 5},
		{Family: 4, LocalIP: c.LocalIP, MAC: c.MAC, TunnelAddr: netip.MustParseAddr("10.244.1.0")},
		{Family: 6, LocalIP: c.LocalIP, MAC: c.MAC, TunnelAddr: c.TunnelAddr, VNI: 1 << 24},
		{Family: 6, LocalIP: c.LocalIP, MAC: []byte{1, 2, 3, 4, 5, 6}, TunnelAddr: c.TunnelAddr},
		{Family: 6, Device: "strait.vxlan/6", LocalIP: c.LocalIP, MAC: c.MAC, TunnelAddr: c.TunnelAddr},
	} {
		if _, err := bad.normalize(); err == nil {
			t.Errorf("normalize accepted %+v", bad)
		}
	}
}
