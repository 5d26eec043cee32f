package datapath

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/bgp"
	"github.com/strait-net/strait/internal/testutil"
)

// meshNodeEnv names a JSON bgp.Config file: the test binary then runs only
// one node's native routing (a real speaker whose learned routes go to
// SetLearnedRoutes in the namespace it was started in) until signalled.
// The speaker must run in its own process: GoBGP's goroutines open sockets
// from any OS thread, so the whole process has to be in the node namespace.
const meshNodeEnv = "STRAIT_DATAPATH_MESH_NODE"

func runMeshNode(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mesh node:", err)
		return 2
	}
	var cfg bgp.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "mesh node: config:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dp, err := New(Options{Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mesh node: datapath:", err)
		return 1
	}
	defer dp.Close()
	s, err := bgp.New(log, bgp.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mesh node: speaker:", err)
		return 1
	}
	ctx := context.Background()
	if err := s.Set(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "mesh node: set:", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case <-sig:
			_ = s.Close()
			return 0
		case learned, ok := <-s.Learned():
			if !ok {
				return 0
			}
			var routes []LearnedRoute
			for _, r := range learned {
				if strings.HasPrefix(r.Peer, "mesh-") {
					routes = append(routes, LearnedRoute{Prefix: r.Prefix, Gateway: r.NextHop})
				}
			}
			res, err := dp.SetLearnedRoutes(ctx, routes)
			fmt.Printf("learned %d: installed %d, ops %d, skipped %v, err %v\n", len(learned), res.Installed, res.Ops(), res.Skipped, err)
		}
	}
}

// TestNativeRoutingMesh: three nodes on one LAN, overlay off, each running
// a real speaker in an iBGP full mesh that advertises its pod blocks (IPv4
// and IPv6 on one IPv4 session); the learned routes are installed by
// SetLearnedRoutes in each node's kernel and pods reach each other through
// them. A node whose speaker dies is withdrawn from the others' kernels.
func TestNativeRoutingMesh(t *testing.T) {
	testutil.RequireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	lan := testutil.NewNS(t)
	lan.MustRun(t, "ip", "link", "add", "br0", "type", "bridge")
	lan.MustRun(t, "ip", "link", "set", "br0", "up")

	type meshNode struct {
		ns         *testutil.NS
		pod        *testutil.NS
		v4, v6     netip.Addr
		pod4, pod6 netip.Addr
		block4     netip.Prefix
		block6     netip.Prefix
		speaker    *testutil.Process
	}
	var nodes []*meshNode
	for i := 1; i <= 3; i++ {
		node, dp := newNode(t, false)
		n := &meshNode{ns: node,
			v4: netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", 10+i)), v6: netip.MustParseAddr(fmt.Sprintf("2001:db8:100::%d", 10+i)),
			pod4: netip.MustParseAddr(fmt.Sprintf("10.244.%d.5", i)), pod6: netip.MustParseAddr(fmt.Sprintf("fd10:244:0:%d::5", i)),
			block4: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/26", i)), block6: netip.MustParsePrefix(fmt.Sprintf("fd10:244:0:%d::/64", i))}
		port := fmt.Sprintf("p%d", i)
		node.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0")
		node.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", lan.Name)
		lan.MustRun(t, "ip", "link", "set", port, "master", "br0", "up")
		node.MustRun(t, "ip", "addr", "add", n.v4.String()+"/24", "dev", "eth0")
		node.MustRun(t, "ip", "addr", "add", n.v6.String()+"/64", "dev", "eth0", "nodad")
		node.MustRun(t, "ip", "link", "set", "eth0", "up")
		pod, p := newPod(t, n.pod4.String(), n.pod6.String())
		mustSetup(t, dp, p)
		n.pod = pod
		nodes = append(nodes, n)
	}
	dir := t.TempDir()
	for i, n := range nodes {
		cfg := bgp.Config{ASN: 65001, RouterID: n.v4, Paths: []bgp.Path{
			{Prefix: n.block4, Origin: "pod-block"}, {Prefix: n.block6, Origin: "pod-block"}}}
		for j, o := range nodes {
			if j == i {
				continue
			}
			cfg.Peers = append(cfg.Peers, bgp.Peer{Name: fmt.Sprintf("mesh-n%d", j+1), Address: o.v4, ASN: 65001,
				LocalAddress: n.v4, Families: []bgp.Family{bgp.IPv4Unicast, bgp.IPv6Unicast}, Learn: true, Passive: bgp.MeshPassive(n.v4, o.v4),
				Timers: bgp.Timers{Keepalive: time.Second, Hold: 3 * time.Second, ConnectRetry: time.Second}})
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, fmt.Sprintf("n%d.json", i+1))
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		n.speaker = testutil.StartProcess(t, n.ns.Name, "env", meshNodeEnv+"="+file, exe)
	}

	wantRoutes := func(n *meshNode, others []*meshNode) string {
		var v4, v6 []string
		for _, o := range others {
			v4 = append(v4, fmt.Sprintf("%s via %s dev eth0", o.block4, o.v4))
			v6 = append(v6, fmt.Sprintf("%s via %s dev eth0 metric 1024 pref medium", o.block6, o.v6))
		}
		return strings.Join(append(v4, v6...), "\n")
	}
	kernel := func(n *meshNode) string {
		out := n.ns.MustRun(t, "ip", "-4", "route", "show", "proto", "84") + n.ns.MustRun(t, "ip", "-6", "route", "show", "proto", "84")
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	start := time.Now()
	for i, n := range nodes {
		var others []*meshNode
		for j, o := range nodes {
			if j != i {
				others = append(others, o)
			}
		}
		want := wantRoutes(n, others)
		testutil.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
			if got := kernel(n); got != want {
				return fmt.Errorf("n%d learned routes:\n%s\nwant:\n%s", i+1, got, want)
			}
			return nil
		})
	}
	t.Logf("learned routes in all three kernels %v after the speakers started", time.Since(start).Round(time.Millisecond))
	for _, n := range nodes {
		if out := n.ns.MustRun(t, "ip", "route", "show", "proto", "83"); strings.TrimSpace(out) != "" {
			t.Fatalf("overlay routes present: %s", out)
		}
	}
	for i, from := range nodes {
		for j, to := range nodes {
			if i == j {
				continue
			}
			for _, ip := range []netip.Addr{to.pod4, to.pod6} {
				target := listenEcho(t, to.pod, ip.String())
				if err := roundTrip(from.pod, target); err != nil {
					t.Fatalf("pod of n%d -> pod of n%d (%s): %v", i+1, j+1, target, err)
				}
			}
		}
	}

	// n3's speaker dies: its blocks leave the other kernels.
	nodes[2].speaker.Kill()
	for i, n := range nodes[:2] {
		want := wantRoutes(n, []*meshNode{nodes[1-i]})
		testutil.Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
			if got := kernel(n); got != want {
				return fmt.Errorf("n%d after n3 died:\n%s\nwant:\n%s", i+1, got, want)
			}
			return nil
		})
	}
	target := listenEcho(t, nodes[2].pod, nodes[2].pod4.String())
	if err := roundTripTimeout(nodes[0].pod, target, 300*time.Millisecond); err == nil {
		t.Fatal("n1's pod still reaches n3's pod with n3's routes withdrawn")
	}
}
