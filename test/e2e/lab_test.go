// Package e2e is the end-to-end tier: it drives the built strait-lab binary
// as a user would (up, kubectl, status, e2e, down) and checks that down
// leaves nothing behind. One lab bring-up serves each group of checks.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/lab"
	"github.com/strait-net/strait/internal/lab/images"
	"github.com/strait-net/strait/internal/lab/k8sbin"
	"github.com/strait-net/strait/internal/testutil"
)

var bins testutil.Binaries

func TestMain(m *testing.M) {
	defer bins.Cleanup()
	testutil.Main(m)
}

// labEnv runs strait-lab with its own folder and namespace prefix (owned by
// this test process, so an interrupted run is swept like any test netns).
type labEnv struct {
	t      *testing.T
	bin    string
	dir    string
	prefix string
	k8s    string
}

func newLabEnv(t *testing.T) *labEnv {
	t.Helper()
	testutil.RequireRoot(t)
	if testing.Short() {
		t.Skip("end-to-end lab tests are not short")
	}
	for _, tool := range []string{"containerd", "runc", "ctr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("end-to-end lab needs %s (make deps)", tool)
		}
	}
	dir, err := bins.Dir()
	if err != nil {
		t.Fatal(err)
	}
	root := repoRoot(t)
	k8s, err := k8sbin.Ensure(context.Background(), k8sbin.Options{RepoRoot: root, Out: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	e := &labEnv{t: t, bin: filepath.Join(dir, "strait-lab"), dir: t.TempDir(), prefix: testutil.OwnedPrefix() + "l-", k8s: k8s}
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpLogs()
		}
		_, _ = e.run("down")
	})
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func repoRoot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func (e *labEnv) command(args ...string) *exec.Cmd {
	cmd := exec.Command(e.bin, append([]string{"--dir", e.dir, "--prefix", e.prefix}, args...)...)
	cmd.Dir = repoRoot(e.t)
	return cmd
}

func (e *labEnv) run(args ...string) (string, error) {
	out, err := e.command(args...).CombinedOutput()
	return string(out), err
}

func (e *labEnv) mustRun(args ...string) string {
	e.t.Helper()
	out, err := e.run(args...)
	if err != nil {
		e.t.Fatalf("strait-lab %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *labEnv) kubectl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(e.k8s, "kubectl"), append([]string{"--kubeconfig", filepath.Join(e.dir, "kubeconfig"), "--request-timeout=20s"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *labEnv) mustKubectl(args ...string) string {
	e.t.Helper()
	out, err := e.kubectl(args...)
	if err != nil {
		e.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *labEnv) dumpLogs() {
	entries, _ := os.ReadDir(filepath.Join(e.dir, "logs"))
	for _, en := range entries {
		if en.IsDir() {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(e.dir, "logs", en.Name()))
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 25 {
			lines = lines[len(lines)-25:]
		}
		e.t.Logf("=== tail of %s\n%s", en.Name(), strings.Join(lines, "\n"))
	}
}

// state is the part of the lab's state file the checks read.
type state struct {
	Processes []struct {
		Name string
		PID  int
	}
	Cluster struct {
		Cgroups   []string `json:"cgroups"`
		HostPaths []string `json:"createdHostPaths"`
	} `json:"cluster"`
	Router *struct {
		Dir string `json:"dir"`
	} `json:"router"`
}

func (e *labEnv) state() state {
	var s state
	data, err := os.ReadFile(filepath.Join(e.dir, "state.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		e.t.Fatal(err)
	}
	return s
}

// assertNothingLeft checks what down must remove: the lab's namespaces, its
// processes, mounts under the lab folder, cgroups, and host paths up created.
func (e *labEnv) assertNothingLeft(before state) {
	e.t.Helper()
	entries, _ := os.ReadDir("/run/netns")
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), e.prefix) {
			e.t.Errorf("namespace %s left after down", en.Name())
		}
	}
	for _, p := range before.Processes {
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID)); err == nil && len(cmd) > 0 {
			if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID)); !strings.Contains(string(stat), ") Z ") {
				e.t.Errorf("process %s (pid %d) still runs after down", p.Name, p.PID)
			}
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], e.dir) {
			e.t.Errorf("mount %s left after down", fields[4])
		}
	}
	for _, cg := range before.Cluster.Cgroups {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", cg)); err == nil {
			e.t.Errorf("cgroup %s left after down", cg)
		}
	}
	for _, p := range before.Cluster.HostPaths {
		if _, err := os.Stat(p); err == nil {
			e.t.Errorf("host path %s, created by up, left after down", p)
		}
	}
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	if strings.Contains(string(links), e.prefix) || strings.Contains(string(links), "strt") {
		e.t.Errorf("links in the root namespace after down:\n%s", links)
	}
}

