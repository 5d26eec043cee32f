package aggregator

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-net/strait/internal/flow/ipfix"
)

// output is what a destination does with batches; it runs on the destination's own goroutine.
type output interface {
	// write handles one batch and returns how many records it wrote and dropped (reason).
	write(b *batch, now time.Time) (written int, dropped int, reason string)
	// idle is called when the queue is empty (flush buffers); it returns what the flush wrote and dropped.
	idle(now time.Time) (written int, dropped int, reason string)
	// tick is called every second (reconnects, template refresh).
	tick(now time.Time)
	close()
}

// destination is one configured destination with its own bounded queue and goroutine, so a slow or dead
// one never blocks the others.
type destination struct {
	name     string
	q        chan *batch
	out      output
	m        *metrics
	exported prometheus.Counter
}

func newDestination(name string, queue int, out output, m *metrics) *destination {
	return &destination{name: name, q: make(chan *batch, queue), out: out, m: m,
		exported: m.exported.WithLabelValues(name)}
}

func (d *destination) run(ctx context.Context) {
	defer d.out.close()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.out.tick(now)
		case b := <-d.q:
			now := time.Now()
			d.process(b, now)
		drain:
			for {
				select {
				case b := <-d.q:
					d.process(b, now)
				default:
					break drain
				}
			}
			w, n, reason := d.out.idle(now)
			d.count(w, n, reason)
		}
	}
}

func (d *destination) process(b *batch, now time.Time) {
	w, n, reason := d.out.write(b, now)
	b.release()
	d.count(w, n, reason)
}

func (d *destination) count(w, n int, reason string) {
	if w > 0 {
		d.exported.Add(float64(w))
	}
	if n > 0 {
		d.m.dropped.WithLabelValues(d.name, reason).Add(float64(n))
	}
}

// ipfixOut sends IPFIX over UDP, TCP or TLS. It connects lazily, reconnects with exponential backoff (records
// are dropped and counted while it is down), announces every template before its first record on each
// transport session (so templates are resent after a reconnect), and re-announces them every
// TemplateRefresh on UDP.
type ipfixOut struct {
	cfg     DestinationConfig
	domain  uint32
	log     *slog.Logger
	up      prometheus.Gauge
	tlsConf *tls.Config
	conn    net.Conn
	enc     *ipfix.Encoder
	sent    map[*outTemplate]struct{}
	backoff time.Duration
	next    time.Time
	refresh time.Time
	// recorded/lost are the encoder counters already reported.
	recorded, lost uint64
}

const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

func newIPFIXOut(cfg DestinationConfig, domain uint32, log *slog.Logger, up prometheus.Gauge) (*ipfixOut, error) {
	o := &ipfixOut{cfg: cfg, domain: domain, log: log.With("destination", cfg.Name), up: up,
		sent: map[*outTemplate]struct{}{}, backoff: minBackoff}
	if cfg.Transport == "tls" {
		host, _, _ := net.SplitHostPort(cfg.Address)
		tc, err := clientTLS(cfg.TLS, host)
		if err != nil {
			return nil, fmt.Errorf("destination %s: %w", cfg.Name, err)
		}
		o.tlsConf = tc
	}
	o.enc = ipfix.NewEncoder(nil, cfg.MaxMessageSize)
	return o, nil
}

func (o *ipfixOut) connect(now time.Time) bool {
	if o.conn != nil {
		return true
	}
	if now.Before(o.next) {
		return false
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	var conn net.Conn
	var err error
	switch o.cfg.Transport {
	case "tls":
		conn, err = tls.DialWithDialer(&d, "tcp", o.cfg.Address, o.tlsConf)
	default:
		conn, err = d.Dial(o.cfg.Transport, o.cfg.Address)
	}
	if err != nil {
		o.log.Debug("connect", "err", err, "retry in", o.backoff)
		o.next = now.Add(o.backoff)
		o.backoff = min(2*o.backoff, maxBackoff)
		return false
	}
	o.log.Info("connected", "address", o.cfg.Address, "transport", o.cfg.Transport)
	o.conn = conn
	o.enc.SetWriter(conn)
	clear(o.sent)
	o.backoff = minBackoff
	o.refresh = now
	o.up.Set(1)
	return true
}

func (o *ipfixOut) disconnect(err error) {
	o.log.Warn("connection lost", "err", err)
	if o.conn != nil {
		_ = o.conn.Close()
	}
	o.conn = nil
	o.up.Set(0)
	o.next = time.Now().Add(o.backoff)
}

// counts returns the records written and lost since the last call.
func (o *ipfixOut) counts() (int, int) {
	w, l := o.enc.Records-o.recorded, o.enc.LostRecords-o.lost
	o.recorded, o.lost = o.enc.Records, o.enc.LostRecords
	return int(w), int(l)
}

func (o *ipfixOut) write(b *batch, now time.Time) (int, int, string) {
	if !o.connect(now) {
		return 0, b.records, "down"
	}
	udp := o.cfg.Transport == "udp"
	if o.conn != nil && !udp {
		_ = o.conn.SetWriteDeadline(now.Add(5 * time.Second))
	}
	unsent := 0
	for i, it := range b.items {
		if it.withdraw {
			if _, ok := o.sent[it.t]; ok {
				delete(o.sent, it.t)
				if !udp {
					if err := o.enc.Withdraw(o.domain, it.t.t.ID, false); err != nil {
						unsent = remaining(b, i)
						o.disconnect(err)
						break
					}
				}
			}
			continue
		}
		var err error
		if _, ok := o.sent[it.t]; !ok {
			err = o.enc.AddTemplate(o.domain, it.t.t)
			o.sent[it.t] = struct{}{}
		}
		if err == nil {
			err = o.enc.AppendRecord(o.domain, it.t.t.ID, b.data(it))
		}
		if err != nil {
			if udp {
				o.log.Debug("udp send", "err", err) // the message is lost; the socket stays
				unsent++
				continue
			}
			unsent = remaining(b, i)
			o.disconnect(err)
			break
		}
	}
	w, lost := o.counts()
	return w, lost + unsent, "send failed"
}

func remaining(b *batch, from int) int {
	n := 0
	for _, it := range b.items[from:] {
		if !it.withdraw {
			n++
		}
	}
	return n
}

func (o *ipfixOut) idle(now time.Time) (int, int, string) {
	if o.conn == nil {
		return 0, 0, ""
	}
	if o.cfg.Transport != "udp" {
		_ = o.conn.SetWriteDeadline(now.Add(5 * time.Second))
	}
	if err := o.enc.Flush(); err != nil && o.cfg.Transport != "udp" {
		o.disconnect(err)
	}
	w, lost := o.counts()
	return w, lost, "send failed"
}

func (o *ipfixOut) tick(now time.Time) {
	if o.cfg.Transport == "udp" && o.conn != nil && now.Sub(o.refresh) >= o.cfg.TemplateRefresh.Duration {
		clear(o.sent) // re-announce with the next record of each template
		o.refresh = now
	}
}

func (o *ipfixOut) close() {
	if o.conn != nil {
		_ = o.enc.Flush()
		_ = o.conn.Close()
	}
}
