package lab

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/bgp/bgptest"
	"github.com/strait-net/strait/internal/testutil"
)

// The lab's router (FRR and BIRD) in the lab's own topology, with an FRR
// standing in for each node's agent (AS 64513, dialling its subnet's router
// address): every session comes up through the dynamic neighbour ranges,
// each node's pod blocks (v4 and v6 over the IPv4 session) land in the
// router namespace's kernel via that node, an address both nodes advertise
// gets both as next hops, status reports the sessions, and Down stops the
// router's daemons.
func TestRouterPeersWithNodes(t *testing.T) {
	testutil.RequireRoot(t)
	for _, kind := range []string{RouterFRR, RouterBIRD} {
		t.Run(kind, func(t *testing.T) {
			var out strings.Builder
			o := Options{Dir: t.TempDir(), Prefix: testutil.OwnedPrefix() + "rt-", Out: &out}
			t.Cleanup(func() { _ = Down(context.Background(), o) })
			s := &State{}
			nodes := o.nodes(2)
			s.Cluster.Nodes = nodes
			if err := o.buildTopology(s, nodes); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			start := time.Now()
			if err := o.startRouter(ctx, s, kind); err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				blocks := []string{fmt.Sprintf("10.244.%d.0/26", n.Index), fmt.Sprintf("fd42:244:0:%d::/122", n.Index), "10.100.50.1/32"}
				bgptest.StartFRR(t, n.NS, bgptest.FRRConfig{ASN: ClusterASN, RouterID: n.IPv4,
					Neighbors: []bgptest.FRRNeighbor{{Address: routerPeerOf(n), ASN: RouterASN}}, Networks: blocks})
			}
			if err := o.waitRouterSessions(ctx, s.Router, nodes, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: sessions with both nodes %.1f s after the router started", kind, time.Since(start).Seconds())
			router := o.ns("router")
			testutil.Eventually(t, 20*time.Second, 200*time.Millisecond, func() error {
				for _, n := range nodes {
					for _, want := range [][2]string{
						{fmt.Sprintf("10.244.%d.0/26", n.Index), "via " + n.IPv4},
						{fmt.Sprintf("fd42:244:0:%d::/122", n.Index), "via " + n.IPv6},
						{"10.100.50.1", "via " + n.IPv4}, // ECMP: both nodes
					} {
						fam := "-4"
						if strings.Contains(want[0], ":") {
							fam = "-6"
						}
						got, err := bgptest.Run(router, "ip", fam, "route", "show", want[0])
						if err != nil {
							return err
						}
						if !strings.Contains(got, want[1]) {
							return fmt.Errorf("%s in the router's kernel: %q, want %q", want[0], strings.TrimSpace(got), want[1])
						}
					}
				}
				return nil
			})
			out.Reset()
			if problems := routerStatus(o, s); len(problems) != 0 || strings.Count(out.String(), "Established") != 2 {
				t.Fatalf("status: %v\n%s", problems, out.String())
			}
			if log, err := os.ReadFile(o.logPath("router")); err != nil || len(log) == 0 {
				t.Errorf("router log (strait-lab logs router): %q %v", log, err)
			}
			if err := Down(ctx, o); err != nil {
				t.Fatal(err)
			}
			for _, p := range s.Processes {
				if alive(p) {
					t.Errorf("%s (pid %d) still runs after down", p.Name, p.PID)
				}
			}
			if _, err := os.Stat(s.Router.Dir); !os.IsNotExist(err) {
				t.Errorf("down left the router's folder %s: %v", s.Router.Dir, err)
			}
		})
	}
}
