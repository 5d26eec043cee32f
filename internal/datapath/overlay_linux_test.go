package datapath

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/strait-net/strait/internal/testutil"
	"github.com/vishvananda/netns"
)

// The overlay topology: a router namespace with two bridges, subnet 1
// (10.90.1.0/24, fd42:90:1::/64) and subnet 2 (10.90.2.0/24,
// fd42:90:2::/64), nodes on them with one pod each. Node i owns the blocks
// 10.244.i.0/24 and fd42:244:0:i::/64 and has the tunnel addresses
// 10.244.i.0 and fd42:244:0:i::.

type ovNode struct {
	name   string
	ns     *testutil.NS
	dp     *Datapath
	subnet int
	v4, v6 netip.Addr // underlay
	vteps  []VTEPConfig
	pod    *testutil.NS
	pod4   netip.Addr
	pod6   netip.Addr
}

func (n *ovNode) block(fam int) netip.Prefix {
	if fam == 4 {
		return netip.PrefixFrom(n.pod4, 24).Masked()
	}
	return netip.PrefixFrom(n.pod6, 64).Masked()
}

func (n *ovNode) tunnel(fam int) netip.Addr { return n.block(fam).Addr() }

func (n *ovNode) underlay(fam int) netip.Addr {
	if fam == 4 {
		return n.v4
	}
	return n.v6
}

