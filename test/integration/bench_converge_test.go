package integration

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/datapath"
	"github.com/strait-net/strait/internal/testutil"
	"github.com/strait-net/strait/internal/testutil/kubeapi"
)

// Convergence benchmark (issue 4): one real strait-agent in node-cidr mode,
// in a fresh node namespace, watching a real kube-apiserver; 1,000 Node
// objects with VTEP annotations and a pod CIDR each are created through the
// API, and the kernel of the node namespace is watched (its netlink
// notifications, subscribed before the agent starts) until all 1,000
// routes, neighbours and FDB entries are there. The limit is `bridge -batch`
// + `ip -batch` applying the same 3,000 operations in a fresh namespace,
// measured in the same run.

const (
	convPeers    = 1000
	convNode     = "bench-node"
	convNodeIP   = "10.90.0.2"
	convCreators = 8 // concurrent Node creates
)

// convBlock is the /26 pod block of peer i (0 is the agent's own node).
func convBlock(i int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("10.244.%d.%d/26", i/4, i%4*64))
}

func convPeerName(i int) string { return fmt.Sprintf("peer-%04d", i) }

// convVTEPIP is peer i's underlay address, in another subnet than the
// agent's node (so every block is encapsulated even in CrossSubnet mode).
func convVTEPIP(i int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("10.91.%d.%d", i/250, 1+i%250))
}

func BenchmarkConvergence1000Nodes(b *testing.B) {
	testutil.RequireRoot(b)
	binDir, err := bins.Dir()
	if err != nil {
		b.Fatal(err)
	}
	api := kubeapi.Start(b, kubeapi.BinDir(b))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	kube := unlimitedClient(b, api.RESTConfig)

	// This node's Node object, as kubelet + kube-controller-manager leave it.
	self := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: convNode},
		Spec: corev1.NodeSpec{PodCIDR: convBlock(0).String(), PodCIDRs: []string{convBlock(0).String()}}}
	created, err := kube.CoreV1().Nodes().Create(ctx, self, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: convNodeIP}}
	if _, err := kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		b.Fatal(err)
	}

	limitFiles := convBatchFiles(b)
	var limits []time.Duration
	limits = append(limits, convLimit(b, limitFiles))

	// Event-driven: the agent is up and synced, then the Nodes appear.
	node, agent, _, conv := convStartAgent(b, binDir, api)
	limits = append(limits, convLimit(b, limitFiles))
	firstCreate := time.Now()
	convCreateNodes(b, ctx, kube)
	lastCreate := time.Now()
	converged := conv()
	if converged.IsZero() {
		b.Fatal("the kernel did not converge")
	}
	metrics := convMetrics(b, node)
	agent.Kill()
	limits = append(limits, convLimit(b, limitFiles))

	// Cold start: a fresh node namespace and agent with the 1,000 Nodes
	// already in the API (restart onto an empty kernel).
	node2, _, started, coldConv := convStartAgent(b, binDir, api)
	cold := coldConv()
	if cold.IsZero() {
		b.Fatal("the kernel did not converge after a cold start")
	}
	coldMetrics := convMetrics(b, node2)
	limits = append(limits, convLimit(b, limitFiles))

	limit := medianDur(limits)
	events := float64(convPeers)
	ops := metrics["strait_netlink_operations_total"]
	peerSecs := metrics[`strait_reconcile_duration_seconds_sum{kind="peer"}`]
	total := converged.Sub(firstCreate)
	rows := []struct {
		what string
		d    time.Duration
		vs   bool
	}{
		{"API: 1,000 Node creates (" + strconv.Itoa(convCreators) + " concurrent clients)", lastCreate.Sub(firstCreate), false},
		{"first create -> all 3,000 entries in the kernel", total, true},
		{"last create -> all entries in the kernel (agent lag)", converged.Sub(lastCreate), false},
		{"agent's kernel work: sum of per-Node SetPeer calls", time.Duration(peerSecs * float64(time.Second)), true},
		{"cold start: agent start -> all entries in the kernel", cold.Sub(started), true},
		{"cold start: the agent's full resync (one Resync call)", time.Duration(coldMetrics[`strait_reconcile_duration_seconds_sum{kind="resync"}`] * float64(time.Second)), true},
		{"limit: bridge -batch + ip -batch, same 3,000 operations", limit, false},
	}
	fmt.Printf("\n| 1,000 Nodes, one agent | ms | vs limit |\n|---|---|---|\n")
	for _, r := range rows {
		vs := ""
		if r.vs {
			vs = fmt.Sprintf("%.2fx", float64(r.d)/float64(limit))
		}
		fmt.Printf("| %s | %.0f | %s |\n", r.what, float64(r.d.Microseconds())/1000, vs)
	}
	fmt.Printf("netlink operations: %.0f for %d Node events = %.2f per event (%.0f peer reconciles); cold start %.0f; limit runs %v\n",
		ops, convPeers, ops/events, metrics[`strait_reconcile_duration_seconds_count{kind="peer"}`],
		coldMetrics["strait_netlink_operations_total"], limits)
	b.ReportMetric(float64(total.Milliseconds()), "ms-first-create-to-converged")
	b.ReportMetric(float64(converged.Sub(lastCreate).Milliseconds()), "ms-last-create-to-converged")
	b.ReportMetric(float64(lastCreate.Sub(firstCreate).Milliseconds()), "ms-api-create")
	b.ReportMetric(peerSecs*1000/float64(limit.Milliseconds()), "agent-work-ratio-vs-batch")
	b.ReportMetric(float64(cold.Sub(started))/float64(limit), "cold-start-ratio-vs-batch")
	b.ReportMetric(ops/events, "netlink-ops/event")
	b.ReportMetric(float64(limit.Microseconds())/1000, "limit-ms")
}

