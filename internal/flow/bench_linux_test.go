package flow

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
	"github.com/strait-net/strait/internal/flow/ipfix"
)

// BenchmarkExporterCycle10k is the exporter's work for 10,000 live
// connections per poll interval: one conntrack dump of the node's namespace
// merged into the table, and one active-timeout export of every connection
// (records rendered and IPFIX-encoded; the socket write is left out). At the
// defaults (poll and active timeout 5 s) this happens once per 5 s, so
// CPU-per-second = ns/cycle / 5e9.
func BenchmarkExporterCycle10k(b *testing.B) {
	const n = 10_000
	l := newLab(b)
	if err := l.udpFromA(n, 500); err != nil {
		b.Fatal(err)
	}
	clock := time.Now()
	e, err := New(Config{NodeNetns: l.node.Path(), Node: "n1", Labels: true,
		Table:  TableConfig{Scope: testScope(), Pods: testPods(), ActiveTimeout: 5 * time.Second, IdleTimeout: time.Hour},
		Export: ExportConfig{Address: "127.0.0.1:1"}, Logger: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return clock }})
	if err != nil {
		b.Fatal(err)
	}
	dc, err := e.reader.dial()
	if err != nil {
		b.Fatal(err)
	}
	defer dc.Close()
	codec, err := flowrec.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	enc := ipfix.NewEncoder(io.Discard, ipfix.MaxMessageLen)
	var rec flowrec.Fields
	var flows, exported int
	b.ResetTimer()
	for range b.N {
		clock = clock.Add(5 * time.Second)
		if err := e.reader.dump(context.Background(), dc); err != nil {
			b.Fatal(err)
		}
		// Every connection changed since its last export (as live ones do).
		e.table.mu.Lock()
		for _, en := range e.table.flows {
			en.expPackets = en.Packets - 1
		}
		e.table.mu.Unlock()
		exported = e.table.Expire(clock, func(f *Flow) bool {
			e.fields(f, &rec)
			if err := codec.Encode(enc, 1, &rec); err != nil {
				b.Fatal(err)
			}
			return true
		})
		flows = e.table.Len()
	}
	b.StopTimer()
	if flows < n*9/10 || exported < n*9/10 {
		b.Fatalf("%d flows in the table, %d exported per cycle; want ~%d", flows, exported, n)
	}
	b.ReportMetric(float64(flows), "flows")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/5e9*100, "%CPU@5s")
}
