package datapath

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

// TestEnableFlowTracking: two pods on a node talk through it; conntrack in
// the node's namespace tracks nothing until EnableFlowTracking, then tracks
// the connection with byte counters; SetNAT keeps the chain.
func TestEnableFlowTracking(t *testing.T) {
	node, dp := newNode(t, false)
	ctx := context.Background()
	nsA, podA := newPod(t, "10.244.0.5", "fd10:244::5")
	nsB, podB := newPod(t, "10.244.0.6", "fd10:244::6")
	mustSetup(t, dp, podA)
	mustSetup(t, dp, podB)
	echo := listenEcho(t, nsB, "10.244.0.6")
	tracked := func(t *testing.T) string {
		t.Helper()
		out, err := node.Run("conntrack", "-L", "-o", "extended", "-p", "tcp", "--orig-dst", "10.244.0.6")
		if err != nil && !strings.Contains(out, "0 flow entries") {
			t.Fatalf("conntrack -L: %v: %s", err, out)
		}
		return out
	}

	if err := roundTrip(nsA, echo); err != nil {
		t.Fatal(err)
	}
	if out := tracked(t); strings.Contains(out, "10.244.0.5") {
		t.Fatalf("tracked before EnableFlowTracking (the test cannot show the rule matters):\n%s", out)
	}

	for range 2 {
		if err := dp.EnableFlowTracking(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ruleset := node.MustRun(t, "nft", "list", "table", "inet", NATTable)
	t.Logf("%s", ruleset)
	contains(t, ruleset, true, "chain "+FlowTrackChain+" {", "type filter hook prerouting priority filter; policy accept;")
	if n := strings.Count(ruleset, "ct state new counter"); n != 1 {
		t.Errorf("%d flow tracking rules after two calls, want 1", n)
	}
	for _, s := range []string{"net.netfilter.nf_conntrack_acct", "net.netfilter.nf_conntrack_timestamp", "net.netfilter.nf_conntrack_events"} {
		if v := strings.TrimSpace(node.MustRun(t, "sysctl", "-n", s)); v != "1" {
			t.Errorf("%s = %s in the node, want 1", s, v)
		}
	}

	if err := roundTrip(nsA, echo); err != nil {
		t.Fatal(err)
	}
	out := tracked(t)
	t.Logf("%s", out)
	if !strings.Contains(out, "src=10.244.0.5 dst=10.244.0.6") || !strings.Contains(out, "bytes=") {
		t.Errorf("connection not tracked with counters:\n%s", out)
	}

	cfg := NATConfig{Masquerade: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, AllPools: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	if err := dp.SetNAT(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	ruleset = node.MustRun(t, "nft", "list", "table", "inet", NATTable)
	contains(t, ruleset, true, "ct state new counter", "masquerade fully-random")
	if err := dp.SetNAT(ctx, NATConfig{}); err != nil {
		t.Fatal(err)
	}
	ruleset = node.MustRun(t, "nft", "list", "table", "inet", NATTable)
	contains(t, ruleset, true, "ct state new counter")
	contains(t, ruleset, false, "masquerade")
}
