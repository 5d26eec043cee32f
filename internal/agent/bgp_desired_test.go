package agent

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/bgp"
)

func renderBGP(cfg bgp.Config, probs []string) string {
	var b strings.Builder
	gr := "off"
	if cfg.GracefulRestart != nil {
		gr = cfg.GracefulRestart.RestartTime.String()
	}
	fmt.Fprintf(&b, "asn %d router-id %s listen %d graceful-restart %s\n", cfg.ASN, cfg.RouterID, cfg.ListenPort, gr)
	for _, p := range cfg.Peers {
		fmt.Fprintf(&b, "peer %s %s", p.Name, p.Address)
		if p.Port != 0 {
			fmt.Fprintf(&b, " port %d", p.Port)
		}
		fmt.Fprintf(&b, " as %d families %v timers %v/%v/%v", p.ASN, p.Families, p.Timers.Keepalive, p.Timers.Hold, p.Timers.ConnectRetry)
		if p.Password != "" {
			fmt.Fprintf(&b, " password %q", p.Password)
		}
		if p.LocalAddress.IsValid() {
			fmt.Fprintf(&b, " local %s", p.LocalAddress)
		}
		if p.SourceInterface != "" {
			fmt.Fprintf(&b, " source-interface %s", p.SourceInterface)
		}
		if p.NextHop.Mode != "" {
			fmt.Fprintf(&b, " next-hop %s", p.NextHop.Mode)
			for _, a := range []netip.Addr{p.NextHop.IPv4, p.NextHop.IPv6} {
				if a.IsValid() {
					fmt.Fprintf(&b, " %s", a)
				}
			}
			if p.NextHop.Interface != "" {
				fmt.Fprintf(&b, " %s", p.NextHop.Interface)
			}
		}
		if p.EBGPMultihop != 0 {
			fmt.Fprintf(&b, " multihop %d", p.EBGPMultihop)
		}
		if p.GracefulRestart != nil {
			fmt.Fprintf(&b, " graceful-restart %v", p.GracefulRestart.RestartTime)
		}
		if p.BFD != nil {
			fmt.Fprintf(&b, " bfd %v/%v x%d", p.BFD.MinTx, p.BFD.MinRx, p.BFD.Multiplier)
		}
		if p.Passive {
			b.WriteString(" passive")
		}
		if p.Learn {
			b.WriteString(" learn")
		}
		b.WriteString("\n")
	}
	for _, p := range cfg.Paths {
		fmt.Fprintf(&b, "path %s %s", p.Prefix, p.Origin)
		if len(p.Peers) > 0 {
			fmt.Fprintf(&b, " to %s", strings.Join(p.Peers, ","))
		}
		for _, c := range p.Communities {
			fmt.Fprintf(&b, " community %s", c)
		}
		for _, c := range p.LargeCommunities {
			fmt.Fprintf(&b, " large %s", c)
		}
		b.WriteString("\n")
	}
	for _, p := range probs {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	return b.String()
}

func a(s string) netip.Addr { return netip.MustParseAddr(s) }

func peerObj(name, ip string, asn int64, mut func(*v1alpha1.BGPPeerSpec)) v1alpha1.BGPPeer {
	p := v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{PeerIP: ip, ASNumber: asn}}
	if mut != nil {
		mut(&p.Spec)
	}
	return p
}

// baseInputs: node n1 (dual-stack) in a 3-node cluster, two pod blocks,
// an FRR peer, services of every kind.
func baseInputs() bgpInputs {
	asn := int64(65001)
	return bgpInputs{
		Node: "n1", NodeLabels: map[string]string{"rack": "a"}, NodeV4: a("198.51.100.1"), NodeV6: a("2001:db8:100::1"),
		Default: &v1alpha1.BGPConfigurationSpec{
			ASNumber:               &asn,
			ServiceClusterIPs:      []v1alpha1.ServiceIPBlock{{CIDR: "10.96.0.0/16"}},
			ServiceExternalIPs:     []v1alpha1.ServiceIPBlock{{CIDR: "203.0.113.0/24"}},
			ServiceLoadBalancerIPs: []v1alpha1.ServiceIPBlock{{CIDR: "198.18.0.0/24"}, {CIDR: "2001:db8:18::/120"}},
			Communities:            []v1alpha1.Community{{Name: "lb", Value: "65001:100"}, {Name: "big", Value: "65001:1:2"}},
			PrefixAdvertisements: []v1alpha1.PrefixAdvertisement{
				{CIDR: "198.18.0.0/24", Communities: []string{"lb", "big"}},
				{CIDR: "10.244.0.0/16", Communities: []string{"65001:244"}},
			},
		},
		Peers: []v1alpha1.BGPPeer{peerObj("frr", "198.51.100.254", 65000, nil)},
		Nodes: []bgpNode{
			{Name: "n1", V4: a("198.51.100.1"), V6: a("2001:db8:100::1")},
			{Name: "n2", V4: a("203.0.113.2"), V6: a("2001:db8:200::2")},
			{Name: "n3", V4: a("198.51.100.3"), V6: a("2001:db8:100::3")},
		},
		Blocks: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("fd10:244::40/122")},
		Services: []bgpService{
			{Key: "default/web", ClusterIPs: []netip.Addr{a("10.96.0.10")}, LoadBalancerIPs: []netip.Addr{a("198.18.0.1"), a("2001:db8:18::1")}},
			{Key: "default/local-here", ClusterIPs: []netip.Addr{a("10.96.0.11")}, LoadBalancerIPs: []netip.Addr{a("198.18.0.2")}, ExternalLocal: true, LocalReady: true},
			{Key: "default/local-elsewhere", LoadBalancerIPs: []netip.Addr{a("198.18.0.3")}, ExternalIPs: []netip.Addr{a("203.0.113.50")}, ExternalLocal: true},
			{Key: "default/ext", ExternalIPs: []netip.Addr{a("203.0.113.51"), a("192.168.9.9")}},
			{Key: "default/outside", LoadBalancerIPs: []netip.Addr{a("100.64.0.1")}},
			{Key: "default/internal-local", ClusterIPs: []netip.Addr{a("10.96.0.12")}, InternalLocal: true, LocalReady: true},
		},
	}
}

