package aggregator

import (
	"net/netip"
	"sync"
	"time"

	"github.com/strait-net/strait/internal/aggregator/api"
)

// recentOut is proxy mode's source for the flows API: the latest record per (exporter, domain, 5-tuple),
// at most max of them. It is an ordinary destination (its own queue; drops when it cannot keep up), so it
// never slows the forwarding path.
type recentOut struct {
	mu    sync.Mutex
	max   int
	flows map[recentKey]api.Flow
	idx   map[*outTemplate]*fieldIndex
	f     fields
	offs  []uint16
}

type recentKey struct {
	exporter         netip.Addr
	domain           uint32
	src, dst         netip.Addr
	srcPort, dstPort uint16
	proto            uint8
}

func newRecentOut(max int) *recentOut {
	return &recentOut{max: max, flows: map[recentKey]api.Flow{}, idx: map[*outTemplate]*fieldIndex{}}
}

func (r *recentOut) write(b *batch, _ time.Time) (int, int, string) {
	written := 0
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range b.items {
		if it.withdraw {
			delete(r.idx, it.t)
			continue
		}
		if it.t.t.Options() {
			continue
		}
		ix := r.idx[it.t]
		if ix == nil {
			ix = newFieldIndex(it.t.t)
			r.idx[it.t] = ix
		}
		rec := b.data(it)
		offs, _, err := it.t.t.Offsets(rec, r.offs)
		r.offs = offs
		if err != nil {
			continue
		}
		f := &r.f
		ix.extract(rec, offs, f)
		src, dst := f.addr(fSrc4, fSrc6), f.addr(fDst4, fDst6)
		if !src.IsValid() || !dst.IsValid() {
			continue
		}
		k := recentKey{exporter: b.exporter, domain: uint32(f.uint(fOrigDomain)), src: src, dst: dst,
			srcPort: uint16(f.uint(fSrcPort)), dstPort: uint16(f.uint(fDstPort)), proto: uint8(f.uint(fProto))}
		if _, ok := r.flows[k]; !ok && len(r.flows) >= r.max {
			for old := range r.flows { // evict an arbitrary entry
				delete(r.flows, old)
				break
			}
		}
		r.flows[k] = api.Flow{
			SourceIP: src.String(), DestinationIP: dst.String(), SourcePort: k.srcPort, DestinationPort: k.dstPort,
			Protocol: k.proto, SourcePod: f.str(fSrcPod), SourceNamespace: f.str(fSrcNS), SourceNode: f.str(fSrcNode),
			DestinationPod: f.str(fDstPod), DestinationNamespace: f.str(fDstNS), DestinationNode: f.str(fDstNode),
			DestinationService: f.str(fSvcName), FlowType: flowTypeName(f.uint(fFlowType)),
			Start: f.time(fStartMs, fStartS), End: f.time(fEndMs, fEndS),
			Packets: f.count(fPackets, fPacketsDelta), Bytes: f.count(fOctets, fOctetsDelta),
			ReversePackets: f.count(fRevPackets, fRevPacketsDelta), ReverseBytes: f.count(fRevOctets, fRevOctetsDelta),
			Throughput: f.uint(fThroughput), ReverseThroughput: f.uint(fRevThroughput),
			Exporter: b.exporter.String(), ObservationDomain: k.domain,
		}
		written++
	}
	return written, 0, ""
}

func (r *recentOut) list() []api.Flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]api.Flow, 0, len(r.flows))
	for _, f := range r.flows {
		out = append(out, f)
	}
	return out
}

func (r *recentOut) idle(time.Time) (int, int, string) { return 0, 0, "" }
func (r *recentOut) tick(time.Time)                    {}
func (r *recentOut) close()                            {}
