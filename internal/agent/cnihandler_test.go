package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/strait-net/strait/internal/cni"
	"github.com/strait-net/strait/internal/datapath"
	"github.com/strait-net/strait/internal/ipam"
)

// fakeDatapath models the kernel at our own semantic seam: a set of wired
// pods keyed by host interface.
type fakeDatapath struct {
	mu       sync.Mutex
	pods     map[string]datapath.Pod
	failNext error
	drift    []string
}

func newFakeDP() *fakeDatapath { return &fakeDatapath{pods: map[string]datapath.Pod{}} }

func (f *fakeDatapath) EnsureHost(context.Context) error { return nil }

func (f *fakeDatapath) SetupPod(_ context.Context, p datapath.Pod) (datapath.PodLinks, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return datapath.PodLinks{}, err
	}
	f.pods[p.HostIface] = p
	return datapath.PodLinks{HostIface: p.HostIface, HostMAC: datapath.HostVethMAC, PodIface: p.IfName, PodMAC: datapath.HostVethMAC}, nil
}

func (f *fakeDatapath) TeardownPod(_ context.Context, host, _, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, host)
	return nil
}

func (f *fakeDatapath) CheckPod(_ context.Context, p datapath.Pod) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.pods[p.HostIface]; !ok {
		return &datapath.DriftError{Items: []string{"host veth " + p.HostIface + " missing"}}
	}
	if len(f.drift) > 0 {
		return &datapath.DriftError{Items: f.drift}
	}
	return nil
}

