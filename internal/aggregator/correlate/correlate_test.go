package correlate

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/strait-net/strait/internal/flow/flowrec"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// base is a TCP connection from pod web-1 on n1 to pod db-0 on n2.
func base(side Side) Record {
	return Record{
		Side: side, FlowType: flowrec.FlowTypeInterNode,
		Conn:  Conn{Src: netip.MustParseAddr("10.244.1.5"), Dst: netip.MustParseAddr("10.244.2.7"), SrcPort: 40000, DstPort: 5432, Proto: 6},
		Start: at(0), End: at(2), TCPState: 3,
		Counters: Counters{Packets: 10, Bytes: 1000, ReversePackets: 8, ReverseBytes: 4000},
	}
}

func srcRec(mod ...func(*Record)) Record {
	r := base(SourceSide)
	r.SrcPod, r.SrcNamespace, r.SrcNode, r.SrcLabels = "web-1", "shop", "n1", "app=web"
	r.DstNode = "n2"
	for _, m := range mod {
		m(&r)
	}
	return r
}

func dstRec(mod ...func(*Record)) Record {
	r := base(DestinationSide)
	r.Start = at(0.004) // the other node's clock and the first packet's latency
	r.DstPod, r.DstNamespace, r.DstNode, r.DstLabels = "db-0", "data", "n2", "app=db"
	r.SrcNode = "n1"
	for _, m := range mod {
		m(&r)
	}
	return r
}

func ended(end float64) func(*Record) {
	return func(r *Record) { r.Ended, r.End = true, at(end) }
}

func counts(p, b, rp, rb uint64) func(*Record) {
	return func(r *Record) { r.Counters = Counters{p, b, rp, rb} }
}

type step struct {
	add    *Record
	expire float64 // seconds after t0; used when add is nil
	want   []func(t *testing.T, f *Flow)
	wantN  int // flows expected from this expire
}

func add(r Record) step { return step{add: &r} }

func expireAt(s float64, n int, checks ...func(t *testing.T, f *Flow)) step {
	return step{expire: s, wantN: n, want: checks}
}

