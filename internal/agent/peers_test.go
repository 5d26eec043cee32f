package agent

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/datapath"
)

var update = flag.Bool("update", false, "rewrite golden files")

func vtep(ip, subnet, mac, tunnel string) *vtepInfo {
	v := &vtepInfo{Underlay: netip.MustParseAddr(ip), Subnet: netip.MustParsePrefix(subnet)}
	if mac != "" {
		v.MAC, _ = net.ParseMAC(mac)
	}
	if tunnel != "" {
		v.TunnelAddr = netip.MustParseAddr(tunnel)
	}
	return v
}

func render(peers map[string]datapath.Peer, skips []skipped) string {
	var b strings.Builder
	names := make([]string, 0, len(peers))
	for n := range peers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, r := range peers[n].Routes {
			if r.Encap {
				fmt.Fprintf(&b, "%s: %s via %s dev vxlan onlink; neigh %s lladdr %s; fdb %s dst %s\n", n, r.Dst, r.Gateway, r.Gateway, r.VTEPMAC, r.VTEPMAC, r.VTEPIP)
			} else {
				fmt.Fprintf(&b, "%s: %s via %s dev %s\n", n, r.Dst, r.Gateway, r.Dev)
			}
		}
	}
	sort.Slice(skips, func(i, j int) bool { return skips[i].Block.String() < skips[j].Block.String() })
	for _, s := range skips {
		fmt.Fprintf(&b, "skip %s (%s): %s\n", s.Block, s.Node, s.Reason)
	}
	return b.String()
}

// The desired-state function rendered as text for a sequence of cluster
// states (golden file testdata/peers.golden; -update rewrites it).
func TestDesiredPeersGolden(t *testing.T) {
	self := nodeInfo{Name: "n1",
		V4: vtep("10.100.1.11", "10.100.1.0/24", "0e:00:00:00:01:04", "10.244.1.0"),
		V6: vtep("fd42:100:1::b", "fd42:100:1::/64", "0e:00:00:00:01:06", "fd42:244::100")}
	nodes := map[string]nodeInfo{
		"n1": self,
		"n2": {Name: "n2", V4: vtep("10.100.2.12", "10.100.2.0/24", "0e:00:00:00:02:04", "10.244.2.0"),
			V6: vtep("fd42:100:2::c", "fd42:100:2::/64", "0e:00:00:00:02:06", "fd42:244::200")},
		"n3": {Name: "n3", V4: vtep("10.100.1.13", "10.100.1.0/24", "0e:00:00:00:03:04", "10.244.3.0")},
		"n4": {Name: "n4"}, // registered, VTEP not yet published
	}
	blocks := func(enc string) []blockInfo {
		return []blockInfo{
			{netip.MustParsePrefix("10.244.1.0/26"), "n1", enc},
			{netip.MustParsePrefix("10.244.2.0/26"), "n2", enc},
			{netip.MustParsePrefix("10.244.2.64/26"), "n2", enc},
			{netip.MustParsePrefix("fd42:244::200/122"), "n2", enc},
			{netip.MustParsePrefix("10.244.3.0/26"), "n3", enc},
			{netip.MustParsePrefix("fd42:244::300/122"), "n3", enc}, // n3 has no IPv6
			{netip.MustParsePrefix("10.244.4.0/26"), "n4", enc},
			{netip.MustParsePrefix("10.244.5.0/26"), "gone", enc},
		}
	}
	var out strings.Builder
	for _, bgpNative := range []bool{false, true} {
		for _, enc := range []string{EncapVXLAN, EncapVXLANCrossSubnet, EncapNone} {
			if bgpNative {
				fmt.Fprintf(&out, "== %s, BGP on\n", enc)
			} else {
				fmt.Fprintf(&out, "== %s\n", enc)
			}
			out.WriteString(render(desiredPeers(self, "eth0", nodes, blocks(enc), bgpNative)))
		}
	}
	golden := filepath.Join("testdata", "peers.golden")
	if *update {
		_ = os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if out.String() != string(want) {
		t.Fatalf("desired peers differ from %s:\n--- got\n%s--- want\n%s", golden, out.String(), want)
	}
}

func TestNodeFromObject(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", Annotations: map[string]string{
		v1alpha1.AnnotationVTEPv4:       `{"ip":"10.100.2.12","mac":"0e:00:00:00:02:04","tunnelAddr":"10.244.2.0"}`,
		v1alpha1.AnnotationNodeSubnetV4: "10.100.2.0/24",
		v1alpha1.AnnotationVTEPv6:       `{"ip":"not an address"}`,
	}}}
	info := nodeFromObject(n, slog.New(slog.DiscardHandler))
	if info.V4 == nil || info.V4.Underlay.String() != "10.100.2.12" || info.V4.Subnet.String() != "10.100.2.0/24" ||
		info.V4.TunnelAddr.String() != "10.244.2.0" || info.V4.MAC.String() != "0e:00:00:00:02:04" {
		t.Fatalf("v4: %+v", info.V4)
	}
	if info.V6 != nil {
		t.Fatalf("a bad v6 annotation was accepted: %+v", info.V6)
	}
}