// unlimitedClient is an admin client without client-side rate limiting.
func unlimitedClient(b *testing.B, rc *rest.Config) kubernetes.Interface {
	c := rest.CopyConfig(rc)
	c.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	k, err := kubernetes.NewForConfig(c)
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// convCreateNodes creates the peers' Node objects, convCreators at a time.
func convCreateNodes(b *testing.B, ctx context.Context, kube kubernetes.Interface) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range convCreators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := kube.CoreV1().Nodes().Create(ctx, convPeerNode(b, i), metav1.CreateOptions{}); err != nil {
					b.Errorf("create Node %s: %v", convPeerName(i), err)
				}
			}
		}()
	}
	for i := 1; i <= convPeers; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// convPeerNode is peer i as its agent publishes it: VTEP and subnet
// annotations, and its pod CIDR.
func convPeerNode(b *testing.B, i int) *corev1.Node {
	vtep, err := v1alpha1.MarshalVTEP(v1alpha1.VTEP{IP: convVTEPIP(i), MAC: datapath.VTEPMAC(convPeerName(i), 4), TunnelAddr: convBlock(i).Addr()})
	if err != nil {
		b.Fatal(err)
	}
	subnet, err := v1alpha1.FormatNodeSubnet(netip.PrefixFrom(convVTEPIP(i), 16).Masked())
	if err != nil {
		b.Fatal(err)
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: convPeerName(i), Annotations: map[string]string{
			v1alpha1.AnnotationVTEPv4: vtep, v1alpha1.AnnotationNodeSubnetV4: subnet}},
		Spec: corev1.NodeSpec{PodCIDR: convBlock(i).String(), PodCIDRs: []string{convBlock(i).String()}},
	}
}

// convStartAgent creates a node namespace with an uplink and starts
// strait-agent in it (node-cidr mode, VXLAN), reaching the API server
// through a proxy listening in the namespace; it returns once the agent is
// ready, with the time the agent process was started and a wait for the
// namespace's kernel to hold all convPeers peers' entries (watched from
// before the start: the time is when the kernel got there, not when the
// agent said ready).
func convStartAgent(b *testing.B, binDir string, api *kubeapi.Cluster) (*testutil.NS, *testutil.Process, time.Time, func() time.Time) {
	node, underlay := testutil.NewNS(b), testutil.NewNS(b)
	node.MustRun(b, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "up0", "netns", underlay.Name)
	node.MustRun(b, "ip", "addr", "add", convNodeIP+"/16", "dev", "eth0")
	node.MustRun(b, "ip", "link", "set", "eth0", "up")
	underlay.MustRun(b, "ip", "link", "set", "up0", "up")

	dir := b.TempDir()
	addr := proxyIntoNS(b, node, strings.TrimPrefix(api.URL, "https://"))
	kc, err := clientcmd.LoadFromFile(api.Kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range kc.Clusters {
		c.Server = "https://" + addr
	}
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kcPath); err != nil {
		b.Fatal(err)
	}
	// Resync only every 10 minutes: the event path alone must converge.
	cfg := map[string]any{"nodeName": convNode, "ipamMode": "node-cidr", "kubeconfig": kcPath,
		"nodeCIDREncapsulation": "VXLAN", "resyncPeriod": "10m", "healthAddr": "127.0.0.1:9099",
		"socketPath": filepath.Join(dir, "cni.sock"), "stateDir": filepath.Join(dir, "state")}
	raw, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	converged := convWatch(b, node, convPeers, 5*time.Minute)
	started := time.Now()
	agent := testutil.StartProcess(b, node.Name, filepath.Join(binDir, "strait-agent"), "--config", cfgPath)
	testutil.Eventually(b, 60*time.Second, 20*time.Millisecond, func() error {
		if agent.Exited() {
			b.Fatalf("agent exited:\n%s", agent.Output())
		}
		_, err := nsHTTPGet(node, "http://127.0.0.1:9099/readyz")
		return err
	})
	return node, agent, started, converged
}