var bgpCases = []struct {
	name string
	mut  func(*bgpInputs)
}{
	{"base", func(*bgpInputs) {}},
	{"no configuration at all: defaults, mesh only, no service paths", func(in *bgpInputs) {
		in.Default, in.Peers = nil, nil
	}},
	{"node override: AS, explicit router ID, mesh off, aggregation", func(in *bgpInputs) {
		asn, f := int64(65101), false
		in.Override = &v1alpha1.BGPConfigurationSpec{ASNumber: &asn, RouterID: &v1alpha1.RouterIDSpec{Source: v1alpha1.RouterIDExplicit, ID: "192.168.255.1"},
			NodeToNodeMesh: &v1alpha1.NodeToNodeMesh{Enabled: &f}, ServiceLoadBalancerAggregation: "Enabled"}
	}},
	{"node selector, password, source, next hop, timers, BFD, GR", func(in *bgpInputs) {
		in.Secrets = map[string]map[string][]byte{"bgp": {"frr": []byte("s3cret\n")}}
		in.Default.SourceAddress = "198.51.100.1"
		in.Default.GracefulRestart = &v1alpha1.GracefulRestart{RestartTime: &metav1.Duration{Duration: 30 * time.Second}}
		in.Peers = append(in.Peers,
			peerObj("rack-b", "198.51.100.200", 65002, func(s *v1alpha1.BGPPeerSpec) {
				s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "b"}}
			}),
			peerObj("bird6", "2001:db8:100::253", 65003, func(s *v1alpha1.BGPPeerSpec) {
				s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}}
				s.Password = &v1alpha1.SecretKeyRef{Name: "bgp", Key: "frr"}
				s.NextHop = &v1alpha1.NextHop{Mode: v1alpha1.NextHopFixed, IPv4: "198.51.100.1", IPv6: "2001:db8:100::1"}
				s.Timers = &v1alpha1.BGPTimers{HoldTime: &metav1.Duration{Duration: 30 * time.Second}}
				s.BFD = &v1alpha1.BFD{Multiplier: 5}
				s.GracefulRestart = &v1alpha1.GracefulRestart{RestartTime: &metav1.Duration{Duration: 10 * time.Second}}
				s.Port, s.EBGPMultihop, s.Passive = 1179, 3, true
				s.Families = []v1alpha1.BGPFamily{v1alpha1.FamilyIPv6Unicast}
			}),
			peerObj("no-secret", "198.51.100.252", 65004, func(s *v1alpha1.BGPPeerSpec) {
				s.Password = &v1alpha1.SecretKeyRef{Name: "missing", Key: "k"}
			}),
			peerObj("myself", "198.51.100.1", 65001, nil),
			peerObj("iface", "198.51.100.251", 65005, func(s *v1alpha1.BGPPeerSpec) {
				s.SourceInterface = "eth1"
				s.NextHop = &v1alpha1.NextHop{Mode: v1alpha1.NextHopFromInterface, Interface: "eth1"}
			}),
		)
	}},
	{"IPv6-only node: hash router ID, IPv6 mesh, IPv6 families", func(in *bgpInputs) {
		in.NodeV4 = netip.Addr{}
		in.Nodes[0].V4 = netip.Addr{}
		in.Nodes[1].V4 = netip.Addr{}
		in.Peers = []v1alpha1.BGPPeer{peerObj("frr6", "2001:db8:100::254", 65000, nil)}
	}},
	{"bad community names and a mesh password that is missing", func(in *bgpInputs) {
		in.Default.PrefixAdvertisements = append(in.Default.PrefixAdvertisements, v1alpha1.PrefixAdvertisement{CIDR: "198.18.0.0/25", Communities: []string{"nosuch", "65001:7"}})
		in.Default.NodeToNodeMesh = &v1alpha1.NodeToNodeMesh{Password: &v1alpha1.SecretKeyRef{Name: "mesh", Key: "pw"}}
	}},
	{"withdrawals: service gone, endpoint moved, block released, peer deleted", func(in *bgpInputs) {
		in.Services = in.Services[:1]
		in.Services[0].ExternalLocal = true // endpoint moved away from n1
		in.Blocks = in.Blocks[1:]
		in.Nodes = in.Nodes[:2]
	}},
}

