package e2e

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	aggapi "github.com/strait-net/strait/internal/aggregator/api"
	"github.com/strait-net/strait/internal/lab"
	"github.com/strait-net/strait/internal/testutil"
)

// flowConn is one connection the flow check makes from p-n1 to p-n2, and
// the counters conntrack on the source node holds for it.
type flowConn struct {
	name           string
	proto          uint8
	src, dst       string
	sport, dport   uint16
	packets, bytes uint64 // original direction
	rpackets       uint64 // reply direction
	rbytes         uint64
}

func (c flowConn) String() string {
	return fmt.Sprintf("%s %s:%d -> %s:%d", c.name, c.src, c.sport, c.dst, c.dport)
}

func (c flowConn) counts() string {
	return fmt.Sprintf("%d pkts %d B / reverse %d pkts %d B", c.packets, c.bytes, c.rpackets, c.rbytes)
}

// Payload of the flow check's traffic.
const (
	flowTCPPayload   = 100000 // bytes p-n1 sends over one TCP connection
	flowUDPDatagrams = 20
	flowUDPSize      = 200 // payload bytes per datagram
)

// flowsEndToEnd (lab up with --flows): one TCP connection and one UDP
// exchange from p-n1 to p-n2 (nodes n1 and n2, different subnets) with known
// payloads go through the agents' conntrack exporters to the aggregator in
// aggregate mode, which sends them on over IPFIX/UDP to nfacctd and tshark
// on the outside host. For each connection: exactly one correlated entry
// in the aggregator with both pods' names, namespaces and nodes; counters
// equal to conntrack's own on the source node (UDP: exactly what was sent,
// datagrams x (payload + 28 B of headers); TCP: the payload plus 40 to
// 60 B of IP and TCP headers per packet); nfacctd decodes Strait's pod
// elements (custom primitives) and accounts the same packets and bytes;
// tshark decodes the records with no malformed packet; straitctl flows on
// the node and with --aggregator shows the connections.
func flowsEndToEnd(t *testing.T, shared *labEnv, podIPs map[string][]string) {
	sub := *shared // the helpers fail this subtest, not the shared lab's test
	sub.t = t
	e := &sub
	dir := t.TempDir()
	ext := e.prefix + "ext"
	downHost, downPort, _ := strings.Cut(lab.FlowsDownstream, ":")

	// Downstream collectors on the outside host, where the aggregator sends.
	prims := filepath.Join(dir, "primitives.lst")
	nfOut := filepath.Join(dir, "nfacctd.json")
	writeFlowFile(t, prims, "name=src_pod field_type=99999:101 len=vlen semantics=str\nname=src_ns field_type=99999:102 len=vlen semantics=str\n"+
		"name=dst_pod field_type=99999:104 len=vlen semantics=str\nname=dst_ns field_type=99999:105 len=vlen semantics=str\n")
	writeFlowFile(t, filepath.Join(dir, "nfacctd.conf"), fmt.Sprintf(`daemonize: false
nfacctd_ip: %s
nfacctd_port: %s
aggregate_primitives: %s
plugins: print[p]
aggregate[p]: src_host, dst_host, src_port, dst_port, proto, src_pod, src_ns, dst_pod, dst_ns
print_output[p]: json
print_output_file[p]: %s
print_output_file_append[p]: true
print_refresh_time[p]: 2
`, downHost, downPort, prims, nfOut))
	nfacctd := testutil.StartProcess(t, ext, "nfacctd", "-f", filepath.Join(dir, "nfacctd.conf"))
	capture := filepath.Join(dir, "ipfix.pcap")
	tshark := testutil.StartProcess(t, ext, "tshark", "-i", "any", "-f", "udp port "+downPort, "-w", capture)
	waitProcessOutput(t, tshark, "Capturing on")
	waitProcessOutput(t, nfacctd, "waiting for NetFlow/IPFIX data")

	src, dst := podIPs["n1"][0], podIPs["n2"][0]
	tcp := flowConn{name: "tcp", proto: 6, src: src, dst: dst, sport: 40001, dport: 5201}
	udp := flowConn{name: "udp", proto: 17, src: src, dst: dst, sport: 40002, dport: 5202}

	// TCP: the server counts what it received.
	got := make(chan string, 1)
	go func() {
		out, err := e.podRunToFile("p-n2", "nc -l 5201 | wc -c", "/tmp/tcp-server")
		got <- serverResult(out, err)
	}()
	// Only once the server listens: a refused attempt would reuse the 5-tuple.
	e.waitListening("tcp", tcp.dport, got)
	e.mustKubectl("exec", "p-n1", "--", "sh", "-c",
		fmt.Sprintf("head -c %d /dev/zero | nc -N -w 5 -p %d %s %d", flowTCPPayload, tcp.sport, dst, tcp.dport))
	if out := <-got; out != strconv.Itoa(flowTCPPayload) {
		t.Fatalf("TCP server on p-n2 received %q bytes, want %d", out, flowTCPPayload)
	}
	// UDP: one nc sends flowUDPDatagrams datagrams of flowUDPSize bytes (one
	// read of its stdin each, 50 ms apart); the server only receives.
	// (/usr/bin/nc: busybox's timeout would run its own nc applet.)
	go func() {
		out, err := e.podRunToFile("p-n2", "timeout 8 /usr/bin/nc -u -l 5202 > /tmp/udp; wc -c < /tmp/udp", "/tmp/udp-server")
		got <- serverResult(out, err)
	}()
	e.waitListening("udp", udp.dport, got)
	e.mustKubectl("exec", "p-n1", "--", "sh", "-c", fmt.Sprintf(
		"i=0; while [ $i -lt %d ]; do head -c %d /dev/zero; sleep 0.05; i=$((i+1)); done | nc -u -w 1 -p %d %s %d",
		flowUDPDatagrams, flowUDPSize, udp.sport, dst, udp.dport))
	if out := <-got; out != strconv.Itoa(flowUDPDatagrams*flowUDPSize) {
		t.Fatalf("UDP server on p-n2 received %q bytes, want %d", out, flowUDPDatagrams*flowUDPSize)
	}

	// Conntrack's own counters on the source node, checked against the payload.
	tcp = e.conntrackCounts(tcp)
	udp = e.conntrackCounts(udp)
	t.Logf("conntrack on n1: %v: %s; %v: %s", tcp, tcp.counts(), udp, udp.counts())
	if udp.packets != flowUDPDatagrams || udp.bytes != flowUDPDatagrams*(flowUDPSize+28) || udp.rpackets != 0 {
		t.Fatalf("conntrack %v: %s, want %d datagrams of %d B and no reply", udp, udp.counts(), flowUDPDatagrams, flowUDPSize+28)
	}
	if h := tcp.bytes - flowTCPPayload; tcp.bytes < flowTCPPayload || h < 40*tcp.packets || h > 60*tcp.packets ||
		tcp.rbytes < 40*tcp.rpackets || tcp.rbytes > 60*tcp.rpackets {
		t.Fatalf("conntrack %v: %s: not %d B of payload plus 40-60 B of headers per packet", tcp, tcp.counts(), flowTCPPayload)
	}

	// The aggregator: one correlated connection each, counters equal to conntrack's.
	url := strings.TrimSpace(e.mustRun("flows-api"))
	testutil.Eventually(t, 60*time.Second, time.Second, func() error {
		resp, err := e.flowsCtl("flows", "--aggregator", url, "--pod", "default/p-n1", "-o", "json")
		if err != nil {
			return err
		}
		for _, c := range []flowConn{tcp, udp} {
			if err := matchAPIFlow(resp, c, true); err != nil {
				return fmt.Errorf("aggregator (%s mode): %w", resp.Mode, err)
			}
		}
		return nil
	})
	// The source node's agent, from its live table.
	sock := filepath.Join(e.dir, "nodes", "n1", "strait", "cni.sock")
	testutil.Eventually(t, 30*time.Second, time.Second, func() error {
		resp, err := e.flowsCtl("--socket", sock, "flows", "--pod", "default/p-n1", "-o", "json")
		if err != nil {
			return err
		}
		for _, c := range []flowConn{tcp, udp} {
			if err := matchAPIFlow(resp, c, false); err != nil {
				return fmt.Errorf("agent on n1: %w", err)
			}
		}
		return nil
	})
	if out, err := exec.Command(filepath.Join(filepath.Dir(e.bin), "straitctl"), "flows", "--aggregator", url).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "p-n1") || !strings.Contains(string(out), "p-n2") {
		t.Fatalf("straitctl flows --aggregator %s: %v\n%s", url, err, out)
	}

	// nfacctd: the connections' records carry both pods (custom primitives
	// 99999:101/102/104/105) and add up to conntrack's counters.
	testutil.Eventually(t, 60*time.Second, time.Second, func() error {
		for _, c := range []flowConn{tcp, udp} {
			if err := nfacctdTotals(nfOut, c); err != nil {
				return err
			}
			// The same records in the aggregator's JSON-lines log: both
			// pods in every one, the latest with conntrack's totals.
			if err := flowLogTotals(filepath.Join(e.dir, "logs", "flows.jsonl"), c); err != nil {
				return err
			}
		}
		return nil
	})

	// tshark: the aggregator's messages decode, with the connections' records
	// and the pods' names in them, and nothing malformed.
	tshark.Signal(syscall.SIGTERM)
	testutil.Eventually(t, 10*time.Second, 200*time.Millisecond, func() error {
		if !tshark.Exited() {
			return fmt.Errorf("tshark still runs")
		}
		return nil
	})
	decode := func(filter string, fields ...string) []string {
		t.Helper()
		args := []string{"-r", capture, "-d", "udp.port==" + downPort + ",cflow", "-Y", filter, "-T", "fields"}
		for _, f := range fields {
			args = append(args, "-e", f)
		}
		out, err := exec.Command("tshark", args...).Output()
		if err != nil {
			t.Fatalf("tshark %v: %v", args, err)
		}
		return strings.Fields(string(out))
	}
	if all := decode("cflow", "frame.number"); len(all) == 0 {
		t.Fatal("tshark captured no IPFIX message from the aggregator")
	}
	// The capture starts while the aggregator already exports: data sets
	// before the first template it captured cannot be decoded by tshark, which
	// is the capture's start, not a malformed message. Judge every frame from
	// the first template on.
	first := -1
	for _, f := range decode("cflow.template_id", "frame.number") {
		if n, err := strconv.Atoi(f); err == nil && (first < 0 || n < first) {
			first = n
		}
	}
	if first < 0 {
		t.Fatal("tshark captured no IPFIX template from the aggregator")
	}
	if bad := decode(fmt.Sprintf("frame.number >= %d && (_ws.malformed || _ws.expert.severity == error)", first), "frame.number"); len(bad) > 0 {
		t.Fatalf("tshark finds malformed IPFIX in frames %v (first template in frame %d)", bad, first)
	}
	for _, c := range []flowConn{tcp, udp} {
		payloads := decode(fmt.Sprintf("cflow.srcaddr == %s && cflow.srcport == %d && cflow.dstaddr == %s && cflow.dstport == %d && cflow.protocol == %d",
			c.src, c.sport, c.dst, c.dport, c.proto), "udp.payload")
		if len(payloads) == 0 {
			t.Fatalf("tshark decodes no record of %v", c)
		}
		for _, s := range []string{"p-n1", "p-n2", "default"} {
			if !strings.Contains(strings.ReplaceAll(strings.Join(payloads, " "), ":", ""), hex.EncodeToString([]byte(s))) {
				t.Fatalf("the messages with %v do not carry %q", c, s)
			}
		}
	}
	t.Logf("flows: %v and %v correlated once each with both pods; aggregator, agent, nfacctd and tshark agree with conntrack", tcp, udp)
}

