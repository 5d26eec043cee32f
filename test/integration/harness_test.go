// Package integration drives the built strait CNI binary through libcni,
// exactly as a container runtime does, against an agent running in a node
// network namespace. Everything runs in namespaces the tests create.
package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/strait-net/strait/internal/ipam"
	"github.com/strait-net/strait/internal/testutil"
)

var bins testutil.Binaries

func TestMain(m *testing.M) {
	defer bins.Cleanup()
	testutil.Main(m)
}

const (
	nodeV4     = "10.90.0.2"
	nodeV6     = "fd42:90::2"
	underlayV4 = "10.90.0.1"
	underlayV6 = "fd42:90::1"
	podCIDRv4  = "10.244.7.0/24"
	podCIDRv6  = "fd42:244:7::/64"
)

// node is one Kubernetes node as the CNI sees it: a network namespace with an
// uplink to an "underlay" namespace, the strait agent running inside it, and
// libcni configured with the strait conflist (chained with portmap and bandwidth).
type node struct {
	t        testing.TB
	ns       *testutil.NS
	underlay *testutil.NS
	binDir   string
	dir      string
	socket   string
	stateDir string
	agent    *testutil.Process
	agentCfg string
	list     *libcni.NetworkConfigList
	cni      *libcni.CNIConfig
}

type nodeOpts struct {
	podCIDRs []string
	noAgent  bool
}

func newNode(t testing.TB, o nodeOpts) *node {
	t.Helper()
	testutil.RequireRoot(t)
	binDir, err := bins.Dir()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, binDir: binDir, ns: testutil.NewNS(t), underlay: testutil.NewNS(t)}
	n.dir = t.TempDir()
	n.socket = filepath.Join(n.dir, "cni.sock")
	n.stateDir = filepath.Join(n.dir, "state")

	// Uplink: node eth0 <-> underlay eth0.
	n.ns.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "up0", "netns", n.underlay.Name)
	n.ns.MustRun(t, "ip", "addr", "add", nodeV4+"/24", "dev", "eth0")
	n.ns.MustRun(t, "ip", "addr", "add", nodeV6+"/64", "dev", "eth0", "nodad")
	n.ns.MustRun(t, "ip", "link", "set", "eth0", "up")
	n.ns.MustRun(t, "ip", "route", "add", "default", "via", underlayV4)
	n.ns.MustRun(t, "ip", "-6", "route", "add", "default", "via", underlayV6)
	n.underlay.MustRun(t, "ip", "addr", "add", underlayV4+"/24", "dev", "up0")
	n.underlay.MustRun(t, "ip", "addr", "add", underlayV6+"/64", "dev", "up0", "nodad")
	n.underlay.MustRun(t, "ip", "link", "set", "up0", "up")

	cidrs := o.podCIDRs
	if cidrs == nil {
		cidrs = []string{podCIDRv4, podCIDRv6}
	}
	cfg := map[string]any{"nodeName": "node-a", "podCIDRs": cidrs, "mtu": 1400, "socketPath": n.socket, "stateDir": n.stateDir, "logLevel": "debug"}
	raw, _ := json.Marshal(cfg)
	n.agentCfg = filepath.Join(n.dir, "agent.yaml")
	if err := os.WriteFile(n.agentCfg, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	n.list = n.conflist("1.1.0")
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{filepath.Join(binDir, "cni")}, filepath.Join(n.dir, "cache"), nil)
	if !o.noAgent {
		n.startAgent()
	}
	return n
}

func (n *node) conflist(version string) *libcni.NetworkConfigList {
	n.t.Helper()
	raw := fmt.Sprintf(`{"cniVersion":%q,"name":"strait","plugins":[
	  {"type":"strait","socketPath":%q,"logFile":%q,"logLevel":"debug"},
	  {"type":"portmap","capabilities":{"portMappings":true},"backend":"nftables"},
	  {"type":"bandwidth","capabilities":{"bandwidth":true}}]}`,
		version, n.socket, filepath.Join(n.dir, "cni.log"))
	list, err := libcni.ConfListFromBytes([]byte(raw))
	if err != nil {
		n.t.Fatal(err)
	}
	return list
}

