package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/ctl"
	"github.com/strait-net/strait/internal/ctl/api"
	"github.com/strait-net/strait/internal/datapath"
	"github.com/strait-net/strait/internal/ipam"
)

// fakeOverlayDP is the pod fake plus the overlay state the Linux datapath
// reports.
type fakeOverlayDP struct {
	*fakeDatapath
	entries []datapath.ManagedEntry
	err     error
}

func (f *fakeOverlayDP) OverlayState(context.Context) ([]datapath.ManagedEntry, error) {
	return f.entries, f.err
}

func serve(t *testing.T, a *Agent, path string, v any) int {
	t.Helper()
	mux := http.NewServeMux()
	a.registerAPI(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: content type %q", path, ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: decode: %v", path, err)
	}
	return resp.StatusCode
}

// clusterAgent builds a ready blocks-mode agent on node n1 with two pods,
// a VXLAN peer n2, a native peer n3 and two routes that cannot be installed.
func clusterAgent(t *testing.T) (*Agent, *fakeOverlayDP) {
	t.Helper()
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	alloc, err := ipam.New(ipam.NewMemStore(), []netip.Prefix{netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("fd00:244:1::/122")},
		ipam.WithClock(func() time.Time { return clock }))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ ns, name, id string }{{"web", "b", "c2"}, {"default", "a", "c1"}} {
		key := ipam.Key{Network: "strait", ContainerID: p.id, IfName: "eth0"}
		if _, _, err := alloc.Allocate(ipam.Owner{Key: key, PodNamespace: p.ns, PodName: p.name, HostIface: "st" + p.id}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &Config{NodeName: "n1", IPAMMode: IPAMBlocks}
	cfg.VXLAN.VNIv4 = 4096
	topo := newTopology()
	mac1 := datapath.VTEPMAC("n1", 4)
	mac2 := datapath.VTEPMAC("n2", 4)
	topo.self = nodeInfo{Name: "n1", V4: &vtepInfo{Underlay: netip.MustParseAddr("192.168.1.1"), Subnet: netip.MustParsePrefix("192.168.1.0/24"),
		MAC: mac1, TunnelAddr: netip.MustParseAddr("10.244.1.0")}}
	topo.uplink = "eth0"
	topo.nodes["n1"] = topo.self
	topo.nodes["n2"] = nodeInfo{Name: "n2", V4: &vtepInfo{Underlay: netip.MustParseAddr("192.168.2.1"), Subnet: netip.MustParsePrefix("192.168.2.0/24"),
		MAC: mac2, TunnelAddr: netip.MustParseAddr("10.244.2.0")}}
	topo.nodes["n3"] = nodeInfo{Name: "n3", V4: &vtepInfo{Underlay: netip.MustParseAddr("192.168.1.3"), Subnet: netip.MustParsePrefix("192.168.1.0/24")}}
	topo.nodes["n4"] = nodeInfo{Name: "n4"} // has not published its VTEP
	for name, b := range map[string]struct{ cidr, node string }{
		"b1": {"10.244.1.0/26", "n1"}, "b1v6": {"fd00:244:1::/122", "n1"}, "b2": {"10.244.2.0/26", "n2"},
		"b2b": {"10.244.2.64/26", "n2"}, "b3": {"10.244.3.0/26", "n3"}, "b4": {"10.244.4.0/26", "n4"}, "b9": {"10.244.9.0/26", "gone"},
	} {
		topo.blocks[name] = blockInfo{CIDR: netip.MustParsePrefix(b.cidr), Node: b.node}
		topo.bpool[name] = "default-v4"
	}
	topo.bpool["b1v6"] = "default-v6"
	topo.pools["default-v4"] = poolSettings{CIDR: netip.MustParsePrefix("10.244.0.0/16"), Encapsulation: EncapVXLANCrossSubnet}
	cc := &clusterController{log: slog.New(slog.DiscardHandler), cfg: cfg, alloc: alloc, topo: topo, podMTU: 1450}
	dp := &fakeOverlayDP{fakeDatapath: newFakeDP(), entries: []datapath.ManagedEntry{
		{Kind: datapath.EntryRoute, Peer: "n3", Dev: "eth0", Dst: netip.MustParsePrefix("10.244.3.0/26"), IP: netip.MustParseAddr("192.168.1.3")},
		{Kind: datapath.EntryFDB, Peer: "n2", Dev: "strait.vxlan4", MAC: mac2, IP: netip.MustParseAddr("192.168.2.1")},
		{Kind: datapath.EntryRoute, Peer: "n2", Dev: "strait.vxlan4", Dst: netip.MustParsePrefix("10.244.2.64/26"), IP: netip.MustParseAddr("10.244.2.0"), Onlink: true},
		{Kind: datapath.EntryNeigh, Peer: "n2", Dev: "strait.vxlan4", MAC: mac2, IP: netip.MustParseAddr("10.244.2.0")},
		{Kind: datapath.EntryRoute, Peer: "n2", Dev: "strait.vxlan4", Dst: netip.MustParsePrefix("10.244.2.0/26"), IP: netip.MustParseAddr("10.244.2.0"), Onlink: true},
		{Kind: datapath.EntryRoute, Peer: datapath.UnknownPeer, Dev: "strait.vxlan4", Dst: netip.MustParsePrefix("10.244.7.0/26"), IP: netip.MustParseAddr("10.244.7.0"), Onlink: true},
	}}
	a := &Agent{cfg: cfg, log: slog.New(slog.DiscardHandler), ipamAlloc: alloc, cluster: cc, dp: dp}
	return a, dp
}

func TestAPIStatus(t *testing.T) {
	a, _ := clusterAgent(t)
	var s api.Status
	if code := serve(t, a, api.PathStatus, &s); code != http.StatusOK {
		t.Fatalf("code %d", code)
	}
	want := api.Status{Node: "n1", Ready: true, IPAMMode: IPAMBlocks, PodMTU: 1450, Uplink: "eth0",
		Pools: []api.Pool{{CIDR: "10.244.1.0/26", IPPool: "default-v4", Capacity: 62, InUse: 2}, {CIDR: "fd00:244:1::/122", IPPool: "default-v6", Capacity: 63, InUse: 2}},
		VTEPs: []api.VTEP{{Family: 4, Device: "strait.vxlan4", VNI: 4096, Underlay: "192.168.1.1", Subnet: "192.168.1.0/24",
			MAC: datapath.VTEPMAC("n1", 4).String(), TunnelAddr: "10.244.1.0"}},
		Peers: 2,
		Skipped: []api.Skipped{
			{Block: "10.244.4.0/26", Node: "n4", Reason: "remote node has not published its VTEP for the block's family"},
			{Block: "10.244.9.0/26", Node: "gone", Reason: "node unknown (deleted, or not yet seen)"},
		}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("status\n got %+v\nwant %+v", s, want)
	}
}

func TestAPIStatusNotReadyStatic(t *testing.T) {
	a := &Agent{cfg: &Config{NodeName: "n1", IPAMMode: IPAMStatic, MTU: 1500}, notReady: errors.New("IPAM store not loaded: busy")}
	var s api.Status
	serve(t, a, api.PathStatus, &s)
	if s.Ready || s.NotReadyReason != "IPAM store not loaded: busy" || s.PodMTU != 1500 || len(s.Pools) != 0 || s.Skipped == nil || s.VTEPs == nil {
		t.Fatalf("not-ready status: %+v", s)
	}
	var r api.Routes
	serve(t, a, api.PathRoutes, &r)
	if r.Overlay == nil || r.Pods == nil || len(r.Pods) != 0 || r.OverlayError != "" {
		t.Fatalf("routes before ready: %+v", r)
	}
}

func TestAPIRoutes(t *testing.T) {
	a, _ := clusterAgent(t)
	var r api.Routes
	if code := serve(t, a, api.PathRoutes, &r); code != http.StatusOK {
		t.Fatalf("code %d", code)
	}
	mac2 := datapath.VTEPMAC("n2", 4).String()
	wantOverlay := []api.OverlayEntry{
		{Kind: "route", Peer: "n2", Blocks: []string{"10.244.2.0/26"}, Dev: "strait.vxlan4", Dst: "10.244.2.0/26", IP: "10.244.2.0", Onlink: true},
		{Kind: "route", Peer: "n2", Blocks: []string{"10.244.2.64/26"}, Dev: "strait.vxlan4", Dst: "10.244.2.64/26", IP: "10.244.2.0", Onlink: true},
		{Kind: "neigh", Peer: "n2", Blocks: []string{"10.244.2.0/26", "10.244.2.64/26"}, Dev: "strait.vxlan4", IP: "10.244.2.0", MAC: mac2},
		{Kind: "fdb", Peer: "n2", Blocks: []string{"10.244.2.0/26", "10.244.2.64/26"}, Dev: "strait.vxlan4", IP: "192.168.2.1", MAC: mac2},
		{Kind: "route", Peer: "n3", Blocks: []string{"10.244.3.0/26"}, Dev: "eth0", Dst: "10.244.3.0/26", IP: "192.168.1.3"},
		{Kind: "route", Peer: "unknown", Blocks: []string{"10.244.7.0/26"}, Dev: "strait.vxlan4", Dst: "10.244.7.0/26", IP: "10.244.7.0", Onlink: true},
	}
	if !reflect.DeepEqual(r.Overlay, wantOverlay) {
		t.Fatalf("overlay\n got %+v\nwant %+v", r.Overlay, wantOverlay)
	}
	wantPods := []api.PodRoute{
		{Dst: "10.244.1.1/32", Dev: "stc2", PodNamespace: "web", PodName: "b", ContainerID: "c2"},
		{Dst: "10.244.1.2/32", Dev: "stc1", PodNamespace: "default", PodName: "a", ContainerID: "c1"},
		{Dst: "fd00:244:1::1/128", Dev: "stc2", PodNamespace: "web", PodName: "b", ContainerID: "c2"},
		{Dst: "fd00:244:1::2/128", Dev: "stc1", PodNamespace: "default", PodName: "a", ContainerID: "c1"},
	}
	if !reflect.DeepEqual(r.Pods, wantPods) {
		t.Fatalf("pods\n got %+v\nwant %+v", r.Pods, wantPods)
	}
	if len(r.Skipped) != 2 || r.Skipped[0].Node != "n4" || r.Skipped[1].Block != "10.244.9.0/26" || r.OverlayError != "" {
		t.Fatalf("skipped: %+v (%q)", r.Skipped, r.OverlayError)
	}
}

func TestAPIRoutesOverlayError(t *testing.T) {
	a, dp := clusterAgent(t)
	dp.entries, dp.err = nil, errors.New("netlink: operation not permitted")
	var r api.Routes
	if code := serve(t, a, api.PathRoutes, &r); code != http.StatusOK {
		t.Fatalf("code %d", code)
	}
	if r.OverlayError != "netlink: operation not permitted" || len(r.Overlay) != 0 || len(r.Pods) != 4 || len(r.Skipped) != 2 {
		t.Fatalf("routes with a failing datapath: %+v", r)
	}
}

func TestAPIIPAM(t *testing.T) {
	a, _ := clusterAgent(t)
	var m api.IPAM
	if code := serve(t, a, api.PathIPAM, &m); code != http.StatusOK {
		t.Fatalf("code %d", code)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := api.IPAM{Mode: IPAMBlocks,
		Pools: []api.Pool{{CIDR: "10.244.1.0/26", IPPool: "default-v4", Capacity: 62, InUse: 2}, {CIDR: "fd00:244:1::/122", IPPool: "default-v6", Capacity: 63, InUse: 2}},
		Allocations: []api.Allocation{
			{PodNamespace: "default", PodName: "a", Network: "strait", ContainerID: "c1", IfName: "eth0", HostIface: "stc1", Addrs: []string{"10.244.1.2", "fd00:244:1::2"}, Created: created},
			{PodNamespace: "web", PodName: "b", Network: "strait", ContainerID: "c2", IfName: "eth0", HostIface: "stc2", Addrs: []string{"10.244.1.1", "fd00:244:1::1"}, Created: created},
		}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("ipam\n got %+v\nwant %+v", m, want)
	}
}

func TestAPIUnknownPathAndMethod(t *testing.T) {
	a, _ := clusterAgent(t)
	var e api.Error
	if code := serve(t, a, "/api/v1/nope", &e); code != http.StatusNotFound || e.Error == "" {
		t.Fatalf("unknown path: %d %+v", code, e)
	}
	mux := http.NewServeMux()
	a.registerAPI(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, api.PathStatus, nil))
	if rec.Code == http.StatusOK {
		t.Fatalf("POST status answered 200")
	}
}

// TestStraitctlReadsTheAgent runs straitctl against the real handlers on a
// unix socket: the wire types and the rendering agree end to end.
func TestStraitctlReadsTheAgent(t *testing.T) {
	a, _ := clusterAgent(t)
	dir, err := os.MkdirTemp("", "api")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s.sock")
	ln, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.registerAPI(mux)
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	var out strings.Builder
	if err := ctl.Run(context.Background(), ctl.Options{Socket: sock, Command: "routes", Output: ctl.OutputTable, Timeout: 5 * time.Second}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"neigh  n2       10.244.2.0         " + datapath.VTEPMAC("n2", 4).String() + "  strait.vxlan4  10.244.2.0/26,10.244.2.64/26\n",
		"10.244.1.2/32      stc1  default/a\n",
		"10.244.9.0/26  gone  node unknown (deleted, or not yet seen)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("straitctl routes lacks %q:\n%s", want, out.String())
		}
	}
}
