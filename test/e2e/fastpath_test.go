package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/ctl/api"
	"github.com/strait-net/strait/internal/lab/images"
)

// fastPathPackets reads every node's eBPF fast path counters through
// `straitctl status -o json` on that node's socket, and checks that the
// fast path is active there with its next hops kept resolved.
func (e *labEnv) fastPathPackets(t *testing.T, nodes ...string) map[string]map[string]uint64 {
	t.Helper()
	out := map[string]map[string]uint64{}
	for _, n := range nodes {
		sock := filepath.Join(e.dir, "nodes", n, "strait", "cni.sock")
		b, err := exec.Command(filepath.Join(filepath.Dir(e.bin), "straitctl"), "--socket", sock, "status", "-o", "json").Output()
		if err != nil {
			t.Fatalf("straitctl status on %s: %v", n, err)
		}
		var st api.Status
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("straitctl status -o json on %s: %v\n%s", n, err, b)
		}
		if st.FastPath == nil || st.FastPath.Error != "" || st.FastPath.Pods == 0 {
			t.Fatalf("node %s: fast path not active: %+v", n, st.FastPath)
		}
		// Every node has other nodes' VTEPs behind its uplink, so at
		// least one managed next hop (docs/fast-path.md).
		if st.FastPath.NextHops == 0 {
			t.Fatalf("node %s: fast path keeps no next hop resolved: %+v", n, st.FastPath)
		}
		// straitctl routes lists them from the kernel.
		b, err = exec.Command(filepath.Join(filepath.Dir(e.bin), "straitctl"), "--socket", sock, "routes", "-o", "json").Output()
		if err != nil {
			t.Fatalf("straitctl routes on %s: %v", n, err)
		}
		var rt api.Routes
		if err := json.Unmarshal(b, &rt); err != nil {
			t.Fatalf("straitctl routes -o json on %s: %v\n%s", n, err, b)
		}
		if len(rt.NextHops) == 0 || rt.NextHopsError != "" || rt.NextHops[0].Dev == "" || rt.NextHops[0].State == "" {
			t.Fatalf("node %s: straitctl routes lists next hops %+v (error %q), want the managed entries", n, rt.NextHops, rt.NextHopsError)
		}
		out[n] = st.FastPath.Packets
	}
	return out
}

// fastPathDelta is after - before per node and result (every result the
// agent reports), rendered for a log.
func fastPathDelta(before, after map[string]map[string]uint64) (map[string]map[string]uint64, string) {
	d := map[string]map[string]uint64{}
	var s strings.Builder
	for _, n := range slices.Sorted(maps.Keys(after)) {
		a := after[n]
		d[n] = map[string]uint64{}
		fmt.Fprintf(&s, "%s:", n)
		for _, k := range slices.Sorted(maps.Keys(a)) {
			d[n][k] = a[k] - before[n][k]
			fmt.Fprintf(&s, " %s=%d", k, d[n][k])
		}
		s.WriteString("\n")
	}
	return d, s.String()
}

// fastPathTransfers runs on a lab brought up with --fast-path: 8 MiB over
// HTTP from a server pod on n1 and one on n2 to a client pod on n1, in
// every family of the lab. Each transfer must arrive whole and be carried
// by the eBPF fast path: at least 64 redirected packets on every node it
// crosses (8 MiB is at least 128 packets of 64 KiB; the stack's path
// redirects none), and over IPv4 from n2 at least 64 encapsulated by n2's
// programs.
func fastPathTransfers(t *testing.T, e *labEnv, families int) {
	t.Helper()
	const size = 8 << 20
	server := fmt.Sprintf("mkdir -p /tmp/www && head -c %d /dev/zero > /tmp/www/big && exec httpd -f -p 8080 -h /tmp/www", size)
	pods := map[string]string{"fp-srv-n1": "n1", "fp-srv-n2": "n2", "fp-cli-n1": "n1"}
	for p, n := range pods {
		cmd := []string{"sleep", "3600"}
		if strings.HasPrefix(p, "fp-srv") {
			cmd = []string{"sh", "-c", server}
		}
		e.mustKubectl(append([]string{"run", p, "--image=" + images.ToolsImage, "--restart=Never",
			"--overrides", `{"spec":{"nodeName":"` + n + `"}}`, "--"}, cmd...)...)
	}
	t.Cleanup(func() { _, _ = e.kubectl("delete", "pod", "fp-srv-n1", "fp-srv-n2", "fp-cli-n1", "--wait=false") })
	e.mustKubectl("wait", "--for=condition=Ready", "pod/fp-srv-n1", "pod/fp-srv-n2", "pod/fp-cli-n1", "--timeout=90s")
	for _, srv := range []string{"fp-srv-n1", "fp-srv-n2"} {
		ips := strings.Fields(e.mustKubectl("get", "pod", srv, "-o", "jsonpath={.status.podIPs[*].ip}"))
		if len(ips) != families {
			t.Fatalf("pod %s has addresses %v, want %d", srv, ips, families)
		}
		nodes := []string{"n1"}
		if pods[srv] != "n1" {
			nodes = append(nodes, pods[srv])
		}
		for _, ip := range ips {
			url := "http://" + net.JoinHostPort(ip, "8080") + "/big"
			// httpd may still be writing its file: wait until it serves.
			var got string
			var err error
			for try := 0; try < 20; try++ {
				if got, err = e.podRead("fp-cli-n1", "curl -gsf -o /dev/null -w '%{size_download}' "+url); err == nil {
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("%s: %v", url, err)
			}
			before := e.fastPathPackets(t, nodes...)
			if got, err = e.podRead("fp-cli-n1", "curl -gsf -o /dev/null -w '%{size_download}' "+url); err != nil || strings.TrimSpace(got) != strconv.Itoa(size) {
				t.Fatalf("%s from fp-cli-n1: got %q bytes, %v; want %d", url, got, err, size)
			}
			d, s := fastPathDelta(before, e.fastPathPackets(t, nodes...))
			t.Logf("fast path during 8 MiB %s -> fp-cli-n1 (%s):\n%s", srv, ip, s)
			for _, n := range nodes {
				if d[n]["redirected"] < 64 {
					t.Errorf("%s -> fp-cli-n1 (%s): node %s redirected %d packets, want >= 64:\n%s", srv, ip, n, d[n]["redirected"], s)
				}
			}
			// The lab's pools are in VXLAN mode: n2's programs
			// encapsulate the IPv4 data themselves (IPv6 goes
			// through strait.vxlan6).
			if n := pods[srv]; n != "n1" && !strings.Contains(ip, ":") && d[n]["encapsulated"] < 64 {
				t.Errorf("%s -> fp-cli-n1 (%s): node %s encapsulated %d packets, want >= 64:\n%s", srv, ip, n, d[n]["encapsulated"], s)
			}
		}
	}
}
