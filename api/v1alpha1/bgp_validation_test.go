package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func bgpPeer(mutate ...func(*BGPPeerSpec)) *BGPPeer {
	p := &BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "frr"}, Spec: BGPPeerSpec{PeerIP: "198.51.100.254", ASNumber: 65000}}
	for _, m := range mutate {
		m(&p.Spec)
	}
	return p
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func TestValidateBGPPeer(t *testing.T) {
	for _, c := range []struct {
		name string
		p    *BGPPeer
		path string
		want string
	}{
		{"minimal", bgpPeer(), "", ""},
		{"v6 peer", bgpPeer(func(s *BGPPeerSpec) { s.PeerIP = "2001:db8:100::254" }), "", ""},
		{"everything", bgpPeer(func(s *BGPPeerSpec) {
			s.Port, s.EBGPMultihop, s.Passive = 1179, 2, true
			s.Families = []BGPFamily{FamilyIPv4Unicast, FamilyIPv6Unicast}
			s.SourceInterface = "eth0"
			s.Password = &SecretKeyRef{Name: "bgp", Key: "frr"}
			s.NextHop = &NextHop{Mode: NextHopFixed, IPv4: "198.51.100.1", IPv6: "2001:db8:100::1"}
			s.Timers = &BGPTimers{KeepaliveTime: dur(time.Second), HoldTime: dur(3 * time.Second), ConnectRetryTime: dur(time.Second)}
			s.BFD = &BFD{MinTx: dur(100 * time.Millisecond), MinRx: dur(100 * time.Millisecond), Multiplier: 3}
			s.GracefulRestart = &GracefulRestart{RestartTime: dur(20 * time.Second)}
			s.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}}
		}), "", ""},
		{"from interface", bgpPeer(func(s *BGPPeerSpec) { s.NextHop = &NextHop{Mode: NextHopFromInterface, Interface: "eth1"} }), "", ""},

		{"no peerIP", bgpPeer(func(s *BGPPeerSpec) { s.PeerIP = "" }), "spec.peerIP", "Required value"},
		{"bad peerIP", bgpPeer(func(s *BGPPeerSpec) { s.PeerIP = "198.51.100.300" }), "spec.peerIP", "198.51.100.300 is not an IP address"},
		{"link-local peer", bgpPeer(func(s *BGPPeerSpec) { s.PeerIP = "fe80::1" }), "spec.peerIP", "link-local"},
		{"asNumber 0", bgpPeer(func(s *BGPPeerSpec) { s.ASNumber = 0 }), "spec.asNumber", "must be 1..4294967295"},
		{"asNumber 2^32", bgpPeer(func(s *BGPPeerSpec) { s.ASNumber = 1 << 32 }), "spec.asNumber", "must be 1..4294967295"},
		{"port 0 is default, 70000 not", bgpPeer(func(s *BGPPeerSpec) { s.Port = 70000 }), "spec.port", "1..65535"},
		{"family", bgpPeer(func(s *BGPPeerSpec) { s.Families = []BGPFamily{"l2vpn-evpn"} }), "spec.families[0]", `Unsupported value: "l2vpn-evpn"`},
		{"family twice", bgpPeer(func(s *BGPPeerSpec) { s.Families = []BGPFamily{FamilyIPv4Unicast, FamilyIPv4Unicast} }), "spec.families[1]", "Duplicate"},
		{"source both", bgpPeer(func(s *BGPPeerSpec) { s.SourceAddress, s.SourceInterface = "198.51.100.1", "eth0" }), "spec.sourceInterface", "not both"},
		{"source family", bgpPeer(func(s *BGPPeerSpec) { s.SourceAddress = "2001:db8:100::1" }), "spec.sourceAddress", "is not of the family of peerIP 198.51.100.254"},
		{"password key", bgpPeer(func(s *BGPPeerSpec) { s.Password = &SecretKeyRef{Name: "bgp"} }), "spec.password.key", "Required value"},
		{"next hop mode", bgpPeer(func(s *BGPPeerSpec) { s.NextHop = &NextHop{Mode: "Self"} }), "spec.nextHop.mode", "Unsupported value"},
		{"fixed without addresses", bgpPeer(func(s *BGPPeerSpec) { s.NextHop = &NextHop{Mode: NextHopFixed} }), "spec.nextHop", "mode Fixed needs ipv4 or ipv6"},
		{"mapped v6 next hop", bgpPeer(func(s *BGPPeerSpec) { s.NextHop = &NextHop{Mode: NextHopFixed, IPv6: "::ffff:198.51.100.1"} }), "spec.nextHop.ipv6", "IPv4-mapped"},
		{"link-local v6 next hop", bgpPeer(func(s *BGPPeerSpec) { s.NextHop = &NextHop{Mode: NextHopFixed, IPv6: "fe80::1"} }), "spec.nextHop.ipv6", "link-local"},
		{"v6 as v4 next hop", bgpPeer(func(s *BGPPeerSpec) { s.NextHop = &NextHop{Mode: NextHopFixed, IPv4: "2001:db8::1"} }), "spec.nextHop.ipv4", "not an IPv4 address"},
		{"interface without mode", bgpPeer(func(s *BGPPeerSpec) { s.NextHop = &NextHop{Mode: NextHopAuto, Interface: "eth0"} }), "spec.nextHop.interface", "for mode FromInterface only"},
		{"from interface without one", bgpPeer(func(s *BGPPeerSpec) { s.NextHop = &NextHop{Mode: NextHopFromInterface} }), "spec.nextHop.interface", "needs interface"},
		{"hold below 3s", bgpPeer(func(s *BGPPeerSpec) { s.Timers = &BGPTimers{HoldTime: dur(2 * time.Second)} }), "spec.timers.holdTime", "between 3s and"},
		{"keepalive >= hold", bgpPeer(func(s *BGPPeerSpec) {
			s.Timers = &BGPTimers{KeepaliveTime: dur(10 * time.Second), HoldTime: dur(9 * time.Second)}
		}), "spec.timers.keepaliveTime", "shorter than holdTime"},
		{"bfd interval", bgpPeer(func(s *BGPPeerSpec) { s.BFD = &BFD{MinTx: dur(time.Millisecond)} }), "spec.bfd.minTx", "between 10ms and 1m0s"},
		{"multihop", bgpPeer(func(s *BGPPeerSpec) { s.EBGPMultihop = 256 }), "spec.ebgpMultihop", "1..255"},
		{"restart time", bgpPeer(func(s *BGPPeerSpec) { s.GracefulRestart = &GracefulRestart{RestartTime: dur(time.Hour + time.Hour)} }), "spec.gracefulRestart.restartTime", "between 1s and"},
	} {
		t.Run(c.name, func(t *testing.T) { wantErr(t, ValidateBGPPeer(c.p), c.path, c.want) })
	}
}

