package flow

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/strait-net/strait/internal/datapath"
	"github.com/strait-net/strait/internal/flow/flowrec"
	"github.com/strait-net/strait/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

const (
	podA4, podB4 = "10.244.0.5", "10.244.0.6"
	podA6, podB6 = "fd10:244::5", "fd10:244::6"
)

// lab is a node namespace wired by the real datapath with two pods, flow
// tracking enabled (the nftables rule and the conntrack sysctls).
type lab struct {
	node, a, b *testutil.NS
}

// udpFromA opens n UDP connections from pod a to pod b (one datagram each,
// source ports from the kernel, destination ports 20000 + i%ports).
func (l *lab) udpFromA(n, ports int) error {
	return l.a.Do(func(ns.NetNS) error {
		for i := range n {
			conn, err := net.Dial("udp", net.JoinHostPort(podB4, strconv.Itoa(20000+i%ports)))
			if err != nil {
				return err
			}
			_, err = conn.Write([]byte("x"))
			_ = conn.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func newLab(t testing.TB) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	l := &lab{node: testutil.NewNS(t)}
	dp, err := datapath.New(datapath.Options{NodeNetns: l.node.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	ctx := context.Background()
	if err := dp.EnsureHost(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dp.EnableFlowTracking(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		n     **testutil.NS
		addrs []string
	}{{&l.a, []string{podA4, podA6}}, {&l.b, []string{podB4, podB6}}} {
		*p.n = testutil.NewNS(t)
		pod := datapath.Pod{Netns: (*p.n).Path(), IfName: "eth0", HostIface: datapath.HostIfaceName("flowtest", (*p.n).Name, "eth0")}
		for _, a := range p.addrs {
			pod.Addrs = append(pod.Addrs, netip.MustParseAddr(a))
		}
		if _, err := dp.SetupPod(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func testScope() *PrefixScope {
	s := &PrefixScope{}
	pp := netip.MustParsePrefix
	s.Set([]netip.Prefix{pp("10.244.0.0/24"), pp("fd10:244::/64")}, []netip.Prefix{pp("10.244.0.0/16"), pp("fd10:244::/56")},
		[]netip.Prefix{pp("10.96.0.0/16")})
	return s
}

func testPods() PodResolver {
	return PodResolverFunc(func(a netip.Addr) (Pod, bool) {
		switch a.String() {
		case podA4, podA6:
			return Pod{Name: "web-1", Namespace: "shop", Node: "n1", Labels: map[string]string{"app": "web"}}, true
		case podB4, podB6:
			return Pod{Name: "db-0", Namespace: "data", Node: "n1"}, true
		}
		return Pod{}, false
	})
}

// startExporter runs an exporter on the lab's node towards c.
func startExporter(t *testing.T, l *lab, c *testCollector, mod func(*Config)) *Exporter {
	t.Helper()
	cfg := Config{
		NodeNetns: l.node.Path(), Node: "n1", Labels: true,
		Table: TableConfig{Scope: testScope(), Pods: testPods(), ActiveTimeout: 2 * time.Second, IdleTimeout: 4 * time.Second,
			Services: func(a netip.Addr, port uint16, proto uint8) string {
				if a.String() == "10.96.0.10" && port == 80 && proto == 6 {
					return "data/db:http"
				}
				return ""
			}},
		Export:       ExportConfig{Address: c.addr},
		PollInterval: time.Second,
		Logger:       testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("exporter: %v", err)
		}
	})
	return e
}

var nftCounterRE = regexp.MustCompile(`counter packets (\d+) bytes (\d+)`)

// senderCounter counts, in n's output hook, the packets and IP bytes that
// match (what the sender really put on the wire).
func senderCounter(t *testing.T, n *testutil.NS, match ...string) func() (uint64, uint64) {
	t.Helper()
	n.MustRun(t, "nft", "add", "table", "inet", "sent")
	n.MustRun(t, "nft", "add chain inet sent out { type filter hook output priority 0; }")
	n.MustRun(t, append([]string{"nft", "add", "rule", "inet", "sent", "out"}, append(match, "counter")...)...)
	return func() (uint64, uint64) {
		m := nftCounterRE.FindStringSubmatch(n.MustRun(t, "nft", "list", "chain", "inet", "sent", "out"))
		if m == nil {
			t.Fatal("no counter in the sender's chain")
		}
		p, _ := strconv.ParseUint(m[1], 10, 64)
		b, _ := strconv.ParseUint(m[2], 10, 64)
		return p, b
	}
}

// tcpExchange has a client in from send up bytes to a server in to, which
// answers down bytes; both close. It returns the client's port.
func tcpExchange(t *testing.T, from, to ns.NetNS, listen, dial string, up, down int) uint16 {
	t.Helper()
	var ln net.Listener
	if err := to.Do(func(ns.NetNS) (err error) { ln, err = net.Listen("tcp", listen); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		if n, err := io.Copy(io.Discard, c); err != nil || n != int64(up) {
			served <- fmt.Errorf("server read %d bytes (%v), want %d", n, err, up)
			return
		}
		_, err = c.Write(make([]byte, down))
		served <- err
	}()
	if dial == "" {
		dial = ln.Addr().String()
	}
	var port uint16
	err := from.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", dial, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		port = uint16(c.LocalAddr().(*net.TCPAddr).Port)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(make([]byte, up)); err != nil {
			return err
		}
		_ = c.(*net.TCPConn).CloseWrite()
		n, err := io.Copy(io.Discard, c)
		if err == nil && n != int64(down) {
			err = fmt.Errorf("client read %d bytes, want %d", n, down)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the last ACK
	return port
}

// flowOf keeps the records of one connection (by client port).
func flowOf(recs []flowrec.Fields, src string, sport uint16) []flowrec.Fields {
	var out []flowrec.Fields
	for _, r := range recs {
		if r.Src.String() == src && r.SrcPort == sport {
			out = append(out, r)
		}
	}
	return out
}

// TestExportTCP: a TCP connection between two pods is exported with the
// 5-tuple, the sender's packet and byte counts in both directions, pods,
// flow type, and deltas that add up; deleting the conntrack entry (DESTROY
// event) ends it with flowEndReason 3.
func TestExportTCP(t *testing.T) {
	l := newLab(t)
	c := startTCP(t, newTestCollector(), nil)
	e := startExporter(t, l, c, nil)
	up := senderCounter(t, l.a, "ip", "daddr", podB4, "tcp", "dport", "7000")
	down := senderCounter(t, l.b, "ip", "saddr", podB4, "tcp", "sport", "7000")

	sport := tcpExchange(t, l.a, l.b, podB4+":7000", "", 200_000, 50_000)
	upP, upB := up()
	downP, downB := down()
	t.Logf("sender counts: %d packets %d bytes up, %d packets %d bytes down", upP, upB, downP, downB)

	match := func(r flowrec.Fields) bool {
		return r.TotalPackets == upP && r.TotalBytes == upB && r.ReverseTotalPackets == downP && r.ReverseTotalBytes == downB
	}
	recs := c.wait(t, 20*time.Second, func(got []flowrec.Fields) bool {
		fs := flowOf(got, podA4, sport)
		return len(fs) > 0 && match(fs[len(fs)-1])
	})
	fs := flowOf(recs, podA4, sport)
	last := fs[len(fs)-1]
	if last.Dst.String() != podB4 || last.DstPort != 7000 || last.Proto != 6 || last.ServiceAddr.IsValid() || last.PostNATSrc.IsValid() {
		t.Errorf("5-tuple/NAT: %+v", last)
	}
	if last.SrcPod != "web-1" || last.SrcNamespace != "shop" || last.DstPod != "db-0" || last.DstNamespace != "data" ||
		last.SrcNode != "n1" || last.FlowType != flowrec.FlowTypeIntraNode || !last.Egress || last.SrcLabels != `{"app":"web"}` {
		t.Errorf("metadata: %+v", last)
	}
	if st := TCPStateName(last.TCPState); st != "TIME_WAIT" && st != "CLOSE" && st != "LAST_ACK" {
		t.Errorf("TCP state %s after both closed", st)
	}
	if last.Start.IsZero() || last.End.Before(last.Start) {
		t.Errorf("times %v .. %v", last.Start, last.End)
	}
	var sumP, sumB uint64
	for _, r := range fs {
		sumP, sumB = sumP+r.Packets, sumB+r.Bytes
	}
	if sumP != upP || sumB != upB {
		t.Errorf("deltas add up to %d packets %d bytes, totals %d/%d", sumP, sumB, upP, upB)
	}

	// DESTROY: the entry is deleted; the final record says so.
	l.node.MustRun(t, "conntrack", "-D", "-p", "tcp", "--orig-src", podA4, "--orig-port-src", strconv.Itoa(int(sport)))
	recs = c.wait(t, 10*time.Second, func(got []flowrec.Fields) bool {
		fs := flowOf(got, podA4, sport)
		return len(fs) > 0 && fs[len(fs)-1].EndReason == EndReasonEnd
	})
	fs = flowOf(recs, podA4, sport)
	if end := fs[len(fs)-1]; !match(end) {
		t.Errorf("end record counts %+v", end)
	}
	testutil.Eventually(t, 5*time.Second, 100*time.Millisecond, func() error {
		for _, f := range e.Flows() {
			if f.Orig.SrcPort == sport {
				return fmt.Errorf("ended flow still in the table")
			}
		}
		return nil
	})
	if st := e.Stats(); st.Events == 0 || st.Dumps == 0 || st.RecordsSent == 0 || !st.Connected {
		t.Errorf("stats %+v", st)
	}
}

// TestExportUDP: UDP datagrams over IPv4 and IPv6 with exactly known sizes.
func TestExportUDP(t *testing.T) {
	l := newLab(t)
	c := startTCP(t, newTestCollector(), nil)
	startExporter(t, l, c, nil)
	const k, size = 7, 333
	for _, tc := range []struct {
		src, dst string
		hdr      uint64
	}{{podA4, podB4, 20 + 8}, {podA6, podB6, 40 + 8}} {
		var pc net.PacketConn
		if err := l.b.Do(func(ns.NetNS) (err error) {
			pc, err = net.ListenPacket("udp", net.JoinHostPort(tc.dst, "0"))
			return
		}); err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		var sport uint16
		if err := l.a.Do(func(ns.NetNS) error {
			conn, err := net.Dial("udp", pc.LocalAddr().String())
			if err != nil {
				return err
			}
			defer conn.Close()
			sport = uint16(conn.LocalAddr().(*net.UDPAddr).Port)
			for range k {
				if _, err := conn.Write(make([]byte, size)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := uint64(k) * (tc.hdr + size)
		recs := c.wait(t, 20*time.Second, func(got []flowrec.Fields) bool {
			fs := flowOf(got, tc.src, sport)
			return len(fs) > 0 && fs[len(fs)-1].TotalPackets == k
		})
		r := flowOf(recs, tc.src, sport)[0]
		if r.TotalBytes != want || r.ReverseTotalPackets != 0 || r.Proto != 17 || r.Dst.String() != tc.dst || r.TCPState != 0 {
			t.Errorf("%s: got %+v, want %d packets %d bytes", tc.src, r, k, want)
		}
	}
}

// TestExportService: a client reaches a ClusterIP that the node DNATs to
// the server pod (the way kube-proxy does); the record has the backend as
// destination (as the destination node sees it too) and the ClusterIP,
// Service port and Service name apart.
func TestExportService(t *testing.T) {
	l := newLab(t)
	c := startTCP(t, newTestCollector(), nil)
	startExporter(t, l, c, nil)
	l.node.MustRun(t, "nft", "add", "table", "ip", "svc")
	l.node.MustRun(t, "nft", "add chain ip svc pre { type nat hook prerouting priority dstnat; }")
	l.node.MustRun(t, "nft", "add rule ip svc pre ip daddr 10.96.0.10 tcp dport 80 dnat to "+podB4+":7001")
	sport := tcpExchange(t, l.a, l.b, podB4+":7001", "10.96.0.10:80", 1000, 1000)
	recs := c.wait(t, 20*time.Second, func(got []flowrec.Fields) bool { return len(flowOf(got, podA4, sport)) > 0 })
	r := flowOf(recs, podA4, sport)[0]
	if r.ServiceAddr.String() != "10.96.0.10" || r.ServicePort != 80 || r.Dst.String() != podB4 || r.DstPort != 7001 ||
		r.Service != "data/db:http" || r.DstPod != "db-0" || r.FlowType != flowrec.FlowTypeIntraNode {
		t.Errorf("service record %+v", r)
	}
}

// TestOverflowResync: a burst of 25,000 short UDP connections against an
// event socket with a tiny buffer overflows it; the exporter resyncs with
// dumps, does not die, and still reports (at least) 20,000 of them.
func TestOverflowResync(t *testing.T) {
	l := newLab(t)
	c := startTCP(t, newTestCollector(), nil)
	e := startExporter(t, l, c, func(cfg *Config) {
		cfg.ReadBuffer = 4096
		cfg.Export.QueueSize = 4096 // also exercises backpressure from the queue into the table
		cfg.Labels = false
	})
	const n = 25_000
	if err := l.udpFromA(n, 200); err != nil {
		t.Fatal(err)
	}
	type key struct{ sport, dport uint16 }
	seen := map[key]bool{}
	c.wait(t, 60*time.Second, func(got []flowrec.Fields) bool {
		for _, r := range got[len(got)-min(len(got), 1):] {
			if r.Proto == 17 && r.Src.String() == podA4 {
				seen[key{r.SrcPort, r.DstPort}] = true
			}
		}
		return len(seen) >= 20_000
	})
	st := e.Stats()
	t.Logf("stats: %+v", st)
	if st.Overflows == 0 {
		t.Errorf("the event socket never overflowed: the test proves nothing")
	}
}

// TestStopDuringOverflow: cancelling the exporter while its event socket
// overflows returns promptly. (The conntrack library's worker reports an
// overflow on an unbuffered channel and Close waits for the worker, so a
// stop that stops reading that channel hung forever.)
func TestStopDuringOverflow(t *testing.T) {
	l := newLab(t)
	// The flood's connections leave the table after 2s (not 30), so it
	// stays small and each resync dump quick.
	l.node.MustRun(t, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=2")
	c := startTCP(t, newTestCollector(), nil)
	stop := make(chan struct{})
	flooding := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				flooding <- nil
				return
			default:
			}
			if err := l.udpFromA(500, 200); err != nil {
				flooding <- err
				return
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-flooding; err != nil {
			t.Errorf("flood: %v", err)
		}
	}()
	var overflows uint64
	var slowest time.Duration
	const runs = 12
	for i := range runs {
		e, err := New(Config{NodeNetns: l.node.Path(), Node: "n1", ReadBuffer: 4096,
			Table:  TableConfig{Scope: testScope(), Pods: testPods(), ActiveTimeout: time.Second, IdleTimeout: time.Second},
			Export: ExportConfig{Address: c.addr}, PollInterval: time.Second, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		time.Sleep(time.Duration(50+i*40) * time.Millisecond)
		cancel()
		stopAt := time.Now()
		select {
		case err := <-done:
			slowest = max(slowest, time.Since(stopAt))
			if err != nil {
				t.Fatalf("run %d: %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("run %d: the exporter did not stop within 30s of its cancel (overflows so far %d)", i, overflows+e.Stats().Overflows)
		}
		overflows += e.Stats().Overflows
	}
	if overflows == 0 {
		t.Errorf("the event socket never overflowed: the test proves nothing")
	}
	t.Logf("%d overflows over %d runs; slowest stop %v", overflows, runs, slowest)
}

// TestStopDuringDump: a stop interrupts a conntrack dump in progress
// instead of waiting for it (a table of 100k+ connections takes seconds to
// read). The exporter is cancelled right after it starts, while its first
// dump of a 60,000-entry table runs: it must return in well under the time
// that dump takes (measured just before, in the same namespace).
func TestStopDuringDump(t *testing.T) {
	l := newLab(t)
	e, err := New(Config{NodeNetns: l.node.Path(), Node: "n1",
		Table:  TableConfig{Scope: testScope(), Pods: testPods(), ActiveTimeout: time.Second, IdleTimeout: time.Second},
		Export: ExportConfig{Address: startTCP(t, newTestCollector(), nil).addr}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := e.reader.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	const entries = 60_000
	src, dst := netip.MustParseAddr(podA4), netip.MustParseAddr(podB4)
	for i := range entries {
		fl := conntrack.NewFlow(unix.IPPROTO_UDP, 0, src, dst, uint16(1024+i%60000), uint16(1000+i/60000), 600, 0)
		if err := cc.Create(fl); err != nil {
			t.Fatalf("create conntrack entry %d: %v", i, err)
		}
	}
	start := time.Now()
	if _, err := cc.Dump(nil); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	stopAt := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the exporter did not stop within 30s of its cancel")
	}
	stopped := time.Since(stopAt)
	if stopped > took/4 {
		t.Errorf("the exporter stopped %v after its cancel; a dump of %d entries takes %v: the stop waited for it", stopped, entries, took)
	}
	t.Logf("a dump of %d entries takes %v; the exporter stopped %v after its cancel", entries, took, stopped)
}