// proxyIntoNS listens on 127.0.0.1:0 inside n and forwards each connection
// to target, dialled from the test process's own namespace (a loopback
// address there). It returns the listening address.
func proxyIntoNS(b *testing.B, n *testutil.NS, target string) string {
	ln, err := listenInNS(n)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	go func() {
		for c, err := ln.Accept(); err == nil; c, err = ln.Accept() {
			go pipeTo(c, target)
		}
	}()
	return ln.Addr().String()
}

// listenInNS listens on a free TCP port of 127.0.0.1 inside n.
func listenInNS(n *testutil.NS) (ln net.Listener, err error) {
	err = n.Do(func(ns.NetNS) error {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	return ln, err
}

// pipeTo copies between c and a new connection to target until either
// side closes.
func pipeTo(c net.Conn, target string) {
	defer func() { _ = c.Close() }()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer func() { _ = u.Close() }()
	go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
	_, _ = io.Copy(c, u)
}

// nsHTTPGet GETs url with a connection made inside n.
func nsHTTPGet(n *testutil.NS, url string) (string, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := n.Do(func(ns.NetNS) error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body), nil
}

// convMetrics scrapes the agent's /metrics: the sum over labels of
// strait_netlink_operations_total, and the reconcile histogram's sums and
// counts by kind.
func convMetrics(b *testing.B, n *testutil.NS) map[string]float64 {
	body, err := nsHTTPGet(n, "http://127.0.0.1:9099/metrics")
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "strait_netlink_operations_total"):
			out["strait_netlink_operations_total"] += v
		case strings.HasPrefix(name, "strait_reconcile_duration_seconds_sum"), strings.HasPrefix(name, "strait_reconcile_duration_seconds_count"):
			out[name] = v
		}
	}
	return out
}

// convWatch listens to n's route and neighbour notifications (FDB entries
// arrive as AF_BRIDGE neighbours) on a raw netlink socket opened before the
// agent starts, and returns a wait for the moment the last of want overlay
// routes, permanent neighbours and FDB entries arrived; a dump then
// confirms the count. Listening instead of polling the tables takes no CPU
// from the agent, and the raw socket is read in large batches and parsed
// only as far as needed, so the reader does not lag behind the kernel. Zero
// after an error (reported).
func convWatch(b *testing.B, n *testutil.NS, want int, timeout time.Duration) func() time.Time {
	var fd int
	err := n.Do(func(ns.NetNS) error {
		var err error
		if fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE); err != nil {
			return err
		}
		// 3,000 notifications must fit however late the reader runs.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
			return err
		}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_NEIGH})
	})
	if err != nil {
		if fd > 0 {
			_ = unix.Close(fd)
		}
		b.Fatalf("netlink notification socket in %s: %v", n.Name, err)
	}
	result := make(chan time.Time, 1)
	go func() {
		defer unix.Close(fd)
		result <- convWatchLoop(b, n, fd, want, time.Now().Add(timeout))
	}()
	return func() time.Time { return <-result }
}

func convWatchLoop(b *testing.B, n *testutil.NS, fd, want int, deadline time.Time) time.Time {
	seen := [3]map[string]bool{{}, {}, {}} // routes, neighbours, FDB entries
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		nr, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			b.Errorf("reading netlink notifications: %v", err) // ENOBUFS: some were lost
			return time.Time{}
		}
		at := time.Now()
		msgs, err := syscall.ParseNetlinkMessage(buf[:nr])
		if err != nil {
			b.Errorf("parsing netlink notifications: %v", err)
			return time.Time{}
		}
		for _, m := range msgs {
			convNote(seen, m)
		}
		if len(seen[0]) < want || len(seen[1]) < want || len(seen[2]) < want {
			continue
		}
		h, err := netlink.NewHandleAt(netns.NsHandle(int(n.Fd())))
		if err != nil {
			b.Error(err)
			return time.Time{}
		}
		defer h.Close()
		if c, err := convCount(h); err != nil || c != [3]int{want, want, want} {
			b.Errorf("notifications said converged, the kernel holds %v (%v), want %d each", c, err, want)
			return time.Time{}
		}
		return at
	}
	b.Errorf("saw %d routes, %d neighbours, %d FDB entries, want %d each", len(seen[0]), len(seen[1]), len(seen[2]), want)
	return time.Time{}
}

