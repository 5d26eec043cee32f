package aggregator

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/strait-net/strait/internal/aggregator/api"
	"github.com/strait-net/strait/internal/aggregator/correlate"
	"github.com/strait-net/strait/internal/flow/ipfix"
)

// Correlator is the seam for aggregate mode: records in, correlated flows out on timeouts. *correlate.Table
// implements it.
type Correlator interface {
	Add(r *correlate.Record) bool
	Expire(now time.Time, emit func(*correlate.Flow)) int
	Each(f func(*correlate.Flow) bool)
	Len() int
}

// aggregatePipeline decodes exporter records into the correlator and exports its flows.
type aggregatePipeline struct {
	table Correlator
	out   *fanout
	pool  *batchPool
	v4    *outTemplate
	v6    *outTemplate
}

func newAggregatePipeline(table Correlator, out *fanout, pool *batchPool) (*aggregatePipeline, error) {
	v4, err := aggregateTemplate(256, false)
	if err != nil {
		return nil, err
	}
	v6, err := aggregateTemplate(257, true)
	if err != nil {
		return nil, err
	}
	return &aggregatePipeline{table: table, out: out, pool: pool, v4: &outTemplate{t: v4}, v6: &outTemplate{t: v6}}, nil
}

// aggregateTemplate is the record aggregate mode exports: IANA elements where they exist, both nodes'
// counters and the pod metadata under Strait's enterprise number.
func aggregateTemplate(id uint16, v6 bool) (*ipfix.Template, error) {
	ie := func(id, l uint16) ipfix.FieldSpec { return ipfix.FieldSpec{ID: id, Length: l} }
	st := func(id, l uint16) ipfix.FieldSpec { return ipfix.FieldSpec{ID: id, Length: l, PEN: ipfix.StraitPEN} }
	rev := func(id, l uint16) ipfix.FieldSpec { return ipfix.FieldSpec{ID: id, Length: l, PEN: ipfix.ReversePEN} }
	addr := []ipfix.FieldSpec{ie(ipfix.IESourceIPv4Address, 4), ie(ipfix.IEDestinationIPv4Address, 4)}
	svc := st(ipfix.IEDestinationServiceIPv4Address, 4)
	if v6 {
		addr = []ipfix.FieldSpec{ie(ipfix.IESourceIPv6Address, 16), ie(ipfix.IEDestinationIPv6Address, 16)}
		svc = st(ipfix.IEDestinationServiceIPv6Address, 16)
	}
	fields := append(addr,
		ie(ipfix.IESourceTransportPort, 2), ie(ipfix.IEDestinationTransportPort, 2), ie(ipfix.IEProtocolIdentifier, 1),
		ie(ipfix.IEFlowStartMilliseconds, 8), ie(ipfix.IEFlowEndMilliseconds, 8), ie(ipfix.IEFlowEndReason, 1),
		ie(ipfix.IEOctetTotalCount, 8), ie(ipfix.IEPacketTotalCount, 8),
		rev(ipfix.IEOctetTotalCount, 8), rev(ipfix.IEPacketTotalCount, 8),
		ie(ipfix.IEOctetDeltaCount, 8), ie(ipfix.IEPacketDeltaCount, 8),
		rev(ipfix.IEOctetDeltaCount, 8), rev(ipfix.IEPacketDeltaCount, 8),
		st(ipfix.IEOctetTotalCountFromSourceNode, 8), st(ipfix.IEPacketTotalCountFromSourceNode, 8),
		st(ipfix.IEReverseOctetTotalCountFromSourceNode, 8), st(ipfix.IEReversePacketTotalCountFromSourceNode, 8),
		st(ipfix.IEOctetTotalCountFromDestinationNode, 8), st(ipfix.IEPacketTotalCountFromDestinationNode, 8),
		st(ipfix.IEReverseOctetTotalCountFromDestinationNode, 8), st(ipfix.IEReversePacketTotalCountFromDestinationNode, 8),
		st(ipfix.IEThroughput, 8), st(ipfix.IEReverseThroughput, 8),
		st(ipfix.IEFlowType, 1), st(ipfix.IETCPState, 1), svc, st(ipfix.IEDestinationServicePort, 2),
		st(ipfix.IESourcePodName, ipfix.VarLen), st(ipfix.IESourcePodNamespace, ipfix.VarLen),
		st(ipfix.IESourceNodeName, ipfix.VarLen), st(ipfix.IEDestinationPodName, ipfix.VarLen),
		st(ipfix.IEDestinationPodNamespace, ipfix.VarLen), st(ipfix.IEDestinationNodeName, ipfix.VarLen),
		st(ipfix.IEDestinationServiceName, ipfix.VarLen),
		st(ipfix.IESourcePodLabels, ipfix.VarLen), st(ipfix.IEDestinationPodLabels, ipfix.VarLen),
	)
	t, err := ipfix.NewTemplate(id, 0, fields...)
	if err != nil {
		return nil, fmt.Errorf("aggregate output template: %w", err)
	}
	return t, nil
}