// nodeSpec is "name:subnet:index", e.g. "n1:1:1".
func newOvCluster(t testing.TB, specs ...string) []*ovNode {
	t.Helper()
	router := testutil.NewNS(t)
	for s := 1; s <= 2; s++ {
		br := fmt.Sprintf("br%d", s)
		router.MustRun(t, "ip", "link", "add", br, "type", "bridge", "mcast_snooping", "0")
		// No DAD: IPv6 neighbour discovery waits for the link-local address.
		router.MustRun(t, "sysctl", "-qw", "net.ipv6.conf."+br+".accept_dad=0")
		router.MustRun(t, "ip", "addr", "add", fmt.Sprintf("10.90.%d.1/24", s), "dev", br)
		router.MustRun(t, "ip", "addr", "add", fmt.Sprintf("fd42:90:%d::1/64", s), "dev", br, "nodad")
		router.MustRun(t, "ip", "link", "set", br, "up")
	}
	router.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	var nodes []*ovNode
	for _, spec := range specs {
		var name string
		var subnet, idx int
		if _, err := fmt.Sscanf(strings.ReplaceAll(spec, ":", " "), "%s %d %d", &name, &subnet, &idx); err != nil {
			t.Fatalf("node spec %q: %v", spec, err)
		}
		node, dp := newNode(t, false)
		n := &ovNode{
			name: name, ns: node, dp: dp, subnet: subnet,
			v4:   netip.MustParseAddr(fmt.Sprintf("10.90.%d.%d", subnet, 10+idx)),
			v6:   netip.MustParseAddr(fmt.Sprintf("fd42:90:%d::%d", subnet, 10+idx)),
			pod4: netip.MustParseAddr(fmt.Sprintf("10.244.%d.5", idx)),
			pod6: netip.MustParseAddr(fmt.Sprintf("fd42:244:0:%d::5", idx)),
		}
		port := "p-" + name
		node.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", router.Name)
		router.MustRun(t, "ip", "link", "set", port, "master", fmt.Sprintf("br%d", subnet), "up")
		node.MustRun(t, "ip", "addr", "add", n.v4.String()+"/24", "dev", "eth0")
		node.MustRun(t, "ip", "addr", "add", n.v6.String()+"/64", "dev", "eth0", "nodad")
		node.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
		node.MustRun(t, "ip", "link", "set", "eth0", "up")
		node.MustRun(t, "ip", "route", "add", "default", "via", fmt.Sprintf("10.90.%d.1", subnet))
		node.MustRun(t, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd42:90:%d::1", subnet))
		pod, p := newPod(t, n.pod4.String(), n.pod6.String())
		p.MTU = 1430 // fits both VXLAN devices
		mustSetup(t, dp, p)
		n.pod = pod
		for _, fam := range []int{4, 6} {
			n.vteps = append(n.vteps, VTEPConfig{Family: fam, LocalIP: n.underlay(fam), MAC: VTEPMAC(name, fam), TunnelAddr: n.tunnel(fam)})
		}
		if err := dp.EnsureVTEPs(context.Background(), n.vteps); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// crossSubnet selects encapsulation like Calico's VXLANCrossSubnet; always
// is plain VXLAN mode.
func crossSubnet(from, to *ovNode) bool { return from.subnet != to.subnet }
func always(_, _ *ovNode) bool          { return true }

// peerOf is how node from sees node to.
func peerOf(from, to *ovNode, encap func(from, to *ovNode) bool) Peer {
	p := Peer{Name: to.name}
	for _, fam := range []int{4, 6} {
		r := PeerRoute{Dst: to.block(fam)}
		if encap(from, to) {
			r.Encap, r.Gateway, r.VTEPMAC, r.VTEPIP = true, to.tunnel(fam), VTEPMAC(to.name, fam), to.underlay(fam)
		} else {
			r.Gateway, r.Dev = to.underlay(fam), "eth0"
		}
		p.Routes = append(p.Routes, r)
	}
	return p
}

func peersOf(n *ovNode, nodes []*ovNode, encap func(from, to *ovNode) bool) []Peer {
	var ps []Peer
	for _, o := range nodes {
		if o != n {
			ps = append(ps, peerOf(n, o, encap))
		}
	}
	return ps
}

// meshUp programs every node with every other node as a peer.
func meshUp(t testing.TB, nodes []*ovNode, encap func(from, to *ovNode) bool) {
	t.Helper()
	for _, n := range nodes {
		for _, p := range peersOf(n, nodes, encap) {
			if _, err := n.dp.SetPeer(context.Background(), p); err != nil {
				t.Fatal(err)
			}
		}
	}
}

type linkCounters struct{ tx, rx uint64 }

func counters(t testing.TB, n *testutil.NS, dev string) linkCounters {
	t.Helper()
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(int(n.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		t.Fatalf("%s: %v", dev, err)
	}
	s := l.Attrs().Statistics
	return linkCounters{tx: s.TxPackets, rx: s.RxPackets}
}

// podToPod checks TCP both ways between the pods of a and b over IPv4 and
// IPv6 and returns how many VXLAN packets a sent and received meanwhile.
func podToPod(t *testing.T, a, b *ovNode) (vx4, vx6 linkCounters) {
	t.Helper()
	before4, before6 := counters(t, a.ns, VTEPDevice4), counters(t, a.ns, VTEPDevice6)
	for _, pair := range [][2]*ovNode{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		for _, ip := range []netip.Addr{to.pod4, to.pod6} {
			if err := roundTrip(from.pod, listenEcho(t, to.pod, ip.String())); err != nil {
				t.Errorf("pod %s -> pod %s (%s): %v", from.name, to.name, ip, err)
			}
		}
	}
	after4, after6 := counters(t, a.ns, VTEPDevice4), counters(t, a.ns, VTEPDevice6)
	return linkCounters{after4.tx - before4.tx, after4.rx - before4.rx},
		linkCounters{after6.tx - before6.tx, after6.rx - before6.rx}
}

func TestOverlayVXLAN(t *testing.T) {
	nodes := newOvCluster(t, "n1:1:1", "n3:2:3")
	n1, n3 := nodes[0], nodes[1]
	meshUp(t, nodes, always)

	vx4, vx6 := podToPod(t, n1, n3)
	t.Logf("n1 VXLAN packets during pod traffic: v4 tx %d rx %d, v6 tx %d rx %d", vx4.tx, vx4.rx, vx6.tx, vx6.rx)
	for fam, c := range map[int]linkCounters{4: vx4, 6: vx6} {
		if c.tx < 6 || c.rx < 6 {
			t.Errorf("IPv%d: VXLAN counters barely moved (%+v): traffic did not go through the tunnel", fam, c)
		}
	}

	t.Run("node to remote pod uses the tunnel address", func(t *testing.T) {
		for _, ip := range []netip.Addr{n3.pod4, n3.pod6} {
			got := make(chan string, 1)
			addr := listenRemote(t, n3.pod, ip, got)
			if err := roundTrip(n1.ns, addr); err != nil {
				t.Fatal(err)
			}
			if src, want := <-got, n1.tunnel(ipVersion(ip)).String(); src != want {
				t.Errorf("node n1 -> pod %s: source seen as %s, want the tunnel address %s", ip, src, want)
			}
		}
	})

	t.Run("kernel state", func(t *testing.T) {
		for _, want := range []string{
			"10.244.3.0/24 via 10.244.3.0 dev strait.vxlan4 proto 83 onlink",
			"fd42:244:0:3::/64 via fd42:244:0:3:: dev strait.vxlan6 proto 83 metric 1024 onlink",
		} {
			if out := routes(t, n1.ns); !strings.Contains(out, want) {
				t.Errorf("no %q in\n%s", want, out)
			}
		}
		mac4 := VTEPMAC("n3", 4).String()
		for _, c := range []struct{ args []string }{
			{[]string{"ip", "neigh", "show", "dev", VTEPDevice4}},
			{[]string{"bridge", "fdb", "show", "dev", VTEPDevice4}},
		} {
			if out := n1.ns.MustRun(t, c.args...); !strings.Contains(out, mac4) || !strings.Contains(strings.ToLower(out), "permanent") {
				t.Errorf("%v: no permanent entry for %s:\n%s", c.args, mac4, out)
			}
		}
		entries, err := n1.dp.OverlayState(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 6 {
			t.Errorf("OverlayState: %d entries, want 6 (route, neigh, fdb x 2 families): %v", len(entries), entries)
		}
		for _, e := range entries {
			if e.Peer != "n3" {
				t.Errorf("entry %s serves %q, want n3", e, e.Peer)
			}
		}
	})
}

// TestTunnelNotrack: with SetNAT's TunnelPort, the overlay's outer packets
// between the nodes leave no conntrack entry on either node while the pods'
// own connections are still tracked; without it (the control) they do.
func TestTunnelNotrack(t *testing.T) {
	nodes := newOvCluster(t, "n1:1:1", "n3:2:3")
	n1, n3 := nodes[0], nodes[1]
	meshUp(t, nodes, always)
	nat := NATConfig{
		Masquerade: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd42:244::/48")},
		AllPools:   []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd42:244::/48")},
		NodeAddrs:  []netip.Addr{n1.v4, n1.v6, n3.v4, n3.v6},
	}
	ctx := context.Background()
	// conntrackCount is the number of entries of proto matching args on n.
	conntrackCount := func(t *testing.T, n *ovNode, fam int, proto string, args ...string) int {
		t.Helper()
		argv := append([]string{"conntrack", "-L", "-f", map[int]string{4: "ipv4", 6: "ipv6"}[fam], "-p", proto}, args...)
		out, err := n.ns.Run(argv...)
		if err != nil && !strings.Contains(out, "0 flow entries") {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
		return strings.Count(out, proto+" ")
	}
	run := func(t *testing.T, tunnelPort uint16) (outer, inner [2][2]int) { // [node][family]
		t.Helper()
		nat := nat
		nat.TunnelPort = tunnelPort
		for _, n := range nodes {
			if err := n.dp.SetNAT(ctx, nat); err != nil {
				t.Fatal(err)
			}
			n.ns.MustRun(t, "conntrack", "-F")
		}
		if vx4, vx6 := podToPod(t, n1, n3); vx4.tx < 6 || vx6.tx < 6 {
			t.Fatalf("VXLAN counters barely moved (v4 %+v, v6 %+v)", vx4, vx6)
		}
		for i, n := range nodes {
			for j, fam := range []int{4, 6} {
				outer[i][j] = conntrackCount(t, n, fam, "udp", "--dport", "4789")
				inner[i][j] = conntrackCount(t, n, fam, "tcp", "--src", n1.block(fam).String())
			}
		}
		return outer, inner
	}

	// expect checks the entries after traffic with tunnelPort: the pods'
	// connections tracked on both nodes, their outer packets only when
	// outerTracked.
	expect := func(t *testing.T, tunnelPort uint16, outerTracked bool) {
		t.Helper()
		outer, inner := run(t, tunnelPort)
		for i, n := range nodes {
			for j, fam := range []int{4, 6} {
				if (outer[i][j] > 0) != outerTracked || inner[i][j] == 0 {
					t.Errorf("%s IPv%d: %d outer and %d pod entries, want outer tracked %v and pod entries > 0",
						n.name, fam, outer[i][j], inner[i][j], outerTracked)
				}
			}
		}
	}

	t.Run("control: tracked without TunnelPort", func(t *testing.T) {
		expect(t, 0, true)
	})
	t.Run("outer packets untracked with TunnelPort", func(t *testing.T) {
		expect(t, DefaultVXLANPort, false)
		ruleset := n1.ns.MustRun(t, "nft", "list", "table", "inet", NATTable)
		t.Logf("%s", ruleset)
		contains(t, ruleset, true,
			"chain "+TunnelInChain+" {", "chain "+TunnelOutChain+" {",
			"type filter hook prerouting priority raw; policy accept;",
			"type filter hook output priority raw; policy accept;",
			"ip saddr @nodes4 udp dport 4789 fib daddr type local counter packets",
			"ip6 saddr @nodes6 udp dport 4789 fib daddr type local counter packets",
			"ip daddr @nodes4 udp dport 4789 counter packets", "ip6 daddr @nodes6 udp dport 4789 counter packets",
			"notrack")
		for _, l := range strings.Split(ruleset, "\n") {
			if strings.Contains(l, "notrack") && strings.Contains(l, "counter packets 0 ") {
				t.Errorf("a notrack rule never matched: %s", strings.TrimSpace(l))
			}
		}
	})
	t.Run("tracked again once TunnelPort is dropped", func(t *testing.T) {
		// What an agent restarted with vxlan.trackOuterPackets does.
		expect(t, 0, true)
		contains(t, n1.ns.MustRun(t, "nft", "list", "table", "inet", NATTable), false, TunnelInChain, TunnelOutChain, "notrack")
	})
	t.Run("tunnel only keeps the table", func(t *testing.T) {
		if err := n1.dp.SetNAT(ctx, NATConfig{NodeAddrs: nat.NodeAddrs, TunnelPort: DefaultVXLANPort}); err != nil {
			t.Fatal(err)
		}
		ruleset := n1.ns.MustRun(t, "nft", "list", "table", "inet", NATTable)
		contains(t, ruleset, true, "chain "+TunnelInChain+" {", "set nodes4 {", "set nodes6 {")
		contains(t, ruleset, false, "masquerade", "set masq4", "set pools4")
	})
}

// listenRemote accepts one connection on ip inside n, reports the peer's
// address on got and echoes.
func listenRemote(t *testing.T, n *testutil.NS, ip netip.Addr, got chan<- string) string {
	t.Helper()
	var l net.Listener
	if err := n.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		got <- ap.Addr().Unmap().String()
		close(got)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(c, c)
	}()
	return l.Addr().String()
}

func TestOverlayCrossSubnet(t *testing.T) {
	nodes := newOvCluster(t, "n1:1:1", "n2:1:2", "n3:2:3")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	meshUp(t, nodes, crossSubnet)

	eth0Before := counters(t, n1.ns, "eth0")
	vx4, vx6 := podToPod(t, n1, n2)
	eth0After := counters(t, n1.ns, "eth0")
	t.Logf("n1<->n2 (same subnet): VXLAN v4 %+v v6 %+v, eth0 tx +%d", vx4, vx6, eth0After.tx-eth0Before.tx)
	if vx4.tx != 0 || vx4.rx != 0 || vx6.tx != 0 || vx6.rx != 0 {
		t.Errorf("same-subnet traffic went through VXLAN: v4 %+v v6 %+v", vx4, vx6)
	}
	if eth0After.tx-eth0Before.tx < 12 {
		t.Errorf("same-subnet traffic did not leave on eth0 natively")
	}
	vx4, vx6 = podToPod(t, n1, n3)
	t.Logf("n1<->n3 (other subnet): VXLAN v4 %+v v6 %+v", vx4, vx6)
	if vx4.tx < 6 || vx4.rx < 6 || vx6.tx < 6 || vx6.rx < 6 {
		t.Errorf("cross-subnet traffic did not go through VXLAN: v4 %+v v6 %+v", vx4, vx6)
	}
	out := routes(t, n1.ns)
	for _, want := range []string{
		"10.244.2.0/24 via 10.90.1.12 dev eth0 proto 83",
		"fd42:244:0:2::/64 via fd42:90:1::12 dev eth0 proto 83",
		"10.244.3.0/24 via 10.244.3.0 dev strait.vxlan4 proto 83 onlink",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if out := n1.ns.MustRun(t, "bridge", "fdb", "show", "dev", VTEPDevice4); strings.Contains(out, VTEPMAC("n2", 4).String()) {
		t.Errorf("FDB entry for the natively routed n2:\n%s", out)
	}
}
