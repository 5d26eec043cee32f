package aggregator

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/strait-net/strait/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// aggregatorBinary returns bin/strait-aggregator from $STRAIT_BIN (make test) or builds it once.
var aggregatorBinary = sync.OnceValues(func() (string, error) {
	if d := os.Getenv("STRAIT_BIN"); d != "" {
		p := filepath.Join(d, "strait-aggregator")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	dir, err := os.MkdirTemp("", "strait-aggregator-bin-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "strait-aggregator")
	cmd := exec.Command("go", "build", "-o", out, "github.com/strait-net/strait/cmd/strait-aggregator")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build strait-aggregator: %w: %s", err, b)
	}
	return out, nil
})

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	testutil.RequireRoot(t)
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (hack/install-deps.sh installs it): %v", tool, err)
		}
	}
}

// inNS runs f (which creates sockets) inside the namespace.
func inNS(n *testutil.NS) func(func() error) error {
	return func(f func() error) error { return n.Do(func(ns.NetNS) error { return f() }) }
}

// nsHTTP is an HTTP client whose connections are made inside the namespace.
func nsHTTP(n *testutil.NS) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := inNS(n)(func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
}

// runAggregatorProcess starts the strait-aggregator binary in the namespace and waits for /readyz.
func runAggregatorProcess(t *testing.T, n *testutil.NS, yaml string) *testutil.Process {
	t.Helper()
	bin, err := aggregatorBinary()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "aggregator.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testutil.StartProcess(t, n.Name, bin, "-config", cfg)
	waitReady(t, n, p)
	return p
}

