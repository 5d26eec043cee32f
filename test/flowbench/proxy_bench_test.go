package flowbench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/go-ipfix/pkg/collector"
	"github.com/vmware/go-ipfix/pkg/entities"
	"github.com/vmware/go-ipfix/pkg/exporter"
	"github.com/vmware/go-ipfix/pkg/registry"

	"github.com/strait-net/strait/internal/aggregator"
	"github.com/strait-net/strait/internal/flow/ipfix"
)

// recordsPerRound is how many records each proxy forwards per benchmark iteration.
const recordsPerRound = 600_000

// input is the exporter's byte stream: one template message, then data messages of about 1400 bytes with one
// data set each (go-ipfix's collector decodes only the first set of a message, so this is the input both
// proxies handle completely). Records look like a node exporter's: 5-tuple, times, forward and reverse
// counters (61 bytes).
func input(tb testing.TB, records int) []byte {
	tm, err := ipfix.NewTemplate(256, 0,
		ipfix.FieldSpec{ID: ipfix.IESourceIPv4Address, Length: 4}, ipfix.FieldSpec{ID: ipfix.IEDestinationIPv4Address, Length: 4},
		ipfix.FieldSpec{ID: ipfix.IESourceTransportPort, Length: 2}, ipfix.FieldSpec{ID: ipfix.IEDestinationTransportPort, Length: 2},
		ipfix.FieldSpec{ID: ipfix.IEProtocolIdentifier, Length: 1},
		ipfix.FieldSpec{ID: ipfix.IEFlowStartMilliseconds, Length: 8}, ipfix.FieldSpec{ID: ipfix.IEFlowEndMilliseconds, Length: 8},
		ipfix.FieldSpec{ID: ipfix.IEOctetDeltaCount, Length: 8}, ipfix.FieldSpec{ID: ipfix.IEPacketDeltaCount, Length: 8},
		ipfix.FieldSpec{ID: ipfix.IEOctetDeltaCount, Length: 8, PEN: ipfix.ReversePEN},
		ipfix.FieldSpec{ID: ipfix.IEPacketDeltaCount, Length: 8, PEN: ipfix.ReversePEN})
	if err != nil {
		tb.Fatal(err)
	}
	var out bytesWriter
	enc := ipfix.NewEncoder(&out, 1400)
	if err := enc.AddTemplate(7, tm); err != nil {
		tb.Fatal(err)
	}
	if err := enc.Flush(); err != nil {
		tb.Fatal(err)
	}
	var rb ipfix.RecordBuilder
	for i := range records {
		rb.Reset()
		rb.IPv4(netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}))
		rb.IPv4(netip.MustParseAddr("10.244.200.1"))
		rb.Uint16(uint16(i))
		rb.Uint16(443)
		rb.Uint8(6)
		rb.Milliseconds(time.UnixMilli(1_700_000_000_000 + int64(i)))
		rb.Milliseconds(time.UnixMilli(1_700_000_005_000 + int64(i)))
		rb.Uint64(uint64(i) * 100)
		rb.Uint64(uint64(i))
		rb.Uint64(uint64(i) * 200)
		rb.Uint64(uint64(i) * 2)
		if err := enc.AppendRecord(7, 256, rb.Bytes()); err != nil {
			tb.Fatal(err)
		}
	}
	if err := enc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return out.b
}

type bytesWriter struct{ b []byte }

func (w *bytesWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// sink is the downstream collector: it frames messages and counts data records from set lengths (both
// proxies write 69-byte records: 61 + 403 + 405, no padding), without decoding values.
type sink struct {
	ln      net.Listener
	records atomic.Int64
}

func newSink(tb testing.TB) *sink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &sink{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.read(c)
		}
	}()
	tb.Cleanup(func() { _ = ln.Close() })
	return s
}

func (s *sink) read(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 65536)
	for {
		if _, err := io.ReadFull(c, buf[:16]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(buf[2:]))
		if n < 16 {
			return
		}
		if _, err := io.ReadFull(c, buf[16:n]); err != nil {
			return
		}
		recs := 0
		for off := 16; off+4 <= n; {
			id, l := binary.BigEndian.Uint16(buf[off:]), int(binary.BigEndian.Uint16(buf[off+2:]))
			if l < 4 {
				break
			}
			if id >= 256 {
				recs += (l - 4) / 69
			}
			off += l
		}
		s.records.Add(int64(recs))
	}
}

