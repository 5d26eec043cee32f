package datapath

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/strait-net/strait/internal/testutil"
)

// benchPeers are n encapsulated IPv4 peers with one /26 block each (the
// Calico block size): 1 route + 1 neighbour + 1 FDB entry per peer.
func benchPeers(n int) []Peer {
	ps := make([]Peer, n)
	for i := range ps {
		block := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.%d/26", i/4, i%4*64))
		ps[i] = Peer{Name: fmt.Sprintf("node%d", i), Routes: []PeerRoute{{
			Dst: block, Encap: true, Gateway: block.Addr(), VTEPMAC: VTEPMAC(fmt.Sprintf("node%d", i), 4),
			VTEPIP: netip.MustParseAddr(fmt.Sprintf("10.90.%d.%d", 10+i/250, 1+i%250)),
		}}}
	}
	return ps
}

// benchNode is a fresh node namespace with an underlay veth and a fresh
// IPv4 VXLAN device.
func benchNode(b *testing.B) (*testutil.NS, *Datapath) {
	b.Helper()
	node := testutil.NewNS(b)
	node.MustRun(b, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	node.MustRun(b, "ip", "addr", "add", "10.90.0.2/24", "dev", "up0")
	node.MustRun(b, "ip", "link", "set", "up0", "up")
	node.MustRun(b, "ip", "link", "set", "up1", "up")
	dp, err := New(Options{NodeNetns: node.Path()})
	if err != nil {
		b.Fatal(err)
	}
	vtep := VTEPConfig{Family: 4, LocalIP: netip.MustParseAddr("10.90.0.2"), MAC: VTEPMAC("bench", 4), TunnelAddr: netip.MustParseAddr("10.244.255.0")}
	if err := dp.EnsureVTEPs(context.Background(), []VTEPConfig{vtep}); err != nil {
		b.Fatal(err)
	}
	return node, dp
}

// BenchmarkSetPeers1000 programs 1,000 peers (3,000 kernel operations) into
// a fresh VXLAN device with SetPeer, and the same 3,000 operations with
// `bridge -batch` + `ip -batch` (the limit) in another fresh node, in
// alternating order; it reports both and their ratio.
func BenchmarkSetPeers1000(b *testing.B) {
	testutil.RequireRoot(b)
	const n = 1000
	peers := benchPeers(n)
	dir := b.TempDir()
	var ipCmds, bridgeCmds strings.Builder
	for _, p := range peers {
		r := p.Routes[0]
		fmt.Fprintf(&bridgeCmds, "fdb replace %s dev %s dst %s self permanent\n", r.VTEPMAC, VTEPDevice4, r.VTEPIP)
		fmt.Fprintf(&ipCmds, "neigh replace %s lladdr %s dev %s nud permanent\n", r.Gateway, r.VTEPMAC, VTEPDevice4)
		fmt.Fprintf(&ipCmds, "route replace %s via %s dev %s onlink proto %d\n", r.Dst, r.Gateway, VTEPDevice4, RouteProtocol)
	}
	ipFile, bridgeFile := filepath.Join(dir, "ip.batch"), filepath.Join(dir, "bridge.batch")
	for f, s := range map[string]string{ipFile: ipCmds.String(), bridgeFile: bridgeCmds.String()} {
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()

	runGo := func(b *testing.B) time.Duration {
		node, dp := benchNode(b)
		defer func() { dp.Close(); _ = node.Delete() }()
		b.StartTimer()
		start := time.Now()
		for _, p := range peers {
			st, err := dp.SetPeer(ctx, p)
			if err != nil || st.Total() != 3 {
				b.Fatalf("SetPeer %s = %+v, %v", p.Name, st, err)
			}
		}
		took := time.Since(start)
		b.StopTimer()
		checkBench(b, node, n)
		return took
	}
	runBatch := func(b *testing.B) time.Duration {
		node, dp := benchNode(b)
		defer func() { dp.Close(); _ = node.Delete() }()
		start := time.Now()
		for _, c := range [][]string{{"bridge", "-n", node.Name, "-batch", bridgeFile}, {"ip", "-n", node.Name, "-batch", ipFile}} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				b.Fatalf("%v: %v: %s", c, err, out)
			}
		}
		took := time.Since(start)
		checkBench(b, node, n)
		return took
	}

	var goTotal, batchTotal time.Duration
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			goTotal += runGo(b)
			batchTotal += runBatch(b)
		} else {
			batchTotal += runBatch(b)
			goTotal += runGo(b)
		}
	}
	goMs := float64(goTotal.Microseconds()) / 1000 / float64(b.N)
	batchMs := float64(batchTotal.Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(goMs, "ms/1000peers")
	b.ReportMetric(3*n/(goMs/1000), "ops/s")
	b.ReportMetric(batchMs, "batch-ms/1000peers")
	b.ReportMetric(goMs/batchMs, "ratio-vs-batch")
}

