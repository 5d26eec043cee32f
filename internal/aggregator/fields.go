package aggregator

import (
	"net/netip"
	"time"

	"github.com/strait-net/strait/internal/flow/ipfix"
)

// Field slots the aggregator reads from records, by element.
const (
	fSrc4 = iota
	fDst4
	fSrc6
	fDst6
	fSrcPort
	fDstPort
	fProto
	fStartMs
	fEndMs
	fStartS
	fEndS
	fOctets
	fPackets
	fOctetsDelta
	fPacketsDelta
	fRevOctets
	fRevPackets
	fRevOctetsDelta
	fRevPacketsDelta
	fEndReason
	fDirection
	fFlowType
	fTCPState
	fSrcPod
	fSrcNS
	fSrcNode
	fDstPod
	fDstNS
	fDstNode
	fSvcName
	fSvc4
	fSvc6
	fSvcPort
	fSrcLabels
	fDstLabels
	fOrigExp4
	fOrigExp6
	fOrigDomain
	fThroughput
	fRevThroughput
	numFields
)

type element struct {
	pen uint32
	id  uint16
}

// fieldElements maps slots to elements.
func fieldElements() [numFields]element {
	return [numFields]element{
		fSrc4: {0, ipfix.IESourceIPv4Address}, fDst4: {0, ipfix.IEDestinationIPv4Address},
		fSrc6: {0, ipfix.IESourceIPv6Address}, fDst6: {0, ipfix.IEDestinationIPv6Address},
		fSrcPort: {0, ipfix.IESourceTransportPort}, fDstPort: {0, ipfix.IEDestinationTransportPort},
		fProto: {0, ipfix.IEProtocolIdentifier}, fStartMs: {0, ipfix.IEFlowStartMilliseconds},
		fEndMs: {0, ipfix.IEFlowEndMilliseconds}, fStartS: {0, ipfix.IEFlowStartSeconds}, fEndS: {0, ipfix.IEFlowEndSeconds},
		fOctets: {0, ipfix.IEOctetTotalCount}, fPackets: {0, ipfix.IEPacketTotalCount},
		fOctetsDelta: {0, ipfix.IEOctetDeltaCount}, fPacketsDelta: {0, ipfix.IEPacketDeltaCount},
		fRevOctets: {ipfix.ReversePEN, ipfix.IEOctetTotalCount}, fRevPackets: {ipfix.ReversePEN, ipfix.IEPacketTotalCount},
		fRevOctetsDelta: {ipfix.ReversePEN, ipfix.IEOctetDeltaCount}, fRevPacketsDelta: {ipfix.ReversePEN, ipfix.IEPacketDeltaCount},
		fEndReason: {0, ipfix.IEFlowEndReason}, fDirection: {0, ipfix.IEFlowDirection},
		fFlowType: {ipfix.StraitPEN, ipfix.IEFlowType}, fTCPState: {ipfix.StraitPEN, ipfix.IETCPState},
		fSrcPod: {ipfix.StraitPEN, ipfix.IESourcePodName}, fSrcNS: {ipfix.StraitPEN, ipfix.IESourcePodNamespace},
		fSrcNode: {ipfix.StraitPEN, ipfix.IESourceNodeName}, fDstPod: {ipfix.StraitPEN, ipfix.IEDestinationPodName},
		fDstNS: {ipfix.StraitPEN, ipfix.IEDestinationPodNamespace}, fDstNode: {ipfix.StraitPEN, ipfix.IEDestinationNodeName},
		fSvcName: {ipfix.StraitPEN, ipfix.IEDestinationServiceName},
		fSvc4:    {ipfix.StraitPEN, ipfix.IEDestinationServiceIPv4Address}, fSvc6: {ipfix.StraitPEN, ipfix.IEDestinationServiceIPv6Address},
		fSvcPort:   {ipfix.StraitPEN, ipfix.IEDestinationServicePort},
		fSrcLabels: {ipfix.StraitPEN, ipfix.IESourcePodLabels}, fDstLabels: {ipfix.StraitPEN, ipfix.IEDestinationPodLabels},
		fOrigExp4: {0, ipfix.IEOriginalExporterIPv4Address}, fOrigExp6: {0, ipfix.IEOriginalExporterIPv6Address},
		fOrigDomain: {0, ipfix.IEOriginalObservationDomainID},
		fThroughput: {ipfix.StraitPEN, ipfix.IEThroughput}, fRevThroughput: {ipfix.StraitPEN, ipfix.IEReverseThroughput},
	}
}

// fieldIndex is where each slot's element sits in one template (-1: absent).
type fieldIndex [numFields]int

func newFieldIndex(t *ipfix.Template) *fieldIndex {
	var ix fieldIndex
	for s, e := range fieldElements() {
		ix[s] = t.Index(e.pen, e.id)
	}
	return &ix
}

// fields is one record's values by slot (nil: absent).
type fields [numFields][]byte

// extract fills f from a record split by offs (start/end pairs per template field).
func (ix *fieldIndex) extract(rec []byte, offs []uint16, f *fields) {
	for s, i := range ix {
		if i < 0 {
			f[s] = nil
			continue
		}
		f[s] = rec[offs[2*i]:offs[2*i+1]]
	}
}

func (f *fields) uint(s int) uint64 { return ipfix.Uint(f[s]) }

func (f *fields) str(s int) string { return string(f[s]) }

func (f *fields) addr(s4, s6 int) netip.Addr {
	if b := f[s4]; len(b) == 4 {
		return netip.AddrFrom4([4]byte(b))
	}
	if b := f[s6]; len(b) == 16 {
		return netip.AddrFrom16([16]byte(b)).Unmap()
	}
	return netip.Addr{}
}

func (f *fields) time(ms, s int) time.Time {
	if len(f[ms]) > 0 {
		return time.UnixMilli(int64(f.uint(ms))).UTC()
	}
	if len(f[s]) > 0 {
		return time.Unix(int64(f.uint(s)), 0).UTC()
	}
	return time.Time{}
}

// count prefers the total, else the delta.
func (f *fields) count(total, delta int) uint64 {
	if len(f[total]) > 0 {
		return f.uint(total)
	}
	return f.uint(delta)
}

// flowTypeName names the values of Strait's flowType element.
func flowTypeName(v uint64) string {
	switch uint8(v) {
	case ipfix.FlowTypeIntraNode:
		return "intra-node"
	case ipfix.FlowTypeInterNode:
		return "inter-node"
	case ipfix.FlowTypeToExternal:
		return "to-external"
	case ipfix.FlowTypeFromExternal:
		return "from-external"
	}
	return ""
}