func (f *fakeDatapath) HostIfaces(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.pods {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

type fixture struct {
	h     *cniHandler
	dp    *fakeDatapath
	store *ipam.MemStore
	alloc *ipam.Allocator
	netns string
}

func newFixture(t *testing.T, pools ...string) *fixture {
	t.Helper()
	var ps []netip.Prefix
	for _, p := range pools {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	store := ipam.NewMemStore()
	alloc, err := ipam.New(store, ps)
	if err != nil {
		t.Fatal(err)
	}
	dp := newFakeDP()
	netns := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(netns, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h := &cniHandler{log: slog.New(slog.DiscardHandler), mtu: 1400, ready: func() error { return nil },
		alloc: func() Allocator { return alloc }, dp: dp}
	return &fixture{h: h, dp: dp, store: store, alloc: alloc, netns: netns}
}

func (f *fixture) att(id string) *cni.Attachment {
	return &cni.Attachment{ContainerID: id, Netns: f.netns, IfName: "eth0", Pod: cni.PodIdentity{Namespace: "ns", Name: "p-" + id},
		Conf: &cni.NetConf{PluginConf: types.PluginConf{Name: "strait", CNIVersion: "1.1.0"}}}
}

func code(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestAddIsIdempotentAndRecordsIdentity(t *testing.T) {
	f := newFixture(t, "10.244.0.0/24", "fd42:244::/64")
	ctx := context.Background()
	r1, err := f.h.Add(ctx, f.att("c1"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := f.h.Add(ctx, f.att("c1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r1.IPs) != 2 || r1.IPs[0].Address.String() != r2.IPs[0].Address.String() {
		t.Fatalf("repeated ADD: %v vs %v", r1.IPs, r2.IPs)
	}
	if r1.IPs[0].Address.String() != "10.244.0.1/32" || r1.IPs[0].Gateway.String() != "169.254.1.1" || r1.IPs[1].Gateway.String() != "fe80::1" {
		t.Fatalf("result addressing: %v", r1.IPs)
	}
	if len(r1.Routes) != 2 || r1.Interfaces[1].Sandbox != f.netns {
		t.Fatalf("result routes/interfaces: %+v", r1)
	}
	al := f.alloc.List()
	if len(al) != 1 || al[0].PodName != "p-c1" || al[0].HostIface != r1.Interfaces[0].Name {
		t.Fatalf("allocation record: %+v", al)
	}
	if f.dp.pods[al[0].HostIface].MTU != 1400 {
		t.Fatal("MTU not passed to the datapath")
	}
}

func TestAddRollsBackOnDatapathFailure(t *testing.T) {
	f := newFixture(t, "10.244.0.0/24")
	f.dp.failNext = errors.New("netlink: file exists")
	_, err := f.h.Add(context.Background(), f.att("c1"))
	if code(err) != types.ErrInternal || !strings.Contains(err.Error(), "file exists") {
		t.Fatalf("ADD error %v", err)
	}
	if n := len(f.alloc.List()); n != 0 {
		t.Fatalf("%d allocations left after failed ADD", n)
	}
	// A failed repeat of an ADD that had succeeded keeps the allocation (the pod is live).
	if _, err := f.h.Add(context.Background(), f.att("c2")); err != nil {
		t.Fatal(err)
	}
	f.dp.failNext = errors.New("transient")
	if _, err := f.h.Add(context.Background(), f.att("c2")); err == nil {
		t.Fatal("expected failure")
	}
	if n := len(f.alloc.List()); n != 1 {
		t.Fatalf("repeated ADD failure released a live allocation: %d left", n)
	}
}

func TestAddErrors(t *testing.T) {
	f := newFixture(t, "10.244.0.0/30") // two usable addresses
	ctx := context.Background()
	a := f.att("c0")
	a.Netns = "/nonexistent/netns"
	if _, err := f.h.Add(ctx, a); code(err) != types.ErrUnknownContainer {
		t.Fatalf("missing netns: %v", err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := f.h.Add(ctx, f.att(fmt.Sprint("c", i))); err != nil {
			t.Fatal(err)
		}
	}
	_, err := f.h.Add(ctx, f.att("c3"))
	if code(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "10.244.0.0/30") {
		t.Fatalf("exhausted pool: %v, want code 11 naming the pool", err)
	}
	f.h.ready = func() error { return errors.New("IPAM store not loaded") }
	if _, err := f.h.Add(ctx, f.att("c4")); code(err) != types.ErrTryAgainLater {
		t.Fatalf("not ready ADD: %v", err)
	}
	if err := f.h.Status(ctx, nil); code(err) != 50 || !strings.Contains(err.Error(), "IPAM store") {
		t.Fatalf("not ready STATUS: %v", err)
	}
}

func TestDelCheckGC(t *testing.T) {
	f := newFixture(t, "10.244.0.0/24", "fd42:244::/64")
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := f.h.Add(ctx, f.att(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.h.Check(ctx, f.att("a"), nil); err != nil {
		t.Fatalf("CHECK healthy: %v", err)
	}
	f.dp.drift = []string{"host route 10.244.0.1/32 dev strtx missing"}
	if err := f.h.Check(ctx, f.att("a"), nil); code(err) != cni.CodeDrift || !strings.Contains(err.Error(), "10.244.0.1/32") {
		t.Fatalf("CHECK drift: %v", err)
	}
	f.dp.drift = nil
	if err := f.h.Check(ctx, f.att("zzz"), nil); code(err) != cni.CodeDrift || !strings.Contains(err.Error(), "IPAM record") {
		t.Fatalf("CHECK without record: %v", err)
	}
	if err := f.h.Del(ctx, f.att("a")); err != nil {
		t.Fatal(err)
	}
	if err := f.h.Del(ctx, f.att("a")); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	// An orphan link (no allocation) and a stale allocation (not valid) are both cleaned by GC.
	f.dp.pods["strt00000000000"] = datapath.Pod{HostIface: "strt00000000000"}
	err := f.h.GC(ctx, f.att("").Conf, []types.GCAttachment{{ContainerID: "b", IfName: "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	al := f.alloc.List()
	if len(al) != 1 || al[0].ContainerID != "b" {
		t.Fatalf("after GC: %+v", al)
	}
	links, _ := f.dp.HostIfaces(ctx)
	if len(links) != 1 || links[0] != al[0].HostIface {
		t.Fatalf("links after GC: %v", links)
	}
}

func TestConcurrentAddsGetUniqueAddresses(t *testing.T) {
	f := newFixture(t, "10.244.0.0/24", "fd42:244::/64")
	var wg sync.WaitGroup
	seen := sync.Map{}
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := f.h.Add(context.Background(), f.att(fmt.Sprint("c", i%60))) // some repeat the same key
			if err != nil {
				errs <- err
				return
			}
			if prev, dup := seen.LoadOrStore(r.IPs[0].Address.String(), i%60); dup && prev != i%60 {
				errs <- fmt.Errorf("address %s given to c%d and c%d", r.IPs[0].Address.String(), prev, i%60)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(f.alloc.List()); n != 60 {
		t.Fatalf("%d allocations, want 60", n)
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{NodeName: "n", IPAMMode: "static"}, "podCIDRs"},
		{Config{NodeName: "n", IPAMMode: "magic"}, "ipamMode"},
		{Config{NodeName: "n", IPAMMode: "blocks", PodCIDRs: []string{"10.0.0.0/24"}}, "podCIDRs"},
		{Config{NodeName: "n", DefaultIPPools: []DefaultPool{{Name: "p", CIDR: "10.0.0.0/99"}}}, "defaultIPPools[0].cidr"},
		{Config{NodeName: "n", PodCIDRs: []string{"10.0.0.1/24"}}, "host bits"},
		{Config{NodeName: "n", PodCIDRs: []string{"10.0.0.0/24", "10.1.0.0/24"}}, "second IPv4"},
		{Config{NodeName: "n", PodCIDRs: []string{"10.0.0.0/24"}, MTU: 100}, "mtu"},
		{Config{NodeName: "n", PodCIDRs: []string{"10.0.0.0/24"}, SocketPath: "rel.sock"}, "socketPath"},
		{Config{NodeName: "n", VXLAN: VXLANConfig{Port: 70000}}, "vxlan.port"},
		{Config{NodeName: "n", VXLAN: VXLANConfig{VNIv6: 1 << 24}}, "vxlan.vniV6"},
		{Config{NodeName: "n", VXLAN: VXLANConfig{VNIv4: -1}}, "vxlan.vniV4"},
		{Config{NodeName: "n", PodCIDRs: []string{"10.0.0.0/24"}, FastPath: FastPathConfig{Enabled: true}}, "fastPath.enabled: needs a cluster mode"},
		{Config{NodeName: "n", IPAMMode: "blocks", FastPath: FastPathConfig{Enabled: true},
			Flows: FlowsConfig{Enabled: true, Collector: "127.0.0.1:4739"}}, "flows.enabled"},
		{Config{NodeName: "n", IPAMMode: "blocks", FastPath: FastPathConfig{PinDir: "bpf/strait"}}, "fastPath.pinDir"},
	} {
		if err := c.cfg.Default(); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: %v, want error naming %q", c.cfg, err, c.field)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "a.yaml")
	_ = os.WriteFile(p, []byte("nodeName: n1\npodCIDRs: [10.244.1.0/24, fd42:244:1::/64]\nmtuu: 1\n"), 0o600)
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "mtuu") {
		t.Fatalf("unknown field accepted: %v", err)
	}
	_ = os.WriteFile(p, []byte("nodeName: n1\npodCIDRs: [10.244.1.0/24, fd42:244:1::/64]\ncni: {confDir: /etc/cni/net.d}\n"), 0o600)
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.Conflist()
	if err != nil || !strings.Contains(string(list), `"portmap"`) || !strings.Contains(string(list), `"socketPath": "/run/strait/cni.sock"`) {
		t.Fatalf("conflist: %s %v", list, err)
	}
}