// waitListening waits until a socket of p-n2 listens on port (proto tcp
// or udp), from the pod's /proc/net tables.
func (e *labEnv) waitListening(proto string, port uint16, server chan string) {
	e.t.Helper()
	want := fmt.Sprintf(":%04X ", port)
	testutil.Eventually(e.t, 20*time.Second, 200*time.Millisecond, func() error {
		select {
		case out := <-server:
			e.t.Fatalf("the %s server on p-n2 ended before listening: %s", proto, out)
		default:
		}
		out, err := e.podRead("p-n2", "cat /proc/net/"+proto+" /proc/net/"+proto+"6")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 3 && strings.HasSuffix(f[1]+" ", want) && (proto == "udp" || f[3] == "0A") {
				return nil
			}
		}
		return fmt.Errorf("nothing listens on %s port %d in p-n2:\n%s", proto, port, out)
	})
}

// serverResult is a server's output, with the error when it failed.
func serverResult(out string, err error) string {
	if err != nil {
		return fmt.Sprintf("%v: %s", err, out)
	}
	// The last line: the shell may report the server killed by timeout first.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// conntrackCounts reads the connection's counters from conntrack on n1.
func (e *labEnv) conntrackCounts(c flowConn) flowConn {
	e.t.Helper()
	out := e.mustRun("exec", "n1", "--", "conntrack", "-L", "-p", map[uint8]string{6: "tcp", 17: "udp"}[c.proto],
		"-s", c.src, "-d", c.dst, "--sport", strconv.Itoa(int(c.sport)), "--dport", strconv.Itoa(int(c.dport)))
	m := regexp.MustCompile(`packets=(\d+) bytes=(\d+)`).FindAllStringSubmatch(out, -1)
	if len(m) != 2 {
		e.t.Fatalf("conntrack on n1 for %v (accounting on?):\n%s", c, out)
	}
	n := func(s string) uint64 { v, _ := strconv.ParseUint(s, 10, 64); return v }
	c.packets, c.bytes, c.rpackets, c.rbytes = n(m[0][1]), n(m[0][2]), n(m[1][1]), n(m[1][2])
	return c
}

// flowsCtl runs straitctl and decodes its -o json flows answer.
func (e *labEnv) flowsCtl(args ...string) (aggapi.FlowsResponse, error) {
	var resp aggapi.FlowsResponse
	out, err := exec.Command(filepath.Join(filepath.Dir(e.bin), "straitctl"), args...).Output()
	if err != nil {
		return resp, fmt.Errorf("straitctl %v: %w: %s", args, err, out)
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		return resp, fmt.Errorf("straitctl %v: %w: %s", args, err, out)
	}
	return resp, nil
}

// matchAPIFlow checks that resp holds exactly one flow for c, from p-n1 on
// n1 to p-n2 on n2 (both in default), with conntrack's counters;
// correlated asks for the aggregator's mark that both nodes reported it.
func matchAPIFlow(resp aggapi.FlowsResponse, c flowConn, correlated bool) error {
	var found []aggapi.Flow
	for _, f := range resp.Flows {
		if f.SourceIP == c.src && f.DestinationIP == c.dst && f.SourcePort == c.sport && f.DestinationPort == c.dport && f.Protocol == c.proto {
			found = append(found, f)
		}
	}
	if len(found) != 1 {
		return fmt.Errorf("%d flows for %v, want 1: %+v", len(found), c, found)
	}
	f := found[0]
	if f.SourcePod != "p-n1" || f.SourceNamespace != "default" || f.SourceNode != "n1" ||
		f.DestinationPod != "p-n2" || f.DestinationNamespace != "default" || f.DestinationNode != "n2" || f.FlowType != "inter-node" {
		return fmt.Errorf("%v: pods, nodes or type wrong: %+v", c, f)
	}
	if correlated && !f.Correlated {
		return fmt.Errorf("%v: not correlated: %+v", c, f)
	}
	if f.Packets != c.packets || f.Bytes != c.bytes || f.ReversePackets != c.rpackets || f.ReverseBytes != c.rbytes {
		return fmt.Errorf("%v: %d pkts %d B / reverse %d pkts %d B, conntrack has %s", c, f.Packets, f.Bytes, f.ReversePackets, f.ReverseBytes, c.counts())
	}
	return nil
}

// nfacctdTotals checks nfacctd's JSON lines for c: every line names both
// pods and namespaces, and their packets and bytes (nfacctd sums
// octet/packetDeltaCount) add up to conntrack's counters of the original
// direction.
func nfacctdTotals(path string, c flowConn) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var packets, bytes uint64
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		num := func(k string) uint64 { v, _ := m[k].(float64); return uint64(v) }
		if m["ip_src"] != c.src || m["ip_dst"] != c.dst || num("port_src") != uint64(c.sport) || num("port_dst") != uint64(c.dport) {
			continue
		}
		lines = append(lines, sc.Text())
		if m["src_pod"] != "p-n1" || m["src_ns"] != "default" || m["dst_pod"] != "p-n2" || m["dst_ns"] != "default" {
			return fmt.Errorf("nfacctd: %v without both pods: %s", c, sc.Text())
		}
		packets += num("packets")
		bytes += num("bytes")
	}
	if packets != c.packets || bytes != c.bytes {
		return fmt.Errorf("nfacctd: %v: %d packets %d bytes in %d lines, conntrack has %s:\n%s", c, packets, bytes, len(lines), c.counts(), strings.Join(lines, "\n"))
	}
	return nil
}