// A 3-node lab: every node Ready, a pod on every node gets addresses from
// Strait and runs, kubectl exec and logs work, status is healthy and names
// a broken agent; down removes everything and a second down is a no-op.
func TestLabThreeNodes(t *testing.T) {
	e := newLabEnv(t)
	start := time.Now()
	e.mustRun("up", "--nodes", "3", "--flows")
	t.Logf("3-node lab up in %v", time.Since(start).Round(time.Second))

	nodes := e.mustKubectl("get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
	for _, n := range []string{"n1", "n2", "n3"} {
		if !strings.Contains(nodes, n+"=True") {
			t.Fatalf("node %s not Ready: %s", n, nodes)
		}
	}
	for i, n := range []string{"n1", "n2", "n3"} {
		e.mustKubectl("run", "p-"+n, "--image=strait.local/lab/tools:v1", "--restart=Never",
			fmt.Sprintf(`--overrides={"spec":{"nodeName":%q}}`, n), "--", "sh", "-c", fmt.Sprintf("echo started-%d; sleep 3600", i))
	}
	podIPs := map[string][]string{}
	for i, n := range []string{"n1", "n2", "n3"} {
		e.mustKubectl("wait", "--for=condition=Ready", "pod/p-"+n, "--timeout=90s")
		ips := strings.Fields(e.mustKubectl("get", "pod", "p-"+n, "-o", "jsonpath={.status.podIPs[*].ip}"))
		if len(ips) != 2 {
			t.Fatalf("pod on %s has IPs %v, want one IPv4 and one IPv6", n, ips)
		}
		podIPs[n] = ips
		// Each address lies in a block this node claimed through the API.
		blocks := e.mustKubectl("get", "ipamblocks", "-o", `jsonpath={range .items[*]}{.spec.node} {.spec.cidr}{"\n"}{end}`)
		for _, ip := range ips {
			if !inNodeBlock(blocks, n, ip) {
				t.Fatalf("pod on %s has %s, not in a block of %s:\n%s", n, ip, n, blocks)
			}
		}
		// exec: the pod's own interface carries the address kubelet reports.
		addr := e.mustPodRead("p-"+n, "ip -o addr show eth0")
		if !strings.Contains(addr, ips[0]+"/32") {
			t.Fatalf("pod %s eth0:\n%s\nwant %s/32", n, addr, ips[0])
		}
		if logs := e.mustKubectl("logs", "p-"+n); !strings.Contains(logs, fmt.Sprintf("started-%d", i)) {
			t.Fatalf("kubectl logs p-%s: %q", n, logs)
		}
	}

	// Cross-node pod to pod, both families: n1 and n3 share subnet a (native
	// routes in VXLANCrossSubnet), n2 is in subnet b (VXLAN). The VXLAN
	// device's counters on n1 must move for n2 only.
	vxlanTX := func() int {
		// /proc/net/dev follows the reader's network namespace (/sys does not).
		out := e.mustRun("exec", "n1", "--", "cat", "/proc/net/dev")
		for _, line := range strings.Split(out, "\n") {
			name, counters, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok || name != "strait.vxlan4" {
				continue
			}
			f := strings.Fields(counters)
			if len(f) < 10 {
				break
			}
			v, err := strconv.Atoi(f[9]) // transmit packets
			if err != nil {
				t.Fatalf("vxlan counter in %q: %v", line, err)
			}
			return v
		}
		t.Fatalf("no strait.vxlan4 in n1's /proc/net/dev:\n%s", out)
		return 0
	}
	ping := func(to string) {
		t.Helper()
		if out, err := e.podRead("p-n1", "ping -c 5 -i 0.2 -W 2 "+to); err != nil || !strings.Contains(out, " 0% packet loss") {
			t.Fatalf("p-n1 -> %s: %v\n%s", to, err, out)
		}
	}
	before := vxlanTX()
	ping(podIPs["n3"][0])
	ping(podIPs["n3"][1])
	if d := vxlanTX() - before; d > 2 {
		t.Fatalf("same-subnet traffic n1 -> n3 was encapsulated: strait.vxlan4 tx +%d", d)
	}
	before = vxlanTX()
	ping(podIPs["n2"][0])
	if d := vxlanTX() - before; d < 5 {
		t.Fatalf("cross-subnet traffic n1 -> n2 not encapsulated: strait.vxlan4 tx +%d", d)
	}
	ping(podIPs["n2"][1])
	tunnelUntracked(t, e, podIPs["n2"][0])

	// Agent kill -9 on both ends under continuous cross-node traffic: no
	// packet lost (the kernel keeps forwarding; the restarted agents adopt
	// the kernel state without flushing it).
	pingDone := make(chan string, 1)
	go func() {
		out, err := e.podRunToFile("p-n1", "ping -c 120 -i 0.05 -W 1 "+podIPs["n2"][0], "/tmp/ping-restart")
		pingDone <- fmt.Sprintf("%s\n%v", out, err)
	}()
	time.Sleep(2 * time.Second) // the ping (6 s) runs once the file is cleared
	e.mustRun("restart", "strait-agent", "n1")
	e.mustRun("restart", "strait-agent", "n2")
	if out := <-pingDone; !strings.Contains(out, "120 packets transmitted, 120 packets received") {
		t.Fatalf("packets lost across an agent kill -9:\n%s", out)
	}

	// Drift: a managed route, neighbour and FDB entry deleted by hand on n1
	// come back within the resync period (5 s in the lab).
	var n2Block string
	for _, line := range strings.Split(e.mustKubectl("get", "ipamblocks", "-o", `jsonpath={range .items[*]}{.spec.node} {.spec.cidr}{"\n"}{end}`), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "n2" && strings.Contains(f[1], ".") {
			n2Block = f[1]
		}
	}
	var vtep struct{ MAC, TunnelAddr string }
	ann := e.mustKubectl("get", "node", "n2", "-o", `jsonpath={.metadata.annotations.strait\.dev/vtep-v4}`)
	if err := json.Unmarshal([]byte(ann), &vtep); err != nil || n2Block == "" {
		t.Fatalf("n2 block %q, VTEP annotation %q: %v", n2Block, ann, err)
	}
	e.mustRun("exec", "n1", "--", "ip", "route", "del", n2Block)
	e.mustRun("exec", "n1", "--", "ip", "neigh", "del", vtep.TunnelAddr, "dev", "strait.vxlan4")
	e.mustRun("exec", "n1", "--", "bridge", "fdb", "del", vtep.MAC, "dev", "strait.vxlan4")
	start = time.Now()
	testutil.Eventually(t, 15*time.Second, 200*time.Millisecond, func() error {
		routes := e.mustRun("exec", "n1", "--", "ip", "route", "show", n2Block)
		neigh := e.mustRun("exec", "n1", "--", "ip", "neigh", "show", vtep.TunnelAddr, "dev", "strait.vxlan4")
		fdb := e.mustRun("exec", "n1", "--", "bridge", "fdb", "show", "dev", "strait.vxlan4")
		if !strings.Contains(routes, "strait.vxlan4") || !strings.Contains(neigh, vtep.MAC) || !strings.Contains(fdb, vtep.MAC) {
			return fmt.Errorf("not restored yet: route %q neigh %q fdb %q", routes, neigh, fdb)
		}
		return nil
	})
	t.Logf("route, neighbour and FDB entry restored in %v", time.Since(start).Round(100*time.Millisecond))
	ping(podIPs["n2"][0])

	// NAT outgoing (on by default): the outside host sees the node's address.
	if out, err := e.podRead("p-n1", "ping -c 2 -W 2 10.100.9.10"); err != nil {
		t.Fatalf("pod -> outside host: %v\n%s", err, out)
	}

	// Flow visibility end to end: pods -> agents -> aggregator -> nfacctd and tshark (flows_test.go).
	t.Run("flows", func(t *testing.T) { flowsEndToEnd(t, e, podIPs) })

	if out, err := e.run("status"); err != nil || !strings.Contains(out, "all healthy") {
		t.Fatalf("status of a healthy lab: %v\n%s", err, out)
	}
	// straitctl on a node answers "why is my route (not) there".
	ctl := func(args ...string) string {
		t.Helper()
		sock := filepath.Join(e.dir, "nodes", "n1", "strait", "cni.sock")
		out, err := exec.Command(filepath.Join(filepath.Dir(e.bin), "straitctl"), append([]string{"--socket", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("straitctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := ctl("status"); !strings.Contains(out, "n1") || !strings.Contains(strings.ToLower(out), "ready") {
		t.Fatalf("straitctl status:\n%s", out)
	}
	if out := ctl("routes", "-o", "wide"); !strings.Contains(out, "n2") || !strings.Contains(out, "n3") || !strings.Contains(out, "strait.vxlan4") {
		t.Fatalf("straitctl routes lacks the peers:\n%s", out)
	}
	if out := ctl("ipam"); !strings.Contains(out, "p-n1") {
		t.Fatalf("straitctl ipam lacks pod p-n1:\n%s", out)
	}

	// The lab makes strait-system: the agents elect a leader for the block
	// releaser and the LoadBalancer allocator there.
	testutil.Eventually(t, 30*time.Second, 500*time.Millisecond, func() error {
		out, err := e.kubectl("get", "lease", "-n", "strait-system", "-o", `jsonpath={range .items[*]}{.metadata.name}={.spec.holderIdentity}{"\n"}{end}`)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, lease := range []string{"strait-block-releaser", "strait-lb-ipam"} {
			if !regexp.MustCompile(`(?m)^` + lease + `=n[123]$`).MatchString(out) {
				return fmt.Errorf("no node holds the %s Lease in strait-system:\n%s", lease, out)
			}
		}
		return nil
	})

	// Health and metrics on each node's loopback.
	if out := e.mustRun("exec", "n1", "--", "curl", "-sf", "127.0.0.1:9099/readyz"); strings.TrimSpace(out) != "ok" {
		t.Fatalf("readyz: %q", out)
	}
	// n3: the agents of n1 and n2 were restarted above (counters start at 0).
	metrics := e.mustRun("exec", "n3", "--", "curl", "-sf", "127.0.0.1:9099/metrics")
	for _, want := range []string{"strait_peers 2", `strait_cni_requests_total{command="ADD",result="ok"}`, `strait_netlink_operations_total{action="add",object="route"}`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %q:\n%s", want, metrics)
		}
	}
	if out := e.mustRun("exec", "n2", "--", "ip", "-4", "route", "show"); !strings.Contains(out, "default via 10.100.2.1") {
		t.Fatalf("strait-lab exec n2 -- ip route:\n%s", out)
	}

	// Block use in IPAMBlock status; straitctl check connectivity (green,
	// then a broken route named, then repaired); NAT outgoing switched off
	// and on through the API (cluster_test.go).
	blockAllocations(t, e, podIPs["n1"][0])
	checkConnectivity(t, e)
	natOutgoingOff(t, e, "p-n1", podIPs["n1"][0])

	// status names a dead agent.
	st := e.state()
	for _, p := range st.Processes {
		if p.Name == "strait-agent-n3" {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
	if out, err := e.run("status"); err == nil || !strings.Contains(out, "strait-agent on n3 is not ready") {
		t.Fatalf("status with a dead agent: %v\n%s", err, out)
	}

	e.mustRun("down")
	e.assertNothingLeft(st)
	if out := e.mustRun("down"); strings.Contains(out, "stopped") || strings.Contains(out, "deleted") {
		t.Fatalf("second down did something:\n%s", out)
	}
}

// Upstream acceptance on one 3-node lab across two subnets, dual-stack,
// with the pools in VXLAN mode (every cross-node packet encapsulated) and
// the agents' eBPF fast path on: e2e.test '[sig-network] Networking
// Granular Checks: Pods' and the 13 '[sig-network] Services' specs of
// lab.ServicesE2EFocus (kube-proxy in nftables mode over Strait's pod
// network; Service traffic stays with the stack), pod-to-pod transfers the
// fast path must carry (fastpath_test.go); then the pools switched to
// VXLANCrossSubnet through the API (applied by the running agents) and the
// Granular Checks again (cluster_test.go).
func TestUpstreamNetworkingVXLAN(t *testing.T) {
	e := newLabEnv(t)
	e.mustRun("up", "--nodes", "3", "--encap", "VXLAN", "--fast-path")
	upstreamE2E(t, e, "4 Passed | 0 Failed")
	upstreamE2E(t, e, "13 Passed | 0 Failed", "--focus", lab.ServicesE2EFocus)
	fastPathTransfers(t, e, 2)
	crossSubnetWithoutRestart(t, e, "default-ipv4", "default-ipv6")
	upstreamE2E(t, e, "4 Passed | 0 Failed")
}

// The same Granular Checks and Services specs on an IPv4-only cluster (`up
// --ip-family ipv4`, no fast path): pods get one IPv4 address and no IPv6
// pool exists; in VXLAN, then the Granular Checks in VXLANCrossSubnet
// through the API.
func TestUpstreamNetworkingIPv4Only(t *testing.T) {
	e := newLabEnv(t)
	e.mustRun("up", "--nodes", "3", "--encap", "VXLAN", "--ip-family", "ipv4")
	if pools := e.mustKubectl("get", "ippools", "-o", "jsonpath={.items[*].spec.cidr}"); strings.TrimSpace(pools) != lab.ClusterCIDRv4 {
		t.Fatalf("IPv4-only lab has pools %q, want only %s", pools, lab.ClusterCIDRv4)
	}
	e.mustKubectl("run", "p4", "--image="+images.ToolsImage, "--restart=Never", "--", "sleep", "3600")
	e.mustKubectl("wait", "--for=condition=Ready", "pod/p4", "--timeout=90s")
	if ips := strings.Fields(e.mustKubectl("get", "pod", "p4", "-o", "jsonpath={.status.podIPs[*].ip}")); len(ips) != 1 || !netip.MustParseAddr(ips[0]).Is4() {
		t.Fatalf("pod on the IPv4-only lab has addresses %v, want one IPv4 address", ips)
	}
	e.mustKubectl("delete", "pod", "p4", "--wait=false")
	upstreamE2E(t, e, "4 Passed | 0 Failed")
	upstreamE2E(t, e, "13 Passed | 0 Failed", "--focus", lab.ServicesE2EFocus)
	crossSubnetWithoutRestart(t, e, "default-ipv4")
	upstreamE2E(t, e, "4 Passed | 0 Failed")
	e.mustRun("down")
}

// Ctrl-C during up removes what up made; up after an up that was killed
// (SIGKILL, no cleanup at all) works.
func TestInterruptedAndCrashedUp(t *testing.T) {
	e := newLabEnv(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		cmd := e.command("up", "--nodes", "1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let it get into the control plane or the node bring-up.
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Join("/run/netns", e.prefix+"cp")); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		during := e.state()
		_ = cmd.Process.Signal(sig)
		err := cmd.Wait()
		if sig == syscall.SIGINT {
			if err == nil {
				t.Log("up finished before the interrupt; taking it down")
				e.mustRun("down")
				continue
			}
			entries, _ := os.ReadDir("/run/netns")
			for _, en := range entries {
				if strings.HasPrefix(en.Name(), e.prefix) {
					t.Errorf("after Ctrl-C during up: namespace %s left", en.Name())
				}
			}
			if len(during.Processes) == 0 {
				t.Fatal("up had started no daemon when interrupted: the test proved nothing")
			}
			for _, p := range during.Processes {
				if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID)); err == nil && !strings.Contains(string(stat), ") Z ") {
					t.Errorf("after Ctrl-C during up: %s (pid %d) still runs", p.Name, p.PID)
				}
			}
		}
	}
	// The SIGKILLed up left its daemons and namespaces: a new up clears them and works.
	e.mustRun("up", "--nodes", "1")
	if out, err := e.run("status"); err != nil {
		t.Fatalf("status after up over a crashed up: %v\n%s", err, out)
	}
	before := e.state()
	e.mustRun("down")
	e.assertNothingLeft(before)
}

// inNodeBlock reports whether ip lies in one of node's blocks, given lines
// "NODE CIDR".
func inNodeBlock(blocks, node, ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(blocks, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || f[0] != node {
			continue
		}
		if p, err := netip.ParsePrefix(f[1]); err == nil && p.Contains(a) {
			return true
		}
	}
	return false
}

// tunnelUntracked: n1's agent exempts the VXLAN devices' outer packets from
// conntrack (its tunnel-out rule counted them, conntrack holds none), while
// the encapsulated pings to podIP are still tracked.
func tunnelUntracked(t *testing.T, e *labEnv, podIP string) {
	t.Helper()
	if out := e.mustRun("exec", "n1", "--", "conntrack", "-L", "-p", "udp", "--dport", "4789"); strings.Contains(out, "udp ") {
		t.Fatalf("outer VXLAN packets tracked on n1:\n%s", out)
	}
	chain := e.mustRun("exec", "n1", "--", "nft", "list", "chain", "inet", "strait", "tunnel-out")
	if !regexp.MustCompile(`udp dport 4789 counter packets [1-9]`).MatchString(chain) {
		t.Fatalf("n1's tunnel-out rule counted no packet:\n%s", chain)
	}
	if out := e.mustRun("exec", "n1", "--", "conntrack", "-L", "-p", "icmp", "--dst", podIP); !strings.Contains(out, "icmp ") {
		t.Fatalf("the pings to %s are not tracked on n1:\n%s", podIP, out)
	}
}
