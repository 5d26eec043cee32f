package aggregator

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/aggregator/api"
	"github.com/strait-net/strait/internal/flow/ipfix"
)

// testCollector is an IPFIX collector built on the codec: it keeps every record it receives, decoded by
// element name, and the observation domain of each message.
type testCollector struct {
	t       testing.TB
	reg     *ipfix.Registry
	cache   *ipfix.TemplateCache
	mu      sync.Mutex
	records []map[string]any
	domains []uint32
	tmpl    int
	withdr  int
	unknown int
	errs    int
	conns   int
	addr    string
	closers []io.Closer
}

func (c *testCollector) Template(*ipfix.Header, *ipfix.Template) { c.tmpl++ }
func (c *testCollector) Withdraw(*ipfix.Header, uint16)          { c.withdr++ }
func (c *testCollector) Record(h *ipfix.Header, r *ipfix.Record) {
	m := map[string]any{}
	for i, f := range r.Template.Fields {
		ie, _ := c.reg.Lookup(f.PEN, f.ID)
		m[ie.Name] = ipfix.Value(ie, r.Field(i))
	}
	c.records = append(c.records, m)
	c.domains = append(c.domains, h.DomainID)
}

func (c *testCollector) decode(d *ipfix.Decoder, msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := d.Decode(msg, time.Now(), c)
	c.unknown += st.UnknownSets
	if err != nil {
		c.errs++
		c.t.Logf("test collector: %v", err)
	}
}

// newTestCollector listens on 127.0.0.1 (network "tcp" or "udp"); listen, when given, creates the socket
// (for example inside a network namespace).
func newTestCollector(t testing.TB, network string, listen func(func() error) error) *testCollector {
	c := &testCollector{t: t, reg: ipfix.NewRegistry(), cache: ipfix.NewTemplateCache(0)}
	if listen == nil {
		listen = func(f func() error) error { return f() }
	}
	var ln net.Listener
	var pc net.PacketConn
	err := listen(func() error {
		var err error
		if network == "udp" {
			pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		} else {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if pc != nil {
		c.addr = pc.LocalAddr().String()
		c.closers = append(c.closers, pc)
		go func() {
			d := ipfix.NewDecoder(c.cache, c.cache.NewSession(true))
			buf := make([]byte, 65535)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				c.decode(d, buf[:n])
			}
		}()
	} else {
		c.addr = ln.Addr().String()
		c.closers = append(c.closers, ln)
		go c.accept(ln)
	}
	t.Cleanup(c.close)
	return c
}

func (c *testCollector) accept(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.conns++
		c.closers = append(c.closers, conn)
		c.mu.Unlock()
		go c.serveConn(conn)
	}
}

// getFlows queries the aggregator's flows API.
func getFlows(client *http.Client, apiAddr, query string) (api.FlowsResponse, error) {
	var fr api.FlowsResponse
	resp, err := client.Get("http://" + apiAddr + api.FlowsPath + query)
	if err != nil {
		return fr, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&fr)
	return fr, err
}

func (c *testCollector) serveConn(conn net.Conn) {
	d := ipfix.NewDecoder(c.cache, c.cache.NewSession(false))
	r := bufio.NewReader(conn)
	msg := make([]byte, 65535)
	for {
		if _, err := io.ReadFull(r, msg[:16]); err != nil {
			return
		}
		n, err := ipfix.MessageLen(msg[:16])
		if err != nil {
			c.mu.Lock()
			c.errs++
			c.mu.Unlock()
			return
		}
		if _, err := io.ReadFull(r, msg[16:n]); err != nil {
			return
		}
		c.decode(d, msg[:n])
	}
}

func (c *testCollector) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.closers {
		_ = cl.Close()
	}
	c.closers = nil
}

func (c *testCollector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.records)
}

func (c *testCollector) snapshot() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.records...)
}

