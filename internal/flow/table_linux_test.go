package flow

import (
	"net/netip"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
)

func conn(id uint32, src, dst string, sport uint16, pkts uint64) Conn {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	return Conn{ID: id, Orig: Tuple{Src: s, Dst: d, SrcPort: sport, DstPort: 80, Proto: 6},
		Reply:   Tuple{Src: d, Dst: s, SrcPort: 80, DstPort: sport, Proto: 6},
		Packets: pkts, Bytes: 100 * pkts, ReversePackets: pkts, ReverseBytes: 50 * pkts, HasCounters: pkts > 0}
}

func expireAll(t *Table, now time.Time) []Flow {
	var out []Flow
	t.Expire(now, func(f *Flow) bool { out = append(out, *f); return true })
	return out
}

// TestTable: the export decisions of the flow table, without a kernel.
func TestTable(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tb := NewTable(TableConfig{Scope: testScope(), Pods: testPods(), ActiveTimeout: 5 * time.Second, IdleTimeout: 15 * time.Second, MaxFlows: 3})

	c := conn(1, podA4, "10.244.3.9", 40000, 10)
	c.Start = t0
	tb.Update(&c, 1, false, at(0))
	if fs := expireAll(tb, at(4)); len(fs) != 0 {
		t.Fatalf("exported before the active timeout: %+v", fs)
	}
	fs := expireAll(tb, at(5))
	if len(fs) != 1 || fs[0].EndReason != EndReasonActive || fs[0].DeltaPackets != 10 || fs[0].FlowType != flowrec.FlowTypeInterNode ||
		!fs[0].Egress || fs[0].SrcPod.Name != "web-1" {
		t.Fatalf("active export: %+v", fs)
	}
	if fs := expireAll(tb, at(11)); len(fs) != 0 {
		t.Fatalf("unchanged flow exported again on the active timeout: %+v", fs)
	}
	c.Packets, c.Bytes = 15, 1500
	tb.Update(&c, 2, false, at(12))
	fs = expireAll(tb, at(12))
	if len(fs) != 1 || fs[0].DeltaPackets != 5 || fs[0].DeltaBytes != 500 || fs[0].Packets != 15 {
		t.Fatalf("second active export: %+v", fs)
	}
	fs = expireAll(tb, at(27))
	if len(fs) != 1 || fs[0].EndReason != EndReasonIdle || fs[0].DeltaPackets != 0 {
		t.Fatalf("idle export: %+v", fs)
	}
	if fs := expireAll(tb, at(60)); len(fs) != 0 || tb.Len() != 1 {
		t.Fatalf("idle flow exported twice (%+v) or forgotten while conntrack has it (%d)", fs, tb.Len())
	}

	// Gone from the next dump: ended (its DESTROY was lost).
	if n := tb.EndMissing(3, at(61)); n != 1 {
		t.Fatalf("EndMissing = %d", n)
	}
	fs = expireAll(tb, at(61))
	if len(fs) != 1 || fs[0].EndReason != EndReasonEnd || !fs[0].Ended || tb.Len() != 0 {
		t.Fatalf("missed destroy: %+v, %d left", fs, tb.Len())
	}

	// A DESTROY event for a connection only seen by its NEW event.
	d := conn(2, "10.244.3.9", podB4, 50000, 0)
	tb.Update(&d, 0, false, at(70))
	d.Packets, d.Bytes, d.HasCounters, d.Stop = 3, 300, true, at(71)
	tb.Update(&d, 0, true, at(72))
	fs = expireAll(tb, at(72))
	if len(fs) != 1 || fs[0].EndReason != EndReasonEnd || fs[0].Packets != 3 || !fs[0].End.Equal(at(71)) || fs[0].Egress || fs[0].DstPod.Name != "db-0" {
		t.Fatalf("destroy: %+v", fs)
	}

	// Not pod-related: filtered. Beyond MaxFlows: refused and counted.
	other := conn(3, "198.51.100.1", "198.51.100.2", 1, 1)
	tb.Update(&other, 4, false, at(80))
	for i := range 4 {
		c := conn(uint32(10+i), podA4, podB4, uint16(1000+i), 1)
		tb.Update(&c, 4, false, at(80))
	}
	if f, full, n := tb.counts(); f != 1 || full != 1 || n != 3 {
		t.Errorf("filtered %d, table full %d, flows %d; want 1, 1, 3", f, full, n)
	}

	// Backpressure: an emit that refuses leaves the flow for next time.
	calls := 0
	tb.Expire(at(200), func(*Flow) bool { calls++; return false })
	if calls != 1 || tb.Len() != 3 {
		t.Errorf("refused emit: %d calls, %d flows", calls, tb.Len())
	}
}

func TestPrefixScope(t *testing.T) {
	s := testScope()
	for _, c := range []struct {
		src, dst string
		ft       FlowType
		egress   bool
	}{
		{podA4, podB4, flowrec.FlowTypeIntraNode, true},
		{podA4, "10.244.7.1", flowrec.FlowTypeInterNode, true},
		{"10.244.7.1", podA4, flowrec.FlowTypeInterNode, false},
		{podA4, "203.0.113.5", flowrec.FlowTypeToExternal, true},
		{"203.0.113.5", podB4, flowrec.FlowTypeFromExternal, false},
		{podA6, "fd10:244:0:9::1", flowrec.FlowTypeInterNode, true},
	} {
		ft, eg := s.Classify(netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst))
		if ft != c.ft || eg != c.egress {
			t.Errorf("%s -> %s: %v egress=%v, want %v %v", c.src, c.dst, ft, eg, c.ft, c.egress)
		}
	}
	svc := Tuple{Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddr("10.96.0.1")}
	if !s.Relevant(svc, Tuple{}) {
		t.Error("a connection to a Service address is not relevant")
	}
	node := Tuple{Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddr("198.51.100.2")}
	if s.Relevant(node, Tuple{Src: node.Dst, Dst: node.Src}) {
		t.Error("node-to-node traffic is relevant")
	}
}
