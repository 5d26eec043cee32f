package datapath

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/strait-net/strait/internal/testutil"
)

// TestSetNAT: pod -> node -> outside. The outside namespace also holds
// another node's address (10.90.5.3) and an address of a pool without NAT
// (10.244.128.1), and routes the pod pool back to the node.
func TestSetNAT(t *testing.T) {
	node, dp := newNode(t, false)
	outside := testutil.NewNS(t)
	node.MustRun(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", outside.Name)
	for _, c := range [][]string{
		{"ip", "addr", "add", "10.90.5.2/24", "dev", "up0"},
		{"ip", "addr", "add", "fd42:90:5::2/64", "dev", "up0", "nodad"},
		{"sysctl", "-qw", "net.ipv6.conf.up0.accept_dad=0"}, // neighbour discovery waits for DAD
		{"ip", "link", "set", "up0", "up"},
		{"ip", "route", "add", "10.244.128.0/24", "via", "10.90.5.1"},
		{"ip", "route", "add", "fd42:244:0:80::/64", "via", "fd42:90:5::1"},
	} {
		node.MustRun(t, c...)
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", "10.90.5.1/24", "dev", "eth0"},
		{"ip", "addr", "add", "10.90.5.3/24", "dev", "eth0"},
		{"ip", "addr", "add", "fd42:90:5::1/64", "dev", "eth0", "nodad"},
		{"ip", "addr", "add", "fd42:90:5::3/64", "dev", "eth0", "nodad"},
		{"ip", "addr", "add", "10.244.128.1/32", "dev", "lo"},
		{"ip", "addr", "add", "fd42:244:0:80::1/128", "dev", "lo"},
		{"sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "10.244.0.0/24", "via", "10.90.5.2"},
		{"ip", "route", "add", "fd42:244::/64", "via", "fd42:90:5::2"},
	} {
		outside.MustRun(t, c...)
	}
	podNS, pod := newPod(t, "10.244.0.5", "fd42:244::5")
	mustSetup(t, dp, pod)
	ctx := context.Background()

	seen := func(t *testing.T, dst string) string {
		t.Helper()
		got := make(chan string, 1)
		addr := listenRemote(t, outside, netip.MustParseAddr(dst), got)
		if err := roundTrip(podNS, addr); err != nil {
			t.Fatalf("pod -> %s: %v", dst, err)
		}
		return <-got
	}
	type check struct{ dst, want string }
	expect := func(t *testing.T, checks ...check) {
		t.Helper()
		for _, c := range checks {
			if got := seen(t, c.dst); got != c.want {
				t.Errorf("pod -> %s: seen from %s, want %s", c.dst, got, c.want)
			}
		}
	}
	noNAT := []check{{"10.90.5.1", "10.244.0.5"}, {"fd42:90:5::1", "fd42:244::5"}}

	t.Run("without NAT the outside sees the pod", func(t *testing.T) { expect(t, noNAT...) })

	cfg := NATConfig{
		// Overlapping and adjacent prefixes: merged into one interval.
		Masquerade: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/25"), netip.MustParsePrefix("10.244.0.0/24"),
			netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd42:244::/64")},
		AllPools: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/23"), netip.MustParsePrefix("10.244.128.0/24"),
			netip.MustParsePrefix("fd42:244::/64"), netip.MustParsePrefix("fd42:244:0:80::/64")},
		NodeAddrs: []netip.Addr{netip.MustParseAddr("10.90.5.2"), netip.MustParseAddr("10.90.5.3"),
			netip.MustParseAddr("fd42:90:5::2"), netip.MustParseAddr("fd42:90:5::3")},
	}
	if err := dp.SetNAT(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	ruleset := node.MustRun(t, "nft", "list", "table", "inet", NATTable)
	t.Logf("%s", ruleset)
	contains(t, ruleset, true,
		"type nat hook postrouting priority srcnat; policy accept;",
		"ip saddr @masq4 ip daddr != @pools4 ip daddr != @nodes4 counter packets",
		"ip6 saddr @masq6 ip6 daddr != @pools6 ip6 daddr != @nodes6 counter packets",
		"masquerade fully-random",
		"elements = { 10.244.0.0/23 }", "elements = { 10.244.0.0/23, 10.244.128.0/24 }",
		"elements = { 10.90.5.2/31 }", "flags interval")

	t.Run("with NAT", func(t *testing.T) {
		expect(t,
			check{"10.90.5.1", "10.90.5.2"}, check{"fd42:90:5::1", "fd42:90:5::2"}, // masqueraded
			check{"10.244.128.1", "10.244.0.5"}, check{"fd42:244:0:80::1", "fd42:244::5"}, // to a pool
			check{"10.90.5.3", "10.244.0.5"}, check{"fd42:90:5::3", "fd42:244::5"}, // to a node
		)
	})

	t.Run("idempotent", func(t *testing.T) {
		if err := dp.SetNAT(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		again := node.MustRun(t, "nft", "list", "table", "inet", NATTable)
		strip := func(s string) string { // counters differ
			var b strings.Builder
			for _, l := range strings.Split(s, "\n") {
				if i := strings.Index(l, "counter packets"); i >= 0 {
					l = l[:i]
				}
				b.WriteString(l + "\n")
			}
			return b.String()
		}
		if strip(again) != strip(ruleset) {
			t.Errorf("second SetNAT changed the table:\n%s\nwas\n%s", again, ruleset)
		}
		if n := strings.Count(node.MustRun(t, "nft", "list", "tables"), "table inet "+NATTable); n != 1 {
			t.Errorf("%d tables inet %s", n, NATTable)
		}
	})

	t.Run("IPv4 only", func(t *testing.T) {
		v4 := cfg
		v4.Masquerade = cfg.Masquerade[:3]
		if err := dp.SetNAT(ctx, v4); err != nil {
			t.Fatal(err)
		}
		expect(t, check{"10.90.5.1", "10.90.5.2"}, check{"fd42:90:5::1", "fd42:244::5"})
	})

	t.Run("empty config removes the table", func(t *testing.T) {
		for range 2 {
			if err := dp.SetNAT(ctx, NATConfig{}); err != nil {
				t.Fatal(err)
			}
		}
		if out := node.MustRun(t, "nft", "list", "tables"); strings.Contains(out, NATTable) {
			t.Errorf("table left: %s", out)
		}
		expect(t, noNAT...)
	})

	if err := dp.SetNAT(ctx, NATConfig{Masquerade: []netip.Prefix{{}}}); err == nil {
		t.Error("SetNAT accepted an invalid prefix")
	}
}

func TestIntervalElements(t *testing.T) {
	render := func(ps ...string) string {
		var in []netip.Prefix
		for _, p := range ps {
			in = append(in, netip.MustParsePrefix(p))
		}
		var out []string
		for _, e := range intervalElements(in) {
			a, _ := netip.AddrFromSlice(e.Key)
			s := a.String()
			if e.IntervalEnd {
				s = ")" + s
			}
			out = append(out, s)
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		in   []string
		want string
	}{
		{[]string{"10.244.1.0/24", "10.244.0.0/24", "10.244.0.0/25"}, "10.244.0.0 )10.244.2.0"},
		{[]string{"10.90.5.3/32", "10.90.5.2/32", "10.90.5.9/32"}, "10.90.5.2 )10.90.5.4 10.90.5.9 )10.90.5.10"},
		{[]string{"0.0.0.0/0", "10.0.0.0/8"}, "0.0.0.0"},
		{[]string{"255.255.255.255/32", "255.255.255.0/24"}, "255.255.255.0"},
		{[]string{"fd42:244::/56", "fd42:244:0:80::/64"}, "fd42:244:: )fd42:244:0:100::"},
		{nil, ""},
	} {
		if got := render(c.in...); got != c.want {
			t.Errorf("%v: got %q, want %q", c.in, got, c.want)
		}
	}
	if p, ok := normPrefix(netip.MustParsePrefix("::ffff:10.244.0.0/112")); !ok || p.String() != "10.244.0.0/16" {
		t.Errorf("normPrefix(4in6) = %v, %v", p, ok)
	}
}