// convNote records one notification: a new IPv4 route of Strait's
// protocol (by destination), a new permanent IPv4 neighbour (by address) or
// a new permanent FDB entry with a remote (by MAC).
func convNote(seen [3]map[string]bool, m syscall.NetlinkMessage) {
	const hdr = 12 // struct rtmsg and struct ndmsg are both 12 bytes
	if len(m.Data) < hdr {
		return
	}
	list, err := nl.ParseRouteAttr(m.Data[hdr:])
	if err != nil {
		return
	}
	attrs := map[uint16][]byte{}
	for _, a := range list {
		attrs[a.Attr.Type&nl.NLA_TYPE_MASK] = a.Value
	}
	switch m.Header.Type {
	case unix.RTM_NEWROUTE: // rtm_family, rtm_dst_len, ..., rtm_protocol at 5
		if m.Data[0] == unix.AF_INET && m.Data[5] == datapath.RouteProtocol && attrs[unix.RTA_DST] != nil {
			seen[0][fmt.Sprintf("%v/%d", attrs[unix.RTA_DST], m.Data[1])] = true
		}
	case unix.RTM_NEWNEIGH: // ndm_family at 0, ndm_state (u16) at 8
		if binary.NativeEndian.Uint16(m.Data[8:10])&unix.NUD_PERMANENT == 0 || attrs[unix.NDA_DST] == nil {
			return
		}
		switch m.Data[0] {
		case unix.AF_INET:
			seen[1][string(attrs[unix.NDA_DST])] = true
		case unix.AF_BRIDGE:
			seen[2][string(attrs[unix.NDA_LLADDR])] = true
		}
	}
}

// convCount returns the overlay routes, permanent neighbours and FDB
// entries on the IPv4 VXLAN device.
func convCount(h *netlink.Handle) ([3]int, error) {
	var c [3]int
	l, err := h.LinkByName(datapath.VTEPDevice4)
	if err != nil {
		return c, err
	}
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: datapath.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return c, err
	}
	c[0] = len(rs)
	ns4, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return c, err
	}
	for _, x := range ns4 {
		if x.State&netlink.NUD_PERMANENT != 0 {
			c[1]++
		}
	}
	fdb, err := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return c, err
	}
	for _, x := range fdb {
		if x.State&netlink.NUD_PERMANENT != 0 && x.IP != nil {
			c[2]++
		}
	}
	return c, nil
}

// convBatchFiles writes the 3,000 operations the agent performs for the
// 1,000 peers as `bridge -batch` and `ip -batch` input.
func convBatchFiles(b *testing.B) [2]string {
	var br, ip strings.Builder
	for i := 1; i <= convPeers; i++ {
		mac, tun := datapath.VTEPMAC(convPeerName(i), 4), convBlock(i).Addr()
		fmt.Fprintf(&br, "fdb replace %s dev %s dst %s self permanent\n", mac, datapath.VTEPDevice4, convVTEPIP(i))
		fmt.Fprintf(&ip, "neigh replace %s lladdr %s dev %s nud permanent\n", tun, mac, datapath.VTEPDevice4)
		fmt.Fprintf(&ip, "route replace %s via %s dev %s onlink proto %d\n", convBlock(i), tun, datapath.VTEPDevice4, datapath.RouteProtocol)
	}
	dir := b.TempDir()
	files := [2]string{filepath.Join(dir, "bridge.batch"), filepath.Join(dir, "ip.batch")}
	for i, s := range []string{br.String(), ip.String()} {
		if err := os.WriteFile(files[i], []byte(s), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return files
}

// convLimit applies the batch files to a VXLAN device in a fresh namespace
// and returns how long the two commands took; it checks the result.
func convLimit(b *testing.B, files [2]string) time.Duration {
	n := testutil.NewNS(b)
	defer func() { _ = n.Delete() }()
	n.MustRun(b, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	n.MustRun(b, "ip", "addr", "add", convNodeIP+"/16", "dev", "eth0")
	n.MustRun(b, "ip", "link", "set", "eth0", "up")
	n.MustRun(b, "ip", "link", "add", datapath.VTEPDevice4, "type", "vxlan", "id", "4096", "local", convNodeIP, "dstport", "4789", "nolearning")
	n.MustRun(b, "ip", "link", "set", datapath.VTEPDevice4, "up")
	start := time.Now()
	for _, c := range [][]string{{"bridge", "-n", n.Name, "-batch", files[0]}, {"ip", "-n", n.Name, "-batch", files[1]}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	took := time.Since(start)
	h, err := netlink.NewHandleAt(netns.NsHandle(int(n.Fd())))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	if c, err := convCount(h); err != nil || c != [3]int{convPeers, convPeers, convPeers} {
		b.Fatalf("limit: counted %v (%v), want %d each", c, err, convPeers)
	}
	return took
}

func medianDur(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
