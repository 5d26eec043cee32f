package datapath

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/strait-net/strait/internal/testutil"
	"golang.org/x/sys/unix"
)

// bpffsDir mounts a private bpffs for one test (unmounted at cleanup, which
// drops every pin in it).
func bpffsDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func fpConfig(dir string) FastPath {
	ranges := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd42:244::/48")}
	return FastPath{Enabled: true, PinDir: dir, PodRanges: ranges,
		Uplinks: []string{"eth0", VTEPDevice4, VTEPDevice6}}
}

func mustFastPath(t *testing.T, dp *Datapath, fp FastPath) FastPathStatus {
	t.Helper()
	st, err := dp.SetFastPath(fp)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// forwarded reads the node's forwarded datagrams (IPv4 + IPv6) from inside
// its namespace.
func forwarded(t *testing.T, n *testutil.NS) uint64 {
	t.Helper()
	var total uint64
	snmp := strings.Split(n.MustRun(t, "cat", "/proc/net/snmp"), "\n")
	for i := 0; i+1 < len(snmp); i++ {
		if !strings.HasPrefix(snmp[i], "Ip: ") || !strings.HasPrefix(snmp[i+1], "Ip: ") {
			continue
		}
		names, vals := strings.Fields(snmp[i]), strings.Fields(snmp[i+1])
		if j := slices.Index(names, "ForwDatagrams"); j > 0 && j < len(vals) {
			v, _ := strconv.ParseUint(vals[j], 10, 64)
			total += v
		}
		break
	}
	for _, line := range strings.Split(n.MustRun(t, "cat", "/proc/net/snmp6"), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "Ip6OutForwDatagrams" {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			total += v
		}
	}
	return total
}

// bulk sends n bytes from pod ns to addr over TCP and waits for the echo.
func bulk(n ns.NetNS, addr string, size int) error {
	return n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		errc := make(chan error, 1)
		go func() {
			_, err := io.CopyN(io.Discard, c, int64(size))
			errc <- err
		}()
		buf := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf[:min(len(buf), size-sent)]); err != nil {
				return err
			}
		}
		return <-errc
	})
}

func linkIDs(t *testing.T, dir string) map[string]link.ID {
	t.Helper()
	ids := map[string]link.ID{}
	entries, err := os.ReadDir(filepath.Join(dir, fpLinksDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(dir, fpLinksDir, e.Name()), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		_ = l.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids[e.Name()] = info.ID
	}
	return ids
}

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

	outer := t
	fs := bpffsDir(t)
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
	}
	targets := []target{
		{"native n1 -> n2", n1.pod, n2.pod, []netip.Addr{n2.pod4, n2.pod6}},
		{"VXLAN n1 -> n3", n1.pod, n3.pod, []netip.Addr{n3.pod4, n3.pod6}},
		{"VXLAN n3 -> n1", n3.pod, n1.pod, []netip.Addr{n1.pod4, n1.pod6}},
		{"same node n1 -> n1", n1.pod, pod1b, []netip.Addr{netip.MustParseAddr("10.244.1.6"), netip.MustParseAddr("fd42:244:0:1::6")}},
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
			const size = 4 << 20
			if err := bulk(tg.from, addr, size); err != nil {
				t.Fatalf("%s (%s): %d bytes: %v", tg.name, ip, size, err)
			}
			c1 := counterSum(t, nodes, dirs)
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
			if _, err := n.dp.SetFastPath(FastPath{PinDir: dirs[n]}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dirs[n]); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s: pin directory left: %v", n.name, err)
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

func counterSum(t *testing.T, nodes []*ovNode, dirs map[*ovNode]string) FastPathCounters {
	t.Helper()
	var s FastPathCounters
	for _, n := range nodes {
		c, err := n.dp.FastPathCounters(dirs[n])
		if err != nil {
			t.Fatal(err)
		}
		s.Redirected += c.Redirected
		s.NAT += c.NAT
		s.Spoofed += c.Spoofed
		s.NotPod += c.NotPod
		s.FIB += c.FIB
		s.Other += c.Other
		s.Local += c.Local
	}
	return s
}

func mapsEqual[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
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
		{FastPath{Enabled: true, PinDir: bpffsDir(t), PodRanges: []netip.Prefix{{}}}, "invalid pod range"},
		{FastPath{Enabled: true, PinDir: bpffsDir(t), Uplinks: []string{"nosuch0"}}, "uplink nosuch0"},
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
	if _, err := dp.SetFastPath(FastPath{Enabled: true, PinDir: bpffsDir(t)}); err == nil || !strings.Contains(err.Error(), "flow export") {
		t.Errorf("SetFastPath with flow tracking on = %v, want a refusal naming flow export", err)
	}
}