func bgpConfig(name string, mutate ...func(*BGPConfigurationSpec)) *BGPConfiguration {
	c := &BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, m := range mutate {
		m(&c.Spec)
	}
	return c
}

func TestValidateBGPConfiguration(t *testing.T) {
	asn := int64(65001)
	for _, c := range []struct {
		name string
		c    *BGPConfiguration
		path string
		want string
	}{
		{"empty default", bgpConfig("default"), "", ""},
		{"node override", bgpConfig("node.n1", func(s *BGPConfigurationSpec) {
			s.RouterID = &RouterIDSpec{Source: RouterIDExplicit, ID: "198.51.100.1"}
		}), "", ""},
		{"everything", bgpConfig("default", func(s *BGPConfigurationSpec) {
			s.ASNumber = &asn
			s.ServiceClusterIPs = []ServiceIPBlock{{CIDR: "10.96.0.0/16"}}
			s.ServiceLoadBalancerIPs = []ServiceIPBlock{{CIDR: "198.18.0.0/24"}, {CIDR: "2001:db8:18::/120"}}
			s.ServiceLoadBalancerAggregation = "Enabled"
			s.Communities = []Community{{Name: "lb", Value: "65001:100"}, {Name: "large", Value: "65001:4294967295:1"}}
			s.PrefixAdvertisements = []PrefixAdvertisement{{CIDR: "198.18.0.0/24", Communities: []string{"lb", "65001:7"}}}
			s.GracefulRestart = &GracefulRestart{RestartTime: dur(30 * time.Second)}
			s.SourceAddress = "198.51.100.1"
		}), "", ""},

		{"other name", bgpConfig("cluster"), "metadata.name", "must be default (cluster-wide) or node.<nodename>"},
		{"explicit without id", bgpConfig("node.n1", func(s *BGPConfigurationSpec) { s.RouterID = &RouterIDSpec{Source: RouterIDExplicit} }), "spec.routerID.id", "required when routerID.source is Explicit"},
		{"v6 router id", bgpConfig("node.n1", func(s *BGPConfigurationSpec) { s.RouterID = &RouterIDSpec{Source: RouterIDExplicit, ID: "2001:db8::1"} }), "spec.routerID.id", "not a router ID"},
		{"router id source", bgpConfig("default", func(s *BGPConfigurationSpec) { s.RouterID = &RouterIDSpec{Source: "MAC"} }), "spec.routerID.source", "Unsupported value"},
		{"service cidr", bgpConfig("default", func(s *BGPConfigurationSpec) { s.ServiceExternalIPs = []ServiceIPBlock{{CIDR: "198.18.0.1/24"}} }), "spec.serviceExternalIPs[0].cidr", "host bits set"},
		{"aggregation", bgpConfig("default", func(s *BGPConfigurationSpec) { s.ServiceLoadBalancerAggregation = "yes" }), "spec.serviceLoadBalancerAggregation", "Unsupported value"},
		{"community value", bgpConfig("default", func(s *BGPConfigurationSpec) { s.Communities = []Community{{Name: "x", Value: "65536:1"}} }), "spec.communities[0].value", "65536:1 is not a community"},
		{"large community value", bgpConfig("default", func(s *BGPConfigurationSpec) { s.Communities = []Community{{Name: "x", Value: "1:2:4294967296"}} }), "spec.communities[0].value", "is not a community"},
		{"community name twice", bgpConfig("default", func(s *BGPConfigurationSpec) {
			s.Communities = []Community{{Name: "x", Value: "1:1"}, {Name: "x", Value: "1:2"}}
		}), "spec.communities[1].name", "Duplicate"},
		{"prefix advertisement value", bgpConfig("default", func(s *BGPConfigurationSpec) {
			s.PrefixAdvertisements = []PrefixAdvertisement{{CIDR: "10.0.0.0/8", Communities: []string{"1:2:3:4"}}}
		}), "spec.prefixAdvertisements[0].communities[0]", "neither a community name nor a value"},
		{"listen port", bgpConfig("default", func(s *BGPConfigurationSpec) { p := int32(0); s.ListenPort = &p }), "spec.listenPort", "1..65535"},
		{"mesh password", bgpConfig("default", func(s *BGPConfigurationSpec) {
			s.NodeToNodeMesh = &NodeToNodeMesh{Password: &SecretKeyRef{Name: "Bad_Name", Key: "k"}}
		}), "spec.nodeToNodeMesh.password.name", "RFC 1123"},
	} {
		t.Run(c.name, func(t *testing.T) { wantErr(t, ValidateBGPConfiguration(c.c), c.path, c.want) })
	}
}