func (p *aggregatePipeline) session(exporter netip.Addr) sessionSink {
	return &aggregateSession{p: p, idx: map[*ipfix.Template]*fieldIndex{}}
}

// run exports due flows every second until ctx ends.
func (p *aggregatePipeline) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.expire(now)
		}
	}
}

// expire encodes the flows due at now and hands them to the destinations.
func (p *aggregatePipeline) expire(now time.Time) {
	var b *batch
	p.table.Expire(now, func(f *correlate.Flow) {
		if b == nil {
			b = p.pool.get()
		}
		p.encode(b, f)
		if len(b.buf) > 1<<16 {
			p.out.send(b)
			b = nil
		}
	})
	if b != nil {
		p.out.send(b)
	}
}

func (p *aggregatePipeline) encode(b *batch, f *correlate.Flow) {
	t := p.v4
	if f.Src.Is6() || f.Dst.Is6() {
		t = p.v6
	}
	off := len(b.buf)
	var rb ipfix.RecordBuilder
	rb.Reset()
	put := func(a netip.Addr) {
		if t == p.v6 {
			rb.IPv6(a)
		} else {
			rb.IPv4(a)
		}
	}
	put(f.Src)
	put(f.Dst)
	rb.Uint16(f.SrcPort)
	rb.Uint16(f.DstPort)
	rb.Uint8(f.Proto)
	rb.Milliseconds(f.Start)
	rb.Milliseconds(f.End)
	rb.Uint8(f.EndReason)
	for _, c := range []correlate.Counters{f.Counters, f.Delta, f.Side[correlate.SourceSide], f.Side[correlate.DestinationSide]} {
		rb.Uint64(c.Bytes)
		rb.Uint64(c.Packets)
		rb.Uint64(c.ReverseBytes)
		rb.Uint64(c.ReversePackets)
	}
	rb.Uint64(f.Throughput)
	rb.Uint64(f.ReverseThroughput)
	rb.Uint8(uint8(f.FlowType))
	rb.Uint8(f.TCPState)
	put(f.ServiceAddr)
	rb.Uint16(f.ServicePort)
	for _, s := range []string{f.SrcPod, f.SrcNamespace, f.SrcNode, f.DstPod, f.DstNamespace, f.DstNode, f.ServiceName,
		f.SrcLabels, f.DstLabels} {
		rb.String(s)
	}
	b.buf = append(b.buf, rb.Bytes()...)
	b.record(t, off)
}

