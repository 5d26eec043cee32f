package agent

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/strait-net/strait/internal/datapath"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// renderBlocks lists every block of node, as blockListOf returns them,
// and checks that it agrees with the full blockList.
func renderBlocks(t *testing.T, topo *topology, node string) string {
	t.Helper()
	var of, all []string
	for _, b := range topo.blockListOf(node, EncapVXLAN) {
		of = append(of, b.CIDR.String()+"/"+b.Encapsulation)
	}
	for _, b := range topo.blockList(EncapVXLAN) {
		if b.Node == node {
			all = append(all, b.CIDR.String()+"/"+b.Encapsulation)
		}
	}
	slices.Sort(of)
	slices.Sort(all)
	if !slices.Equal(of, all) {
		t.Fatalf("node %s: blockListOf %v, blockList has %v", node, of, all)
	}
	return strings.Join(of, " ")
}

func TestTopologyBlockIndex(t *testing.T) {
	topo := newTopology()
	topo.pools["p"] = poolSettings{CIDR: netip.MustParsePrefix("10.1.0.0/16"), Encapsulation: EncapVXLANCrossSubnet}
	steps := []struct {
		do   func()
		want map[string]string
	}{
		{func() {
			topo.putBlock("b1", blockInfo{CIDR: netip.MustParsePrefix("10.1.0.0/26"), Node: "n1"})
			topo.putBlock("b2", blockInfo{CIDR: netip.MustParsePrefix("10.2.0.0/26"), Node: "n1"})
			topo.putBlock("b3", blockInfo{CIDR: netip.MustParsePrefix("10.1.1.0/26"), Node: "n2"})
		}, map[string]string{"n1": "10.1.0.0/26/VXLANCrossSubnet 10.2.0.0/26/VXLAN", "n2": "10.1.1.0/26/VXLANCrossSubnet"}},
		// A block moves to another node (released and claimed again).
		{func() { topo.putBlock("b1", blockInfo{CIDR: netip.MustParsePrefix("10.1.0.0/26"), Node: "n2"}) },
			map[string]string{"n1": "10.2.0.0/26/VXLAN", "n2": "10.1.0.0/26/VXLANCrossSubnet 10.1.1.0/26/VXLANCrossSubnet"}},
		{func() { topo.dropBlock("b2"); topo.dropBlock("missing") },
			map[string]string{"n1": "", "n2": "10.1.0.0/26/VXLANCrossSubnet 10.1.1.0/26/VXLANCrossSubnet"}},
	}
	for i, s := range steps {
		s.do()
		for node, want := range s.want {
			if got := renderBlocks(t, topo, node); got != want {
				t.Fatalf("step %d, node %s: %q, want %q", i, node, got, want)
			}
		}
	}
	if _, ok := topo.byNode["n1"]; ok {
		t.Fatal("an empty node stays indexed")
	}
}

// TestOnNodeCIDRs: in node-cidr mode a Node's spec.podCIDRs are its blocks;
// a change replaces them and a deletion removes them, other nodes' stay.
func TestOnNodeCIDRs(t *testing.T) {
	cc := &clusterController{log: slog.New(slog.DiscardHandler), cfg: &Config{IPAMMode: IPAMNodeCIDR, NodeName: "self"},
		topo: newTopology(), dirty: map[string]bool{}, wake: make(chan struct{}, 1)}
	node := func(name string, cidrs ...string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
	}
	cc.onNode(node("n1", "10.244.1.0/24", "fd10:1::/64"), false)
	cc.onNode(node("n2", "10.244.2.0/24"), false)
	cc.onNode(node("n1", "10.244.3.0/24"), false)
	if got := renderBlocks(t, cc.topo, "n1"); got != "10.244.3.0/24/VXLAN" {
		t.Fatalf("n1 after a podCIDRs change: %q", got)
	}
	cc.onNode(node("n1"), true)
	if got := renderBlocks(t, cc.topo, "n1") + "|" + renderBlocks(t, cc.topo, "n2"); got != "|10.244.2.0/24/VXLAN" {
		t.Fatalf("after deleting n1: %q", got)
	}
	if len(cc.topo.blocks) != 1 || !cc.dirty["n1"] || !cc.dirty["n2"] {
		t.Fatalf("blocks %v, dirty %v", cc.topo.blocks, fmt.Sprint(cc.dirty))
	}
}

// TestNATConfig: pools with natOutgoing are masqueraded, every node's
// underlay address is exempt, and the VXLAN port's outer packets skip
// conntrack once this node has a VXLAN device (a tunnel address).
func TestNATConfig(t *testing.T) {
	cc := &clusterController{log: slog.New(slog.DiscardHandler), topo: newTopology(),
		cfg: &Config{IPAMMode: IPAMBlocks, NodeName: "self", VXLAN: VXLANConfig{Port: 8472}}}
	v := func(underlay, tunnel string) *vtepInfo {
		i := &vtepInfo{Underlay: netip.MustParseAddr(underlay)}
		if tunnel != "" {
			i.TunnelAddr = netip.MustParseAddr(tunnel)
		}
		return i
	}
	cc.topo.pools["a"] = poolSettings{CIDR: netip.MustParsePrefix("10.244.0.0/16"), NATOutgoing: true}
	cc.topo.pools["b"] = poolSettings{CIDR: netip.MustParsePrefix("10.99.0.0/16")}
	cc.topo.pools["c"] = poolSettings{CIDR: netip.MustParsePrefix("10.98.0.0/16"), NATOutgoing: true, Disabled: true}
	cc.topo.nodes["n2"] = nodeInfo{Name: "n2", V4: v("10.90.1.12", "10.244.2.0"), V6: v("fd42:90:1::12", "")}
	cc.topo.self = nodeInfo{Name: "self", V4: v("10.90.1.11", "")}

	render := func(c datapath.NATConfig) string {
		slices.SortFunc(c.AllPools, netip.Prefix.Compare)
		slices.SortFunc(c.NodeAddrs, netip.Addr.Compare)
		return fmt.Sprintf("masq %v pools %v nodes %v port %d", c.Masquerade, c.AllPools, c.NodeAddrs, c.TunnelPort)
	}
	if got, want := render(cc.natConfig()),
		"masq [10.244.0.0/16] pools [10.98.0.0/16 10.99.0.0/16 10.244.0.0/16] nodes [10.90.1.12 fd42:90:1::12] port 0"; got != want {
		t.Errorf("no VXLAN device yet:\n got %s\nwant %s", got, want)
	}
	cc.topo.self.V4.TunnelAddr = netip.MustParseAddr("10.244.1.0")
	if got, want := render(cc.natConfig()),
		"masq [10.244.0.0/16] pools [10.98.0.0/16 10.99.0.0/16 10.244.0.0/16] nodes [10.90.1.12 fd42:90:1::12] port 8472"; got != want {
		t.Errorf("with a VXLAN device:\n got %s\nwant %s", got, want)
	}
	cc.cfg.VXLAN.TrackOuterPackets = true
	if got, want := render(cc.natConfig()),
		"masq [10.244.0.0/16] pools [10.98.0.0/16 10.99.0.0/16 10.244.0.0/16] nodes [10.90.1.12 fd42:90:1::12] port 0"; got != want {
		t.Errorf("with a VXLAN device, outer packets tracked by config:\n got %s\nwant %s", got, want)
	}
}
