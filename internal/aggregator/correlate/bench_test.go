package correlate

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
)

// benchRecords fills n distinct inter-node connections between 2,000 pods
// in 50 namespaces on 100 nodes, as source and destination records.
func benchRecord(i int, side Side, r *Record) {
	src, dst := i%2000, (i/2000+i)%2000
	*r = Record{
		Side: side, FlowType: flowrec.FlowTypeInterNode,
		Conn: Conn{
			Src:     netip.AddrFrom4([4]byte{10, 244, byte(src >> 8), byte(src)}),
			Dst:     netip.AddrFrom4([4]byte{10, 245, byte(dst >> 8), byte(dst)}),
			SrcPort: uint16(1024 + i%60000), DstPort: uint16(80 + i/60000), Proto: 6,
		},
		Start: t0, End: t0.Add(time.Second), TCPState: 3,
		Counters: Counters{Packets: 10, Bytes: 1000, ReversePackets: 8, ReverseBytes: 4000},
	}
	r.SrcPod, r.SrcNamespace, r.SrcNode = podName(src), nsName(src), nodeName(src)
	r.DstPod, r.DstNamespace, r.DstNode = podName(dst), nsName(dst), nodeName(dst)
	r.SrcLabels, r.DstLabels = "app=web,tier=frontend", "app=db,tier=backend"
}

var (
	podNames = func() (s []string) {
		for i := range 2000 {
			s = append(s, fmt.Sprintf("deploy-%d-7d9f8c6b5-x%04d", i%50, i))
		}
		return
	}()
	nsNames = func() (s []string) {
		for i := range 50 {
			s = append(s, fmt.Sprintf("team-%d", i))
		}
		return
	}()
	nodeNames = func() (s []string) {
		for i := range 100 {
			s = append(s, fmt.Sprintf("node-%03d", i))
		}
		return
	}()
)

func podName(i int) string  { return podNames[i] }
func nsName(i int) string   { return nsNames[i%50] }
func nodeName(i int) string { return nodeNames[i%100] }

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkCorrelateMemory measures the heap per live correlated connection
// (both sides' records merged) at 100k and 1M connections.
func BenchmarkCorrelateMemory(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			var perConn float64
			for range b.N {
				before := heap()
				tb := New(Config{MaxConnections: n})
				var r Record
				start := time.Now()
				for i := range n {
					benchRecord(i, SourceSide, &r)
					tb.Add(&r)
					benchRecord(i, DestinationSide, &r)
					tb.Add(&r)
				}
				elapsed := time.Since(start)
				after := heap()
				if s := tb.Stats(); s.Active != n || s.Correlated != uint64(n) || s.Dropped != 0 {
					b.Fatalf("stats %+v", s)
				}
				perConn = float64(after-before) / float64(n)
				b.ReportMetric(float64(elapsed.Nanoseconds())/float64(2*n), "ns/record")
				runtime.KeepAlive(tb)
			}
			b.ReportMetric(perConn, "B/conn")
		})
	}
}

// filled is a table of 100k connections seen from their source side.
func filled() *Table {
	tb := New(Config{})
	var r Record
	for i := range 100_000 {
		benchRecord(i, SourceSide, &r)
		tb.Add(&r)
	}
	return tb
}

// BenchmarkAdd is the cost of merging one record into a table of 100k.
func BenchmarkAdd(b *testing.B) {
	tb := filled()
	var r Record
	b.ResetTimer()
	for i := range b.N {
		benchRecord(i%100_000, DestinationSide, &r)
		tb.Add(&r)
	}
}

// BenchmarkExpireScan is one Expire pass over 100k live connections with
// nothing due.
func BenchmarkExpireScan(b *testing.B) {
	tb := filled()
	b.ResetTimer()
	for range b.N {
		tb.Expire(t0.Add(2*time.Second), func(*Flow) { b.Fatal("nothing is due") })
	}
}
