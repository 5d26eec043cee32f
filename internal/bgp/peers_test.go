package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/bgp/bgptest"
	"github.com/strait-net/strait/internal/testutil"
)

// The privileged tests run the speaker inside the test process, so the whole
// test binary re-executes itself in a fresh namespace (GoBGP's goroutines
// open sockets from any OS thread). A child speaker process (graceful
// restart, BFD) is the same binary with childEnv set.
func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		os.Exit(runChildSpeaker(cfg))
	}
	if os.Geteuid() == 0 && os.Getenv(bgptest.InNamespaceEnv) == "" {
		testutil.SweepStale()
		os.Exit(bgptest.RunInNamespace())
	}
	testutil.Main(m)
}

const (
	ourAS  = 65001
	frrAS  = 65000
	birdAS = 65002
)

var (
	a = netip.MustParseAddr
	p = netip.MustParsePrefix
)

// lab is the speaker (this process's namespace), FRR and BIRD on one LAN.
type lab struct {
	lan  *bgptest.LAN
	frr  *bgptest.FRR
	bird *bgptest.BIRD
}

const (
	spIf = "sp0"
	nhIf = "sp1" // FromInterface
	sp4  = "198.51.100.1"
	sp6  = "2001:db8:100::1"
	frr4 = "198.51.100.254"
	frr6 = "2001:db8:100::fe"
	brd4 = "198.51.100.253"
	brd6 = "2001:db8:100::fd"
)

func newLab(t *testing.T, frrCfg bgptest.FRRConfig, withBIRD bool) *lab {
	testutil.RequireRoot(t)
	if os.Getenv(bgptest.InNamespaceEnv) == "" {
		t.Fatal("privileged BGP tests must run re-executed in their namespace (TestMain)")
	}
	l := &lab{lan: bgptest.NewLAN(t)}
	l.lan.Attach(t, "", spIf, sp4+"/24", sp6+"/64")
	fns := testutil.NewNS(t)
	l.lan.Attach(t, fns.Name, "eth0", frr4+"/24", frr6+"/64")
	frrCfg.ASN, frrCfg.RouterID = frrAS, frr4
	if frrCfg.Neighbors == nil {
		frrCfg.Neighbors = []bgptest.FRRNeighbor{{Address: sp4, ASN: ourAS}, {Address: sp6, ASN: ourAS}}
	}
	l.frr = bgptest.StartFRR(t, fns.Name, frrCfg)
	if withBIRD {
		bns := testutil.NewNS(t)
		l.lan.Attach(t, bns.Name, "eth0", brd4+"/24", brd6+"/64")
		l.bird = bgptest.StartBIRD(t, bns.Name, bgptest.BIRDConfig{ASN: birdAS, RouterID: brd4, Neighbors: []bgptest.BIRDNeighbor{
			{Name: "n4", Local: brd4, Address: sp4, ASN: ourAS},
			{Name: "n6", Local: brd6, Address: sp6, ASN: ourAS},
		}})
	}
	return l
}

func newSpeaker(t *testing.T, opts Options) Speaker {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(log, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func fastTimers() Timers {
	return Timers{Keepalive: 3 * time.Second, Hold: 9 * time.Second, ConnectRetry: time.Second}
}

func waitEstablished(t *testing.T, s Speaker, names ...string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		st, err := s.Peers(context.Background())
		if err != nil {
			return err
		}
		for _, n := range names {
			found := false
			for _, ps := range st {
				if ps.Name == n {
					found = true
					if ps.State != StateEstablished {
						return fmt.Errorf("peer %s is %s: %s", n, ps.State, ps.Error)
					}
				}
			}
			if !found {
				return fmt.Errorf("peer %s not in status", n)
			}
		}
		return nil
	})
}

