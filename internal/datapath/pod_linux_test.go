package datapath

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/strait-net/strait/internal/testutil"
)

func TestPodConnectivityAndIdempotency(t *testing.T) {
	node, dp := newNode(t, true)
	addUplink(t, node)
	ctx := context.Background()
	nsA, a := newPod(t, "10.244.0.5", "fd42:244::5")
	nsB, b := newPod(t, "10.244.0.6", "fd42:244::6")
	linksA := mustSetup(t, dp, a)
	mustSetup(t, dp, b)
	if linksA.HostIface != a.HostIface || linksA.PodIface != "eth0" || linksA.HostMAC.String() != "ee:ee:ee:ee:ee:ee" || len(linksA.PodMAC) != 6 {
		t.Fatalf("unexpected links %+v", linksA)
	}

	targets := map[string]string{
		"A to B v4":    listenEcho(t, nsB, "10.244.0.6"),
		"A to B v6":    listenEcho(t, nsB, "fd42:244::6"),
		"A to node v4": listenEcho(t, node, "10.90.0.2"),
		"A to node v6": listenEcho(t, node, "fd42:90::2"),
	}
	reverse := listenEcho(t, nsA, "fd42:244::5")
	checkAll := func(t *testing.T) {
		for _, name := range slices.Sorted(maps.Keys(targets)) {
			if err := roundTrip(nsA, targets[name]); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		if err := roundTrip(nsB, reverse); err != nil {
			t.Errorf("B to A v6: %v", err)
		}
	}
	t.Run("connectivity", checkAll)

	t.Run("kernel state", func(t *testing.T) {
		// Cross-check with iproute2 rather than only with CheckPod.
		for _, c := range []struct {
			n    *testutil.NS
			args []string
			want string
		}{
			{nsA, []string{"ip", "-4", "route"}, "default via 169.254.1.1 dev eth0"},
			{nsA, []string{"ip", "-4", "route"}, "169.254.1.1 dev eth0 scope link"},
			{nsA, []string{"ip", "-6", "route"}, "default via fe80::1 dev eth0"},
			{nsA, []string{"ip", "-4", "neigh"}, "169.254.1.1 dev eth0 lladdr ee:ee:ee:ee:ee:ee PERMANENT"},
			{nsA, []string{"ip", "-6", "neigh"}, "fe80::1 dev eth0 lladdr ee:ee:ee:ee:ee:ee PERMANENT"},
			{nsA, []string{"ip", "addr", "show", "eth0"}, "inet 10.244.0.5/32 scope global eth0"},
			{nsA, []string{"ip", "addr", "show", "eth0"}, "inet6 fd42:244::5/128 scope global nodad"},
			{node, []string{"ip", "-4", "route"}, "10.244.0.5 dev " + a.HostIface + " scope link"},
			{node, []string{"ip", "-6", "route"}, "fd42:244::5 dev " + a.HostIface},
			{node, []string{"ip", "addr", "show", a.HostIface}, "inet6 fe80::1/64 scope link nodad"},
			{node, []string{"ip", "link", "show", a.HostIface}, "link/ether ee:ee:ee:ee:ee:ee"},
		} {
			if out := c.n.MustRun(t, c.args...); !strings.Contains(out, c.want) {
				t.Errorf("%v: no %q in\n%s", c.args, c.want, out)
			}
		}
	})

	t.Run("no route no connectivity", func(t *testing.T) {
		node.MustRun(t, "ip", "route", "del", "10.244.0.6/32", "dev", b.HostIface)
		if err := roundTripTimeout(nsA, targets["A to B v4"], 300*time.Millisecond); err == nil {
			t.Fatal("A reached B without the host route")
		}
		mustSetup(t, dp, b)
		if err := roundTrip(nsA, targets["A to B v4"]); err != nil {
			t.Fatalf("after repair: %v", err)
		}
	})

	t.Run("setup twice", func(t *testing.T) {
		again := mustSetup(t, dp, a)
		if !reflect.DeepEqual(again, linksA) {
			t.Fatalf("second SetupPod returned %+v, first %+v", again, linksA)
		}
		for _, p := range []Pod{a, b} {
			if err := dp.CheckPod(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		checkAll(t)
	})

	t.Run("teardown twice", func(t *testing.T) {
		for _, p := range []Pod{a, b} {
			for i := 0; i < 2; i++ {
				if err := dp.TeardownPod(ctx, p.HostIface, p.Netns, p.IfName); err != nil {
					t.Fatalf("teardown %d: %v", i+1, err)
				}
			}
			if linkExists(node, p.HostIface) {
				t.Errorf("host veth %s still exists", p.HostIface)
			}
		}
		if r := routes(t, node); strings.Contains(r, "10.244.0.") || strings.Contains(r, "fd42:244::") {
			t.Errorf("host routes left:\n%s", r)
		}
		if names, err := dp.HostIfaces(ctx); err != nil || len(names) != 0 {
			t.Errorf("HostIfaces = %v, %v; want none", names, err)
		}
	})
}

func TestSingleStack(t *testing.T) {
	node, dp := newNode(t, false)
	addUplink(t, node)
	for _, tc := range []struct{ pod, node string }{{"10.244.0.7", "10.90.0.2"}, {"fd42:244::7", "fd42:90::2"}} {
		t.Run(tc.pod, func(t *testing.T) {
			podNS, p := newPod(t, tc.pod)
			mustSetup(t, dp, p)
			if err := dp.CheckPod(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			if err := roundTrip(podNS, listenEcho(t, node, tc.node)); err != nil {
				t.Fatal(err)
			}
			shown := node.MustRun(t, "ip", "-6", "addr", "show", "dev", p.HostIface)
			hasGW6 := strings.Contains(shown, "fe80::1/64")
			if want := strings.Contains(tc.pod, ":"); hasGW6 != want {
				t.Errorf("fe80::1 on host veth: %v, want %v", hasGW6, want)
			}
			// No kernel-generated link-local besides (addrgenmode none):
			// each one made deleting a veth slower on a busy node.
			if n := strings.Count(shown, "inet6 "); n > 1 || (n == 1 && !hasGW6) {
				t.Errorf("host veth has IPv6 addresses besides fe80::1:\n%s", shown)
			}
		})
	}
}

func TestSysctls(t *testing.T) {
	before := rootSysctls(t)
	node, dp := newNode(t, false)
	_, p := newPod(t, "10.244.0.5", "fd42:244::5")
	mustSetup(t, dp, p)
	for path, want := range map[string]string{
		"ipv4/conf/" + p.HostIface + "/forwarding":   "1",
		"ipv4/conf/" + p.HostIface + "/rp_filter":    "1",
		"ipv4/conf/" + p.HostIface + "/proxy_arp":    "1",
		"ipv4/neigh/" + p.HostIface + "/proxy_delay": "0",
		"ipv6/conf/" + p.HostIface + "/forwarding":   "1",
		"ipv6/conf/" + p.HostIface + "/accept_ra":    "0",
		"ipv6/conf/all/forwarding":                   "1",
		"ipv4/ip_forward":                            "1", // traffic entering through the uplink reaches pods
	} {
		got := strings.TrimSpace(node.MustRun(t, "cat", filepath.Join("/proc/sys/net", path)))
		if got != want {
			t.Errorf("node %s = %s, want %s", path, got, want)
		}
	}
	after := rootSysctls(t)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("root namespace sysctl %s changed: %q -> %q", k, v, after[k])
		}
	}
	if len(after) != len(before) {
		t.Errorf("root namespace sysctl count changed: %d -> %d", len(before), len(after))
	}
}

func TestCheckPodDrift(t *testing.T) {
	node, dp := newNode(t, false)
	podNS, p := newPod(t, "10.244.0.5", "fd42:244::5")
	ctx := context.Background()
	mustSetup(t, dp, p)
	if err := dp.CheckPod(ctx, p); err != nil {
		t.Fatalf("healthy pod: %v", err)
	}
	h := p.HostIface
	for _, tc := range []struct {
		name   string
		ns     *testutil.NS
		break_ []string
		want   string
	}{
		{"host route v4", node, []string{"ip", "route", "del", "10.244.0.5/32", "dev", h}, "host route 10.244.0.5/32 dev " + h + " missing"},
		{"host route v6", node, []string{"ip", "-6", "route", "del", "fd42:244::5/128", "dev", h}, "host route fd42:244::5/128 dev " + h + " missing"},
		{"pod address", podNS, []string{"ip", "addr", "del", "fd42:244::5/128", "dev", "eth0"}, "pod eth0: address fd42:244::5/128 missing"},
		{"extra pod address", podNS, []string{"ip", "addr", "add", "10.244.0.99/32", "dev", "eth0"}, "pod eth0: unexpected address 10.244.0.99/32"},
		{"host veth down", node, []string{"ip", "link", "set", h, "down"}, "host veth " + h + " is down"},
		{"pod default route", podNS, []string{"ip", "-6", "route", "del", "default"}, "pod eth0: default route via fe80::1 missing"},
		{"pod neighbour", podNS, []string{"ip", "neigh", "del", "169.254.1.1", "dev", "eth0"}, "pod eth0: permanent neighbour 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee missing"},
		{"host sysctl", node, []string{"sysctl", "-qw", "net.ipv4.conf." + h + ".rp_filter=0"}, "host veth " + h + ": sysctl net.ipv4.conf." + h + ".rp_filter is 0, want 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.ns.MustRun(t, tc.break_...)
			items := driftItems(t, dp.CheckPod(ctx, p))
			if !hasItem(items, tc.want) {
				t.Fatalf("drift %q does not name %q", items, tc.want)
			}
			mustSetup(t, dp, p) // repairs
			if err := dp.CheckPod(ctx, p); err != nil {
				t.Fatalf("after repair: %v", err)
			}
		})
	}
	t.Run("torn down", func(t *testing.T) {
		if err := dp.TeardownPod(ctx, p.HostIface, p.Netns, p.IfName); err != nil {
			t.Fatal(err)
		}
		items := driftItems(t, dp.CheckPod(ctx, p))
		if !hasItem(items, "host veth "+h+" missing") || !hasItem(items, "pod eth0 missing") {
			t.Fatalf("drift %q", items)
		}
	})
}

func TestTeardownNetnsGone(t *testing.T) {
	node, dp := newNode(t, false)
	podNS, p := newPod(t, "10.244.0.5", "fd42:244::5")
	mustSetup(t, dp, p)
	if err := podNS.Delete(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := dp.TeardownPod(context.Background(), p.HostIface, p.Netns, p.IfName); err != nil {
			t.Fatal(err)
		}
	}
	// Deleting the namespace destroys the pair asynchronously; Teardown
	// deleted it already or raced with that.
	testutil.Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
		if linkExists(node, p.HostIface) {
			return fmt.Errorf("host veth %s still exists", p.HostIface)
		}
		return nil
	})
}

