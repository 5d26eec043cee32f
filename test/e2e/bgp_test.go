package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/lab"
	"github.com/strait-net/strait/internal/lab/images"
	"github.com/strait-net/strait/internal/testutil"
)

// `strait-lab up --router frr` (and bird): the router namespace's daemon peers
// with every node's agent; the nodes' pod blocks and a LoadBalancer Service's address
// (from the lab's LoadBalancerIPPool) reach FRR's kernel, and the outside
// host behind the router reaches a pod and the Service over those routes.
func TestLabBGPRouter(t *testing.T) {
	for _, kind := range []string{lab.RouterFRR, lab.RouterBIRD} {
		t.Run(kind, func(t *testing.T) { labBGPRouter(t, kind) })
	}
}

func labBGPRouter(t *testing.T, kind string) {
	e := newLabEnv(t)
	start := time.Now()
	e.mustRun("up", "--nodes", "3", "--router", kind)
	t.Logf("3-node lab with %s up in %v", kind, time.Since(start).Round(time.Second))
	proto := "proto bgp" // what zebra installs; BIRD's kernel protocol: proto bird
	if kind == lab.RouterBIRD {
		proto = "proto bird"
	}

	// Sessions: status lists one Established session per node and no problem.
	if out := e.mustRun("status"); strings.Count(out, "Established") != 3 {
		t.Fatalf("status:\n%s", out)
	}
	// Every node's pod blocks (v4 and v6) in the router's kernel via that node.
	nodeIP := map[string][2]string{}
	for _, n := range []string{"n1", "n2", "n3"} {
		ips := strings.Fields(e.mustKubectl("get", "node", n, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`))
		if len(ips) != 2 {
			t.Fatalf("node %s addresses %v", n, ips)
		}
		nodeIP[n] = [2]string{ips[0], ips[1]}
	}
	blocks := func() [][2]string { // node, cidr
		var out [][2]string
		for _, line := range strings.Split(strings.TrimSpace(e.mustKubectl("get", "ipamblocks", "-o", `jsonpath={range .items[*]}{.spec.node} {.spec.cidr}{"\n"}{end}`)), "\n") {
			if f := strings.Fields(line); len(f) == 2 {
				out = append(out, [2]string{f[0], f[1]})
			}
		}
		return out
	}
	routerRoute := func(prefix string) string {
		fam := "-4"
		if strings.Contains(prefix, ":") {
			fam = "-6"
		}
		out, _ := e.run("exec", "router", "--", "ip", fam, "route", "show", prefix)
		return out
	}
	// A pod per node, so every node has a block of each family.
	for _, n := range []string{"n1", "n2", "n3"} {
		e.mustKubectl("run", "web-"+n, "--image="+images.AgnhostImage, "--restart=Never", "--labels=app=web",
			fmt.Sprintf(`--overrides={"spec":{"nodeName":%q}}`, n), "--", "netexec", "--http-port=8080")
	}
	podIPs := map[string][]string{}
	for _, n := range []string{"n1", "n2", "n3"} {
		e.mustKubectl("wait", "--for=condition=Ready", "pod/web-"+n, "--timeout=90s")
		podIPs[n] = strings.Fields(e.mustKubectl("get", "pod", "web-"+n, "-o", "jsonpath={.status.podIPs[*].ip}"))
	}
	testutil.Eventually(t, 30*time.Second, 500*time.Millisecond, func() error {
		seen := map[string]int{}
		for _, b := range blocks() {
			p := netip.MustParsePrefix(b[1])
			via := nodeIP[b[0]][0]
			if p.Addr().Is6() {
				via = nodeIP[b[0]][1]
			}
			if got := routerRoute(b[1]); !strings.Contains(got, "via "+via) || !strings.Contains(got, proto) {
				return fmt.Errorf("block %s of %s in the router's kernel: %q, want via %s", b[1], b[0], strings.TrimSpace(got), via)
			}
			seen[b[0]]++
		}
		for _, n := range []string{"n1", "n2", "n3"} {
			if seen[n] < 2 {
				return fmt.Errorf("node %s has %d blocks checked, want v4 and v6", n, seen[n])
			}
		}
		return nil
	})
	// The outside host reaches each pod over the advertised routes (no NAT:
	// the pod sees the outside host's address).
	for _, n := range []string{"n1", "n2", "n3"} {
		for _, ip := range podIPs[n] {
			url := "http://" + netip.AddrPortFrom(netip.MustParseAddr(ip), 8080).String() + "/clientip"
			testutil.Eventually(t, 15*time.Second, 500*time.Millisecond, func() error {
				out, err := e.run("exec", "ext", "--", "curl", "-sS", "--max-time", "3", url)
				if err != nil || !strings.Contains(out, "10.100.9.10") && !strings.Contains(out, "fd42:100:9::a") {
					return fmt.Errorf("ext -> %s: %v: %s", url, err, out)
				}
				return nil
			})
		}
	}
	// A LoadBalancer Service: addresses from the lab pool, advertised by the
	// nodes, reachable from the outside host through kube-proxy.
	lbIPs := e.lbService(t)
	for _, ip := range lbIPs {
		a := netip.MustParseAddr(ip)
		pool := netip.MustParsePrefix(lab.LBPoolV4)
		if a.Is6() {
			pool = netip.MustParsePrefix(lab.LBPoolV6)
		}
		if !pool.Contains(a) {
			t.Fatalf("LoadBalancer address %s not in the lab pool %s", a, pool)
		}
		testutil.Eventually(t, 30*time.Second, 500*time.Millisecond, func() error {
			if got := routerRoute(a.String()); !strings.Contains(got, proto) {
				return fmt.Errorf("%s not in the router's kernel: %q", a, got)
			}
			url := "http://" + netip.AddrPortFrom(a, 80).String() + "/hostname"
			out, err := e.run("exec", "ext", "--", "curl", "-sS", "--max-time", "3", url)
			if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "web-") {
				return fmt.Errorf("ext -> %s: %v: %s", url, err, out)
			}
			return nil
		})
	}
	agentRestartKeepsTraffic(t, e, kind, podIPs["n1"][0], blocks, routerRoute)
	lbWithdrawals(t, e, lbIPs, nodeIP, routerRoute)
	nodeRemoved(t, e, blocks, routerRoute)
	e.mustRun("down")
}

// nodeRemoved takes n3 away for good (its agent and kubelet killed, its
// Node deleted): the router keeps n3's blocks as stale for the lab's
// graceful-restart time (15 s) after the session drops (hold time 9 s),
// then withdraws them; n1's and n2's stay.
func nodeRemoved(t *testing.T, e *labEnv, blocks func() [][2]string, routerRoute func(string) string) {
	t.Helper()
	var gone, kept []string
	for _, b := range blocks() {
		if b[0] == "n3" {
			gone = append(gone, b[1])
		} else {
			kept = append(kept, b[1])
		}
	}
	if len(gone) == 0 || len(kept) == 0 {
		t.Fatalf("blocks of n3 %v, of the others %v", gone, kept)
	}
	for _, d := range []string{"strait-agent-n3", "kubelet-n3"} {
		if err := syscall.Kill(e.daemonPID(d), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	e.mustKubectl("delete", "node", "n3", "--wait=true", "--timeout=30s")
	start := time.Now()
	testutil.Eventually(t, 60*time.Second, time.Second, func() error {
		for _, p := range gone {
			if got := strings.TrimSpace(routerRoute(p)); got != "" {
				return fmt.Errorf("n3 removed, the router still routes its block %s: %q", p, got)
			}
		}
		return nil
	})
	for _, p := range kept {
		if strings.TrimSpace(routerRoute(p)) == "" {
			t.Fatalf("the router lost %s, a block of a node still there", p)
		}
	}
	t.Logf("n3 removed (agent and kubelet killed, Node deleted): its %d blocks withdrawn at the router after %v", len(gone), time.Since(start).Round(time.Second))
}

// agentRestartKeepsTraffic: n1's agent SIGKILLed under a continuous ping
// from the outside host to a pod on n1: the router keeps n1's block
// (graceful restart: FRR marks it stale) and forwards every packet; the
// agent started again, the stale mark clears. No ping is lost.
func agentRestartKeepsTraffic(t *testing.T, e *labEnv, kind, podIP string, blocks func() [][2]string, routerRoute func(string) string) {
	t.Helper()
	block := ""
	for _, b := range blocks() {
		if b[0] == "n1" && netip.MustParsePrefix(b[1]).Contains(netip.MustParseAddr(podIP)) {
			block = b[1]
		}
	}
	if block == "" {
		t.Fatalf("no block of n1 holds %s", podIP)
	}
	// FRR only: whether its path to the block is marked stale.
	stale := func() (bool, error) {
		out, err := exec.Command("vtysh", "--vty_socket", e.state().Router.Dir, "-c", "show bgp ipv4 unicast "+block+" json").CombinedOutput()
		if err != nil {
			return false, fmt.Errorf("vtysh: %v: %s", err, out)
		}
		var r struct {
			Paths []struct {
				Stale bool `json:"stale"`
			} `json:"paths"`
		}
		if err := json.Unmarshal(out, &r); err != nil || len(r.Paths) == 0 {
			return false, fmt.Errorf("FRR has no path to %s: %v: %s", block, err, out)
		}
		for _, p := range r.Paths {
			if p.Stale {
				return true, nil
			}
		}
		return false, nil
	}
	// The router's kernel, watched across the kill and restart: the block's
	// route must never leave it (a restarted speaker that does not say it
	// kept forwarding makes the router drop the stale route as the new
	// session opens and add it back with the UPDATE: a gap of milliseconds).
	monitored := make(chan string, 1)
	go func() {
		out, _ := e.run("exec", "router", "--", "timeout", "14", "ip", "monitor", "route")
		monitored <- out
	}()
	time.Sleep(300 * time.Millisecond)
	pinged := make(chan string, 1)
	go func() {
		out, _ := e.run("exec", "ext", "--", "ping", "-n", "-c", "100", "-i", "0.1", "-W", "1", podIP)
		pinged <- out
	}()
	time.Sleep(time.Second)
	if err := syscall.Kill(e.agentPID("n1"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if kind == lab.RouterFRR {
		testutil.Eventually(t, 5*time.Second, 100*time.Millisecond, func() error {
			if s, err := stale(); err != nil || !s {
				return fmt.Errorf("n1's agent killed: FRR's path to %s not stale (%v)", block, err)
			}
			return nil
		})
	}
	if strings.TrimSpace(routerRoute(block)) == "" {
		t.Fatalf("n1's agent killed: the router dropped %s from its kernel (graceful restart)", block)
	}
	time.Sleep(2 * time.Second)
	e.mustRun("restart", "strait-agent", "n1")
	if kind == lab.RouterFRR {
		testutil.Eventually(t, 20*time.Second, 200*time.Millisecond, func() error {
			if s, err := stale(); err != nil || s {
				return fmt.Errorf("n1's agent restarted: FRR's path to %s still stale (%v)", block, err)
			}
			return nil
		})
	}
	if out := <-pinged; !strings.Contains(out, "100 packets transmitted, 100 received") {
		t.Errorf("outside host -> %s across n1's agent kill and restart: packets lost:\n%s", podIP, out)
	}
	mon := <-monitored
	for _, line := range strings.Split(mon, "\n") {
		if strings.HasPrefix(line, "Deleted "+block+" ") {
			t.Errorf("the router removed %s from its kernel across n1's agent restart: %s\nmonitor:\n%s", block, line, mon)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("n1's agent killed and restarted: the router kept %s (graceful restart), 100 of 100 pings from the outside host arrived", block)
}

// lbWithdrawals: with externalTrafficPolicy Local only nodes with a ready
// endpoint advertise the Service's addresses; the endpoint on n3 deleted,
// n3 withdraws them (the router keeps the paths via n1 and n2 and the
// outside host still reaches the Service); the Service deleted, every node
// withdraws them and the router's kernel has no route left.
func lbWithdrawals(t *testing.T, e *labEnv, lbIPs []string, nodeIP map[string][2]string, routerRoute func(string) string) {
	t.Helper()
	viaOf := func(n string, a netip.Addr) string {
		if a.Is6() {
			return "via " + nodeIP[n][1] + " "
		}
		return "via " + nodeIP[n][0] + " "
	}
	e.mustKubectl("patch", "service", "web-lb", "--type=merge", "-p", `{"spec":{"externalTrafficPolicy":"Local"}}`)
	e.mustKubectl("delete", "pod", "web-n3", "--wait=true", "--timeout=60s")
	start := time.Now()
	for _, ip := range lbIPs {
		a := netip.MustParseAddr(ip)
		testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, func() error {
			got := routerRoute(a.String()) + " "
			if strings.Contains(got, viaOf("n3", a)) || !strings.Contains(got, viaOf("n1", a)) || !strings.Contains(got, viaOf("n2", a)) {
				return fmt.Errorf("router's route to %s with the endpoint on n3 gone (Local policy): %q, want via n1 and n2 only", a, strings.TrimSpace(got))
			}
			url := "http://" + netip.AddrPortFrom(a, 80).String() + "/hostname"
			out, err := e.run("exec", "ext", "--", "curl", "-sS", "--max-time", "3", url)
			if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "web-") {
				return fmt.Errorf("ext -> %s: %v: %s", url, err, out)
			}
			return nil
		})
	}
	t.Logf("externalTrafficPolicy Local, endpoint on n3 deleted: n3's paths withdrawn at the router in %v", time.Since(start).Round(100*time.Millisecond))

	e.mustKubectl("delete", "service", "web-lb")
	start = time.Now()
	for _, ip := range lbIPs {
		testutil.Eventually(t, 30*time.Second, 250*time.Millisecond, func() error {
			if got := strings.TrimSpace(routerRoute(ip)); got != "" {
				return fmt.Errorf("Service deleted, the router still routes %s: %q", ip, got)
			}
			return nil
		})
	}
	t.Logf("Service deleted: its addresses withdrawn at the router in %v", time.Since(start).Round(100*time.Millisecond))
}

// lbService creates a dual-stack Service of type LoadBalancer for app=web
// (port 80 -> 8080) and returns its ingress addresses once it has both.
func (e *labEnv) lbService(t *testing.T) []string {
	t.Helper()
	p := filepath.Join(e.dir, "lb-web.yaml")
	svc := `apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`
	if err := os.WriteFile(p, []byte(svc), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustKubectl("apply", "-f", p)
	var ips []string
	testutil.Eventually(t, 30*time.Second, 500*time.Millisecond, func() error {
		ips = strings.Fields(e.mustKubectl("get", "service", "web-lb", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"))
		if len(ips) != 2 {
			return fmt.Errorf("web-lb ingress %v, want an IPv4 and an IPv6 address", ips)
		}
		return nil
	})
	return ips
}
