package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/ctl/api"
)

func testNow() time.Time { return time.Date(2026, 1, 2, 5, 4, 5, 0, time.UTC) }

func fixtureStatus() api.Status {
	return api.Status{Node: "n1", Ready: true, IPAMMode: "blocks", PodMTU: 1450, Uplink: "eth0",
		Pools: []api.Pool{{CIDR: "10.244.1.0/26", IPPool: "default-v4", Capacity: 62, InUse: 2}, {CIDR: "fd00:244:1::/122", IPPool: "default-v6", Capacity: 63, InUse: 2}},
		VTEPs: []api.VTEP{{Family: 4, Device: "strait.vxlan4", VNI: 4096, Underlay: "192.168.1.1", Subnet: "192.168.1.0/24",
			MAC: "6a:36:e5:40:c0:22", TunnelAddr: "10.244.1.0"}},
		Peers: 2,
		Skipped: []api.Skipped{
			{Block: "10.244.4.0/26", Node: "n4", Reason: "remote node has not published its VTEP for the block's family"},
		}}
}

func fixtureRoutes() api.Routes {
	return api.Routes{
		Overlay: []api.OverlayEntry{
			{Kind: "route", Peer: "n2", Blocks: []string{"10.244.2.0/26"}, Dev: "strait.vxlan4", Dst: "10.244.2.0/26", IP: "10.244.2.0", Onlink: true},
			{Kind: "neigh", Peer: "n2", Blocks: []string{"10.244.2.0/26"}, Dev: "strait.vxlan4", IP: "10.244.2.0", MAC: "aa:bb:cc:dd:ee:02"},
			{Kind: "fdb", Peer: "n2", Blocks: []string{"10.244.2.0/26"}, Dev: "strait.vxlan4", IP: "192.168.2.1", MAC: "aa:bb:cc:dd:ee:02"},
			{Kind: "route", Peer: "n3", Blocks: []string{"10.244.3.0/26"}, Dev: "eth0", Dst: "10.244.3.0/26", IP: "192.168.1.3"},
		},
		Pods: []api.PodRoute{
			{Dst: "10.244.1.1/32", Dev: "stc2", PodNamespace: "web", PodName: "b", ContainerID: "c2"},
			{Dst: "fd00:244:1::1/128", Dev: "stc2", PodNamespace: "web", PodName: "b", ContainerID: "c2"},
		},
		Skipped: []api.Skipped{{Block: "10.244.9.0/26", Node: "gone", Reason: "node unknown (deleted, or not yet seen)"}},
	}
}

func fixtureIPAM() api.IPAM {
	return api.IPAM{Mode: "blocks",
		Pools: []api.Pool{{CIDR: "10.244.1.0/26", IPPool: "default-v4", Capacity: 62, InUse: 1}},
		Allocations: []api.Allocation{{PodNamespace: "web", PodName: "b", Network: "strait", ContainerID: "0123456789abcdef", IfName: "eth0",
			HostIface: "st0123", Addrs: []string{"10.244.1.1", "fd00:244:1::1"}, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}},
	}
}

// serveUnix serves canned API answers on a unix socket, as the agent does.
func serveUnix(t *testing.T, h http.Handler) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return sock
}

func fakeAgent(t *testing.T) string {
	mux := http.NewServeMux()
	for path, v := range map[string]any{api.PathStatus: fixtureStatus(), api.PathRoutes: fixtureRoutes(), api.PathIPAM: fixtureIPAM()} {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		})
	}
	return serveUnix(t, mux)
}

func run(t *testing.T, sock, cmd, output string) string {
	t.Helper()
	var out bytes.Buffer
	if err := Run(context.Background(), Options{Socket: sock, Command: cmd, Output: output, Timeout: 5 * time.Second,
		Now: testNow}, &out); err != nil {
		t.Fatalf("%s -o %s: %v", cmd, output, err)
	}
	return out.String()
}

func expect(t *testing.T, what, got, want string) {
	t.Helper()
	want = strings.TrimPrefix(want, "\n")
	if got != want {
		t.Fatalf("%s:\n--- got ---\n%s--- want ---\n%s", what, got, want)
	}
}