func TestTeardownLeftoverPodVeth(t *testing.T) {
	_, dp := newNode(t, false)
	podNS, p := newPod(t, "10.244.0.5")
	podNS.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other")
	if err := dp.TeardownPod(context.Background(), p.HostIface, p.Netns, p.IfName); err != nil {
		t.Fatal(err)
	}
	if linkExists(podNS, "eth0") {
		t.Fatal("pod eth0 still exists")
	}
}

func TestSetupRollback(t *testing.T) {
	node, dp := newNode(t, false)
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, podNS *testutil.NS, p *Pod)
		errHas  string
	}{
		{"ipv6 on mtu below 1280", func(t *testing.T, _ *testutil.NS, p *Pod) { p.MTU = 1000 },
			"add address fe80::1/64 to host veth"},
		{"ipv6 disabled in pod", func(t *testing.T, podNS *testutil.NS, _ *Pod) {
			podNS.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
		}, "add address fd42:244::5/128"},
		{"ifname taken", func(t *testing.T, podNS *testutil.NS, _ *Pod) {
			podNS.MustRun(t, "ip", "link", "add", "eth0", "type", "bridge")
		}, "interface eth0 already exists in the pod netns"},
		{"mtu too large", func(t *testing.T, _ *testutil.NS, p *Pod) { p.MTU = 100000 }, "create veth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			podNS, p := newPod(t, "10.244.0.5", "fd42:244::5")
			tc.prepare(t, podNS, &p)
			_, err := dp.SetupPod(context.Background(), p)
			if err == nil {
				t.Fatal("SetupPod succeeded")
			}
			prefix := "setup pod eth0 in " + p.Netns + ": "
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("error %q: want prefix %q and %q", err, prefix, tc.errHas)
			}
			t.Log(err)
			if linkExists(node, p.HostIface) {
				t.Error("host veth left behind")
			}
			if r := routes(t, node); strings.Contains(r, "10.244.0.") || strings.Contains(r, "fd42:244::") {
				t.Errorf("host routes left:\n%s", r)
			}
			if tc.name != "ifname taken" && linkExists(podNS, "eth0") {
				t.Error("pod eth0 left behind")
			}
		})
	}
	if names, err := dp.HostIfaces(context.Background()); err != nil || len(names) != 0 {
		t.Errorf("HostIfaces = %v, %v; want none", names, err)
	}
}