// flowLogTotals checks the aggregator's flow log for c: every record names
// both pods and namespaces, and the last one carries conntrack's totals in
// both directions.
func flowLogTotals(path string, c flowConn) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var last map[string]any
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		num := func(k string) uint64 { v, _ := m[k].(float64); return uint64(v) }
		if m["sourceIPv4Address"] != c.src || m["destinationIPv4Address"] != c.dst || num("sourceTransportPort") != uint64(c.sport) ||
			num("destinationTransportPort") != uint64(c.dport) || num("protocolIdentifier") != uint64(c.proto) {
			continue
		}
		n++
		if m["sourcePodName"] != "p-n1" || m["sourcePodNamespace"] != "default" || m["destinationPodName"] != "p-n2" || m["destinationPodNamespace"] != "default" {
			return fmt.Errorf("flow log: %v without both pods: %s", c, line)
		}
		last = m
	}
	if last == nil {
		return fmt.Errorf("flow log: no record of %v", c)
	}
	num := func(k string) uint64 { v, _ := last[k].(float64); return uint64(v) }
	if num("packetTotalCount") != c.packets || num("octetTotalCount") != c.bytes || num("reversePacketTotalCount") != c.rpackets || num("reverseOctetTotalCount") != c.rbytes {
		return fmt.Errorf("flow log: %v: latest of %d records has %v, conntrack has %s", c, n, last, c.counts())
	}
	return nil
}

// waitProcessOutput waits until p printed s.
func waitProcessOutput(t *testing.T, p *testutil.Process, s string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		if strings.Contains(p.Output(), s) {
			return nil
		}
		if p.Exited() {
			t.Fatalf("process exited before printing %q:\n%s", s, p.Output())
		}
		return fmt.Errorf("no %q yet", s)
	})
}

func writeFlowFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