func (n *node) startAgent() {
	n.agent = testutil.StartProcess(n.t, n.ns.Name, filepath.Join(n.binDir, "strait-agent"), "--config", n.agentCfg)
	n.waitReady()
}

func (n *node) waitReady() {
	n.t.Helper()
	testutil.Eventually(n.t, 20*time.Second, 20*time.Millisecond, func() error {
		if n.agent.Exited() {
			n.t.Fatalf("agent exited:\n%s", n.agent.Output())
		}
		return n.status()
	})
}

// inNode runs f on a thread inside the node namespace: the plugins (and the
// portmap rules) act on the namespace they are executed in.
func (n *node) inNode(f func() error) error {
	return n.ns.Do(func(ns.NetNS) error { return f() })
}

func (n *node) rt(containerID, netns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: containerID, NetNS: netns, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "pod-" + containerID}, {"K8S_POD_UID", "uid-" + containerID}},
	}
}

func (n *node) add(rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := n.inNode(func() error {
		var err error
		res, err = n.cni.AddNetworkList(context.Background(), n.list, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.GetResult(res)
}

func (n *node) mustAdd(rt *libcni.RuntimeConf) *current.Result {
	n.t.Helper()
	r, err := n.add(rt)
	if err != nil {
		n.t.Fatalf("ADD %s: %v", rt.ContainerID, err)
	}
	return r
}

func (n *node) del(rt *libcni.RuntimeConf) error {
	return n.inNode(func() error { return n.cni.DelNetworkList(context.Background(), n.list, rt) })
}

func (n *node) check(rt *libcni.RuntimeConf) error {
	return n.inNode(func() error { return n.cni.CheckNetworkList(context.Background(), n.list, rt) })
}

func (n *node) status() error {
	return n.inNode(func() error { return n.cni.GetStatusNetworkList(context.Background(), n.list) })
}

// allocations stops the agent and reads its IPAM store: the only source of
// truth that survives the agent.
func (n *node) allocations() []ipam.Allocation {
	n.t.Helper()
	if n.agent != nil {
		n.agent.Kill()
	}
	s, err := ipam.OpenBolt(filepath.Join(n.stateDir, "ipam.db"))
	if err != nil {
		n.t.Fatal(err)
	}
	defer s.Close()
	snap, err := s.Load()
	if err != nil {
		n.t.Fatal(err)
	}
	return snap.Allocations
}

// hostLinks lists Strait's host-side veths in the node namespace.
func (n *node) hostLinks() []string {
	out := n.ns.MustRun(n.t, "ip", "-o", "link", "show")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], "strt") {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return names
}

func podAddr(t *testing.T, r *current.Result, v6 bool) net.IP {
	t.Helper()
	for _, ip := range r.IPs {
		if (ip.Address.IP.To4() == nil) == v6 {
			return ip.Address.IP
		}
	}
	t.Fatalf("result has no %v address: %v", map[bool]string{true: "IPv6", false: "IPv4"}[v6], r)
	return nil
}

// echoServer listens inside netns on addr (tcp4 or tcp6) and answers each
// line with prefix+line. It stops with the test.
func echoServer(t *testing.T, in ns.NetNS, network, addr, prefix string) {
	t.Helper()
	var ln net.Listener
	if err := in.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					_, _ = c.Write([]byte(prefix + line))
				}
			}()
		}
	}()
}

// tcpEcho dials addr from inside netns and checks the echo.
func tcpEcho(from ns.NetNS, addr, prefix string) error {
	return from.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return fmt.Errorf("dial %s: %w", addr, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := fmt.Sprintf("hello %d\n", time.Now().UnixNano())
		if _, err := c.Write([]byte(msg)); err != nil {
			return fmt.Errorf("write to %s: %w", addr, err)
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("read from %s: %w", addr, err)
		}
		if got != prefix+msg {
			return fmt.Errorf("from %s got %q, want %q", addr, got, prefix+msg)
		}
		return nil
	})
}

// cniCode is the CNI error code inside err (libcni wraps plugin errors).
func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}