func TestNetnsNotFound(t *testing.T) {
	_, dp := newNode(t, false)
	name, err := testutil.NewNSName()
	if err != nil {
		t.Fatal(err)
	}
	p := Pod{Netns: "/run/netns/" + name, IfName: "eth0", HostIface: HostIfaceName("test", name, "eth0"),
		Addrs: []netip.Addr{netip.MustParseAddr("10.244.0.5")}}
	ctx := context.Background()
	if _, err := dp.SetupPod(ctx, p); !errors.Is(err, ErrNetnsNotFound) {
		t.Errorf("SetupPod: %v, want ErrNetnsNotFound", err)
	}
	if err := dp.CheckPod(ctx, p); !errors.Is(err, ErrNetnsNotFound) {
		t.Errorf("CheckPod: %v, want ErrNetnsNotFound", err)
	}
	if err := dp.TeardownPod(ctx, p.HostIface, p.Netns, p.IfName); err != nil {
		t.Errorf("TeardownPod: %v", err)
	}
	if names, err := dp.HostIfaces(ctx); err != nil || len(names) != 0 {
		t.Errorf("HostIfaces = %v, %v; want none", names, err)
	}
}

func TestStaleHostVeth(t *testing.T) {
	node, dp := newNode(t, false)
	ctx := context.Background()
	t.Run("peer in node netns", func(t *testing.T) {
		podNS, p := newPod(t, "10.244.0.5")
		node.MustRun(t, "ip", "link", "add", p.HostIface, "type", "veth", "peer", "name", "stalepeer")
		mustSetup(t, dp, p)
		if linkExists(node, "stalepeer") {
			t.Error("stale veth not replaced")
		}
		if err := dp.CheckPod(ctx, p); err != nil {
			t.Fatal(err)
		}
		_ = podNS
	})
	t.Run("peer in another pod", func(t *testing.T) {
		oldNS, old := newPod(t, "10.244.0.6")
		mustSetup(t, dp, old)
		_, p := newPod(t, "10.244.0.7")
		p.HostIface = old.HostIface
		mustSetup(t, dp, p)
		if linkExists(oldNS, "eth0") {
			t.Error("old pod's eth0 survived")
		}
		if err := dp.CheckPod(ctx, p); err != nil {
			t.Fatal(err)
		}
	})
}

