package integration

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/strait-net/strait/internal/testutil"
)

// Two pods on one node reach each other and the node over IPv4 and IPv6 (TCP),
// portmap chained after strait forwards a host port, CHECK notices a deleted
// route, an agent kill -9 leaves pods connected, and DEL leaves nothing.
func TestTwoPodsDualStack(t *testing.T) {
	n := newNode(t, nodeOpts{})
	podA, podB := testutil.NewNS(t), testutil.NewNS(t)
	rtA, rtB := n.rt("pod-a", podA.Path()), n.rt("pod-b", podB.Path())
	rtB.CapabilityArgs = map[string]any{
		"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}},
		"bandwidth":    map[string]any{"ingressRate": 100_000_000, "ingressBurst": 1_000_000},
	}
	resA, resB := n.mustAdd(rtA), n.mustAdd(rtB)

	// bandwidth, chained after portmap, found the host veth in our result and shaped it.
	if qd := n.ns.MustRun(t, "tc", "qdisc", "show", "dev", resB.Interfaces[0].Name); !strings.Contains(qd, "tbf") {
		t.Fatalf("bandwidth plugin did not shape host veth %s:\n%s", resB.Interfaces[0].Name, qd)
	}

	if got := len(resA.IPs); got != 2 {
		t.Fatalf("pod A got %d addresses, want 2 (dual-stack): %v", got, resA)
	}
	if resA.IPs[0].Address.String() == resB.IPs[0].Address.String() {
		t.Fatalf("duplicate address %s", resA.IPs[0].Address.String())
	}
	a4, a6 := podAddr(t, resA, false), podAddr(t, resA, true)
	b4, b6 := podAddr(t, resB, false), podAddr(t, resB, true)
	if !mustCIDR(podCIDRv4).Contains(a4) || !mustCIDR(podCIDRv6).Contains(a6) {
		t.Fatalf("pod A addresses %s %s outside the pod CIDRs", a4, a6)
	}

	echoServer(t, podB, "tcp4", "0.0.0.0:80", "B:")
	echoServer(t, podB, "tcp6", "[::]:80", "B6:")
	echoServer(t, podA, "tcp4", "0.0.0.0:80", "A:")
	echoServer(t, n.ns, "tcp4", nodeV4+":9000", "N:")
	echoServer(t, n.ns, "tcp6", "["+nodeV6+"]:9000", "N6:")

	connected := func() {
		t.Helper()
		for _, c := range []struct {
			from        *testutil.NS
			addr, reply string
		}{
			{podA, net.JoinHostPort(b4.String(), "80"), "B:"},
			{podA, net.JoinHostPort(b6.String(), "80"), "B6:"},
			{podB, net.JoinHostPort(a4.String(), "80"), "A:"},
			{podA, net.JoinHostPort(nodeV4, "9000"), "N:"},
			{podB, net.JoinHostPort(nodeV6, "9000"), "N6:"},
			// portmap, chained after strait with our prevResult: node port 8080 -> pod B:80.
			{n.underlay, net.JoinHostPort(nodeV4, "8080"), "B:"},
		} {
			if err := tcpEcho(c.from, c.addr, c.reply); err != nil {
				t.Fatal(err)
			}
		}
	}
	connected()

	for _, rt := range []*libcni.RuntimeConf{rtA, rtB} {
		if err := n.check(rt); err != nil {
			t.Fatalf("CHECK %s on a healthy pod: %v", rt.ContainerID, err)
		}
	}

	// A repeated ADD returns the same addresses.
	if again := n.mustAdd(rtA); again.IPs[0].Address.String() != resA.IPs[0].Address.String() {
		t.Fatalf("repeated ADD gave %s, first ADD %s", again.IPs[0].Address.String(), resA.IPs[0].Address.String())
	}

	// kill -9 the agent: pods stay connected; after restart everything checks out.
	n.agent.Kill()
	connected()
	if err := n.agent.Restart(); err != nil {
		t.Fatal(err)
	}
	n.waitReady()
	connected()
	if err := n.check(rtB); err != nil {
		t.Fatalf("CHECK after agent restart: %v", err)
	}

	// Drift: someone deletes pod B's host route; CHECK names it.
	n.ns.MustRun(t, "ip", "route", "del", b4.String()+"/32")
	err := n.check(rtB)
	if err == nil || !strings.Contains(err.Error(), b4.String()+"/32") {
		t.Fatalf("CHECK after route deletion: got %v, want an error naming %s/32", err, b4)
	}
	if cniCode(err) != 100 {
		t.Fatalf("CHECK drift code %d, want 100", cniCode(err))
	}

	for _, rt := range []*libcni.RuntimeConf{rtA, rtB, rtA} { // the second DEL of A is a no-op
		if err := n.del(rt); err != nil {
			t.Fatalf("DEL %s: %v", rt.ContainerID, err)
		}
	}
	if links := n.hostLinks(); len(links) != 0 {
		t.Fatalf("host veths left after DEL: %v", links)
	}
	routes := n.ns.MustRun(t, "ip", "route", "show") + n.ns.MustRun(t, "ip", "-6", "route", "show")
	for _, ip := range []net.IP{a4, b4, a6, b6} {
		if strings.Contains(routes, ip.String()) {
			t.Fatalf("route to %s left after DEL:\n%s", ip, routes)
		}
	}
	if al := n.allocations(); len(al) != 0 {
		t.Fatalf("allocations left after DEL: %+v", al)
	}
}

