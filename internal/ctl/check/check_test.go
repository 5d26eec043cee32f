package check

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func labNodes() []Node {
	return []Node{
		{Name: "n1", Addrs: addrs("10.100.1.11", "fd42:100:1::11"), PodIPs: addrs("10.244.0.5", "fd10:244::5")},
		{Name: "n2", Addrs: addrs("10.100.2.12", "fd42:100:2::12"), PodIPs: addrs("10.244.1.7", "fd10:244:0:1::7")},
		{Name: "n3", Addrs: addrs("10.100.1.13"), PodIPs: addrs("10.244.2.9")},
	}
}

func TestBuildMatrix(t *testing.T) {
	hops := BuildMatrix(labNodes(), addrs("10.100.9.10"))
	count := map[Kind]int{}
	for _, h := range hops {
		count[h.Kind]++
		if family(h.Src) != h.Family || family(h.Dst) != h.Family {
			t.Errorf("hop %+v mixes families", h)
		}
	}
	// pod-to-pod: IPv4 3x3, IPv6 2x2 (n3 has no IPv6 probe address).
	if count[PodToPod] != 9+4 {
		t.Errorf("pod-to-pod hops = %d, want 13", count[PodToPod])
	}
	// pod-to-node: IPv4 3 sources x 3 nodes, IPv6 2 sources x 2 nodes.
	if count[PodToNode] != 9+4 {
		t.Errorf("pod-to-node hops = %d, want 13", count[PodToNode])
	}
	// pod-to-external: only IPv4 sources.
	if count[PodToExternal] != 3 {
		t.Errorf("pod-to-external hops = %d, want 3", count[PodToExternal])
	}
	if hops[0].Kind != PodToPod || hops[0].From != "n1" || hops[0].To != "n1" || hops[0].Family != 4 {
		t.Errorf("first hop %+v, want n1 -> n1 IPv4 pod-to-pod", hops[0])
	}
	if last := hops[len(hops)-1]; last.Kind != PodToExternal || last.From != "n3" {
		t.Errorf("last hop %+v, want n3 pod-to-external", last)
	}
	// A node whose probe did not start is neither source nor pod destination.
	nodes := labNodes()
	nodes[1].PodIPs = nil
	for _, h := range BuildMatrix(nodes, nil) {
		if h.From == "n2" || (h.Kind == PodToPod && h.To == "n2") {
			t.Errorf("hop %+v involves n2's missing probe", h)
		}
	}
}

const n2RoutesV4 = `default via 10.100.2.1 dev eth0
10.100.2.0/24 dev eth0 scope link  src 10.100.2.12
10.244.1.7 dev strt1a2b3c scope link
10.244.2.0/26 via 10.244.2.0 dev strait.vxlan4 proto 83 onlink
blackhole 10.244.3.0/26 proto 83
`

const n2RoutesV6 = `fd10:244::/122 via fd10:244::4 dev strait.vxlan6 proto 83 metric 1024 onlink pref medium
fd10:244:0:1::7 dev strt1a2b3c metric 1024 pref medium
fd42:100:2::/64 dev eth0 proto kernel metric 256 pref medium
default via fd42:100:2::1 dev eth0 metric 1024 pref medium
    nexthop via fd42:100:2::2 dev eth0 weight 1
`

func TestParseRoutes(t *testing.T) {
	routes := ParseRoutes(n2RoutesV4 + n2RoutesV6)
	if len(routes) != 9 {
		t.Fatalf("parsed %d routes, want 9: %+v", len(routes), routes)
	}
	want := []struct {
		dst, via, dev, typ string
	}{
		{"0.0.0.0/0", "10.100.2.1", "eth0", ""},
		{"10.100.2.0/24", "", "eth0", ""},
		{"10.244.1.7/32", "", "strt1a2b3c", ""},
		{"10.244.2.0/26", "10.244.2.0", "strait.vxlan4", ""},
		{"10.244.3.0/26", "", "", "blackhole"},
		{"fd10:244::/122", "fd10:244::4", "strait.vxlan6", ""},
		{"fd10:244:0:1::7/128", "", "strt1a2b3c", ""},
		{"fd42:100:2::/64", "", "eth0", ""},
		{"::/0", "fd42:100:2::1", "eth0", ""},
	}
	for i, w := range want {
		r := routes[i]
		via := ""
		if r.Via.IsValid() {
			via = r.Via.String()
		}
		if r.Dst.String() != w.dst || via != w.via || r.Dev != w.dev || r.Type != w.typ {
			t.Errorf("route %d = %+v, want %+v", i, r, w)
		}
	}
	if r, ok := lookup(routes, netip.MustParseAddr("10.244.2.9")); !ok || r.Dst.String() != "10.244.2.0/26" {
		t.Errorf("lookup 10.244.2.9 = %+v %v", r, ok)
	}
	if r, ok := lookup(routes, netip.MustParseAddr("fd10:244::5")); !ok || r.Dev != "strait.vxlan6" {
		t.Errorf("lookup fd10:244::5 = %+v %v", r, ok)
	}
}