// flows lists the correlator's live connections for the API.
func (p *aggregatePipeline) flows() []api.Flow {
	var out []api.Flow
	p.table.Each(func(f *correlate.Flow) bool {
		out = append(out, api.Flow{
			SourceIP: f.Src.String(), DestinationIP: f.Dst.String(), SourcePort: f.SrcPort, DestinationPort: f.DstPort,
			Protocol: f.Proto, SourcePod: f.SrcPod, SourceNamespace: f.SrcNamespace, SourceNode: f.SrcNode,
			DestinationPod: f.DstPod, DestinationNamespace: f.DstNamespace, DestinationNode: f.DstNode,
			DestinationService: f.ServiceName, FlowType: flowTypeName(uint64(f.FlowType)), Start: f.Start, End: f.End,
			Packets: f.Counters.Packets, Bytes: f.Counters.Bytes, ReversePackets: f.Counters.ReversePackets,
			ReverseBytes: f.Counters.ReverseBytes, Throughput: f.Throughput, ReverseThroughput: f.ReverseThroughput,
			Correlated: f.Correlated,
		})
		return true
	})
	return out
}

// aggregateSession feeds one exporter session's records to the correlator.
type aggregateSession struct {
	p       *aggregatePipeline
	idx     map[*ipfix.Template]*fieldIndex
	f       fields
	offs    []uint16
	rec     correlate.Record
	invalid int
}

func (s *aggregateSession) Template(*ipfix.Header, *ipfix.Template) {}

func (s *aggregateSession) Withdraw(*ipfix.Header, uint16) {
	clear(s.idx) // templates are immutable: entries are only stale, never wrong; drop them now and then
}

func (s *aggregateSession) Record(h *ipfix.Header, r *ipfix.Record) {
	if r.Template.Options() {
		return
	}
	ix := s.idx[r.Template]
	if ix == nil {
		if len(s.idx) > 1024 {
			clear(s.idx)
		}
		ix = newFieldIndex(r.Template)
		s.idx[r.Template] = ix
	}
	f := &s.f
	offs, _, err := r.Template.Offsets(r.Data, s.offs)
	s.offs = offs
	if err != nil {
		s.invalid++
		return
	}
	ix.extract(r.Data, offs, f)
	rec := &s.rec
	*rec = correlate.Record{}
	rec.Src, rec.Dst = f.addr(fSrc4, fSrc6), f.addr(fDst4, fDst6)
	rec.SrcPort, rec.DstPort, rec.Proto = uint16(f.uint(fSrcPort)), uint16(f.uint(fDstPort)), uint8(f.uint(fProto))
	rec.ServiceAddr, rec.ServicePort, rec.ServiceName = f.addr(fSvc4, fSvc6), uint16(f.uint(fSvcPort)), f.str(fSvcName)
	rec.SrcPod, rec.SrcNamespace, rec.SrcNode, rec.SrcLabels = f.str(fSrcPod), f.str(fSrcNS), f.str(fSrcNode), f.str(fSrcLabels)
	rec.DstPod, rec.DstNamespace, rec.DstNode, rec.DstLabels = f.str(fDstPod), f.str(fDstNS), f.str(fDstNode), f.str(fDstLabels)
	rec.Side = correlate.SourceSide
	if len(f[fDirection]) > 0 && f.uint(fDirection) == 0 { // flowDirection 0 = ingress
		rec.Side = correlate.DestinationSide
	}
	rec.FlowType = correlate.FlowType(f.uint(fFlowType))
	rec.Start, rec.End = f.time(fStartMs, fStartS), f.time(fEndMs, fEndS)
	rec.Ended = f.uint(fEndReason) == uint64(correlate.EndReasonEnd)
	rec.TCPState = uint8(f.uint(fTCPState))
	rec.Counters = correlate.Counters{
		Packets: f.count(fPackets, fPacketsDelta), Bytes: f.count(fOctets, fOctetsDelta),
		ReversePackets: f.count(fRevPackets, fRevPacketsDelta), ReverseBytes: f.count(fRevOctets, fRevOctetsDelta),
	}
	if !s.p.table.Add(rec) {
		s.invalid++
	}
}

func (s *aggregateSession) flush()           {}
func (s *aggregateSession) close()           {}
func (s *aggregateSession) takeDropped() int { n := s.invalid; s.invalid = 0; return n }