// DEL succeeds when the pod's netns is already gone, and releases everything.
func TestDelAfterNetnsGone(t *testing.T) {
	n := newNode(t, nodeOpts{})
	pod := testutil.NewNS(t)
	rt := n.rt("gone", pod.Path())
	n.mustAdd(rt)
	if err := pod.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := n.del(rt); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}
	if links := n.hostLinks(); len(links) != 0 {
		t.Fatalf("host veths left: %v", links)
	}
	if al := n.allocations(); len(al) != 0 {
		t.Fatalf("allocations left: %+v", al)
	}
}

// STATUS says 50 while no agent serves the socket and while the agent cannot
// load its IPAM store, and succeeds once it can; ADD meanwhile says 11.
func TestStatus(t *testing.T) {
	n := newNode(t, nodeOpts{noAgent: true})
	if err := n.status(); cniCode(err) != 50 {
		t.Fatalf("STATUS with no agent: %v (code %d), want code 50", err, cniCode(err))
	}
	// Hold the store's lock, as an old agent still exiting would.
	release := lockStore(t, n.stateDir)
	n.agent = testutil.StartProcess(t, n.ns.Name, n.binDir+"/strait-agent", "--config", n.agentCfg)
	testutil.Eventually(t, 10e9, 20e6, func() error {
		err := n.status()
		if cniCode(err) == 50 && strings.Contains(err.Error(), "IPAM store") {
			return nil
		}
		return errors.New("STATUS not yet 50 naming the IPAM store: " + errString(err))
	})
	pod := testutil.NewNS(t)
	if _, err := n.add(n.rt("early", pod.Path())); cniCode(err) != types.ErrTryAgainLater {
		t.Fatalf("ADD before ready: %v, want code 11", err)
	}
	release()
	n.waitReady()
	n.mustAdd(n.rt("late", pod.Path()))
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// GC releases every attachment not in cni.dev/valid-attachments and keeps the rest working.
func TestGC(t *testing.T) {
	n := newNode(t, nodeOpts{})
	var rts []*libcni.RuntimeConf
	for _, id := range []string{"keep", "drop1", "drop2"} {
		pod := testutil.NewNS(t)
		rt := n.rt(id, pod.Path())
		n.mustAdd(rt)
		rts = append(rts, rt)
	}
	if got := len(n.hostLinks()); got != 3 {
		t.Fatalf("%d host veths, want 3", got)
	}
	// A runtime that lost its cache: libcni issues only the plugin GC verb.
	fresh := libcni.NewCNIConfigWithCacheDir(n.cni.Path, t.TempDir(), nil)
	err := n.inNode(func() error {
		return fresh.GCNetworkList(t.Context(), n.list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if links := n.hostLinks(); len(links) != 1 {
		t.Fatalf("host veths after GC: %v, want 1", links)
	}
	if err := n.check(rts[0]); err != nil {
		t.Fatalf("CHECK of the kept pod after GC: %v", err)
	}
	al := n.allocations()
	if len(al) != 1 || al[0].ContainerID != "keep" {
		t.Fatalf("allocations after GC: %+v, want only keep", al)
	}
	if al[0].PodName != "pod-keep" || al[0].PodNamespace != "default" || al[0].PodUID != "uid-keep" {
		t.Fatalf("pod identity not recorded: %+v", al[0].Owner)
	}
}

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}