func labEnv() Env {
	blocks := []Block{
		{netip.MustParsePrefix("10.244.0.0/26"), "n1"},
		{netip.MustParsePrefix("fd10:244::/122"), "n1"},
		{netip.MustParsePrefix("10.244.1.0/26"), "n2"},
		{netip.MustParsePrefix("fd10:244:0:1::/122"), "n2"},
		{netip.MustParsePrefix("10.244.2.0/26"), "n3"},
		{netip.MustParsePrefix("10.244.3.0/26"), "n3"},
	}
	n1 := ParseRoutes(`default via 10.100.1.1 dev eth0
10.100.1.0/24 dev eth0 scope link
10.244.0.5 dev strtaaaa scope link
10.244.1.0/26 via 10.244.1.0 dev strait.vxlan4 onlink
10.244.2.0/26 via 10.100.1.13 dev eth0 onlink
fd10:244::5 dev strtaaaa
fd10:244:0:1::/122 via fd10:244:0:1:: dev strait.vxlan6 onlink
default via fd42:100:1::1 dev eth0
`)
	// n2 lost its route to n1's IPv4 block (10.244.0.0/26).
	n2 := ParseRoutes(n2RoutesV4 + n2RoutesV6)
	n3 := ParseRoutes(`default via 10.100.1.1 dev eth0
10.244.0.0/26 via 10.100.1.11 dev eth0 onlink
10.244.1.0/26 via 10.244.1.0 dev strait.vxlan4 onlink
`)
	return Env{Blocks: blocks, Routes: map[string][]Route{"n1": n1, "n2": n2, "n3": n3}, RouteErrors: map[string]string{}}
}

func hop(kind Kind, from, to, src, dst string) Hop {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	return Hop{Kind: kind, From: from, To: to, Family: family(s), Src: s, Dst: d}
}

func TestDiagnose(t *testing.T) {
	e := labEnv()
	for _, tc := range []struct {
		name string
		h    Hop
		want string
	}{
		{"forward route missing", hop(PodToPod, "n2", "n1", "10.244.1.7", "10.244.0.5"),
			"n2 has no route to 10.244.0.0/26 (block of n1)"},
		{"route back missing", hop(PodToPod, "n1", "n2", "10.244.0.5", "10.244.1.7"),
			"n2 has no route to 10.244.0.0/26 (block of n1)"},
		{"node answers to a pod it cannot route to", hop(PodToNode, "n1", "n2", "10.244.0.5", "10.100.2.12"),
			"n2 has no route to 10.244.0.0/26 (block of n1)"},
		{"own pod's host route missing", hop(PodToPod, "n3", "n3", "10.244.2.9", "10.244.2.9"),
			"n3 has no host route to its own pod 10.244.2.9 (block 10.244.2.0/26)"},
		{"blackhole", hop(PodToPod, "n2", "n3", "10.244.1.7", "10.244.3.4"),
			`n2 drops traffic to 10.244.3.4: "blackhole 10.244.3.0/26 proto 83"`},
		{"all routes in place", hop(PodToPod, "n1", "n3", "10.244.0.5", "10.244.2.9"),
			"routes are in place both ways (n1: 10.244.2.0/26 via 10.100.1.13 dev eth0 onlink; n3: 10.244.0.0/26 via 10.100.1.11 dev eth0 onlink): packets are lost between the nodes"},
		{"IPv6 in place", hop(PodToPod, "n1", "n2", "fd10:244::5", "fd10:244:0:1::7"),
			"n2: fd10:244::/122 via fd10:244::4 dev strait.vxlan6"},
		{"external with a route out", hop(PodToExternal, "n1", External, "10.244.0.5", "10.100.9.10"),
			"the route out is in place (n1: default via 10.100.1.1 dev eth0): check NAT outgoing"},
		{"external without a route", hop(PodToExternal, "n3", External, "fd10:244::9", "2001:db8:100::1"),
			"n3 has no route to 2001:db8:100::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Diagnose(tc.h, e); !strings.Contains(got, tc.want) {
				t.Errorf("Diagnose = %q\nwant it to contain %q", got, tc.want)
			}
		})
	}
	e.RouteErrors["n2"] = "pod not running"
	delete(e.Routes, "n2")
	if got := Diagnose(hop(PodToPod, "n2", "n1", "10.244.1.7", "10.244.0.5"), e); got != "could not read the routes of n2: pod not running" {
		t.Errorf("Diagnose without n2's routes = %q", got)
	}
}