// frrHas waits until FRR's kernel has prefix via nexthop and the BGP path
// carries the communities.
func frrHas(t *testing.T, f *bgptest.FRR, prefix, nexthop, community string) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		kr, err := f.KernelRoute(prefix)
		if err != nil {
			return err
		}
		if !strings.Contains(kr, "via "+nexthop+" ") && !strings.Contains(kr, "via inet6 "+nexthop+" ") {
			return fmt.Errorf("FRR kernel route for %s is %q, want via %s", prefix, kr, nexthop)
		}
		paths, err := f.Prefix(prefix)
		if err != nil {
			return err
		}
		for _, pa := range paths {
			if pa.Best() && pa.Community != nil && pa.Community.String == community {
				return nil
			}
		}
		return fmt.Errorf("FRR has no best path for %s with community %s: %+v", prefix, community, paths)
	})
}

func frrLacks(t *testing.T, f *bgptest.FRR, prefix string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		kr, err := f.KernelRoute(prefix)
		if err != nil {
			return err
		}
		if kr != "" {
			return fmt.Errorf("FRR still routes %s: %s", prefix, kr)
		}
		return nil
	})
}

func birdHas(t *testing.T, b *bgptest.BIRD, prefix, nexthop, community string) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		out, err := b.Route(prefix)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "via "+nexthop+" ") || !strings.Contains(out, community) {
			return fmt.Errorf("BIRD route for %s: %q, want via %s with %s", prefix, out, nexthop, community)
		}
		return nil
	})
}

func birdLacks(t *testing.T, b *bgptest.BIRD, prefix string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		out, err := b.Route(prefix)
		if err != nil {
			return err
		}
		if out != "" {
			return fmt.Errorf("BIRD still has %s: %s", prefix, out)
		}
		return nil
	})
}

const (
	pod4 = "10.244.1.0/24"
	pod6 = "fd10:244:0:1::/64"
	lb4  = "198.18.0.10/32"
)

var testPaths = []Path{
	{Prefix: p(pod4), Communities: []Community{65001<<16 | 100}, LargeCommunities: []LargeCommunity{{65001, 1, 2}}, Origin: "pod-block"},
	{Prefix: p(pod6), Communities: []Community{65001<<16 | 100}, Origin: "pod-block"},
}

