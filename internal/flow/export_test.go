package flow

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
	"github.com/strait-net/strait/internal/testutil"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func record(i int) flowrec.Fields {
	f := flowrec.Fields{
		Start: time.UnixMilli(1_790_000_000_000 + int64(i)), End: time.UnixMilli(1_790_000_005_000),
		Src: netip.AddrFrom4([4]byte{10, 244, 0, 5}), Dst: netip.AddrFrom4([4]byte{10, 244, 1, 6}),
		SrcPort: uint16(10000 + i), DstPort: 80, Proto: 6,
		Packets: uint64(i), Bytes: uint64(100 * i), TotalPackets: uint64(i), TotalBytes: uint64(100 * i),
		FlowType: flowrec.FlowTypeInterNode, Egress: true, TCPState: 3, SrcPod: "web-1", SrcNamespace: "shop", SrcNode: "n1",
	}
	if i%2 == 1 {
		f.Src, f.Dst = netip.MustParseAddr("fd10:244::5"), netip.MustParseAddr("fd10:244:0:1::6")
	}
	return f
}

func startSender(t *testing.T, cfg ExportConfig) (*sender, *counters) {
	t.Helper()
	st := &counters{}
	s, err := newSender(cfg, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, st
}

// certs writes a CA, a collector certificate for 127.0.0.1 and an exporter
// (client) certificate, and returns the collector's TLS config requiring
// client certificates.
func certs(t *testing.T) (dir string, server *tls.Config) {
	t.Helper()
	dir = t.TempDir()
	ca := testutil.NewCA(t)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.crt", ca.PEM)
	srv := ca.Issue("collector", x509.ExtKeyUsageServerAuth)
	exp := ca.Issue("exporter", x509.ExtKeyUsageClientAuth)
	write("exporter.crt", exp.CertPEM)
	write("exporter.key", exp.KeyPEM)
	return dir, &tls.Config{Certificates: []tls.Certificate{srv.TLS}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// TestSenderTransports: records reach a collector decoded and intact over
// TCP, UDP and mutually authenticated TLS.
func TestSenderTransports(t *testing.T) {
	dir, serverTLS := certs(t)
	clientTLS, err := ClientTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "exporter.crt"), filepath.Join(dir, "exporter.key"), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		transport string
		start     func(t *testing.T) *testCollector
		tls       *tls.Config
	}{
		{TransportTCP, func(t *testing.T) *testCollector { return startTCP(t, newTestCollector(), nil) }, nil},
		{TransportUDP, func(t *testing.T) *testCollector { return startUDP(t, newTestCollector()) }, nil},
		{TransportTLS, func(t *testing.T) *testCollector { return startTCP(t, newTestCollector(), serverTLS) }, clientTLS},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			c := tc.start(t)
			s, st := startSender(t, ExportConfig{Address: c.addr, Transport: tc.transport, TLSSource: StaticTLS(tc.tls)})
			const n = 500
			for i := range n {
				f := record(i)
				if !s.enqueue(&f) {
					t.Fatalf("record %d dropped", i)
				}
				if tc.transport == TransportUDP && i%50 == 0 {
					time.Sleep(time.Millisecond) // the loopback socket buffer is the only flow control of UDP
				}
			}
			got := c.wait(t, 10*time.Second, func(got []flowrec.Fields) bool { return len(got) >= n })
			seen := map[uint16]bool{}
			for _, f := range got {
				i := int(f.SrcPort) - 10000
				want := record(i)
				f.Start, f.End, want.Start, want.End = time.Time{}, time.Time{}, time.Time{}, time.Time{}
				if f != want {
					t.Fatalf("record %d:\n got %+v\nwant %+v", i, f, want)
				}
				seen[f.SrcPort] = true
			}
			if len(seen) != n {
				t.Errorf("%d distinct records, want %d", len(seen), n)
			}
			testutilEventually(t, func() bool { return st.sent.Load() == n })
			if st.dropped.Load() != 0 || st.lost.Load() != 0 {
				t.Errorf("dropped %d lost %d", st.dropped.Load(), st.lost.Load())
			}
		})
	}

	t.Run("TLS without a client certificate is refused", func(t *testing.T) {
		c := startTCP(t, newTestCollector(), serverTLS)
		noCert, err := ClientTLS(filepath.Join(dir, "ca.crt"), "", "", "")
		if err != nil {
			t.Fatal(err)
		}
		s, _ := startSender(t, ExportConfig{Address: c.addr, Transport: TransportTLS, TLSSource: StaticTLS(noCert), MinBackoff: 50 * time.Millisecond})
		f := record(1)
		s.enqueue(&f)
		time.Sleep(time.Second)
		select {
		case r := <-c.recs:
			t.Fatalf("collector accepted a record from an unauthenticated exporter: %+v", r)
		default:
		}
		// (With TLS 1.3 the client finishes its handshake before the
		// collector checks its certificate, so the sender may count the
		// record as sent; the collector is what must refuse it.)
	})

	t.Run("a bad CA file is named", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "not-a-ca.crt")
		if err := os.WriteFile(bad, []byte("not PEM"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ClientTLS(bad, "", "", ""); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "no PEM certificate") {
			t.Fatalf("ClientTLS with a bad CA file: %v, want an error naming %s", err, bad)
		}
	})

	t.Run("TLSSource is asked on every connection attempt", func(t *testing.T) {
		c := startTCP(t, newTestCollector(), serverTLS)
		var calls atomic.Int32
		src := func(context.Context) (*tls.Config, error) {
			if calls.Add(1) == 1 {
				return nil, errors.New("certificate not issued yet")
			}
			return clientTLS, nil
		}
		s, _ := startSender(t, ExportConfig{Address: c.addr, Transport: TransportTLS, TLSSource: src, MinBackoff: 50 * time.Millisecond})
		f := record(1)
		s.enqueue(&f)
		select {
		case <-c.recs:
		case <-time.After(5 * time.Second):
			t.Fatalf("no record over TLS after the source first failed (%d calls)", calls.Load())
		}
		if calls.Load() < 2 {
			t.Fatalf("TLSSource called %d times, want a retry after its error", calls.Load())
		}
	})
}

func testutilEventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSenderReconnect: the collector drops every connection after two
// messages; the sender reconnects with backoff and resends the templates
// (each connection is a fresh template session at the collector, so records
// would not decode otherwise).
func TestSenderReconnect(t *testing.T) {
	c := newTestCollector()
	c.closeAfter = 2
	startTCP(t, c, nil)
	s, st := startSender(t, ExportConfig{Address: c.addr, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	received := map[uint16]bool{}
	for round := range 5 {
		f := record(round)
		s.enqueue(&f)
		// Keep sending one record at a time until one of this round
		// arrives: writes into a connection the peer closed may be lost
		// (and are counted) before the sender notices.
		deadline := time.Now().Add(10 * time.Second)
		for !received[f.SrcPort] {
			select {
			case r := <-c.recs:
				received[r.SrcPort] = true
			case <-time.After(200 * time.Millisecond):
				s.enqueue(&f)
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: record never arrived; stats sent=%d lost=%d reconnects=%d", round, st.sent.Load(), st.lost.Load(), st.reconnects.Load())
			}
		}
	}
	if c.sessions.Load() < 2 || st.reconnects.Load() < 1 {
		t.Errorf("sessions %d reconnects %d: the collector never dropped us?", c.sessions.Load(), st.reconnects.Load())
	}
	if got, want := c.templates.Load(), 2*c.sessions.Load(); got < want-2 {
		t.Errorf("collector saw %d templates over %d sessions", got, c.sessions.Load())
	}
}

// TestSenderQueueFull: with the collector down, the queue fills and further
// records are dropped and counted, never blocking the caller.
func TestSenderQueueFull(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens: connection refused
	s, st := startSender(t, ExportConfig{Address: addr, QueueSize: 100, MinBackoff: time.Hour})
	for i := range 250 {
		f := record(i)
		s.enqueue(&f)
	}
	if st.dropped.Load() != 150 || st.queued.Load() != 100 {
		t.Errorf("queued %d dropped %d, want 100 and 150", st.queued.Load(), st.dropped.Load())
	}
	if _, err := newSender(ExportConfig{Address: addr, Transport: "sctp"}, st, testLogger(t)); err == nil {
		t.Error("accepted transport sctp")
	}
	if _, err := newSender(ExportConfig{Address: "nowhere"}, st, testLogger(t)); err == nil {
		t.Error("accepted an address without port")
	}
}