func TestConcurrentPods(t *testing.T) {
	_, dp := newNode(t, false)
	ctx := context.Background()
	const n = 8
	pods := make([]Pod, n)
	for i := range pods {
		_, pods[i] = newPod(t, fmt.Sprintf("10.244.0.%d", 10+i), fmt.Sprintf("fd42:244::%x", 10+i))
	}
	parallel := func(f func(p Pod) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, p := range pods {
			wg.Go(func() { errs[i] = f(p) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	parallel(func(p Pod) error { _, err := dp.SetupPod(ctx, p); return err })
	parallel(func(p Pod) error { return dp.CheckPod(ctx, p) })
	if names, err := dp.HostIfaces(ctx); err != nil || len(names) != n {
		t.Fatalf("HostIfaces = %v, %v; want %d", names, err, n)
	}
	parallel(func(p Pod) error { return dp.TeardownPod(ctx, p.HostIface, p.Netns, p.IfName) })
	if names, err := dp.HostIfaces(ctx); err != nil || len(names) != 0 {
		t.Fatalf("HostIfaces = %v, %v; want none", names, err)
	}
}

func TestInvalidPod(t *testing.T) {
	_, dp := newNode(t, false)
	_, good := newPod(t, "10.244.0.5", "fd42:244::5")
	for name, mutate := range map[string]func(*Pod){
		"no addresses":     func(p *Pod) { p.Addrs = nil },
		"two IPv4":         func(p *Pod) { p.Addrs = append(p.Addrs, netip.MustParseAddr("10.244.0.6")) },
		"link-local":       func(p *Pod) { p.Addrs = []netip.Addr{netip.MustParseAddr("169.254.3.3")} },
		"long ifname":      func(p *Pod) { p.IfName = "eth0123456789abc" },
		"empty host iface": func(p *Pod) { p.HostIface = "" },
		"empty netns":      func(p *Pod) { p.Netns = "" },
	} {
		p := good
		mutate(&p)
		if _, err := dp.SetupPod(context.Background(), p); err == nil {
			t.Errorf("%s: SetupPod succeeded", name)
		}
	}
	dp.Close()
	if _, err := dp.SetupPod(context.Background(), good); !errors.Is(err, errClosed) {
		t.Errorf("after Close: %v", err)
	}
}

func BenchmarkSetupTeardown(b *testing.B) {
	_, dp := newNode(b, false)
	_, p := newPod(b, "10.244.0.5", "fd42:244::5")
	ctx := context.Background()
	for b.Loop() {
		if _, err := dp.SetupPod(ctx, p); err != nil {
			b.Fatal(err)
		}
		if err := dp.TeardownPod(ctx, p.HostIface, p.Netns, p.IfName); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAntiSpoofing: a pod sending from another pod's address is dropped by
// the strict reverse path filter of its host veth.
func TestAntiSpoofing(t *testing.T) {
	node, dp := newNode(t, false)
	addUplink(t, node)
	nsA, a := newPod(t, "10.244.0.5")
	_, b := newPod(t, "10.244.0.6")
	mustSetup(t, dp, a)
	mustSetup(t, dp, b)
	target := listenEcho(t, node, "10.90.0.2")
	if err := roundTrip(nsA, target); err != nil {
		t.Fatal(err)
	}
	nsA.MustRun(t, "ip", "addr", "add", "10.244.0.6/32", "dev", "eth0")
	counter := func() string {
		out := node.MustRun(t, "nstat", "-asz", "TcpExtIPReversePathFilter")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "TcpExtIPReversePathFilter" {
				return f[1]
			}
		}
		t.Fatalf("no counter in %q", out)
		return ""
	}
	before := counter()
	err := nsA.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP("10.244.0.6")}}
		c, err := d.Dial("tcp", target)
		if err == nil {
			_ = c.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("spoofed connection succeeded")
	}
	if after := counter(); after == before {
		t.Errorf("IPReversePathFilter counter unchanged (%s): not dropped by rp_filter", before)
	}
}