func TestValidateLoadBalancerIPPool(t *testing.T) {
	pool := func(cidrs ...string) *LoadBalancerIPPool {
		return &LoadBalancerIPPool{ObjectMeta: metav1.ObjectMeta{Name: "lb"}, Spec: LoadBalancerIPPoolSpec{CIDRs: cidrs}}
	}
	wantErr(t, ValidateLoadBalancerIPPool(pool("198.18.0.0/24", "2001:db8:18::/120")), "", "")
	wantErr(t, ValidateLoadBalancerIPPool(pool()), "spec.cidrs", "Required value")
	wantErr(t, ValidateLoadBalancerIPPool(pool("198.18.0.0/24", "banana")), "spec.cidrs[1]", "banana is not a CIDR")
	wantErr(t, ValidateLoadBalancerIPPool(pool("198.18.0.7/24")), "spec.cidrs[0]", "host bits set")
	p := pool("198.18.0.0/24")
	p.Spec.ServiceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "In"}}}
	wantErr(t, ValidateLoadBalancerIPPool(p), "spec.serviceSelector.matchExpressions[0].values", "must be specified")
}

func TestParseCommunity(t *testing.T) {
	for s, want := range map[string]CommunityKind{"0:0": StandardCommunity, "65535:65535": StandardCommunity, "4294967295:0:1": LargeCommunity} {
		if k, _, err := ParseCommunity(s); err != nil || k != want {
			t.Errorf("ParseCommunity(%q) = %v, %v", s, k, err)
		}
	}
	for _, s := range []string{"", "1", "1:", ":1", "65536:0", "1:2:3:4", "a:b", "-1:2", "+1:2", "1:2:4294967296"} {
		if _, _, err := ParseCommunity(s); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", s)
		}
	}
}

