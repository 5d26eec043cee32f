package agent

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strait-net/strait/internal/ctl/api"
	"github.com/strait-net/strait/internal/datapath"
)

// fastPathDP is an OverlayDatapath that records SetFastPath calls (the
// other methods are not used here).
type fastPathDP struct {
	OverlayDatapath
	calls chan datapath.FastPath
}

func (f *fastPathDP) SetFastPath(fp datapath.FastPath) (datapath.FastPathStatus, error) {
	f.calls <- fp
	return datapath.FastPathStatus{Devices: []string{"eth0", "strait.vxlan4", "strtaaaaaaaaaaa"}, Pods: 1, NextHops: 2}, nil
}

func (f *fastPathDP) FastPathCounters(string) (datapath.FastPathCounters, error) {
	return datapath.FastPathCounters{Redirected: 100, Encapsulated: 40, NAT: 3, FIB: 1}, nil
}

// straitctl status and /metrics show what the last SetFastPath left and
// the programs' counters.
func TestFastPathStatusAndMetrics(t *testing.T) {
	dp := &fastPathDP{calls: make(chan datapath.FastPath, 1)}
	cc := &clusterController{log: slog.New(slog.DiscardHandler), topo: newTopology(), dp: dp,
		cfg: &Config{IPAMMode: IPAMBlocks, FastPath: FastPathConfig{Enabled: true, PinDir: "/sys/fs/bpf/x"}}}
	if got := cc.fastPathAPI(); got.Error == "" {
		t.Fatalf("before the first apply: %+v, want an error saying so", got)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newFastPathCollector(cc))
	if n, err := promtest.GatherAndCount(reg); err != nil || n != 0 {
		t.Fatalf("metrics before the first apply: %d, %v", n, err)
	}
	if err := cc.applyFastPath(); err != nil {
		t.Fatal(err)
	}
	got := cc.fastPathAPI()
	if got.Devices != 3 || got.Pods != 1 || got.NextHops != 2 || got.Packets["redirected"] != 100 || got.Packets["nat"] != 3 ||
		got.Packets["encapsulated"] != 40 || got.Error != "" {
		t.Fatalf("status: %+v", got)
	}
	want := `
# HELP strait_fastpath_devices Interfaces with the fast path's programs attached.
# TYPE strait_fastpath_devices gauge
strait_fastpath_devices 3
# HELP strait_fastpath_next_hops The fast path's kernel-managed next hops on the uplink, by neighbour state (incomplete or failed: unresolvable).
# TYPE strait_fastpath_next_hops gauge
strait_fastpath_next_hops{state="delay"} 0
strait_fastpath_next_hops{state="failed"} 0
strait_fastpath_next_hops{state="incomplete"} 1
strait_fastpath_next_hops{state="none"} 0
strait_fastpath_next_hops{state="probe"} 0
strait_fastpath_next_hops{state="reachable"} 1
strait_fastpath_next_hops{state="stale"} 1
# HELP strait_fastpath_encapsulated_packets_total Of the redirected packets, those the fast path encapsulated in VXLAN itself and sent out of the uplink.
# TYPE strait_fastpath_encapsulated_packets_total counter
strait_fastpath_encapsulated_packets_total 40
# HELP strait_fastpath_packets_total Packets the eBPF fast path's programs saw, by result: redirected, or left to the stack and why.
# TYPE strait_fastpath_packets_total counter
strait_fastpath_packets_total{result="fib"} 1
strait_fastpath_packets_total{result="local"} 0
strait_fastpath_packets_total{result="nat"} 3
strait_fastpath_packets_total{result="notPod"} 0
strait_fastpath_packets_total{result="other"} 0
strait_fastpath_packets_total{result="redirected"} 100
strait_fastpath_packets_total{result="spoofed"} 0
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func (f *fastPathDP) FastPathNextHops() ([]datapath.NextHop, error) {
	return []datapath.NextHop{
		{Dev: "eth0", IP: netip.MustParseAddr("10.90.1.1"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, State: "reachable"},
		{Dev: "eth0", IP: netip.MustParseAddr("10.90.1.12"), State: "incomplete"},
		{Dev: "eth0", IP: netip.MustParseAddr("10.90.1.13"), State: "stale"},
	}, nil
}

// The next hops name the peers routed through them: a native route's
// gateway, an on-link VTEP; the underlay gateway none.
func TestNextHopsAttribution(t *testing.T) {
	dp := &fastPathDP{}
	hops, _ := dp.FastPathNextHops()
	peers := map[string]datapath.Peer{
		"n2": {Name: "n2", Routes: []datapath.PeerRoute{{Dst: netip.MustParsePrefix("10.244.2.0/26"),
			Gateway: netip.MustParseAddr("10.90.1.12"), Dev: "eth0"}}},
		"n3": {Name: "n3", Routes: []datapath.PeerRoute{{Dst: netip.MustParsePrefix("10.244.3.0/26"), Encap: true,
			Gateway: netip.MustParseAddr("10.244.3.0"), VTEPIP: netip.MustParseAddr("10.90.1.13")}}},
		"n4": {Name: "n4", Routes: []datapath.PeerRoute{{Dst: netip.MustParsePrefix("10.244.4.0/26"), Encap: true,
			Gateway: netip.MustParseAddr("10.244.4.0"), VTEPIP: netip.MustParseAddr("10.90.2.14")}}},
	}
	got := nextHops(hops, peers)
	want := []api.NextHop{
		{Dev: "eth0", IP: "10.90.1.1", MAC: "02:00:00:00:00:01", State: "reachable"},
		{Dev: "eth0", IP: "10.90.1.12", State: "incomplete", Peers: []string{"n2"}},
		{Dev: "eth0", IP: "10.90.1.13", State: "stale", Peers: []string{"n3"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("next hops\n got %+v\nwant %+v", got, want)
	}
}

func TestFastPathConfig(t *testing.T) {
	cc := &clusterController{log: slog.New(slog.DiscardHandler), topo: newTopology(),
		cfg: &Config{IPAMMode: IPAMBlocks, NodeName: "self", FastPath: FastPathConfig{PinDir: "/sys/fs/bpf/strait"}}}
	cc.topo.pools["a"] = poolSettings{CIDR: netip.MustParsePrefix("10.244.0.0/16")}
	cc.topo.pools["b"] = poolSettings{CIDR: netip.MustParsePrefix("fd42:244::/48"), Disabled: true}
	cc.topo.uplink = "eth0"
	cc.topo.self = nodeInfo{Name: "self",
		V4: &vtepInfo{Underlay: netip.MustParseAddr("10.90.1.11"), TunnelAddr: netip.MustParseAddr("10.244.1.0")},
		V6: &vtepInfo{Underlay: netip.MustParseAddr("fd42:90:1::11")}} // no IPv6 block yet: no strait.vxlan6

	// Disabled: the pin directory and the uplinks, to remove an earlier
	// fast path and its managed next hops.
	if got := cc.fastPathConfig(); got.Enabled || got.PinDir != "/sys/fs/bpf/strait" || len(got.PodRanges) != 0 ||
		len(got.Uplinks) != 2 || got.Uplinks[0] != "eth0" {
		t.Fatalf("disabled: %+v, want the pin directory and the uplinks only", got)
	}
	cc.cfg.FastPath.Enabled = true
	got := cc.fastPathConfig()
	// A disabled pool's addresses still belong to pods (allocated before).
	if len(got.PodRanges) != 2 {
		t.Errorf("pod ranges %v, want both pools", got.PodRanges)
	}
	if want := []string{"eth0", datapath.VTEPDevice4}; len(got.Uplinks) != 2 || got.Uplinks[0] != want[0] || got.Uplinks[1] != want[1] {
		t.Errorf("uplinks %v, want %v", got.Uplinks, want)
	}
}

// A pod wired or removed through CNI reaches the fast path without waiting
// for the resync.
func TestFastPathFollowsCNI(t *testing.T) {
	dp := &fastPathDP{calls: make(chan datapath.FastPath, 4)}
	cc := &clusterController{log: slog.New(slog.DiscardHandler), topo: newTopology(), dp: dp,
		wake: make(chan struct{}, 1), fastWake: make(chan struct{}, 1), dirty: map[string]bool{},
		cfg: &Config{IPAMMode: IPAMBlocks, ResyncPeriod: Duration{time.Hour}, FastPath: FastPathConfig{Enabled: true, PinDir: "/sys/fs/bpf/x"}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cc.loop(ctx)

	f := newFixture(t, "10.244.0.0/24")
	f.h.podsChanged = cc.kickFastPath
	expectCall := func(what string) {
		t.Helper()
		select {
		case fp := <-dp.calls:
			if !fp.Enabled {
				t.Fatalf("%s: SetFastPath(%+v), want it enabled", what, fp)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the fast path was not applied", what)
		}
	}
	if _, err := f.h.Add(ctx, f.att("c1")); err != nil {
		t.Fatal(err)
	}
	expectCall("after ADD")
	if err := f.h.Del(ctx, f.att("c1")); err != nil {
		t.Fatal(err)
	}
	expectCall("after DEL")
}