func TestParsePing(t *testing.T) {
	for _, tc := range []struct {
		out        string
		sent, recv int
		ok         bool
	}{
		{"--- 10.244.1.7 ping statistics ---\n3 packets transmitted, 3 packets received, 0% packet loss\n", 3, 3, true},
		{"3 packets transmitted, 0 received, 100% packet loss, time 2047ms", 3, 0, true},
		{"OCI runtime exec failed: exec: \"ping\": executable file not found", 0, 0, false},
	} {
		s, r, ok := ParsePing(tc.out)
		if s != tc.sent || r != tc.recv || ok != tc.ok {
			t.Errorf("ParsePing(%q) = %d %d %v", tc.out, s, r, ok)
		}
	}
}

func TestParseFlags(t *testing.T) {
	t.Setenv("KUBECONFIG", "/env/kubeconfig")
	out := "table"
	var stderr bytes.Buffer
	o, err := ParseFlags([]string{"connectivity", "--external", "10.100.9.10, fd42:100:9::10", "-o", "json", "--keep", "--namespace", "x"}, &stderr, &out)
	if err != nil {
		t.Fatal(err)
	}
	if o.Kubeconfig != "/env/kubeconfig" || len(o.External) != 2 || out != "json" || !o.Keep || o.Namespace != "x" || o.Image != DefaultImage {
		t.Errorf("options %+v, output %q", o, out)
	}
	if _, err := ParseFlags([]string{"connectivity", "--external", "10.100.9"}, &stderr, &out); err == nil || !strings.Contains(err.Error(), "--external") {
		t.Errorf("bad --external: %v", err)
	}
	if _, err := ParseFlags([]string{"bandwidth"}, &stderr, &out); err == nil {
		t.Error("check bandwidth accepted")
	}
	if _, err := ParseFlags([]string{"connectivity", "extra"}, &stderr, &out); err == nil {
		t.Error("extra argument accepted")
	}
}

func TestRenderAndErr(t *testing.T) {
	e := labEnv()
	r := &Report{Namespace: "strait-check-x"}
	for _, h := range BuildMatrix(labNodes()[:2], nil) {
		res := Result{Hop: h, OK: true, Sent: 3, Received: 3}
		if h.Family == 4 && h.From != h.To && h.Kind == PodToPod {
			res.OK, res.Received = false, 0
			res.Diagnosis = Diagnose(h, e)
			r.Failed++
		} else {
			r.Passed++
		}
		r.Results = append(r.Results, res)
	}
	var b bytes.Buffer
	if err := Render(&b, r, true); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"KIND", "SOURCE", "FAIL", "pod-to-pod n2 -> n1 10.244.0.5 (IPv4): n2 has no route to 10.244.0.0/26 (block of n1)", "hops: 14 ok, 2 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if err := r.Err(); !errors.Is(err, ErrFailed) {
		t.Errorf("Err = %v", err)
	}
	j, err := json.Marshal(r)
	if err != nil || !strings.Contains(string(j), `"destination":"10.244.0.5"`) || !strings.Contains(string(j), `"diagnosis":"n2 has no route`) {
		t.Errorf("json %s: %v", j, err)
	}
	if err := (&Report{Passed: 3, Results: make([]Result, 3)}).Err(); err != nil {
		t.Errorf("all green: %v", err)
	}
}

// TestSplitMarked: output with the end marker splits into body and exit
// status; output whose end was lost (no marker) is reported incomplete.
func TestSplitMarked(t *testing.T) {
	script := MarkScript("ip route show")
	if !strings.HasSuffix(script, "$?\"") || !strings.HasPrefix(script, "ip route show\n") {
		t.Fatalf("MarkScript: %q", script)
	}
	body, status, ok := SplitMarked("default via 10.0.0.1\n" + endMarker + "2\n")
	if !ok || body != "default via 10.0.0.1\n" || status != "2" {
		t.Fatalf("SplitMarked: %q %q %v", body, status, ok)
	}
	if _, _, ok := SplitMarked("default via 10.0.0.1\n"); ok {
		t.Fatal("output without the marker taken as whole")
	}
}
