package flow

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
	"github.com/strait-net/strait/internal/flow/ipfix"
)

// Transports.
const (
	TransportTCP = "tcp"
	TransportTLS = "tls"
	TransportUDP = "udp"
)

// ExportConfig says where and how records go.
type ExportConfig struct {
	// Address of the collector (host:port).
	Address string
	// Transport: tcp (default), tls or udp.
	Transport string
	// TLSSource gives the client configuration for tls (certificates for
	// mutual authentication, root CAs, server name). It is asked on every
	// connection attempt, so rotated certificates (files or a Secret) are
	// picked up on the next reconnect; StaticTLS wraps a fixed one.
	TLSSource func(ctx context.Context) (*tls.Config, error)
	// ObservationDomain of the messages (default 1).
	ObservationDomain uint32
	// TemplateRefresh resends the templates this often over UDP (default
	// 60 s; over TCP/TLS they are sent once per connection).
	TemplateRefresh time.Duration
	// QueueSize bounds the records waiting to be sent (default 16384); a
	// record for a full queue is dropped and counted.
	QueueSize int
	// MinBackoff and MaxBackoff bound the wait between connection attempts
	// (defaults 500 ms and 30 s).
	MinBackoff, MaxBackoff time.Duration
}

// StaticTLS is a TLSSource that always gives cfg.
func StaticTLS(cfg *tls.Config) func(context.Context) (*tls.Config, error) {
	return func(context.Context) (*tls.Config, error) { return cfg, nil }
}

func (c *ExportConfig) defaults() error {
	switch c.Transport {
	case "":
		c.Transport = TransportTCP
	case TransportTCP, TransportUDP:
	case TransportTLS:
		if c.TLSSource == nil {
			return fmt.Errorf("transport tls needs a TLS configuration")
		}
	default:
		return fmt.Errorf("transport: must be tcp, tls or udp, got %q", c.Transport)
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return fmt.Errorf("collector address %q: %w", c.Address, err)
	}
	if c.ObservationDomain == 0 {
		c.ObservationDomain = 1
	}
	if c.TemplateRefresh <= 0 {
		c.TemplateRefresh = 60 * time.Second
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 16384
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(30*time.Second, c.MinBackoff)
	}
	return nil
}

// counters are the exporter's statistics.
type counters struct {
	dumps, dumpErrors, events, eventErrors, overflows, missed atomic.Uint64
	queued, dropped, sent, lost, reconnects, templates        atomic.Uint64
	messages, bytes                                           atomic.Uint64
	connected                                                 atomic.Bool
}

// sender encodes queued records and writes them to the collector,
// reconnecting with exponential backoff and resending the templates on
// every new connection.
type sender struct {
	cfg   ExportConfig
	queue chan flowrec.Fields
	stats *counters
	log   *slog.Logger
	codec *flowrec.Codec
	// healthy: the current session delivered at least one message (the
	// backoff restarts from its minimum after it breaks).
	healthy bool
}

func newSender(cfg ExportConfig, stats *counters, log *slog.Logger) (*sender, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	codec, err := flowrec.NewCodec()
	if err != nil {
		return nil, err
	}
	return &sender{cfg: cfg, queue: make(chan flowrec.Fields, cfg.QueueSize), stats: stats, log: log, codec: codec}, nil
}

// enqueue queues a record without blocking; a full queue drops it.
func (s *sender) enqueue(f *flowrec.Fields) bool {
	if s.offer(f) {
		return true
	}
	s.stats.dropped.Add(1)
	return false
}

// offer queues a record if there is room, without counting a drop.
func (s *sender) offer(f *flowrec.Fields) bool {
	select {
	case s.queue <- *f:
		s.stats.queued.Add(1)
		return true
	default:
		return false
	}
}

func (s *sender) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	switch s.cfg.Transport {
	case TransportUDP:
		return d.DialContext(ctx, "udp", s.cfg.Address)
	case TransportTLS:
		cfg, err := s.cfg.TLSSource(ctx)
		if err != nil {
			return nil, fmt.Errorf("TLS configuration: %w", err)
		}
		if cfg == nil {
			return nil, errors.New("TLS configuration: none given")
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(s.cfg.Address)
		}
		return (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", s.cfg.Address)
	}
	return d.DialContext(ctx, "tcp", s.cfg.Address)
}