func waitReady(t *testing.T, n *testutil.NS, p *testutil.Process) {
	t.Helper()
	client := nsHTTP(n)
	eventually(t, 15*time.Second, func() error {
		if p.Exited() {
			t.Fatalf("strait-aggregator exited:\n%s", p.Output())
		}
		resp, err := client.Get("http://127.0.0.1:10380/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
}

// linkedPair makes namespaces a and b joined by a veth (va 198.51.100.1/24 in a, vb 198.51.100.2/24 in b).
func linkedPair(t *testing.T) (*testutil.NS, *testutil.NS) {
	a, b := testutil.NewNS(t), testutil.NewNS(t)
	a.MustRun(t, "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b.Name)
	a.MustRun(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "va")
	b.MustRun(t, "ip", "addr", "add", "198.51.100.2/24", "dev", "vb")
	a.MustRun(t, "ip", "link", "set", "va", "up")
	b.MustRun(t, "ip", "link", "set", "vb", "up")
	return a, b
}

// traffic makes TCP connections, UDP datagrams and pings from a to b; tag varies the ports.
func traffic(t *testing.T, a, b *testutil.NS, tag int) {
	t.Helper()
	for p := 5001; p <= 5003; p++ {
		testutil.StartProcess(t, b.Name, "nc.openbsd", "-l", "-k", "198.51.100.2", strconv.Itoa(p))
	}
	time.Sleep(300 * time.Millisecond)
	for i := range 6 {
		a.MustRun(t, "sh", "-c", fmt.Sprintf("echo hello%d | nc.openbsd -N -w 2 198.51.100.2 %d", i, 5001+i%3))
	}
	for i := range 4 {
		a.MustRun(t, "sh", "-c", fmt.Sprintf("echo x | nc.openbsd -u -w 0 198.51.100.2 %d", 6000+10*tag+i))
	}
	a.MustRun(t, "ping", "-c", "2", "-i", "0.2", "198.51.100.2")
}

// tsharkCount counts the values of field in packets of capture matching filter (one per data record for
// fields every record carries).
func tsharkCount(t *testing.T, capture, filter, field string) int {
	t.Helper()
	out, err := exec.Command("tshark", "-r", capture, "-d", "udp.port==2100,cflow", "-d", "udp.port==4739,cflow",
		"-Y", filter, "-T", "fields", "-e", field).Output() // stdout only: stderr has a banner line
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			n += len(strings.Split(line, ","))
		}
	}
	return n
}

// TestRealExportersThroughProxy: softflowd (from a capture) and pmacctd nfprobe (live on a veth) send IPFIX
// to the aggregator in proxy mode; every flow record they sent (counted by softflowd itself and by tshark on
// the wire) is decoded and forwarded with 403/405 to a test collector, to nfacctd (custom primitives decode
// 403/405) and to nfcapd (read back with nfdump); tshark decodes the aggregator's output without
// malformed-packet warnings; a destination that is down does not stop the others.
func TestRealExportersThroughProxy(t *testing.T) {
	requireTools(t, "softflowd", "pmacctd", "nfacctd", "nfcapd", "nfdump", "tshark", "tcpdump", "nc.openbsd")
	a, b := linkedPair(t)
	dir := t.TempDir()
	col := newTestCollector(t, "tcp", inNS(a))

	// Downstream collectors, in namespace a.
	prims := filepath.Join(dir, "primitives.lst")
	nfacctdOut := filepath.Join(dir, "nfacctd.json")
	writeFile(t, prims, "name=orig_odid field_type=405 len=4 semantics=u_int\nname=orig_exp_ip field_type=403 len=4 semantics=ip\n"+
		"name=src_pod field_type=99999:101 len=vlen semantics=str\n")
	writeFile(t, filepath.Join(dir, "nfacctd.conf"), fmt.Sprintf(`daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: 2100
aggregate_primitives: %s
plugins: print[p]
aggregate[p]: src_host, dst_host, src_port, dst_port, proto, orig_odid, orig_exp_ip, src_pod
print_output[p]: json
print_output_file[p]: %s
print_output_file_append[p]: true
print_refresh_time[p]: 1
`, prims, nfacctdOut))
	nfacctd := testutil.StartProcess(t, a.Name, "nfacctd", "-f", filepath.Join(dir, "nfacctd.conf"))
	nfcapDir := filepath.Join(dir, "nfcap")
	if err := os.Mkdir(nfcapDir, 0o755); err != nil {
		t.Fatal(err)
	}
	nfcapd := testutil.StartProcess(t, a.Name, "nfcapd", "-b", "127.0.0.1", "-p", "2101", "-w", nfcapDir, "-t", "60")
	capture := filepath.Join(dir, "lo.pcap")
	tshark := testutil.StartProcess(t, a.Name, "tshark", "-i", "lo", "-f", "udp port 2100 or udp port 4739", "-w", capture)
	waitOutput(t, tshark, "Capturing on")
	waitOutput(t, nfacctd, "waiting for NetFlow/IPFIX data")

	agg := runAggregatorProcess(t, a, fmt.Sprintf(`
mode: proxy
observationDomainID: 4242
collector: {udp: {address: "127.0.0.1:4739"}}
destinations:
  - {name: collector, type: ipfix, transport: tcp, address: %q}
  - {name: nfacctd, type: ipfix, transport: udp, address: "127.0.0.1:2100"}
  - {name: nfcapd, type: ipfix, transport: udp, address: "127.0.0.1:2101"}
  - {name: dead, type: ipfix, transport: tcp, address: "127.0.0.1:2999"}
api: {address: "127.0.0.1:10380"}
`, col.addr))

	// softflowd from a capture of traffic between the namespaces.
	pcap := filepath.Join(dir, "t.pcap")
	dump := testutil.StartProcess(t, a.Name, "tcpdump", "-i", "va", "-U", "-w", pcap)
	waitOutput(t, dump, "listening on")
	traffic(t, a, b, 0)
	time.Sleep(500 * time.Millisecond)
	dump.Signal(syscall.SIGTERM)
	eventually(t, 5*time.Second, func() error {
		if !dump.Exited() {
			return errNotYet
		}
		return nil
	})
	out := a.MustRun(t, "softflowd", "-r", pcap, "-v", "10", "-A", "milli", "-n", "127.0.0.1:4739", "-d", "-c", "none")
	m := regexp.MustCompile(`Flows exported: (\d+) \((\d+) records\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("softflowd output has no export count:\n%s", out)
	}
	softflowdRecords, _ := strconv.Atoi(m[2])

	// pmacctd nfprobe live on the veth.
	writeFile(t, filepath.Join(dir, "pmacctd.conf"), `daemonize: false
pcap_interface: va
plugins: nfprobe[np]
nfprobe_version[np]: 10
nfprobe_receiver[np]: 127.0.0.1:4739
nfprobe_timeouts[np]: tcp=2:udp=2:icmp=2:general=2:maxlife=5:expint=1
`)
	pm := testutil.StartProcess(t, a.Name, "pmacctd", "-f", filepath.Join(dir, "pmacctd.conf"))
	time.Sleep(2 * time.Second)
	traffic(t, a, b, 1)
	time.Sleep(8 * time.Second) // idle and lifetime expiry export the flows
	pm.Signal(syscall.SIGTERM)
	eventually(t, 10*time.Second, func() error {
		if !pm.Exited() {
			return errNotYet
		}
		return nil
	})

	// Strait's own exporter (the codec) adds records with an enterprise element (sourcePodName, 99999:101).
	strait := newTestExporter(t, "udp", "127.0.0.1:4739", 77)
	strait.dial = func(network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNS(a)(func() error {
			var err error
			c, err = net.Dial(network, addr)
			return err
		})
		return c, err
	}
	if err := strait.connect(); err != nil {
		t.Fatal(err)
	}
	if err := strait.send(0, 5); err != nil {
		t.Fatal(err)
	}

	// What the exporters put on the wire (tshark's own decoding) = what reached the test collector.
	time.Sleep(time.Second)
	tshark.Signal(syscall.SIGINT)
	eventually(t, 10*time.Second, func() error {
		if !tshark.Exited() {
			return errNotYet
		}
		return nil
	})
	wantFlows := tsharkCount(t, capture, "udp.dstport==4739", "cflow.protocol")
	eventually(t, 10*time.Second, func() error {
		n := 0
		for _, r := range col.snapshot() {
			if _, ok := r["protocolIdentifier"]; ok {
				n++
			}
		}
		if n != wantFlows {
			out, _ := exec.Command("tshark", "-r", capture, "-Y", "udp.dstport==4739", "-T", "fields", "-e", "frame.time_relative",
				"-e", "udp.srcport", "-e", "cflow.flowset_id", "-e", "cflow.protocol").Output()
			return fmt.Errorf("collector has %d flow records, tshark saw %d sent:\n%s", n, wantFlows, out)
		}
		return nil
	})
	all := col.snapshot()
	byDomain := map[any]int{}
	for _, r := range all {
		if r["originalExporterIPv4Address"] != "127.0.0.1" || r["originalObservationDomainId"] == nil {
			t.Fatalf("forwarded record without 403/405: %v", r)
		}
		if _, ok := r["protocolIdentifier"]; ok {
			byDomain[r["originalObservationDomainId"]]++
		}
	}
	t.Logf("softflowd reported %d records; tshark saw %d flow records from all exporters; collector has %d records (%d flow records by original domain %v)",
		softflowdRecords, wantFlows, len(all), wantFlows, byDomain)
	if byDomain[uint64(77)] != 5 {
		t.Fatalf("%d records of Strait's exporter (domain 77) forwarded, want 5", byDomain[uint64(77)])
	}
	// softflowd's count includes its one options record; the rest beyond softflowd and Strait's is pmacctd's.
	if softflowdRecords == 0 || wantFlows-5 <= softflowdRecords-1 {
		t.Fatalf("softflowd sent %d records, all exporters %d flow records: pmacctd sent nothing?", softflowdRecords, wantFlows)
	}
	client := nsHTTP(a)
	if got := metric(t, client, "127.0.0.1:10380", "strait_aggregator_records_received_total"); int(got) != len(all) {
		t.Fatalf("aggregator received %v records, collector got %d", got, len(all))
	}
	if got := metric(t, client, "127.0.0.1:10380", "strait_aggregator_messages_malformed_total"); got != 0 {
		t.Fatalf("%v malformed messages from real exporters", got)
	}
	if got := metric(t, client, "127.0.0.1:10380", "strait_aggregator_records_dropped_total", `destination="dead"`); int(got) != len(all) {
		t.Fatalf("dead destination dropped %v, want %d", got, len(all))
	}

	// tshark decodes the aggregator's output to nfacctd: 405 present in every flow record, nothing malformed.
	if n := tsharkCount(t, capture, "udp.dstport==2100 && _ws.malformed", "frame.number"); n != 0 {
		t.Fatalf("tshark: %d malformed packets in the aggregator's output", n)
	}
	if n := tsharkCount(t, capture, "udp.dstport==2100", "cflow.original_observation_domain_id"); n != len(all) {
		t.Fatalf("tshark decoded 405 in %d records, want %d", n, len(all))
	}

	// nfacctd: the flows' packets, keyed by the custom primitives for 403/405.
	eventually(t, 10*time.Second, func() error {
		pk, n, pods := nfacctdPackets(t, nfacctdOut)
		if !pods["pod-3"] {
			return fmt.Errorf("nfacctd did not decode sourcePodName (99999:101): pods %v", pods)
		}
		want := 0
		for _, r := range all {
			if p, ok := r["packetDeltaCount"].(uint64); ok {
				want += int(p)
			}
		}
		if pk != want || n == 0 {
			return fmt.Errorf("nfacctd: %d packets in %d lines with orig_odid/orig_exp_ip, want %d packets", pk, n, want)
		}
		return nil
	})
	nfacctd.Signal(syscall.SIGTERM)

	// nfcapd: flush and read back with nfdump.
	nfcapd.Signal(syscall.SIGTERM)
	eventually(t, 10*time.Second, func() error {
		if !nfcapd.Exited() {
			return errNotYet
		}
		return nil
	})
	csv, err := exec.Command("nfdump", "-R", nfcapDir, "-q", "-o", "csv").CombinedOutput()
	if err != nil {
		t.Fatalf("nfdump: %v: %s", err, csv)
	}
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(string(csv)), "\n") {
		if strings.Count(l, ",") > 10 { // a flow line (ICMPv6 ones have link-local addresses)
			lines++
		}
	}
	if lines != wantFlows {
		t.Fatalf("nfdump read %d flows from nfcapd, want %d:\n%s", lines, wantFlows, csv)
	}
	_ = agg
}

// nfacctdPackets sums packets of nfacctd's JSON lines that carry the 403/405 primitives and collects the
// src_pod values (Strait's enterprise element 99999:101).
func nfacctdPackets(t *testing.T, path string) (packets, lines int, pods map[string]bool) {
	pods = map[string]bool{}
	for _, l := range readLines(t, path) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		if m["orig_exp_ip"] != "127.0.0.1" || m["orig_odid"] == nil {
			continue
		}
		if p, ok := m["packets"].(float64); ok {
			packets += int(p)
			lines++
		}
		if p, ok := m["src_pod"].(string); ok && p != "" {
			pods[p] = true
		}
	}
	return packets, lines, pods
}

// waitOutput waits until the process printed s (its "ready" line).
func waitOutput(t *testing.T, p *testutil.Process, s string) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		if strings.Contains(p.Output(), s) {
			return nil
		}
		if p.Exited() {
			t.Fatalf("process exited before printing %q:\n%s", s, p.Output())
		}
		return errNotYet
	})
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAggregatorKilledExporterReconnects: the aggregator process is killed (SIGKILL) and restarted; an
// exporter built on the codec reconnects, announces its template again, and its records flow on.
func TestAggregatorKilledExporterReconnects(t *testing.T) {
	requireTools(t)
	n := testutil.NewNS(t)
	col := newTestCollector(t, "tcp", inNS(n))
	agg := runAggregatorProcess(t, n, fmt.Sprintf(`
collector: {tcp: {address: "127.0.0.1:4739"}}
destinations: [{name: c, type: ipfix, address: %q}]
api: {address: "127.0.0.1:10380"}
`, col.addr))
	e := newTestExporter(t, "tcp", "127.0.0.1:4739", 3)
	e.dial = func(network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNS(n)(func() error {
			var err error
			c, err = net.Dial(network, addr)
			return err
		})
		return c, err
	}
	if err := e.connect(); err != nil {
		t.Fatal(err)
	}
	if err := e.send(0, 100); err != nil {
		t.Fatal(err)
	}
	col.waitCount(t, 100, 10*time.Second)

	agg.Kill()
	if err := agg.Restart(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, n, agg)
	// The exporter notices the dead connection on a write, reconnects and sends its template first.
	sent := 0
	eventually(t, 20*time.Second, func() error {
		if err := e.send(1000+sent, 10); err != nil {
			if cerr := e.connect(); cerr != nil {
				return cerr
			}
			return err
		}
		sent += 10
		if col.count() <= 100 {
			return errNotYet
		}
		return nil
	})
	if e.connects < 2 {
		t.Fatalf("exporter connected %d times", e.connects)
	}
	client := nsHTTP(n)
	if got := metric(t, client, "127.0.0.1:10380", "strait_aggregator_sets_unknown_template_total"); got != 0 {
		t.Fatalf("restarted aggregator saw %v data sets without template", got)
	}
	if got := metric(t, client, "127.0.0.1:10380", "strait_aggregator_records_received_total"); got == 0 {
		t.Fatal("restarted aggregator decoded nothing")
	}
}
