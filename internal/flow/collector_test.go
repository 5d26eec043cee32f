package flow

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
	"github.com/strait-net/strait/internal/flow/ipfix"
)

// testCollector is an IPFIX collector on 127.0.0.1 built on the ipfix
// decoder: every transport session gets its own template session, so a
// record decodes only if the exporter (re)sent the templates on it.
type testCollector struct {
	addr      string
	recs      chan flowrec.Fields
	sessions  atomic.Int32
	templates atomic.Int32
	errs      chan error
	// closeAfter closes each TCP connection after this many messages (0: never).
	closeAfter int
}

type visitor struct {
	c     *testCollector
	codec *flowrec.Codec
}

func (v *visitor) Template(*ipfix.Header, *ipfix.Template) { v.c.templates.Add(1) }
func (v *visitor) Withdraw(*ipfix.Header, uint16)          {}
func (v *visitor) Record(_ *ipfix.Header, r *ipfix.Record) {
	var f flowrec.Fields
	if err := v.codec.Decode(r, &f); err != nil {
		v.c.fail(err)
		return
	}
	v.c.recs <- f
}

func (c *testCollector) fail(err error) {
	select {
	case c.errs <- err:
	default:
	}
}

func newTestCollector() *testCollector {
	return &testCollector{recs: make(chan flowrec.Fields, 1<<17), errs: make(chan error, 1)}
}

func (c *testCollector) decoder(t testing.TB, cache *ipfix.TemplateCache, udp bool) (*ipfix.Decoder, *visitor) {
	codec, err := flowrec.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	c.sessions.Add(1)
	return ipfix.NewDecoder(cache, cache.NewSession(udp)), &visitor{c: c, codec: codec}
}

// startTCP serves TCP (or TLS when cfg is set) on 127.0.0.1.
func startTCP(t testing.TB, c *testCollector, cfg *tls.Config) *testCollector {
	t.Helper()
	var ln net.Listener
	var err error
	if cfg != nil {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", cfg)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	c.addr = ln.Addr().String()
	cache := ipfix.NewTemplateCache(0)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			dec, v := c.decoder(t, cache, false)
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				hdr := make([]byte, ipfix.HeaderLen)
				for n := 0; c.closeAfter == 0 || n < c.closeAfter; n++ {
					if _, err := io.ReadFull(br, hdr); err != nil {
						if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
							c.fail(err)
						}
						return
					}
					l, err := ipfix.MessageLen(hdr)
					if err != nil {
						c.fail(err)
						return
					}
					msg := make([]byte, l)
					copy(msg, hdr)
					if _, err := io.ReadFull(br, msg[ipfix.HeaderLen:]); err != nil {
						c.fail(err)
						return
					}
					if _, err := dec.Decode(msg, time.Now(), v); err != nil {
						c.fail(err)
						return
					}
				}
			}()
		}
	}()
	return c
}

// startUDP serves UDP on 127.0.0.1.
func startUDP(t testing.TB, c *testCollector) *testCollector {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	c.addr = pc.LocalAddr().String()
	cache := ipfix.NewTemplateCache(time.Minute)
	dec, v := c.decoder(t, cache, true)
	go func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if _, err := dec.Decode(buf[:n], time.Now(), v); err != nil {
				c.fail(err)
			}
		}
	}()
	return c
}

// wait collects records until done says so or the timeout passes.
func (c *testCollector) wait(t testing.TB, timeout time.Duration, done func(got []flowrec.Fields) bool) []flowrec.Fields {
	t.Helper()
	var got []flowrec.Fields
	deadline := time.After(timeout)
	for {
		if done(got) {
			return got
		}
		select {
		case f := <-c.recs:
			got = append(got, f)
		case err := <-c.errs:
			t.Fatalf("collector: %v", err)
		case <-deadline:
			t.Fatalf("collector: condition not met after %v; %d records", timeout, len(got))
		}
	}
}