func TestTable(t *testing.T) {
	correlatedBoth := func(t *testing.T, f *Flow) {
		t.Helper()
		if !f.Correlated || !f.Seen[SourceSide] || !f.Seen[DestinationSide] {
			t.Errorf("not correlated: %+v", f)
		}
		if f.SrcPod != "web-1" || f.SrcNamespace != "shop" || f.SrcNode != "n1" || f.SrcLabels != "app=web" ||
			f.DstPod != "db-0" || f.DstNamespace != "data" || f.DstNode != "n2" || f.DstLabels != "app=db" {
			t.Errorf("metadata not merged: %+v", f)
		}
		if f.Src != netip.MustParseAddr("10.244.1.5") || f.Dst != netip.MustParseAddr("10.244.2.7") || f.SrcPort != 40000 || f.DstPort != 5432 || f.Proto != 6 {
			t.Errorf("5-tuple %v:%d -> %v:%d/%d", f.Src, f.SrcPort, f.Dst, f.DstPort, f.Proto)
		}
		if !f.Start.Equal(at(0)) {
			t.Errorf("start %v, want the earlier side's %v", f.Start, at(0))
		}
	}
	reason := func(want uint8) func(t *testing.T, f *Flow) {
		return func(t *testing.T, f *Flow) {
			t.Helper()
			if f.EndReason != want {
				t.Errorf("end reason %d, want %d", f.EndReason, want)
			}
		}
	}
	delta := func(want Counters) func(t *testing.T, f *Flow) {
		return func(t *testing.T, f *Flow) {
			t.Helper()
			if f.Delta != want {
				t.Errorf("delta %+v, want %+v", f.Delta, want)
			}
		}
	}
	totals := func(want Counters) func(t *testing.T, f *Flow) {
		return func(t *testing.T, f *Flow) {
			t.Helper()
			if f.Counters != want {
				t.Errorf("totals %+v, want %+v", f.Counters, want)
			}
		}
	}
	uncorrelated := func(t *testing.T, f *Flow) {
		t.Helper()
		if f.Correlated {
			t.Errorf("correlated with one side only: %+v", f)
		}
	}

	tests := []struct {
		name  string
		cfg   Config
		steps []step
		stats func(t *testing.T, s Stats)
	}{
		{
			name: "inter-node, source then destination, both ended",
			steps: []step{
				add(srcRec()), expireAt(3, 0),
				add(dstRec(ended(3))), expireAt(4, 0), // source not ended yet
				add(srcRec(ended(3), counts(12, 1100, 9, 4100))),
				expireAt(5, 1, correlatedBoth, reason(EndReasonEnd), totals(Counters{12, 1100, 9, 4100})),
				expireAt(200, 0),
			},
			stats: func(t *testing.T, s Stats) {
				if s.Correlated != 1 || s.Active != 0 || s.Strings != 0 || s.Records != 3 {
					t.Errorf("stats %+v", s)
				}
			},
		},
		{
			name: "out of order: destination first",
			steps: []step{
				add(dstRec(ended(3))), expireAt(10, 0), // waits for the source side
				add(srcRec(ended(3))),
				expireAt(11, 1, correlatedBoth, reason(EndReasonEnd)),
			},
		},
		{
			name: "both sides' counters kept where they differ",
			steps: []step{
				add(srcRec(ended(3), counts(10, 1000, 8, 4000))),
				add(dstRec(ended(3), counts(9, 950, 8, 4000))), // one packet lost on the way
				expireAt(4, 1, correlatedBoth, totals(Counters{10, 1000, 8, 4000}), func(t *testing.T, f *Flow) {
					if f.Side[DestinationSide] != (Counters{9, 950, 8, 4000}) || f.Side[SourceSide] != (Counters{10, 1000, 8, 4000}) {
						t.Errorf("sides %+v", f.Side)
					}
				}),
			},
		},
		{
			name: "Service: source saw the ClusterIP, destination the backend",
			steps: []step{
				add(srcRec(ended(3), func(r *Record) {
					r.ServiceAddr, r.ServicePort, r.ServiceName = netip.MustParseAddr("10.96.0.20"), 80, "data/db:pg"
				})),
				add(dstRec(ended(3))),
				expireAt(4, 1, correlatedBoth, func(t *testing.T, f *Flow) {
					if f.ServiceAddr != netip.MustParseAddr("10.96.0.20") || f.ServicePort != 80 || f.ServiceName != "data/db:pg" {
						t.Errorf("service %v:%d %q", f.ServiceAddr, f.ServicePort, f.ServiceName)
					}
				}),
			},
			stats: func(t *testing.T, s Stats) {
				if s.Strings != 0 {
					t.Errorf("%d strings leaked", s.Strings)
				}
			},
		},
		{
			name: "intra-node: one record is the whole story",
			steps: []step{
				add(srcRec(ended(1), func(r *Record) {
					r.FlowType, r.DstPod, r.DstNamespace, r.DstNode, r.DstLabels = flowrec.FlowTypeIntraNode, "db-0", "data", "n1", "app=db"
				})),
				expireAt(1.5, 1, reason(EndReasonEnd), func(t *testing.T, f *Flow) {
					if !f.Correlated || f.FlowType != flowrec.FlowTypeIntraNode || f.DstPod != "db-0" {
						t.Errorf("%+v", f)
					}
				}),
			},
		},
		{
			name: "to-external: the source side is enough",
			steps: []step{
				add(srcRec(ended(1), func(r *Record) {
					r.FlowType, r.Dst, r.DstNode = flowrec.FlowTypeToExternal, netip.MustParseAddr("203.0.113.9"), ""
				})),
				expireAt(1.5, 1, func(t *testing.T, f *Flow) {
					if !f.Correlated || f.Seen[DestinationSide] {
						t.Errorf("%+v", f)
					}
				}),
			},
		},
		{
			name: "inter-node with one side only: exported uncorrelated after the inactive timeout",
			steps: []step{
				add(srcRec(ended(2))),
				expireAt(60, 0),
				expireAt(92.1, 1, uncorrelated, reason(EndReasonEnd), func(t *testing.T, f *Flow) {
					if f.DstPod != "" || f.SrcPod != "web-1" {
						t.Errorf("%+v", f)
					}
				}),
			},
		},
		{
			name: "active timeout: deltas and throughput per interval, then idle",
			cfg:  Config{ActiveTimeout: 60 * time.Second, InactiveTimeout: 90 * time.Second},
			steps: []step{
				add(srcRec(func(r *Record) { r.End = at(50) })),
				add(dstRec(func(r *Record) { r.End = at(50) })),
				expireAt(59, 0),
				expireAt(61, 1, reason(EndReasonActive), correlatedBoth, delta(Counters{10, 1000, 8, 4000}), func(t *testing.T, f *Flow) {
					if f.Throughput != 1000*8/50 || f.ReverseThroughput != 4000*8/50 {
						t.Errorf("throughput %d/%d bit/s over 50 s", f.Throughput, f.ReverseThroughput)
					}
				}),
				add(srcRec(counts(30, 6000, 20, 9000), func(r *Record) { r.End = at(100) })),
				expireAt(100, 0),
				expireAt(121.5, 1, reason(EndReasonActive), delta(Counters{20, 5000, 12, 5000}), func(t *testing.T, f *Flow) {
					if f.Throughput != 5000*8/50 {
						t.Errorf("throughput %d bit/s, want %d", f.Throughput, 5000*8/50)
					}
				}),
				expireAt(189, 0),
				expireAt(190.5, 1, reason(EndReasonIdle), delta(Counters{})),
				expireAt(300, 0),
			},
		},
		{
			name: "port reuse by the same node: the old connection is exported first",
			steps: []step{
				add(srcRec()),
				add(srcRec(func(r *Record) { r.Start, r.End = at(30), at(31) })),
				expireAt(31, 1, reason(EndReasonEnd), func(t *testing.T, f *Flow) {
					if !f.Start.Equal(at(0)) {
						t.Errorf("exported the new connection: %+v", f)
					}
				}),
			},
			stats: func(t *testing.T, s Stats) {
				if s.Active != 1 {
					t.Errorf("%d active, want the new one", s.Active)
				}
			},
		},
		{
			name: "the other node's start further away than the tolerance is a new connection",
			steps: []step{
				add(srcRec()),
				add(dstRec(func(r *Record) { r.Start, r.End = at(40), at(41) })),
				expireAt(41, 1, uncorrelated),
			},
			stats: func(t *testing.T, s Stats) {
				if s.Active != 1 || s.Correlated != 0 {
					t.Errorf("%+v", s)
				}
			},
		},
		{
			name: "max connections: new ones dropped and counted, known ones still merge",
			cfg:  Config{MaxConnections: 1},
			steps: []step{
				add(srcRec()),
				add(srcRec(func(r *Record) { r.SrcPort = 40001 })),
				add(dstRec(ended(3))),
				add(srcRec(ended(3))),
				expireAt(4, 1, correlatedBoth),
			},
			stats: func(t *testing.T, s Stats) {
				if s.Dropped != 1 || s.Active != 0 {
					t.Errorf("%+v", s)
				}
			},
		},
		{
			name: "invalid records refused",
			steps: []step{
				add(Record{Conn: Conn{Src: netip.MustParseAddr("10.0.0.1")}}),
				add(Record{Conn: Conn{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("2001:db8:100::1")}}),
				add(Record{Conn: Conn{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2")}, Side: 7}),
			},
			stats: func(t *testing.T, s Stats) {
				if s.Invalid != 3 || s.Active != 0 {
					t.Errorf("%+v", s)
				}
			},
		},
		{
			name: "IPv6",
			steps: []step{
				add(srcRec(ended(1), func(r *Record) {
					r.Src, r.Dst = netip.MustParseAddr("fd10:244::5"), netip.MustParseAddr("fd10:244:0:1::7")
				})),
				add(dstRec(ended(1), func(r *Record) {
					r.Src, r.Dst = netip.MustParseAddr("fd10:244::5"), netip.MustParseAddr("fd10:244:0:1::7")
				})),
				expireAt(2, 1, func(t *testing.T, f *Flow) {
					if f.Src != netip.MustParseAddr("fd10:244::5") || f.Dst != netip.MustParseAddr("fd10:244:0:1::7") || !f.Correlated {
						t.Errorf("%+v", f)
					}
				}),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := New(tc.cfg)
			for i, s := range tc.steps {
				if s.add != nil {
					r := *s.add
					tb.Add(&r)
					continue
				}
				var got []Flow
				n := tb.Expire(at(s.expire), func(f *Flow) { got = append(got, *f) })
				if n != len(got) || n != s.wantN {
					t.Fatalf("step %d: expire at %vs: %d flows (returned %d), want %d: %+v", i, s.expire, len(got), n, s.wantN, got)
				}
				for _, f := range got {
					for _, check := range s.want {
						check(t, &f)
					}
				}
			}
			if tc.stats != nil {
				tc.stats(t, tb.Stats())
			}
		})
	}
}

// TestStoreAgainstMap drives the open-addressing index with random inserts
// and removals and compares it with a Go map.
func TestStoreAgainstMap(t *testing.T) {
	s := newStore()
	ref := map[key]uint32{}
	rng := rand.New(rand.NewPCG(1, 2))
	mk := func(i uint32) key {
		return key{src: [16]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}, sport: uint16(i % 7), proto: 6}
	}
	for op := 0; op < 200_000; op++ {
		k := mk(rng.Uint32N(20_000))
		idx, ok := s.find(&k)
		refIdx, refOK := ref[k]
		if ok != refOK || ok && idx != refIdx {
			t.Fatalf("op %d: find %v = %d,%v; want %d,%v", op, k, idx, ok, refIdx, refOK)
		}
		if ok {
			s.at(idx).seen = 0
			s.remove(idx)
			delete(ref, k)
		} else {
			idx := s.insert(&k)
			s.at(idx).seen = 1
			ref[k] = idx
		}
		if s.count != len(ref) {
			t.Fatalf("op %d: count %d, want %d", op, s.count, len(ref))
		}
	}
	n := 0
	s.each(func(idx uint32) {
		if ref[s.at(idx).k] != idx {
			t.Fatalf("entry %d not in the reference", idx)
		}
		n++
	})
	if n != len(ref) {
		t.Fatalf("each saw %d, want %d", n, len(ref))
	}
}

func TestConnSize(t *testing.T) {
	if sz := unsafe.Sizeof(conn{}); sz > 232 {
		t.Errorf("conn is %d bytes; the memory target needs <= 232", sz)
	}
}
