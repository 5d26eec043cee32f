package aggregator

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/aggregator/api"
	"github.com/strait-net/strait/internal/flow/ipfix"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	cases := map[string]string{
		"mode: both\ncollector: {tcp: {address: '127.0.0.1:0'}}\ndestinations: [{type: stdout}]": "mode",
		"destinations: [{type: stdout}]":                                                                      "collector",
		"collector: {tcp: {address: '127.0.0.1:0'}}":                                                          "destinations",
		"collector: {udp: {address: 'nope'}}\ndestinations: [{type: stdout}]":                                 "collector.udp.address",
		"collector: {tcp: {address: ':1'}}\ndestinations: [{type: ipfix, address: 'x:1', transport: sctp}]":   "destinations[0].transport",
		"collector: {tcp: {address: ':1'}}\ndestinations: [{type: file}]":                                     "destinations[0].path",
		"collector: {tcp: {address: ':1'}}\ndestinations: [{type: kafka}]":                                    "destinations[0].type",
		"collector: {tcp: {address: ':1'}}\ndestinations: [{type: ipfix, address: 'x:1', transport: tls}]":    "destinations[0].tls",
		"collector: {tls: {address: ':1', certFile: /nonexistent}}\ndestinations: [{type: stdout}]":           "collector.tls.certFile",
		"collector: {tcp: {address: ':1'}}\ndestinations: [{type: stdout}]\nactiveFlowRecordTimeout: 5":       "activeFlowRecordTimeout",
		"collector: {tcp: {address: ':1'}}\ndestinations: [{type: stdout}]\nunknownField: 1":                  "unknownField",
		"collector: {tcp: {address: ':1'}}\ndestinations: [{type: stdout, name: a}, {type: stdout, name: a}]": "destinations[1].name",
	}
	for yaml, field := range cases {
		_, err := ParseConfig([]byte(yaml))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("config %q: error %v does not name %s", yaml, err, field)
		}
	}
	c, err := ParseConfig([]byte("collector: {udp: {address: '127.0.0.1:4739'}}\ndestinations: [{type: ipfix, address: 'c:4739', transport: udp}]"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != ModeProxy || c.Collector.UDP.BufferSize != 2048 || c.Destinations[0].MaxMessageSize != 1400 ||
		c.ActiveFlowRecordTimeout.Duration != 60*time.Second || c.InactiveFlowRecordTimeout.Duration != 90*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
}

// TestProxyForwardsEveryRecord: two exporters (TCP and UDP, different observation domains) send to a
// proxy-mode aggregator with three destinations: a TCP IPFIX collector, a JSON-lines file, and a TCP
// destination that is down. Every record reaches the live destinations with 403/405 added and its original
// fields intact; the dead one counts its drops and does not hold the others back.
func TestProxyForwardsEveryRecord(t *testing.T) {
	col := newTestCollector(t, "tcp", nil)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "flows.jsonl")
	a := startAggregator(t, fmt.Sprintf(`
mode: proxy
observationDomainID: 77
collector:
  udp: {address: "127.0.0.1:0"}
  tcp: {address: "127.0.0.1:0"}
destinations:
  - {name: collector, type: ipfix, address: %q, transport: tcp}
  - {name: log, type: file, path: %q}
  - {name: dead, type: ipfix, address: %q, transport: tcp, queueSize: 4}
api: {address: "127.0.0.1:0"}
`, col.addr, logPath, closedPort(t)), Options{})

	const perExporter = 3000
	tcpExp := newTestExporter(t, "tcp", a.Addr("tcp"), 11)
	udpExp := newTestExporter(t, "udp", a.Addr("udp"), 22)
	for _, e := range []*testExporter{tcpExp, udpExp} {
		if err := e.connect(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < perExporter; i += 100 {
		if err := tcpExp.send(i, 100); err != nil {
			t.Fatal(err)
		}
		if err := udpExp.send(i, 100); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // UDP on loopback: do not outrun the reader
	}
	col.waitCount(t, 2*perExporter, 20*time.Second)

	seen := map[string]int{}
	for i, r := range col.snapshot() {
		if col.domains[i] != 77 {
			t.Fatalf("record %d: output domain %d, want 77", i, col.domains[i])
		}
		if r["originalExporterIPv4Address"] != "127.0.0.1" {
			t.Fatalf("record %d: 403 = %v", i, r["originalExporterIPv4Address"])
		}
		dom := r["originalObservationDomainId"].(uint64)
		port := r["sourceTransportPort"].(uint64)
		if r["sourcePodName"] != fmt.Sprintf("pod-%d", port-10000) || r["octetDeltaCount"] != 1000+port-10000 {
			t.Fatalf("record %d: fields changed: %v", i, r)
		}
		seen[fmt.Sprint(dom, "/", port)]++
	}
	if len(seen) != 2*perExporter {
		t.Fatalf("%d distinct (domain, record) pairs, want %d", len(seen), 2*perExporter)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	eventually(t, 10*time.Second, func() error {
		if n := len(readLines(t, logPath)); n != 2*perExporter {
			return fmt.Errorf("flow log has %d lines", n)
		}
		return nil
	})
	var line map[string]any
	if err := json.Unmarshal([]byte(readLines(t, logPath)[0]), &line); err != nil {
		t.Fatal(err)
	}
	if line["exporter"] != "127.0.0.1" || line["originalObservationDomainId"] == nil || line["sourceIPv4Address"] != "10.244.1.10" {
		t.Fatalf("flow log line %v", line)
	}
	if got := metric(t, client, a.Addr("api"), "strait_aggregator_records_received_total"); got != 2*perExporter {
		t.Fatalf("received metric %v", got)
	}
	if got := metric(t, client, a.Addr("api"), "strait_aggregator_records_exported_total", `destination="collector"`); got != 2*perExporter {
		t.Fatalf("exported metric %v", got)
	}
	eventually(t, 5*time.Second, func() error {
		if got := metric(t, client, a.Addr("api"), "strait_aggregator_records_dropped_total", `destination="dead"`); got != 2*perExporter {
			return fmt.Errorf("dead destination dropped %v", got)
		}
		return nil
	})
	if got := metric(t, client, a.Addr("api"), "strait_aggregator_records_dropped_total", `destination="collector"`); got != 0 {
		t.Fatalf("live destination dropped %v", got)
	}

	// The flows API (proxy mode: the latest record per exporter and 5-tuple). Its table is fed like a
	// destination: best effort, its drops are counted.
	var fr api.FlowsResponse
	eventually(t, 5*time.Second, func() error {
		var err error
		if fr, err = getFlows(client, a.Addr("api"), "?top=5"); err != nil {
			return err
		}
		apiDropped := int(metric(t, client, a.Addr("api"), "strait_aggregator_records_dropped_total", `destination="api"`))
		if fr.Total+apiDropped != 2*perExporter {
			return fmt.Errorf("flows API: %d flows + %d dropped, want %d", fr.Total, apiDropped, 2*perExporter)
		}
		return nil
	})
	if fr.Mode != "proxy" || len(fr.Flows) != 5 || fr.Flows[0].Bytes < fr.Flows[4].Bytes ||
		fr.Flows[0].Exporter != "127.0.0.1" || fr.Flows[0].SourceIP != "10.244.1.10" {
		t.Fatalf("flows API: total %d, %d flows, first %+v", fr.Total, len(fr.Flows), fr.Flows)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		r, err := client.Get("http://" + a.Addr("api") + path)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, err, r)
		}
		r.Body.Close()
	}
}

// TestMalformedInputIsCountedNotFatal: garbage, truncated and padded messages from one exporter are counted
// per exporter; the aggregator keeps forwarding another exporter's records.
func TestMalformedInputIsCountedNotFatal(t *testing.T) {
	col := newTestCollector(t, "tcp", nil)
	a := startAggregator(t, fmt.Sprintf(`
collector: {udp: {address: "127.0.0.1:0", bufferSize: 2048}, tcp: {address: "127.0.0.1:0"}}
destinations: [{name: c, type: ipfix, address: %q}]
api: {address: "127.0.0.1:0"}
`, col.addr), Options{})
	conn, err := net.Dial("udp", a.Addr("udp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bad := [][]byte{
		{1, 2, 3},
		{0, 10, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},                                      // length beyond the datagram
		append([]byte{0, 10, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 0, 2, 0, 8, 0, 5, 0, 1), // template id 5
		make([]byte, 3000), // larger than the 2048-byte buffer
	}
	for _, b := range bad {
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// A TCP exporter whose stream starts with a bad header loses its session.
	tc, err := net.Dial("tcp", a.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = tc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	defer tc.Close()
	client := &http.Client{Timeout: 5 * time.Second}
	eventually(t, 5*time.Second, func() error {
		if got := metric(t, client, a.Addr("api"), "strait_aggregator_messages_malformed_total", `exporter="127.0.0.1"`); got != 5 {
			return fmt.Errorf("malformed = %v, want 5", got)
		}
		return nil
	})
	e := newTestExporter(t, "tcp", a.Addr("tcp"), 1)
	if err := e.connect(); err != nil {
		t.Fatal(err)
	}
	if err := e.send(0, 10); err != nil {
		t.Fatal(err)
	}
	col.waitCount(t, 10, 5*time.Second)
}

// TestDestinationReconnectResendsTemplates: the downstream collector restarts; the aggregator reconnects
// with backoff and announces its templates again, so the new collector decodes every later record.
func TestDestinationReconnectResendsTemplates(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	listenOn := func(f func() error) error { return f() }
	col := newTestCollectorAt(t, addr, listenOn)
	a := startAggregator(t, fmt.Sprintf(`
collector: {tcp: {address: "127.0.0.1:0"}}
destinations: [{name: c, type: ipfix, address: %q}]
api: {address: off}
`, addr), Options{})
	e := newTestExporter(t, "tcp", a.Addr("tcp"), 5)
	if err := e.connect(); err != nil {
		t.Fatal(err)
	}
	if err := e.send(0, 50); err != nil {
		t.Fatal(err)
	}
	col.waitCount(t, 50, 5*time.Second)
	col.close()
	col2 := newTestCollectorAt(t, addr, listenOn)
	// Records sent while the old connection is being noticed dead may be lost (TCP gives no delivery
	// guarantee to the sender); keep sending until the new collector decodes records.
	eventually(t, 15*time.Second, func() error {
		if err := e.send(100, 10); err != nil {
			return err
		}
		if col2.count() == 0 {
			return errNotYet
		}
		return nil
	})
	col2.mu.Lock()
	defer col2.mu.Unlock()
	if col2.unknown != 0 || col2.tmpl == 0 {
		t.Fatalf("new collector: %d templates, %d sets without template", col2.tmpl, col2.unknown)
	}
}

// newTestCollectorAt is a TCP test collector on a fixed address (retrying while the port is released).
func newTestCollectorAt(t testing.TB, addr string, listen func(func() error) error) *testCollector {
	c := &testCollector{t: t, reg: ipfix.NewRegistry(), cache: ipfix.NewTemplateCache(0), addr: addr}
	var ln net.Listener
	eventually(t, 5*time.Second, func() error {
		return listen(func() error {
			var err error
			ln, err = net.Listen("tcp", addr)
			return err
		})
	})
	c.closers = append(c.closers, ln)
	go c.accept(ln)
	t.Cleanup(c.close)
	return c
}

// TestPodLabelsHook: with recordContents.podLabels and a labeler, forwarded records carry both pods' labels.
func TestPodLabelsHook(t *testing.T) {
	col := newTestCollector(t, "tcp", nil)
	labels := labelerFunc(func(ip netip.Addr) string {
		if ip == netip.MustParseAddr("10.244.1.10") {
			return `{"app":"client"}`
		}
		return ""
	})
	a := startAggregator(t, fmt.Sprintf(`
collector: {tcp: {address: "127.0.0.1:0"}}
destinations: [{name: c, type: ipfix, address: %q}]
recordContents: {podLabels: true}
api: {address: off}
`, col.addr), Options{Labeler: labels})
	e := newTestExporter(t, "tcp", a.Addr("tcp"), 5)
	if err := e.connect(); err != nil {
		t.Fatal(err)
	}
	if err := e.send(0, 3); err != nil {
		t.Fatal(err)
	}
	col.waitCount(t, 3, 5*time.Second)
	r := col.snapshot()[2]
	if r["sourcePodLabels"] != `{"app":"client"}` || r["destinationPodLabels"] != "" || r["sourcePodName"] != "pod-2" {
		t.Fatalf("record %v", r)
	}
}

type labelerFunc func(netip.Addr) string

func (f labelerFunc) PodLabels(ip netip.Addr) string { return f(ip) }

func TestRotatingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.jsonl")
	r, err := openRotating(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 39) + "\n") // 40 bytes: two per file
	for range 7 {
		if _, err := r.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	_ = r.Close()
	for _, c := range []struct {
		p    string
		size int64
	}{{path, 40}, {path + ".1", 80}, {path + ".2", 80}} {
		st, err := os.Stat(c.p)
		if err != nil || st.Size() != c.size {
			t.Fatalf("%s: %v size %v, want %d", c.p, err, st, c.size)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Fatal("more backups than configured")
	}
}