func (s *sender) run(ctx context.Context) {
	backoff := s.cfg.MinBackoff
	first := true
	for ctx.Err() == nil {
		if !first {
			s.stats.reconnects.Add(1)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, s.cfg.MaxBackoff)
		}
		first = false
		conn, err := s.dial(ctx)
		if err != nil {
			s.log.Warn("flow collector unreachable", "address", s.cfg.Address, "transport", s.cfg.Transport, "retry_in", backoff, "error", err)
			continue
		}
		s.log.Info("exporting flows", "collector", s.cfg.Address, "transport", s.cfg.Transport)
		s.stats.connected.Store(true)
		err = s.session(ctx, conn)
		s.stats.connected.Store(false)
		_ = conn.Close()
		if err == nil {
			return
		}
		s.log.Warn("flow export connection lost; reconnecting", "collector", s.cfg.Address, "error", err)
		if s.healthy {
			backoff = s.cfg.MinBackoff
		}
	}
}

// session sends until ctx ends (nil) or a write fails.
func (s *sender) session(ctx context.Context, conn net.Conn) error {
	s.healthy = false
	maxLen := ipfix.MaxMessageLen
	if s.cfg.Transport == TransportUDP {
		maxLen = 1400
	}
	w := &countingWriter{conn: conn, stats: s.stats}
	enc := ipfix.NewEncoder(w, maxLen)
	templates := func() error {
		for _, t := range s.codec.Templates() {
			if err := enc.AddTemplate(s.cfg.ObservationDomain, t); err != nil {
				return err
			}
			s.stats.templates.Add(1)
		}
		return enc.Flush()
	}
	if err := templates(); err != nil {
		return fmt.Errorf("send templates: %w", err)
	}
	refresh := time.NewTicker(s.cfg.TemplateRefresh)
	defer refresh.Stop()
	if s.cfg.Transport != TransportUDP {
		refresh.Stop()
	}
	inMsg := 0 // records in the message being built
	for {
		select {
		case <-ctx.Done():
			_ = enc.Flush()
			return nil
		case <-refresh.C:
			if err := templates(); err != nil {
				s.stats.lost.Add(uint64(inMsg))
				return fmt.Errorf("refresh templates: %w", err)
			}
			s.stats.sent.Add(uint64(inMsg))
			inMsg = 0
		case f := <-s.queue:
			before := enc.Messages
			if err := s.codec.Encode(enc, s.cfg.ObservationDomain, &f); err != nil {
				s.stats.lost.Add(uint64(inMsg) + 1)
				return err
			}
			if enc.Messages != before { // a full message went out before this record
				s.stats.sent.Add(uint64(inMsg))
				inMsg = 0
				s.healthy = true
			}
			inMsg++
			if len(s.queue) == 0 {
				if err := enc.Flush(); err != nil {
					s.stats.lost.Add(uint64(inMsg))
					return err
				}
				s.stats.sent.Add(uint64(inMsg))
				inMsg = 0
				s.healthy = true
			}
		}
	}
}

// countingWriter writes one message per call and counts it.
type countingWriter struct {
	conn  net.Conn
	stats *counters
}

func (w *countingWriter) Write(b []byte) (int, error) {
	_ = w.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	n, err := w.conn.Write(b)
	if err == nil {
		w.stats.messages.Add(1)
		w.stats.bytes.Add(uint64(n))
	}
	return n, err
}

// ClientTLS builds the TLS configuration of the tls transport from PEM
// files: caFile verifies the collector, certFile/keyFile authenticate this
// exporter to it (mutual TLS; both empty for server-only authentication).
// serverName overrides the name checked in the collector's certificate
// (default: the host of the collector address).
func ClientTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	var ca, cert, key []byte
	var err error
	if caFile != "" {
		if ca, err = os.ReadFile(caFile); err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("client certificate and key: give both or neither")
	}
	if certFile != "" {
		if cert, err = os.ReadFile(certFile); err != nil {
			return nil, fmt.Errorf("read client certificate: %w", err)
		}
		if key, err = os.ReadFile(keyFile); err != nil {
			return nil, fmt.Errorf("read client key: %w", err)
		}
	}
	cfg, err := ClientTLSFromPEM(ca, cert, key, serverName)
	if err != nil {
		return nil, fmt.Errorf("CA file %q, certificate %q, key %q: %w", caFile, certFile, keyFile, err)
	}
	return cfg, nil
}

// ClientTLSFromPEM is ClientTLS from PEM bytes (for example the ca.crt,
// tls.crt and tls.key of a Secret): ca may be empty (system roots), cert
// and key both or neither.
func ClientTLSFromPEM(ca, cert, key []byte, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("CA: no PEM certificate")
		}
		cfg.RootCAs = pool
	}
	if (len(cert) == 0) != (len(key) == 0) {
		return nil, fmt.Errorf("client certificate and key: give both or neither")
	}
	if len(cert) > 0 {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
