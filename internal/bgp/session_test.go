package bgp

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/bgp/bgptest"
	"github.com/strait-net/strait/internal/testutil"
)

// waitLearned reads Learned until want(routes) holds.
func waitLearned(t *testing.T, s Speaker, within time.Duration, want func([]Route) error) {
	t.Helper()
	deadline := time.After(within)
	err := fmt.Errorf("nothing delivered")
	for {
		select {
		case rs, ok := <-s.Learned():
			if !ok {
				t.Fatal("Learned closed")
			}
			if err = want(rs); err == nil {
				return
			}
		case <-deadline:
			t.Fatalf("learned routes not as wanted within %v: %v", within, err)
		}
	}
}

// TestPasswordAndLearnedRoutes: TCP-MD5 with the right password comes up and
// FRR's routes arrive through Learned; a wrong password gives no session and
// a status that says what can be known.
func TestPasswordAndLearnedRoutes(t *testing.T) {
	l := newLab(t, bgptest.FRRConfig{
		Neighbors: []bgptest.FRRNeighbor{{Address: sp4, ASN: ourAS, Password: "s3cret"}},
		Networks:  []string{"203.0.113.0/24", "2001:db8:200::/64"},
	}, false)
	s := newSpeaker(t, Options{})
	ctx := context.Background()
	cfg := func(pw string) Config {
		return Config{ASN: ourAS, RouterID: a(sp4), ListenPort: -1, Paths: testPaths, Peers: []Peer{
			{Name: "frr", Address: a(frr4), ASN: frrAS, Password: pw, Learn: true, Timers: fastTimers()}}}
	}
	if err := s.Set(ctx, cfg("s3cret")); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, "frr")
	frrHas(t, l.frr, pod4, sp4, "65001:100")
	waitLearned(t, s, 10*time.Second, func(rs []Route) error {
		var got []string
		for _, r := range rs {
			got = append(got, r.Prefix.String()+" via "+r.NextHop.String())
			if r.Peer != "frr" || r.PeerAddress != a(frr4) || !slices.Equal(r.ASPath, []uint32{frrAS}) {
				return fmt.Errorf("route %+v: want from frr %s with AS path [%d]", r, frr4, frrAS)
			}
		}
		if !slices.Contains(got, "203.0.113.0/24 via "+frr4) || len(got) != 2 {
			return fmt.Errorf("learned %v, want 203.0.113.0/24 via %s and 2001:db8:200::/64", got, frr4)
		}
		return nil
	})
	// Received is FRR's whole Adj-RIB-Out: its networks and our own routes
	// reflected back (dropped by AS-path loop detection, not learned).
	recv, err := s.Routes(ctx, RouteQuery{Direction: DirectionReceived, Peer: "frr"})
	if err != nil || !slices.ContainsFunc(recv, func(r Route) bool { return r.Prefix == p("203.0.113.0/24") && r.NextHop == a(frr4) }) {
		t.Fatalf("received routes: %v %+v", err, recv)
	}
	adv, err := s.Routes(ctx, RouteQuery{Direction: DirectionAdvertised, Peer: "frr", Family: IPv4Unicast})
	if err != nil || len(adv) != 1 || adv[0].Prefix != p(pod4) {
		t.Fatalf("advertised IPv4 routes: %v %+v", err, adv)
	}

	if err := s.Set(ctx, cfg("wrong")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, 200*time.Millisecond, func() error {
		st, err := s.Peers(ctx)
		if err != nil {
			return err
		}
		if st[0].State == StateEstablished || !strings.Contains(st[0].Error, "TCP-MD5") {
			return fmt.Errorf("status with a wrong password: %+v", st[0])
		}
		return nil
	})
	frrLacks(t, l.frr, pod4)
	time.Sleep(3 * time.Second) // several connect retries
	st, _ := s.Peers(ctx)
	if st[0].State == StateEstablished {
		t.Fatalf("session came up with a wrong password: %+v", st[0])
	}
	if state, _, _, err := l.frr.Neighbor(sp4); err != nil || state == "Established" {
		t.Fatalf("FRR neighbor state %q, %v", state, err)
	}
	t.Logf("status with a wrong password: %s: %s", st[0].State, st[0].Error)
	waitLearned(t, s, 10*time.Second, func(rs []Route) error {
		if len(rs) != 0 {
			return fmt.Errorf("still learned %d routes", len(rs))
		}
		return nil
	})
}

const gobgpCLI = "/usr/local/lib/strait-gobgp-v4.8.0/gobgp"

// TestGoBGPCLIReadOnly: the upstream gobgp CLI (v4, against our gRPC) lists
// the routes Routes() lists and cannot add one in read-only mode.
func TestGoBGPCLIReadOnly(t *testing.T) {
	l := newLab(t, bgptest.FRRConfig{Neighbors: []bgptest.FRRNeighbor{{Address: sp4, ASN: ourAS}}}, false)
	s := newSpeaker(t, Options{GRPCListen: "127.0.0.1:50051", GRPCReadOnly: true})
	ctx := context.Background()
	if err := s.Set(ctx, Config{ASN: ourAS, RouterID: a(sp4), ListenPort: -1, Paths: testPaths, Peers: []Peer{
		{Name: "frr", Address: a(frr4), ASN: frrAS, Timers: fastTimers()}}}); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, "frr")
	frrHas(t, l.frr, pod6, sp6, "65001:100")
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(gobgpCLI, append([]string{"-u", "127.0.0.1", "-p", "50051"}, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, fam := range []struct {
		f    Family
		flag string
	}{{IPv4Unicast, "ipv4"}, {IPv6Unicast, "ipv6"}} {
		routes, err := s.Routes(ctx, RouteQuery{Family: fam.f})
		if err != nil {
			t.Fatal(err)
		}
		out, err := cli("global", "rib", "-a", fam.flag)
		if err != nil {
			t.Fatalf("gobgp global rib -a %s: %v: %s", fam.flag, err, out)
		}
		if len(routes) == 0 {
			t.Fatalf("Routes(%s) is empty", fam.f)
		}
		for _, r := range routes {
			if !strings.Contains(out, r.Prefix.String()) {
				t.Errorf("gobgp CLI does not list %s:\n%s", r.Prefix, out)
			}
		}
		if got := strings.Count(out, "\n*>"); got != len(routes) {
			t.Errorf("gobgp CLI lists %d best routes, Routes() %d:\n%s", got, len(routes), out)
		}
	}
	out, err := cli("neighbor")
	if err != nil || !strings.Contains(out, frr4) || !strings.Contains(out, "Establ") {
		t.Errorf("gobgp neighbor: %v:\n%s", err, out)
	}
	out, err = cli("global", "rib", "add", "198.18.0.99/32", "-a", "ipv4")
	if err == nil || !strings.Contains(out, "read-only") {
		t.Fatalf("read-only API accepted a route: %v:\n%s", err, out)
	}
	if rs, _ := s.Routes(ctx, RouteQuery{Family: IPv4Unicast}); len(rs) != 1 {
		t.Fatalf("routes after a refused add: %+v", rs)
	}
}