func (s *sink) wait(tb testing.TB, n int64) {
	deadline := time.Now().Add(2 * time.Minute)
	for s.records.Load() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("sink got %d of %d records", s.records.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// feed writes the input stream to the proxy's TCP listener.
func feed(tb testing.TB, addr string, stream []byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Write(stream); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
}

func report(b *testing.B, records int64, wall, cpu time.Duration) {
	b.ReportMetric(float64(records)/wall.Seconds(), "records/s")
	b.ReportMetric(float64(records)/cpu.Seconds(), "records/CPU-s")
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
}

// BenchmarkProxyStrait: Strait's aggregator in proxy mode, in process: TCP collector -> decode -> 403/405
// appended -> encode -> TCP destination -> sink. CPU is the whole process's (feeder, proxy, sink, GC).
func BenchmarkProxyStrait(b *testing.B) {
	stream := input(b, recordsPerRound)
	s := newSink(b)
	cfg, err := aggregator.ParseConfig(fmt.Appendf(nil, `
mode: proxy
collector: {tcp: {address: "127.0.0.1:0"}}
destinations: [{name: sink, type: ipfix, transport: tcp, address: %q, queueSize: 65536}]
api: {address: "off"}
`, s.ln.Addr().String()))
	if err != nil {
		b.Fatal(err)
	}
	a, err := aggregator.New(cfg, aggregator.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); a.Wait() }()
	if err := a.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := range b.N {
		feed(b, a.Addr("tcp"), stream)
		s.wait(b, int64(i+1)*recordsPerRound)
	}
	report(b, int64(b.N)*recordsPerRound, time.Since(start), cpuTime()-cpu0)
}

// BenchmarkProxyGoIPFIX: the same proxy built the usual way on go-ipfix v0.17.0: its TCP collecting process,
// every decoded data record rebuilt with originalExporterIPv4Address and originalObservationDomainId
// appended, sent with its buffered exporter over TCP to the same sink.
func BenchmarkProxyGoIPFIX(b *testing.B) {
	registry.LoadRegistry()
	stream := input(b, recordsPerRound)
	s := newSink(b)
	cp, err := collector.InitCollectingProcess(collector.CollectorInput{Address: "127.0.0.1:0", Protocol: "tcp",
		MaxBufferSize: 65535, DecodingMode: collector.DecodingModeLenientKeepUnknown})
	if err != nil {
		b.Fatal(err)
	}
	go cp.Start()
	for cp.GetAddress() == nil {
		time.Sleep(time.Millisecond)
	}
	ep, err := exporter.InitExportingProcess(exporter.ExporterInput{CollectorAddress: s.ln.Addr().String(),
		CollectorProtocol: "tcp", ObservationDomainID: 1})
	if err != nil {
		b.Fatal(err)
	}
	be := exporter.NewBufferedIPFIXExporter(ep)
	ie403, err := registry.GetInfoElement("originalExporterIPv4Address", registry.IANAEnterpriseID)
	if err != nil {
		b.Fatal(err)
	}
	ie405, err := registry.GetInfoElement("originalObservationDomainId", registry.IANAEnterpriseID)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		type key struct {
			exporter string
			domain   uint32
			id       uint16
		}
		derived := map[key]uint16{}
		handle := func(msg *entities.Message) {
			set := msg.GetSet()
			exp := net.ParseIP(msg.GetExportAddress()).To4()
			dom := msg.GetObsDomainID()
			for _, rec := range set.GetRecords() {
				k := key{msg.GetExportAddress(), dom, rec.GetTemplateID()}
				elems := rec.GetOrderedElementList()
				out := make([]entities.InfoElementWithValue, 0, len(elems)+2)
				out = append(out, elems...)
				out = append(out, entities.NewIPAddressInfoElement(ie403, exp), entities.NewUnsigned32InfoElement(ie405, dom))
				var r entities.Record
				if set.GetSetType() == entities.Template {
					id := ep.NewTemplateID()
					derived[k] = id
					r = entities.NewTemplateRecordFromElements(id, out)
				} else {
					id, ok := derived[k]
					if !ok {
						continue
					}
					r = entities.NewDataRecordFromElements(id, out)
				}
				if err := be.AddRecord(r); err != nil {
					panic(err)
				}
			}
		}
		// Flush when no message is waiting, like Strait's destinations do.
		msgs := cp.GetMsgChan()
		for {
			select {
			case msg, ok := <-msgs:
				if !ok {
					return
				}
				handle(msg)
				continue
			default:
			}
			if err := be.Flush(); err != nil {
				panic(err)
			}
			msg, ok := <-msgs
			if !ok {
				return
			}
			handle(msg)
		}
	}()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := range b.N {
		feed(b, cp.GetAddress().String(), stream)
		s.wait(b, int64(i+1)*recordsPerRound)
	}
	report(b, int64(b.N)*recordsPerRound, time.Since(start), cpuTime()-cpu0)
	b.StopTimer()
	ep.CloseConnToCollector()
	cp.Stop() // the loop above drains the channel, so Stop does not hang
	<-done
}
