package aggregator

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/strait-net/strait/internal/flow/ipfix"
)

// pipeline turns decoded records into output (proxy or aggregate mode).
type pipeline interface {
	session(exporter netip.Addr) sessionSink
}

// sessionSink receives one exporter session's messages.
type sessionSink interface {
	ipfix.Visitor
	// flush is called after every message.
	flush()
	// close is called when the session ends.
	close()
	// takeDropped returns the records dropped since the last call (no output template id free).
	takeDropped() int
}

// collector runs the listeners and one decoder per exporter session.
type collector struct {
	log   *slog.Logger
	cache *ipfix.TemplateCache
	pipe  pipeline
	m     *metrics
	now   func() time.Time
	wg    sync.WaitGroup
}

// exporterSession is the state of one exporter transport session.
type exporterSession struct {
	dec  *ipfix.Decoder
	sink sessionSink
	em   exporterMetrics
	seen time.Time
}

func (c *collector) newSession(addr netip.AddrPort, udp bool) *exporterSession {
	ip := addr.Addr().Unmap()
	return &exporterSession{
		dec:  ipfix.NewDecoder(c.cache, c.cache.NewSession(udp)),
		sink: c.pipe.session(ip),
		em:   c.m.forExporter(ip.String()),
	}
}

// handle decodes one message; malformed input is counted and dropped.
func (c *collector) handle(s *exporterSession, msg []byte, now time.Time) {
	st, err := s.dec.Decode(msg, now, s.sink)
	s.sink.flush()
	s.em.messages.Inc()
	if st.Records > 0 {
		s.em.received.Add(float64(st.Records))
	}
	if st.UnknownSets > 0 {
		s.em.unknownSets.Add(float64(st.UnknownSets))
	}
	if n := s.sink.takeDropped(); n > 0 {
		s.em.refused.Add(float64(n))
	}
	if err != nil {
		s.em.malformed.Inc()
		c.log.Debug("malformed IPFIX message", "err", err)
	}
}

func (c *collector) end(s *exporterSession) {
	s.sink.close()
	c.cache.DropSession(s.dec.Session)
}

// serveUDP reads datagrams until ctx ends. Each source address and port is one session; sessions idle for
// longer than the template timeout are forgotten.
func (c *collector) serveUDP(ctx context.Context, conn *net.UDPConn, bufSize int, idle time.Duration) {
	defer c.wg.Done()
	gauge := c.m.connections.WithLabelValues("udp")
	sessions := map[netip.AddrPort]*exporterSession{}
	defer func() {
		for _, s := range sessions {
			c.end(s)
		}
		gauge.Set(0)
	}()
	buf := make([]byte, bufSize+1) // one spare byte detects truncation
	lastSweep := c.now()
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("udp read", "err", err)
			continue
		}
		now := c.now()
		s := sessions[from]
		if s == nil {
			s = c.newSession(from, true)
			sessions[from] = s
			gauge.Set(float64(len(sessions)))
		}
		s.seen = now
		if n > bufSize {
			s.em.messages.Inc()
			s.em.malformed.Inc()
			c.log.Debug("udp datagram larger than the buffer", "from", from, "bufferSize", bufSize)
		} else {
			c.handle(s, buf[:n], now)
		}
		if now.Sub(lastSweep) > idle/4+time.Second {
			lastSweep = now
			for k, s := range sessions {
				if now.Sub(s.seen) > idle {
					c.end(s)
					delete(sessions, k)
				}
			}
			c.cache.Expire(now)
			gauge.Set(float64(len(sessions)))
		}
	}
}

// serveStream accepts TCP or TLS connections until ctx ends.
func (c *collector) serveStream(ctx context.Context, ln net.Listener, transport string) {
	defer c.wg.Done()
	gauge := c.m.connections.WithLabelValues(transport)
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("accept", "transport", transport, "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		conns.Add(1)
		gauge.Inc()
		go func() {
			defer conns.Done()
			defer gauge.Dec()
			stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
			defer stop()
			c.readStream(conn, transport)
		}()
	}
}

// readStream decodes one TCP/TLS connection's messages. A bad message header loses the framing: the
// connection is closed (and counted malformed); a bad message body is counted and skipped.
func (c *collector) readStream(conn net.Conn, transport string) {
	defer conn.Close()
	from, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil {
		return
	}
	if tc, ok := conn.(*tls.Conn); ok {
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		err := tc.Handshake()
		_ = tc.SetDeadline(time.Time{})
		if err != nil {
			c.log.Warn("tls handshake", "from", from, "err", err)
			c.m.forExporter(from.Addr().Unmap().String()).malformed.Inc()
			return
		}
	}
	s := c.newSession(from, false)
	defer c.end(s)
	r := bufio.NewReaderSize(conn, 1<<16)
	msg := make([]byte, ipfix.MaxMessageLen)
	for {
		if _, err := io.ReadFull(r, msg[:ipfix.HeaderLen]); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.log.Debug("read", "transport", transport, "from", from, "err", err)
			}
			return
		}
		n, err := ipfix.MessageLen(msg[:ipfix.HeaderLen])
		if err != nil {
			s.em.messages.Inc()
			s.em.malformed.Inc()
			c.log.Warn("bad IPFIX header, closing the session", "transport", transport, "from", from, "err", err)
			return
		}
		if _, err := io.ReadFull(r, msg[ipfix.HeaderLen:n]); err != nil {
			return
		}
		c.handle(s, msg[:n], c.now())
	}
}

// listen binds the configured listeners and starts serving; it returns the bound addresses.
func (c *collector) listen(ctx context.Context, cfg *Config) (map[string]string, []io.Closer, error) {
	addrs := map[string]string{}
	var closers []io.Closer
	fail := func(err error) (map[string]string, []io.Closer, error) {
		for _, cl := range closers {
			_ = cl.Close()
		}
		return nil, nil, err
	}
	if u := cfg.Collector.UDP; u != nil {
		ua, err := net.ResolveUDPAddr("udp", u.Address)
		if err != nil {
			return fail(fmt.Errorf("collector.udp.address: %w", err))
		}
		conn, err := net.ListenUDP("udp", ua)
		if err != nil {
			return fail(fmt.Errorf("listen udp %s: %w", u.Address, err))
		}
		_ = conn.SetReadBuffer(8 << 20)
		closers = append(closers, conn)
		addrs["udp"] = conn.LocalAddr().String()
		c.wg.Add(1)
		go c.serveUDP(ctx, conn, u.BufferSize, cfg.TemplateTimeout.Duration)
	}
	if t := cfg.Collector.TCP; t != nil {
		ln, err := net.Listen("tcp", t.Address)
		if err != nil {
			return fail(fmt.Errorf("listen tcp %s: %w", t.Address, err))
		}
		closers = append(closers, ln)
		addrs["tcp"] = ln.Addr().String()
		c.wg.Add(1)
		go c.serveStream(ctx, ln, "tcp")
	}
	if t := cfg.Collector.TLS; t != nil {
		tc, err := serverTLS(t)
		if err != nil {
			return fail(err)
		}
		ln, err := tls.Listen("tcp", t.Address, tc)
		if err != nil {
			return fail(fmt.Errorf("listen tls %s: %w", t.Address, err))
		}
		closers = append(closers, ln)
		addrs["tls"] = ln.Addr().String()
		c.wg.Add(1)
		go c.serveStream(ctx, ln, "tls")
	}
	return addrs, closers, nil
}