func TestMergeBGPConfiguration(t *testing.T) {
	a, b := int64(65001), int64(65002)
	f := false
	def := &BGPConfigurationSpec{
		ASNumber: &a, ServiceClusterIPs: []ServiceIPBlock{{CIDR: "10.96.0.0/16"}},
		Communities: []Community{{Name: "x", Value: "1:1"}, {Name: "y", Value: "1:2"}},
	}
	node := &BGPConfigurationSpec{
		ASNumber: &b, NodeToNodeMesh: &NodeToNodeMesh{Enabled: &f},
		Communities: []Community{{Name: "y", Value: "2:2"}, {Name: "z", Value: "2:3"}},
	}
	m := MergeBGPConfiguration(def, node)
	if m.EffectiveASNumber() != 65002 || m.MeshEnabled() || len(m.ServiceClusterIPs) != 1 {
		t.Errorf("merged %+v", m)
	}
	if len(m.Communities) != 3 || m.Communities[1].Value != "2:2" || m.Communities[2].Name != "z" {
		t.Errorf("communities %+v", m.Communities)
	}
	// The inputs are not changed.
	if *def.ASNumber != 65001 || def.Communities[1].Value != "1:2" || len(def.Communities) != 2 {
		t.Errorf("default changed: %+v", def)
	}
	if d := MergeBGPConfiguration(nil, nil); d.EffectiveASNumber() != DefaultASNumber || !d.MeshEnabled() || d.EffectiveRouterIDSource() != RouterIDNodeIPv4 || d.EffectiveListenPort() != 179 {
		t.Errorf("defaults %+v", d)
	}
	if g := EffectiveGracefulRestart(&GracefulRestart{RestartTime: dur(30 * time.Second)}, &GracefulRestart{Enabled: &f}); g.Enabled || g.RestartTime != 30*time.Second {
		t.Errorf("graceful restart %+v", g)
	}
	if tm := EffectiveTimers(&BGPTimers{HoldTime: dur(30 * time.Second)}); tm != (TimerSettings{Keepalive: 3 * time.Second, Hold: 30 * time.Second, ConnectRetry: 2 * time.Second}) {
		t.Errorf("timers %+v", tm)
	}
	if EffectiveBFD(nil) != nil || *EffectiveBFD(&BFD{Multiplier: 5}) != (BFDSettings{MinTx: 300 * time.Millisecond, MinRx: 300 * time.Millisecond, Multiplier: 5}) {
		t.Error("BFD defaults")
	}
}