func (c *testCollector) waitCount(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for c.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("collector %s got %d records, want %d", c.addr, c.count(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testExporter sends flow records with the codec, like a node's exporter: a fixed template with a 5-tuple
// and counters. It reconnects (TCP) and announces the template on every new connection.
type testExporter struct {
	network, addr string
	domain        uint32
	tmpl          *ipfix.Template
	conn          net.Conn
	enc           *ipfix.Encoder
	dial          func(network, addr string) (net.Conn, error)
	connects      int
}

func exporterTemplate(t testing.TB) *ipfix.Template {
	tm, err := ipfix.NewTemplate(300, 0,
		ipfix.FieldSpec{ID: ipfix.IESourceIPv4Address, Length: 4}, ipfix.FieldSpec{ID: ipfix.IEDestinationIPv4Address, Length: 4},
		ipfix.FieldSpec{ID: ipfix.IESourceTransportPort, Length: 2}, ipfix.FieldSpec{ID: ipfix.IEDestinationTransportPort, Length: 2},
		ipfix.FieldSpec{ID: ipfix.IEProtocolIdentifier, Length: 1},
		ipfix.FieldSpec{ID: ipfix.IEFlowStartMilliseconds, Length: 8}, ipfix.FieldSpec{ID: ipfix.IEFlowEndMilliseconds, Length: 8},
		ipfix.FieldSpec{ID: ipfix.IEOctetDeltaCount, Length: 8}, ipfix.FieldSpec{ID: ipfix.IEPacketDeltaCount, Length: 8},
		ipfix.FieldSpec{ID: ipfix.IESourcePodName, Length: ipfix.VarLen, PEN: ipfix.StraitPEN})
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func newTestExporter(t testing.TB, network, addr string, domain uint32) *testExporter {
	e := &testExporter{network: network, addr: addr, domain: domain, tmpl: exporterTemplate(t),
		dial: net.Dial}
	e.enc = ipfix.NewEncoder(nil, 1400)
	t.Cleanup(func() {
		if e.conn != nil {
			_ = e.conn.Close()
		}
	})
	return e
}

// connect (re)connects and announces the template.
func (e *testExporter) connect() error {
	if e.conn != nil {
		_ = e.conn.Close()
	}
	conn, err := e.dial(e.network, e.addr)
	if err != nil {
		return err
	}
	e.conn = conn
	e.connects++
	e.enc.SetWriter(conn)
	return e.enc.AddTemplate(e.domain, e.tmpl)
}

// send encodes records [from, from+n) and flushes.
func (e *testExporter) send(from, n int) error {
	var rb ipfix.RecordBuilder
	for i := from; i < from+n; i++ {
		rb.Reset()
		rb.IPv4(netip.MustParseAddr("10.244.1.10"))
		rb.IPv4(netip.MustParseAddr("10.244.2.20"))
		rb.Uint16(uint16(10000 + i%50000))
		rb.Uint16(80)
		rb.Uint8(6)
		rb.Milliseconds(time.UnixMilli(1_700_000_000_000))
		rb.Milliseconds(time.UnixMilli(1_700_000_001_000))
		rb.Uint64(uint64(1000 + i))
		rb.Uint64(uint64(i))
		rb.String(fmt.Sprintf("pod-%d", i))
		if err := e.enc.AppendRecord(e.domain, e.tmpl.ID, rb.Bytes()); err != nil {
			return err
		}
	}
	return e.enc.Flush()
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startAggregator runs an in-process aggregator with cfg YAML until the test ends.
func startAggregator(t testing.TB, yaml string, opts Options) *Aggregator {
	t.Helper()
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); a.Wait() })
	return a
}

// metric returns the sum of the samples of a metric whose line contains all of match.
func metric(t testing.TB, client *http.Client, apiAddr, name string, match ...string) float64 {
	t.Helper()
	resp, err := client.Get("http://" + apiAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, m := range match {
			if !strings.Contains(line, m) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// closedPort returns a local TCP address nobody listens on.
func closedPort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	_ = ln.Close()
	return a
}

var errNotYet = errors.New("not yet")

func readLines(t testing.TB, path string) []string {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
