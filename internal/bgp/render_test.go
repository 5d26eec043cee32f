package bgp

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// goldenAddrs is the machine every golden case runs on: eth0 holds the
// session addresses, eth1 a second set, v6only only IPv6.
var goldenAddrs = fakeAddrs{ifs: map[string][]IfAddr{
	"eth0":   {{Prefix: p("198.51.100.1/24")}, {Prefix: p("fe80::1/64")}, {Prefix: p("2001:db8:100::1/64")}},
	"eth1":   {{Prefix: p("2001:db8:200::1/64"), Dynamic: true}, {Prefix: p("203.0.113.1/24")}, {Prefix: p("2001:db8:200::5/64")}},
	"v6only": {{Prefix: p("2001:db8:300::1/64")}},
}, src: a("198.51.100.1")}

func TestRenderGolden(t *testing.T) {
	base := func(peers ...Peer) Config {
		return Config{ASN: 65001, RouterID: a("198.51.100.1"), Peers: peers, Paths: []Path{
			{Prefix: p("10.244.1.0/24"), Communities: []Community{65001<<16 | 100}, Origin: "pod-block"},
			{Prefix: p("fd10:244:0:1::/64"), LargeCommunities: []LargeCommunity{{65001, 1, 2}}, Origin: "pod-block"},
		}}
	}
	cases := []struct {
		name  string
		cfg   Config
		extNH bool
	}{
		{"ipv4-session-auto", base(Peer{Name: "tor", Address: a("198.51.100.254"), ASN: 65000}), false},
		{"ipv6-session-auto", base(Peer{Name: "tor6", Address: a("2001:db8:100::fe"), ASN: 65000, LocalAddress: a("2001:db8:100::1")}), false},
		{"ipv6-only-interface-no-extended-nexthop", base(Peer{Name: "v6", Address: a("2001:db8:300::fe"), ASN: 65000, LocalAddress: a("2001:db8:300::1")}), false},
		{"ipv6-only-interface-extended-nexthop", base(Peer{Name: "v6", Address: a("2001:db8:300::fe"), ASN: 65000, LocalAddress: a("2001:db8:300::1")}), true},
		{"fixed-and-from-interface", base(
			Peer{Name: "fixed", Address: a("198.51.100.254"), ASN: 65000, NextHop: NextHopPolicy{Mode: NextHopFixed, IPv4: a("198.51.100.11"), IPv6: a("2001:db8:100::11")},
				Password: "secret", EBGPMultihop: 4, Passive: true, BFD: &BFD{}, GracefulRestart: &GracefulRestart{RestartTime: 20 * time.Second}},
			Peer{Name: "iface", Address: a("198.51.100.253"), ASN: 65002, SourceInterface: "eth0", NextHop: NextHopPolicy{Mode: NextHopFromInterface, Interface: "eth1"},
				Families: []Family{IPv6Unicast, IPv4Unicast, IPv6Unicast}, Timers: Timers{Keepalive: time.Second, Hold: 3 * time.Second}},
		), false},
		{"rejected-peers", func() Config {
			c := base(
				Peer{Name: "ok", Address: a("198.51.100.254"), ASN: 65000},
				Peer{Name: "ok", Address: a("198.51.100.250"), ASN: 65000},
				Peer{Name: "noasn", Address: a("198.51.100.251"), ASN: 0},
				Peer{Name: "passive", Address: a("198.51.100.252"), ASN: 65000, Passive: true},
				Peer{Name: "badsrc", Address: a("198.51.100.249"), ASN: 65000, SourceInterface: "eth9"},
				Peer{Name: "mapped", Address: a("198.51.100.248"), ASN: 65000, NextHop: NextHopPolicy{Mode: NextHopFixed, IPv4: a("198.51.100.11"), IPv6: a("::ffff:198.51.100.11")}},
			)
			c.ListenPort = -1
			return c
		}(), false},
		{"paths-restricted-to-peers", func() Config {
			c := base(Peer{Name: "tor", Address: a("198.51.100.254"), ASN: 65000}, Peer{Name: "mesh-node2", Address: a("198.51.100.2"), ASN: 65001})
			c.Paths = append(c.Paths, Path{Prefix: p("198.18.0.10/32"), Origin: "service-lb", Peers: []string{"tor"}},
				Path{Prefix: p("2001:db8:400::10/128"), Origin: "service-lb", Peers: []string{"tor"}})
			c.GracefulRestart = &GracefulRestart{}
			return c
		}(), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pl, err := makePlan(c.cfg, goldenAddrs, func(netip.Addr) bool { return c.extNH })
			if err != nil {
				t.Fatal(err)
			}
			got := renderPlan(pl)
			file := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("rendered config differs from %s (run with -update after checking):\n--- got\n%s\n--- want\n%s", file, got, want)
			}
		})
	}
}

func TestPlanRejectsBadGlobals(t *testing.T) {
	for _, c := range []Config{
		{RouterID: a("198.51.100.1")},
		{ASN: 1, RouterID: a("2001:db8::1")},
		{ASN: 1, RouterID: a("198.51.100.1"), ListenPort: 70000},
		{ASN: 1, RouterID: a("198.51.100.1"), Paths: []Path{{Prefix: p("10.0.0.0/8")}, {Prefix: p("10.1.0.0/8")}}},
		{ASN: 1, RouterID: a("198.51.100.1"), Paths: []Path{{}}},
	} {
		if _, err := makePlan(c, goldenAddrs, nil); err == nil {
			t.Errorf("makePlan(%+v) accepted", c)
		}
	}
}

func TestReadOnlyMethods(t *testing.T) {
	for m, want := range map[string]bool{
		"/api.GoBgpService/ListPath": true, "/api.GoBgpService/GetBgp": true, "/api.GoBgpService/WatchEvent": true,
		"/api.GoBgpService/AddPath": false, "/api.GoBgpService/DeletePeer": false, "/api.GoBgpService/StopBgp": false,
		"/api.GoBgpService/SetPolicies": false, "/api.GoBgpService/AddPathStream": false, "/api.GoBgpService/ResetPeer": false,
	} {
		if got := readOnlyMethod(m); got != want {
			t.Errorf("readOnlyMethod(%s) = %t, want %t", m, got, want)
		}
	}
}