func TestStatusTable(t *testing.T) {
	sock := fakeAgent(t)
	expect(t, "status", run(t, sock, "status", OutputTable), `
Node:                  n1
Ready:                 yes
IPAM mode:             blocks
Pod MTU:               1450
Uplink:                eth0
Peers:                 2
Routes not installed:  1

POOL              IPPOOL      IN USE  CAPACITY  USE
10.244.1.0/26     default-v4  2       62        3%
fd00:244:1::/122  default-v6  2       63        3%

FAMILY  DEVICE         UNDERLAY     MAC                TUNNEL ADDR
IPv4    strait.vxlan4  192.168.1.1  6a:36:e5:40:c0:22  10.244.1.0

Routes not installed:
BLOCK          NODE  REASON
10.244.4.0/26  n4    remote node has not published its VTEP for the block's family
`)
	wide := run(t, sock, "status", OutputWide)
	if !strings.Contains(wide, "TUNNEL ADDR  VNI   SUBNET\n") || !strings.Contains(wide, "10.244.1.0   4096  192.168.1.0/24\n") {
		t.Fatalf("status -o wide lacks VNI/SUBNET:\n%s", wide)
	}
}

func TestStatusNotReady(t *testing.T) {
	var out bytes.Buffer
	s := api.Status{Node: "n1", IPAMMode: "static", NotReadyReason: "IPAM store not loaded: timeout"}
	if err := renderStatus(&out, &s, false); err != nil {
		t.Fatal(err)
	}
	expect(t, "not ready", out.String(), `
Node:                  n1
Ready:                 no: IPAM store not loaded: timeout
IPAM mode:             static
Pod MTU:               unknown
Peers:                 0
Routes not installed:  0

No pools (yet).
`)
}

func TestRoutesTableAndWide(t *testing.T) {
	sock := fakeAgent(t)
	expect(t, "routes", run(t, sock, "routes", OutputTable), `
Overlay (kernel):
KIND   PEER  TARGET             NEXT HOP           DEV            BLOCKS
route  n2    10.244.2.0/26      10.244.2.0         strait.vxlan4  10.244.2.0/26
neigh  n2    10.244.2.0         aa:bb:cc:dd:ee:02  strait.vxlan4  10.244.2.0/26
fdb    n2    aa:bb:cc:dd:ee:02  192.168.2.1        strait.vxlan4  10.244.2.0/26
route  n3    10.244.3.0/26      192.168.1.3        eth0           10.244.3.0/26

Pod routes:
DESTINATION        DEV   POD
10.244.1.1/32      stc2  web/b
fd00:244:1::1/128  stc2  web/b

Routes not installed:
BLOCK          NODE  REASON
10.244.9.0/26  gone  node unknown (deleted, or not yet seen)
`)
	wide := run(t, sock, "routes", OutputWide)
	for _, want := range []string{
		"KIND   PEER  TARGET             NEXT HOP           DEV            BLOCKS         FLAGS\n",
		"route  n2    10.244.2.0/26      10.244.2.0         strait.vxlan4  10.244.2.0/26  onlink\n",
		"DESTINATION        DEV   POD    CONTAINER\n",
	} {
		if !strings.Contains(wide, want) {
			t.Fatalf("routes -o wide lacks %q:\n%s", want, wide)
		}
	}
}

func TestRoutesOverlayError(t *testing.T) {
	var out bytes.Buffer
	r := api.Routes{OverlayError: "netlink: operation not permitted"}
	if err := renderRoutes(&out, &r, false); err != nil {
		t.Fatal(err)
	}
	expect(t, "overlay error", out.String(), `
Overlay (kernel):
  cannot read the kernel state: netlink: operation not permitted

Pod routes:
  none
`)
}

// With the fast path on, routes also lists its managed next hops.
func TestRoutesNextHops(t *testing.T) {
	var out bytes.Buffer
	r := api.Routes{NextHops: []api.NextHop{
		{Dev: "eth0", IP: "10.90.1.1", MAC: "aa:bb:cc:dd:ee:01", State: "reachable"},
		{Dev: "eth0", IP: "10.90.1.12", MAC: "aa:bb:cc:dd:ee:12", State: "stale", Peers: []string{"n2"}},
		{Dev: "eth0", IP: "10.90.1.13", State: "incomplete", Peers: []string{"n3", "n4"}},
	}}
	if err := renderRoutes(&out, &r, false); err != nil {
		t.Fatal(err)
	}
	expect(t, "next hops", out.String(), `
Overlay (kernel):
  none

eBPF fast path next hops (kernel-managed neighbours):
ADDRESS     MAC                STATE       DEV   PEERS
10.90.1.1   aa:bb:cc:dd:ee:01  reachable   eth0  -
10.90.1.12  aa:bb:cc:dd:ee:12  stale       eth0  n2
10.90.1.13  -                  incomplete  eth0  n3,n4

Pod routes:
  none
`)
	out.Reset()
	r = api.Routes{NextHopsError: "netlink: operation not permitted"}
	if err := renderRoutes(&out, &r, false); err != nil {
		t.Fatal(err)
	}
	if want := "eBPF fast path next hops (kernel-managed neighbours):\n  cannot read them: netlink: operation not permitted\n"; !strings.Contains(out.String(), want) {
		t.Fatalf("routes with a next-hop error:\n%s\nwant %q", out.String(), want)
	}
}

