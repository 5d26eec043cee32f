package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/strait-net/strait/internal/testutil"
)

// TestFastPath runs the fast path on three nodes: n1 and n2 share a subnet
// (native routes), n3 is across the router (VXLAN); n1 has a second pod.
// Pod-to-pod TCP over IPv4 and IPv6 on all three paths is carried by the
// programs (their counters move, neither node forwards a datagram through
// the stack), while a DNATed connection, a spoofed source and a non-pod
// destination stay with the stack. The fast path survives its Datapath
// (the agent) exiting, is adopted without a detach, follows pod deletion,
// and is removed completely when disabled.
func TestFastPath(t *testing.T) {
	testutil.RequireRoot(t)
	nodes := newOvCluster(t, "n1:1:1", "n2:1:2", "n3:2:3")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	meshUp(t, nodes, crossSubnet)
	pod1b, p1b := newPod(t, "10.244.1.6", "fd42:244:0:1::6")
	p1b.MTU = 1430
	mustSetup(t, n1.dp, p1b)

	// Shorter neighbour timers on n1's uplink (set before any entry
	// exists), so that the next-hop test below re-resolves in about 10 s,
	// not 30-60 s. Reachable time stays well above the probe delay: with
	// both near 1 s, the kernel's own probes keep an entry fresh and the
	// test could not fail (measured).
	for _, kv := range []string{"base_reachable_time_ms=4000", "delay_first_probe_time=1", "interval_probe_time_ms=1000"} {
		n1.ns.MustRun(t, "sysctl", "-qw", "net.ipv4.neigh.eth0."+kv, "net.ipv6.neigh.eth0."+kv)
	}
	outer := t
	fs := testutil.MountBPFFS(t)
	dirs := map[*ovNode]string{}
	for _, n := range nodes {
		dirs[n] = filepath.Join(fs, n.name)
	}
	// Before: the stack forwards.
	before := forwarded(t, n1.ns)
	podToPod(t, n1, n2)
	if got := forwarded(t, n1.ns) - before; got < 10 {
		t.Fatalf("without the fast path n1 forwarded %d datagrams: the check below could not fail", got)
	}

	for _, n := range nodes {
		st := mustFastPath(t, n.dp, fpConfig(dirs[n]))
		wantPods := 1
		if n == n1 {
			wantPods = 2
		}
		if st.Pods != wantPods || len(st.Devices) != wantPods+3 {
			t.Fatalf("%s: status %+v, want %d pods and eth0 + 2 VXLAN devices", n.name, st, wantPods)
		}
		// The next hops on eth0: the other node of the subnet (native
		// routes, both families) and the router (the underlay next hop
		// to the VTEPs of the other subnet).
		want := []string{"10.90.1.1"}
		switch n {
		case n1, n2:
			other := n2
			if n == n2 {
				other = n1
			}
			want = append(want, other.v4.String(), other.v6.String())
		case n3:
			want = []string{"10.90.2.1"}
		}
		slices.Sort(want)
		if got := managedNeighs(t, n); st.NextHops != len(want) || !slices.Equal(got, want) {
			t.Fatalf("%s: %d next hops kept resolved, managed neighbours %v, want %v", n.name, st.NextHops, got, want)
		}
	}
	ids := linkIDs(t, dirs[n1])
	if st := mustFastPath(t, n1.dp, fpConfig(dirs[n1])); st.Pods != 2 {
		t.Fatalf("second Set: %+v", st)
	}
	if again := linkIDs(t, dirs[n1]); !mapsEqual(ids, again) {
		t.Fatalf("a second identical Set replaced links: %v -> %v", ids, again)
	}

	type target struct {
		name string
		from *testutil.NS
		to   *testutil.NS
		ips  []netip.Addr
		// vxlan: the two nodes whose VXLAN devices the traffic crosses
		// (IPv4: encapsulated by the programs; IPv6: by the devices).
		vxlan []*ovNode
	}
	targets := []target{
		{"native n1 -> n2", n1.pod, n2.pod, []netip.Addr{n2.pod4, n2.pod6}, nil},
		{"VXLAN n1 -> n3", n1.pod, n3.pod, []netip.Addr{n3.pod4, n3.pod6}, []*ovNode{n1, n3}},
		{"VXLAN n3 -> n1", n3.pod, n1.pod, []netip.Addr{n1.pod4, n1.pod6}, []*ovNode{n3, n1}},
		{"same node n1 -> n1", n1.pod, pod1b, []netip.Addr{netip.MustParseAddr("10.244.1.6"), netip.MustParseAddr("fd42:244:0:1::6")}, nil},
	}
	vxTX := func(t *testing.T, ends []*ovNode, ip netip.Addr) map[string]linkCounters {
		dev := VTEPDevice4
		if ip.Is6() {
			dev = VTEPDevice6
		}
		m := map[string]linkCounters{}
		for _, n := range ends {
			m[n.name] = counters(t, n.ns, dev)
		}
		return m
	}
	fastPathCarries := func(t *testing.T, tg target) {
		t.Helper()
		for _, ip := range tg.ips {
			addr := listenEcho(t, tg.to, ip.String())
			// The first packets may resolve neighbours through the stack.
			if err := roundTrip(tg.from, addr); err != nil {
				t.Fatalf("%s (%s): %v", tg.name, ip, err)
			}
			c0 := counterSum(t, nodes, dirs)
			f0 := map[string]uint64{}
			for _, n := range nodes {
				f0[n.name] = forwarded(t, n.ns)
			}
			vx0 := vxTX(t, tg.vxlan, ip)
			const size = 4 << 20
			if err := bulk(tg.from, addr, size); err != nil {
				t.Fatalf("%s (%s): %d bytes: %v", tg.name, ip, size, err)
			}
			c1 := counterSum(t, nodes, dirs)
			vx1 := vxTX(t, tg.vxlan, ip)
			encap := c1.Encapsulated - c0.Encapsulated
			switch {
			case len(tg.vxlan) == 0 || ip.Is6():
				if encap != 0 {
					t.Errorf("%s (%s): %d packets encapsulated by the programs, want 0", tg.name, ip, encap)
				}
			case encap < 64:
				t.Errorf("%s (%s): the programs encapsulated %d packets for a 4 MiB echo, want >= 64", tg.name, ip, encap)
			}
			for _, n := range tg.vxlan {
				tx, rx := vx1[n.name].tx-vx0[n.name].tx, vx1[n.name].rx-vx0[n.name].rx
				t.Logf("%s (%s): %s's VXLAN device tx %d rx %d, encapsulated by the programs %d", tg.name, ip, n.name, tx, rx, encap)
				// Both ends' devices still decapsulate; only IPv6
				// still transmits through them.
				if rx < 32 {
					t.Errorf("%s (%s): %s's VXLAN device received %d packets", tg.name, ip, n.name, rx)
				}
				if ip.Is4() && tx > 4 {
					t.Errorf("%s (%s): %s's VXLAN device transmitted %d packets: the programs did not encapsulate them", tg.name, ip, n.name, tx)
				}
			}
			for _, n := range nodes {
				if d := forwarded(t, n.ns) - f0[n.name]; d != 0 {
					t.Errorf("%s (%s): %s forwarded %d datagrams through the stack", tg.name, ip, n.name, d)
				}
			}
			// 4 MiB is at least 64 GSO segments each way with the ACKs.
			if d := c1.Redirected - c0.Redirected; d < 64 {
				t.Errorf("%s (%s): the programs redirected %d packets for a 4 MiB echo", tg.name, ip, d)
			}
		}
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) { fastPathCarries(t, tg) })
	}

	t.Run("DNAT stays with the stack", func(t *testing.T) {
		// A Service-like DNAT on n1 to n3's pod: the request leaves the
		// pod for a non-pod address (stack), the reply comes back over
		// VXLAN and must be un-DNATed by the stack, not redirected.
		addr := listenEcho(t, n3.pod, n3.pod4.String())
		_, port, _ := net.SplitHostPort(addr)
		n1.ns.MustRun(t, "nft", "add table ip svc")
		n1.ns.MustRun(t, "nft", "add chain ip svc pre { type nat hook prerouting priority -100 ; }")
		n1.ns.MustRun(t, "nft", "add rule ip svc pre ip daddr 10.96.0.10 tcp dport 80 dnat to "+n3.pod4.String()+":"+port)
		t.Cleanup(func() { _, _ = n1.ns.Run("nft", "delete table ip svc") })
		c0 := counterSum(t, nodes, dirs)
		if err := roundTrip(n1.pod, "10.96.0.10:80"); err != nil {
			t.Fatalf("through the DNAT: %v", err)
		}
		if err := bulk(n1.pod, "10.96.0.10:80", 1<<20); err != nil {
			t.Fatalf("1 MiB through the DNAT: %v", err)
		}
		if c1 := counterSum(t, nodes, dirs); c1.NAT-c0.NAT < 16 {
			t.Errorf("NAT counter moved by %d: the replies did not meet the conntrack check", c1.NAT-c0.NAT)
		}
	})

	t.Run("spoofed source stays with the stack", func(t *testing.T) {
		c0 := counterSum(t, nodes, dirs)
		n1.pod.MustRun(t, "ip", "addr", "add", "10.244.1.77/32", "dev", "eth0")
		addr := listenEcho(t, n2.pod, n2.pod4.String())
		err := n1.pod.Do(func(ns.NetNS) error {
			d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("10.244.1.77")}}
			c, err := d.Dial("tcp", addr)
			if err == nil {
				_ = c.Close()
			}
			return err
		})
		if err == nil {
			t.Fatal("a pod reached another node from an address that is not its own")
		}
		if c1 := counterSum(t, nodes, dirs); c1.Spoofed == c0.Spoofed {
			t.Errorf("spoofed counter did not move (%d)", c1.Spoofed)
		}
	})

	t.Run("non-pod destination stays with the stack", func(t *testing.T) {
		c0 := counterSum(t, nodes, dirs)
		if err := roundTrip(n1.pod, listenEcho(t, n2.ns, n2.v4.String())); err != nil {
			t.Fatal(err)
		}
		c1 := counterSum(t, nodes, dirs)
		if c1.NotPod == c0.NotPod {
			t.Errorf("not-pod counter did not move (%d)", c1.NotPod)
		}
		// On n2 the connection's packets are for the node itself.
		if c1.Local == c0.Local {
			t.Errorf("local counter did not move (%d)", c1.Local)
		}
	})

	mac3 := string(VTEPMAC(n3.name, 4))
	t.Run("encapsulation writes the VXLAN device's headers", func(t *testing.T) {
		// The same connection's first packet as n3 receives it, once
		// encapsulated by the programs and once by n1's VXLAN device
		// (n3's VTEP taken out of n1's map).
		addr := listenEcho(t, n3.pod, n3.pod4.String())
		send := func() {
			if err := roundTrip(n1.pod, addr); err != nil {
				t.Fatalf("n1 -> n3: %v", err)
			}
		}
		c0 := counterSum(t, nodes, dirs)
		ours := vxlanFrame(t, n3, n1.v4, send)
		if c1 := counterSum(t, nodes, dirs); c1.Encapsulated == c0.Encapsulated {
			t.Fatal("the programs encapsulated nothing")
		}
		k, _ := fpVTEPKeyOf(mac3)
		if err := vtepMap(t, dirs[n1]).Delete(k); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mustFastPath(t, n1.dp, fpConfig(dirs[n1])) })
		vx0 := counters(t, n1.ns, VTEPDevice4)
		kernel := vxlanFrame(t, n3, n1.v4, send)
		if counters(t, n1.ns, VTEPDevice4).tx == vx0.tx {
			t.Fatal("n1's VXLAN device sent nothing with n3's VTEP out of the map")
		}
		o, k4 := parseVXLAN(t, ours), parseVXLAN(t, kernel)
		t.Logf("programs: %+v\nkernel:   %+v", o, k4)
		if o.sport < 32768 || o.sport > 60999 {
			t.Errorf("source port %d outside the VXLAN device's range 32768-60999", o.sport)
		}
		if o.udpCheck != 0 {
			t.Errorf("UDP checksum %#x, want 0", o.udpCheck)
		}
		// What may differ: the IP ID, the source port (both hashes of
		// their own) and the UDP checksum (the device computes one, the
		// programs send 0 as RFC 7348 allows over IPv4).
		o.id, o.sport, o.udpCheck, k4.id, k4.sport, k4.udpCheck = 0, 0, 0, 0, 0, 0
		if o != k4 {
			t.Errorf("headers differ:\nprograms %+v\nkernel   %+v", o, k4)
		}
	})

	t.Run("unknown VTEP falls back to the VXLAN device", func(t *testing.T) {
		m := vtepMap(t, dirs[n1])
		k, _ := fpVTEPKeyOf(mac3)
		if err := m.Delete(k); err != nil {
			t.Fatalf("delete n3's VTEP from n1's map: %v", err)
		}
		addr := listenEcho(t, n3.pod, n3.pod4.String())
		c0, vx0 := counterSum(t, nodes, dirs), counters(t, n1.ns, VTEPDevice4)
		if err := bulk(n1.pod, addr, 1<<20); err != nil {
			t.Fatalf("1 MiB n1 -> n3 without n3's VTEP in the map: %v", err)
		}
		c1, vx1 := counterSum(t, nodes, dirs), counters(t, n1.ns, VTEPDevice4)
		if tx := vx1.tx - vx0.tx; tx < 16 {
			t.Errorf("n1's VXLAN device transmitted %d packets: the traffic did not fall back to it", tx)
		}
		if c1.Redirected-c0.Redirected < 16 {
			t.Errorf("redirected %d: the fallback should still redirect into the device", c1.Redirected-c0.Redirected)
		}
		mustFastPath(t, n1.dp, fpConfig(dirs[n1]))
		if got, ok := vtepOf(t, dirs[n1], mac3); !ok || got != n3.v4 {
			t.Fatalf("after SetFastPath n3's VTEP is %v (%v), want %s from the FDB", got, ok, n3.v4)
		}
	})

	t.Run("FDB changes reach the map at once", func(t *testing.T) {
		ctx := context.Background()
		moved := peerOf(n1, n3, crossSubnet)
		for i := range moved.Routes {
			if moved.Routes[i].VTEPIP.Is4() {
				moved.Routes[i].VTEPIP = netip.MustParseAddr("10.90.2.99")
			}
		}
		steps := []struct {
			name string
			do   func() (OpStats, error)
			want netip.Addr // invalid: no entry
		}{
			{"n3's VTEP moves", func() (OpStats, error) { return n1.dp.SetPeer(ctx, moved) }, netip.MustParseAddr("10.90.2.99")},
			{"n3 is deleted", func() (OpStats, error) { return n1.dp.DeletePeer(ctx, n3.name) }, netip.Addr{}},
			{"n3 is back", func() (OpStats, error) { return n1.dp.SetPeer(ctx, peerOf(n1, n3, crossSubnet)) }, n3.v4},
		}
		for _, st := range steps {
			if _, err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			got, ok := vtepOf(t, dirs[n1], mac3)
			if ok != st.want.IsValid() || (ok && got != st.want) {
				t.Fatalf("%s: n1's map has n3's VTEP at %v (present %v), want %v", st.name, got, ok, st.want)
			}
		}
		fastPathCarries(t, targets[1])
	})

	t.Run("a new peer's next hops are managed at once", func(t *testing.T) {
		// n1 forgets n2 (native routes, both families) and n3 (VXLAN,
		// through the router); a SetFastPath drops their next hops. When
		// they come back, their next hops are managed again by SetPeer
		// alone, before any SetFastPath: n2's addresses, and the router
		// found by the route lookup for n3's VTEP. The same for routes
		// learned over BGP (SetLearnedRoutes).
		ctx := context.Background()
		all := managedNeighs(t, n1)
		for _, p := range []*ovNode{n2, n3} {
			if _, err := n1.dp.DeletePeer(ctx, p.name); err != nil {
				t.Fatal(err)
			}
		}
		mustFastPath(t, n1.dp, fpConfig(dirs[n1]))
		if got := managedNeighs(t, n1); len(got) != 0 {
			t.Fatalf("n1 without peers: managed neighbours %v, want none", got)
		}
		// A dynamic entry the stack learned meanwhile becomes managed
		// too, as SetFastPath would make it.
		mac2 := strings.TrimSpace(n2.ns.MustRun(t, "cat", "/sys/class/net/eth0/address"))
		n1.ns.MustRun(t, "ip", "neigh", "replace", n2.v4.String(), "lladdr", mac2, "dev", "eth0", "nud", "stale")
		setPeer := func(p *ovNode) func() error {
			return func() error { _, err := n1.dp.SetPeer(ctx, peerOf(n1, p, crossSubnet)); return err }
		}
		learned := func(rs ...LearnedRoute) func() error {
			return func() error { _, err := n1.dp.SetLearnedRoutes(ctx, rs); return err }
		}
		steps := []struct {
			name string
			do   func() error
			want []string
		}{
			{"SetPeer(n2)", setPeer(n2), []string{n2.v4.String(), n2.v6.String()}},
			{"SetPeer(n3)", setPeer(n3), all},
			{"DeletePeer(n2), SetFastPath", func() error {
				if _, err := n1.dp.DeletePeer(ctx, n2.name); err != nil {
					return err
				}
				_, err := n1.dp.SetFastPath(fpConfig(dirs[n1]))
				return err
			}, []string{"10.90.1.1"}},
			{"n2's blocks learned over BGP", learned(
				LearnedRoute{Prefix: n2.block(4), Gateway: n2.v4},
				LearnedRoute{Prefix: n2.block(6), Gateway: n2.v6}), all},
			{"learned routes gone, SetPeer(n2)", func() error {
				if err := learned()(); err != nil {
					return err
				}
				return setPeer(n2)()
			}, all},
		}
		for _, st := range steps {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			slices.Sort(st.want)
			if got := managedNeighs(t, n1); !slices.Equal(got, st.want) {
				t.Fatalf("after %s: managed neighbours %v, want %v", st.name, got, st.want)
			}
		}
		fastPathCarries(t, targets[0])
		fastPathCarries(t, targets[1])
	})

	t.Run("a next hop that changes its MAC is followed", func(t *testing.T) {
		// n2 gets a new MAC (a replaced NIC, the same addresses). All of
		// the connections' packets are redirected, so nothing of the
		// stack's would ever revalidate n1's entries for n2: only the
		// kernel's managed re-probing brings the new MAC in.
		//
		// n2 keeps static entries for n1, as a peer that already knows
		// n1 would: otherwise n2, whose entries the MAC change flushes,
		// asks for n1's MAC and its ARP request or neighbour
		// solicitation tells n1 the new one.
		addrs := map[netip.Addr]string{}
		for _, ip := range []netip.Addr{n2.pod4, n2.pod6} {
			addrs[ip] = listenEcho(t, n2.pod, ip.String())
			if err := roundTrip(n1.pod, addrs[ip]); err != nil {
				t.Fatal(err)
			}
		}
		mac1 := strings.Fields(n1.ns.MustRun(t, "cat", "/sys/class/net/eth0/address"))[0]
		n2.ns.MustRun(t, "ip", "link", "set", "eth0", "address", "02:53:00:00:00:22")
		for _, ip := range []netip.Addr{n1.v4, n1.v6} {
			n2.ns.MustRun(t, "ip", "neigh", "replace", ip.String(), "lladdr", mac1, "dev", "eth0", "nud", "permanent")
			t.Cleanup(func() { n2.ns.MustRun(t, "ip", "neigh", "del", ip.String(), "dev", "eth0") })
		}
		start := time.Now()
		for _, ip := range []netip.Addr{n2.pod4, n2.pod6} {
			for {
				err := roundTripTimeout(n1.pod, addrs[ip], 2*time.Second)
				if err == nil {
					break
				}
				if time.Since(start) > 40*time.Second {
					t.Fatalf("n1 -> n2 (%s) still failing %v after n2's MAC changed: %v\n%s", ip, time.Since(start).Round(time.Second),
						err, n1.ns.MustRun(t, "ip", "neigh", "show", "dev", "eth0"))
				}
			}
			t.Logf("n1 reached n2 (%s) at its new MAC after %v", ip, time.Since(start).Round(100*time.Millisecond))
			hops, err := n1.dp.FastPathNextHops()
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(hops, func(h NextHop) bool { return h.IP == n2.underlay(ipVersion(ip)) })
			if i < 0 || hops[i].MAC.String() != "02:53:00:00:00:22" {
				t.Errorf("n1's next hops after n2's MAC changed: %+v", hops)
			}
			f0 := forwarded(t, n1.ns)
			c0 := counterSum(t, nodes, dirs)
			if err := bulk(n1.pod, addrs[ip], 1<<20); err != nil {
				t.Fatal(err)
			}
			if d := counterSum(t, nodes, dirs).Redirected - c0.Redirected; d < 16 || forwarded(t, n1.ns) != f0 {
				t.Errorf("%s after the MAC change: %d packets redirected, n1 forwarded %d: want the fast path", ip, d, forwarded(t, n1.ns)-f0)
			}
		}
	})

	t.Run("a frame for another MAC stays with the stack", func(t *testing.T) {
		// A UDP datagram to n2's pod, sent from n1's uplink as a raw
		// frame: to a MAC nobody has, the bridge floods it to n2, whose
		// stack would drop it (PACKET_OTHERHOST); to n2's MAC it is
		// redirected into the pod.
		mac2 := n2.ns.MustRun(t, "cat", "/sys/class/net/eth0/address")
		for _, c := range []struct {
			dst        string
			redirected uint64
		}{{"02:53:00:00:00:99", 0}, {mac2, 1}} {
			dst, err := net.ParseMAC(strings.TrimSpace(c.dst))
			if err != nil {
				t.Fatal(err)
			}
			c0 := counterSum(t, []*ovNode{n2}, dirs)
			sendUDPFrame(t, n1, dst, n1.v4, n2.pod4)
			// A veth delivers within microseconds; 500 ms is ample.
			var c1 FastPathCounters
			for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if c1 = counterSum(t, []*ovNode{n2}, dirs); c1.Redirected != c0.Redirected {
					break
				}
			}
			// Other also counts ARP and neighbour discovery, so only
			// the redirects are exact.
			red, other := c1.Redirected-c0.Redirected, c1.Other-c0.Other
			if red != c.redirected || c.redirected == 0 && other == 0 {
				t.Errorf("frame to %s: n2 redirected %d, left to the stack as other %d; want redirected %d", dst, red, other, c.redirected)
			}
		}
	})

	t.Run("flow export is refused while on", func(t *testing.T) {
		if err := n1.dp.EnableFlowTracking(context.Background()); err == nil {
			t.Fatal("EnableFlowTracking succeeded with the fast path on")
		}
	})

	t.Run("outlives its Datapath and is adopted", func(t *testing.T) {
		n1.dp.Close()
		fastPathCarries(t, targets[0])
		dp, err := New(Options{NodeNetns: n1.ns.Path()})
		if err != nil {
			t.Fatal(err)
		}
		outer.Cleanup(dp.Close)
		n1.dp = dp
		if st := mustFastPath(t, dp, fpConfig(dirs[n1])); st.Pods != 2 {
			t.Fatalf("after restart: %+v", st)
		}
		if again := linkIDs(t, dirs[n1]); !mapsEqual(ids, again) {
			t.Fatalf("a restarted Datapath replaced links instead of adopting them: %v -> %v", ids, again)
		}
		fastPathCarries(t, targets[3])
	})

	t.Run("pod deletion", func(t *testing.T) {
		if err := n1.dp.TeardownPod(context.Background(), p1b.HostIface, p1b.Netns, p1b.IfName); err != nil {
			t.Fatal(err)
		}
		st := mustFastPath(t, n1.dp, fpConfig(dirs[n1]))
		if st.Pods != 1 || slices.Contains(st.Devices, p1b.HostIface) {
			t.Fatalf("after deleting a pod: %+v", st)
		}
		if _, err := os.Stat(filepath.Join(dirs[n1], fpLinksDir, fpPinName(p1b.HostIface))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the deleted pod's link is still pinned: %v", err)
		}
	})

	t.Run("disable", func(t *testing.T) {
		for _, n := range nodes {
			if _, err := n.dp.SetFastPath(FastPath{PinDir: dirs[n], Uplinks: fpConfig("").Uplinks}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dirs[n]); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s: pin directory left: %v", n.name, err)
			}
			if got := managedNeighs(t, n); len(got) != 0 {
				t.Fatalf("%s: managed neighbours left on eth0: %v", n.name, got)
			}
		}
		before := forwarded(t, n1.ns)
		podToPod(t, n1, n2)
		if got := forwarded(t, n1.ns) - before; got < 10 {
			t.Fatalf("after disabling, n1 forwarded %d datagrams: the programs are still attached", got)
		}
		// Disabling twice is fine.
		if _, err := n1.dp.SetFastPath(FastPath{PinDir: dirs[n1]}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestFastPathRefusals: a pin directory off bpffs, a relative one, a bad
// pod range and flow export already on are refused with the reason.
func TestFastPathRefusals(t *testing.T) {
	testutil.RequireRoot(t)
	_, dp := newNode(t, false)
	for _, c := range []struct {
		fp   FastPath
		want string
	}{
		{FastPath{Enabled: true, PinDir: t.TempDir()}, "not on a bpffs"},
		{FastPath{Enabled: true, PinDir: "rel/dir"}, "absolute path"},
		{FastPath{Enabled: true, PinDir: testutil.MountBPFFS(t), PodRanges: []netip.Prefix{{}}}, "invalid pod range"},
		{FastPath{Enabled: true, PinDir: testutil.MountBPFFS(t), Uplinks: []string{"nosuch0"}}, "uplink nosuch0"},
	} {
		if _, err := dp.SetFastPath(c.fp); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SetFastPath(%+v) = %v, want an error containing %q", c.fp, err, c.want)
		}
	}
	// A wrong path is refused before anything is created on it.
	wrong := filepath.Join(t.TempDir(), "not", "bpffs")
	if _, err := dp.SetFastPath(FastPath{Enabled: true, PinDir: wrong}); err == nil || !strings.Contains(err.Error(), "not on a bpffs") {
		t.Errorf("SetFastPath on %s = %v, want a refusal naming bpffs", wrong, err)
	}
	if _, err := os.Stat(filepath.Dir(wrong)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused pin directory's parent exists afterwards (stat: %v)", err)
	}
	// Disabling on an ordinary directory must not delete it.
	plain := t.TempDir()
	if _, err := dp.SetFastPath(FastPath{PinDir: plain}); err == nil {
		t.Error("disabling on a directory that is not a bpffs succeeded")
	}
	if _, err := os.Stat(plain); err != nil {
		t.Fatalf("the plain directory is gone: %v", err)
	}
	if err := dp.EnableFlowTracking(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := dp.SetFastPath(FastPath{Enabled: true, PinDir: testutil.MountBPFFS(t)}); err == nil || !strings.Contains(err.Error(), "flow export") {
		t.Errorf("SetFastPath with flow tracking on = %v, want a refusal naming flow export", err)
	}
}

// TestFastPathReplacesOlderPins: maps pinned by an earlier build with
// another layout (here the stop-17 layouts: fp_devs values of 28 bytes, 7
// counters, no fp_vteps) are replaced at the next SetFastPath, as after an
// agent upgrade, and the fast path then carries traffic.
func TestFastPathReplacesOlderPins(t *testing.T) {
	testutil.RequireRoot(t)
	nodes := newOvCluster(t, "n1:1:1", "n3:2:3")
	n1, n3 := nodes[0], nodes[1]
	meshUp(t, nodes, crossSubnet)
	dir := filepath.Join(testutil.MountBPFFS(t), "n1")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []*ebpf.MapSpec{
		{Name: fpMapDevs, Type: ebpf.Hash, KeySize: 4, ValueSize: 28, MaxEntries: 4096, Pinning: ebpf.PinByName},
		{Name: fpMapCounters, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 7, Pinning: ebpf.PinByName},
	} {
		m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: dir})
		if err != nil {
			t.Fatalf("pin an old %s: %v", spec.Name, err)
		}
		_ = m.Close()
	}
	mustFastPath(t, n1.dp, fpConfig(dir))
	for name, want := range map[string][2]uint32{fpMapDevs: {uint32(binary.Size(fpDev{})), 4096}, fpMapCounters: {8, fpCounters}} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := m.Info()
		_ = m.Close()
		if err != nil {
			t.Fatal(err)
		}
		if info.ValueSize != want[0] || info.MaxEntries != want[1] {
			t.Errorf("%s after SetFastPath: value size %d, %d entries; want %d, %d", name, info.ValueSize, info.MaxEntries, want[0], want[1])
		}
	}
	if got, ok := vtepOf(t, dir, string(VTEPMAC(n3.name, 4))); !ok || got != n3.v4 {
		t.Fatalf("n3's VTEP in the new fp_vteps: %v (%v), want %s", got, ok, n3.v4)
	}
	addr := listenEcho(t, n3.pod, n3.pod4.String())
	c0, err := n1.dp.FastPathCounters(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := bulk(n1.pod, addr, 1<<20); err != nil {
		t.Fatal(err)
	}
	c1, err := n1.dp.FastPathCounters(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c1.Encapsulated-c0.Encapsulated < 16 {
		t.Errorf("after replacing the old pins the programs encapsulated %d packets of 1 MiB", c1.Encapsulated-c0.Encapsulated)
	}
}