// checkBench verifies the node has n overlay routes, neighbours and FDB
// entries.
func checkBench(b *testing.B, node *testutil.NS, n int) {
	b.Helper()
	for _, c := range [][]string{
		{"ip", "route", "show", "proto", fmt.Sprint(RouteProtocol)},
		{"ip", "neigh", "show", "dev", VTEPDevice4, "nud", "permanent"},
		{"bridge", "fdb", "show", "dev", VTEPDevice4},
	} {
		if got := strings.Count(node.MustRun(b, c...), "\n"); got != n {
			b.Fatalf("%v: %d entries, want %d", c, got, n)
		}
	}
}

// BenchmarkResync1000 is a cold start's kernel work: one Resync of 1,000
// peers into a fresh VXLAN device (3,000 operations after the dumps).
func BenchmarkResync1000(b *testing.B) {
	testutil.RequireRoot(b)
	const n = 1000
	peers := benchPeers(n)
	b.StopTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		node, dp := benchNode(b)
		b.StartTimer()
		start := time.Now()
		st, _, err := dp.Resync(context.Background(), peers)
		total += time.Since(start)
		b.StopTimer()
		if err != nil || st.Total() != 3*n {
			b.Fatalf("Resync = %+v, %v", st, err)
		}
		checkBench(b, node, n)
		dp.Close()
		_ = node.Delete()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/resync")
}

// BenchmarkSetFastPath1000 is what the fast path costs at every resync and
// CNI kick on a node with 1,000 VXLAN peers: one SetFastPath with the
// programs already attached and nothing to change (dumps of links, routes,
// the FDB and the uplink's neighbours; the maps read and compared).
func BenchmarkSetFastPath1000(b *testing.B) {
	testutil.RequireRoot(b)
	const n = 1000
	node, dp := benchNode(b)
	node.MustRun(b, "ip", "route", "add", "default", "via", "10.90.0.1", "dev", "up0")
	if _, _, err := dp.Resync(context.Background(), benchPeers(n)); err != nil {
		b.Fatal(err)
	}
	fp := FastPath{Enabled: true, PinDir: filepath.Join(testutil.MountBPFFS(b), "node"), Uplinks: []string{"up0", VTEPDevice4},
		PodRanges: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	b.Cleanup(func() { _, _ = dp.SetFastPath(FastPath{PinDir: fp.PinDir, Uplinks: fp.Uplinks}) })
	// The first attaches; its next hop is the underlay router, shared by
	// every VTEP.
	if st, err := dp.SetFastPath(fp); err != nil || st.NextHops != 1 {
		b.Fatalf("SetFastPath = %+v, %v; want 1 next hop", st, err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := dp.SetFastPath(fp); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	m, err := ebpf.LoadPinnedMap(filepath.Join(fp.PinDir, fpMapVTEPs), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if vteps, err := readMap[fpVTEPKey, [4]byte](m); err != nil || len(vteps) != n {
		b.Fatalf("%s holds %d VTEPs (%v), want %d", fpMapVTEPs, len(vteps), err, n)
	}
}