// TestDesiredBGPGolden renders desiredBGP for a sequence of inputs
// (testdata/bgp_desired.golden; -update rewrites it).
func TestDesiredBGPGolden(t *testing.T) {
	var b strings.Builder
	for _, c := range bgpCases {
		in := baseInputs()
		c.mut(&in)
		cfg, probs := desiredBGP(in)
		fmt.Fprintf(&b, "== %s\n%s\n", c.name, renderBGP(cfg, probs))
		// The function is deterministic.
		cfg2, probs2 := desiredBGP(in)
		if renderBGP(cfg, probs) != renderBGP(cfg2, probs2) {
			t.Errorf("%s: two calls differ", c.name)
		}
	}
	golden := filepath.Join("testdata", "bgp_desired.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if string(want) != b.String() {
		t.Errorf("desiredBGP differs from %s (-update rewrites it):\n%s", golden, b.String())
	}
}

// TestDesiredBGPRules pins the rules the golden file shows, so a wrong
// -update cannot hide them.
func TestDesiredBGPRules(t *testing.T) {
	cfg, probs := desiredBGP(baseInputs())
	paths := map[string]bgp.Path{}
	for _, p := range cfg.Paths {
		paths[p.Prefix.String()] = p
	}
	for _, want := range []string{"10.244.1.0/26", "fd10:244::40/122", "10.96.0.0/16", "198.18.0.1/32", "2001:db8:18::1/128", "198.18.0.2/32", "203.0.113.51/32", "10.96.0.12/32"} {
		if _, ok := paths[want]; !ok {
			t.Errorf("%s not advertised", want)
		}
	}
	for _, not := range []string{"198.18.0.3/32", "203.0.113.50/32", "192.168.9.9/32", "100.64.0.1/32", "10.96.0.10/32", "198.18.0.0/24"} {
		if _, ok := paths[not]; ok {
			t.Errorf("%s advertised", not)
		}
	}
	if p := paths["198.18.0.1/32"]; !slices.Contains(p.Communities, bgp.Community(65001<<16|100)) || len(p.LargeCommunities) != 1 || !slices.Equal(p.Peers, []string{"frr"}) {
		t.Errorf("LB path %+v: want community 65001:100, large 65001:1:2, only to frr", p)
	}
	if p := paths["10.244.1.0/26"]; len(p.Peers) != 0 || !slices.Contains(p.Communities, bgp.Community(65001<<16|244)) {
		t.Errorf("pod block path %+v: want every peer and 65001:244", p)
	}
	if cfg.RouterID != a("198.51.100.1") || cfg.ASN != 65001 || len(probs) != 0 {
		t.Errorf("router ID %s ASN %d problems %q", cfg.RouterID, cfg.ASN, probs)
	}
	var mesh []string
	for _, p := range cfg.Peers {
		if strings.HasPrefix(p.Name, meshPeerPrefix) {
			mesh = append(mesh, p.Name+"="+p.Address.String())
			if !p.Learn || p.ASN != 65001 || len(p.Families) != 2 {
				t.Errorf("mesh peer %+v", p)
			}
		}
	}
	if !slices.Equal(mesh, []string{"mesh-n2=203.0.113.2", "mesh-n3=198.51.100.3"}) {
		t.Errorf("mesh %v", mesh)
	}
	if hashRouterID("n1") != hashRouterID("n1") || hashRouterID("n1") == hashRouterID("n2") {
		t.Error("hash router ID not stable or not distinct")
	}
}

// TestMeshOneSideConnects: in every mesh pair exactly one node connects and
// the other waits (IPv4 mesh of the dual-stack nodes and the IPv6 mesh of
// IPv6-only ones), so two nodes never open a session to each other at once.
func TestMeshOneSideConnects(t *testing.T) {
	for _, v6only := range []bool{false, true} {
		passive := map[[2]string]bool{} // (node, peer node) -> passive
		base := baseInputs()
		for _, n := range base.Nodes {
			in := baseInputs()
			in.Node, in.NodeV4, in.NodeV6 = n.Name, n.V4, n.V6
			if v6only {
				in.NodeV4 = netip.Addr{}
				for i := range in.Nodes {
					in.Nodes[i].V4 = netip.Addr{}
				}
			}
			cfg, _ := desiredBGP(in)
			for _, p := range cfg.Peers {
				if other, ok := strings.CutPrefix(p.Name, meshPeerPrefix); ok {
					passive[[2]string{n.Name, other}] = p.Passive
				}
			}
		}
		if len(passive) != 6 {
			t.Fatalf("v6only=%v: %d mesh sessions, want 6: %v", v6only, len(passive), passive)
		}
		for k, p := range passive {
			if back, ok := passive[[2]string{k[1], k[0]}]; !ok || back == p {
				t.Errorf("v6only=%v: %s->%s passive %v, %s->%s passive %v", v6only, k[0], k[1], p, k[1], k[0], back)
			}
		}
	}
}