func TestIPAMTableAndWide(t *testing.T) {
	sock := fakeAgent(t)
	expect(t, "ipam", run(t, sock, "ipam", OutputTable), `
IPAM mode: blocks

POOL           IPPOOL      IN USE  CAPACITY  USE
10.244.1.0/26  default-v4  1       62        2%

NAMESPACE  POD  ADDRESSES                 HOST IFACE  AGE  CONTAINER
web        b    10.244.1.1,fd00:244:1::1  st0123      2h   0123456789ab

1 allocation
`)
	expect(t, "ipam wide", run(t, sock, "ipam", OutputWide), `
IPAM mode: blocks

POOL           IPPOOL      IN USE  CAPACITY  USE
10.244.1.0/26  default-v4  1       62        2%

NAMESPACE  POD  ADDRESSES                 HOST IFACE  AGE  CONTAINER         IFNAME  NETWORK  CREATED
web        b    10.244.1.1,fd00:244:1::1  st0123      2h   0123456789abcdef  eth0    strait   2026-01-02T03:04:05Z

1 allocation
`)
}

func TestJSONAndYAMLPrintTheAPIObjects(t *testing.T) {
	sock := fakeAgent(t)
	var got api.Routes
	if err := json.Unmarshal([]byte(run(t, sock, "routes", OutputJSON)), &got); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(fixtureRoutes())
	if g, _ := json.Marshal(got); string(g) != string(want) {
		t.Fatalf("json round trip:\n got %s\nwant %s", g, want)
	}
	y := run(t, sock, "ipam", OutputYAML)
	for _, line := range []string{"mode: blocks\n", "  cidr: 10.244.1.0/26\n", "  podName: b\n", "  created: \"2026-01-02T03:04:05Z\"\n", "  - fd00:244:1::1\n"} {
		if !strings.Contains(y, line) {
			t.Fatalf("yaml lacks %q:\n%s", line, y)
		}
	}
}

func TestUnreachableAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "missing.sock")
	err := Run(context.Background(), Options{Socket: sock, Command: "status", Output: OutputTable, Timeout: time.Second}, &bytes.Buffer{})
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("want UnreachableError, got %v", err)
	}
	if want := "cannot reach the strait agent at " + sock + " (is it running? are you root?)"; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q does not start with %q", err, want)
	}
}

func TestAgentErrorIsShown(t *testing.T) {
	sock := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(api.Error{Error: "no such API endpoint: GET /api/v1/ipam"})
	}))
	err := Run(context.Background(), Options{Socket: sock, Command: "ipam", Output: OutputJSON, Timeout: time.Second}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "404 Not Found: no such API endpoint: GET /api/v1/ipam (is the agent older than straitctl?)") {
		t.Fatalf("error: %v", err)
	}
}

func TestParseArgs(t *testing.T) {
	o, err := ParseArgs([]string{"--socket", "/tmp/x.sock", "routes", "-o", "wide"}, &bytes.Buffer{})
	if err != nil || o.Socket != "/tmp/x.sock" || o.Command != "routes" || o.Output != OutputWide {
		t.Fatalf("parse: %+v %v", o, err)
	}
	o, err = ParseArgs([]string{"ipam"}, &bytes.Buffer{})
	if err != nil || o.Socket != DefaultSocket || o.Output != OutputTable {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	for _, args := range [][]string{{}, {"frobnicate"}, {"status", "-o", "xml"}, {"status", "extra"}, {"--bogus", "status"}} {
		if _, err := ParseArgs(args, &bytes.Buffer{}); !errors.Is(err, ErrUsage) {
			t.Fatalf("%q: want a usage error, got %v", args, err)
		}
	}
}

func TestStatusFastPath(t *testing.T) {
	for _, c := range []struct {
		fp   api.FastPath
		want string
	}{
		{api.FastPath{Devices: 5, Pods: 2, NextHops: 3, Packets: map[string]uint64{"redirected": 1200, "encapsulated": 500, "nat": 30, "notPod": 7}},
			"eBPF fast path:        on, 5 devices (2 pods), 3 next hops kept resolved; packets redirected 1200 (encapsulated here 500), left to the stack: local 0, nat 30, spoofed 0, notPod 7, fib 0, other 0\n"},
		{api.FastPath{Error: "not applied yet"}, "eBPF fast path:        on, state unknown: not applied yet\n"},
	} {
		var out bytes.Buffer
		s := api.Status{Node: "n1", IPAMMode: "blocks", Ready: true, FastPath: &c.fp}
		if err := renderStatus(&out, &s, false); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("status with %+v:\n%s\nwant a line %q", c.fp, out.String(), c.want)
		}
	}
}