// TestNextHopModesWithFRRAndBIRD: IPv4 and IPv6 routes over one IPv4 session
// and over one IPv6 session, in each next-hop mode; FRR installs every route
// in its kernel and BIRD accepts it, with communities; a path removed by Set
// is withdrawn.
func TestNextHopModesWithFRRAndBIRD(t *testing.T) {
	l := newLab(t, bgptest.FRRConfig{}, true)
	// The FromInterface source: host addresses (no subnet route) on a second
	// link, plus addresses next-hop selection must skip.
	l.lan.Attach(t, "", nhIf, "198.51.100.21/32", "2001:db8:100::21/128")
	if out, err := bgptest.Run("", "ip", "addr", "add", "2001:db8:100::99/128", "dev", nhIf, "nodad", "valid_lft", "600", "preferred_lft", "0"); err != nil {
		t.Fatal(out, err)
	}
	s := newSpeaker(t, Options{})
	ctx := context.Background()

	modes := []struct {
		name   string
		policy NextHopPolicy
		nh4    string
		nh6    string
	}{
		{"Auto", NextHopPolicy{Mode: NextHopAuto}, sp4, sp6},
		{"Fixed", NextHopPolicy{Mode: NextHopFixed, IPv4: a("198.51.100.11"), IPv6: a("2001:db8:100::11")}, "198.51.100.11", "2001:db8:100::11"},
		{"FromInterface", NextHopPolicy{Mode: NextHopFromInterface, Interface: nhIf}, "198.51.100.21", "2001:db8:100::21"},
	}
	for _, session := range []string{"ipv4", "ipv6"} {
		frrAddr, birdAddr := frr4, brd4
		if session == "ipv6" {
			frrAddr, birdAddr = frr6, brd6
		}
		for _, m := range modes {
			t.Run(session+"-session/"+m.name, func(t *testing.T) {
				cfg := Config{ASN: ourAS, RouterID: a(sp4), ListenPort: -1, Paths: testPaths, Peers: []Peer{
					{Name: "frr", Address: a(frrAddr), ASN: frrAS, NextHop: m.policy, Timers: fastTimers()},
					{Name: "bird", Address: a(birdAddr), ASN: birdAS, NextHop: m.policy, Timers: fastTimers()},
				}}
				if err := s.Set(ctx, cfg); err != nil {
					t.Fatal(err)
				}
				waitEstablished(t, s, "frr", "bird")
				frrHas(t, l.frr, pod4, m.nh4, "65001:100")
				frrHas(t, l.frr, pod6, m.nh6, "65001:100")
				birdHas(t, l.bird, pod4, m.nh4, "(65001, 1, 2)")
				birdHas(t, l.bird, pod6, m.nh6, "(65001,100)")
				st, err := s.Peers(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, ps := range st {
					if ps.Error != "" || len(ps.Families) != 2 || ps.Families[0].NextHop != a(m.nh4) || ps.Families[1].NextHop != a(m.nh6) {
						t.Errorf("status of %s: %+v", ps.Name, ps)
					}
				}
			})
		}
	}
	t.Run("withdraw", func(t *testing.T) {
		cfg := Config{ASN: ourAS, RouterID: a(sp4), ListenPort: -1, Paths: testPaths[1:], Peers: []Peer{
			{Name: "frr", Address: a(frr4), ASN: frrAS, Timers: fastTimers()},
			{Name: "bird", Address: a(brd4), ASN: birdAS, Timers: fastTimers()},
		}}
		if err := s.Set(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		waitEstablished(t, s, "frr", "bird")
		frrHas(t, l.frr, pod6, sp6, "65001:100")
		frrLacks(t, l.frr, pod4)
		birdLacks(t, l.bird, pod4)
	})
}

// TestExtendedNextHop: without any IPv4 next hop, IPv4 routes go over an IPv6
// session with an IPv6 next hop (RFC 8950) only to the peer that negotiated
// extended-nexthop (FRR installs them via inet6); to the peer that did not
// (BIRD) they are withheld and the status says why.
func TestExtendedNextHop(t *testing.T) {
	l := newLab(t, bgptest.FRRConfig{Neighbors: []bgptest.FRRNeighbor{{Address: sp6, ASN: ourAS, ExtendedNextHop: true}}}, true)
	s := newSpeaker(t, Options{})
	ctx := context.Background()
	only6 := NextHopPolicy{Mode: NextHopFixed, IPv6: a(sp6)}
	if err := s.Set(ctx, Config{ASN: ourAS, RouterID: a(sp4), ListenPort: -1, Paths: testPaths, Peers: []Peer{
		{Name: "frr", Address: a(frr6), ASN: frrAS, NextHop: only6, Timers: fastTimers()},
		{Name: "bird", Address: a(brd6), ASN: birdAS, NextHop: only6, Timers: fastTimers()},
	}}); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, "frr", "bird")
	frrHas(t, l.frr, pod4, sp6, "65001:100")
	frrHas(t, l.frr, pod6, sp6, "65001:100")
	birdHas(t, l.bird, pod6, sp6, "(65001,100)")
	st, err := s.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range st {
		switch ps.Name {
		case "frr":
			if !ps.ExtendedNextHop || ps.Families[0].NextHop != a(sp6) || ps.Error != "" {
				t.Errorf("frr status: %+v", ps)
			}
		case "bird":
			if ps.ExtendedNextHop || ps.Families[0].NextHop.IsValid() || !strings.Contains(ps.Error, "extended-nexthop") {
				t.Errorf("bird status: %+v", ps)
			}
		}
	}
	if out, err := l.bird.Route(pod4); err != nil || out != "" {
		t.Fatalf("BIRD got the IPv4 route without extended next hop: %q %v", out, err)
	}
	adv, err := s.Routes(ctx, RouteQuery{Direction: DirectionAdvertised, Peer: "bird", Family: IPv4Unicast})
	if err != nil || len(adv) != 0 {
		t.Fatalf("advertised to bird: %v %+v", err, adv)
	}
}
