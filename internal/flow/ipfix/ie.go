package ipfix

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Enterprise numbers.
const (
	// ReversePEN is the enterprise number of RFC 5103 reverse information elements.
	ReversePEN uint32 = 29305
	// StraitPEN is Strait's private enterprise number: unregistered, private (see the package doc).
	StraitPEN uint32 = 99999
)

// DataType is an IPFIX abstract data type (RFC 7011 section 6.1).
type DataType uint8

// Abstract data types.
const (
	OctetArray DataType = iota
	Unsigned8
	Unsigned16
	Unsigned32
	Unsigned64
	Signed8
	Signed16
	Signed32
	Signed64
	Float32
	Float64
	Boolean
	MacAddress
	String
	DateTimeSeconds
	DateTimeMilliseconds
	DateTimeMicroseconds
	DateTimeNanoseconds
	IPv4Address
	IPv6Address
)

// InfoElement describes one information element.
type InfoElement struct {
	Name string
	PEN  uint32
	ID   uint16
	Type DataType
	// Len is the element's natural length; VarLen for strings and octet arrays.
	Len uint16
}

// Spec returns the field specifier that carries this element in its natural length.
func (ie InfoElement) Spec() FieldSpec { return FieldSpec{ID: ie.ID, Length: ie.Len, PEN: ie.PEN} }

// IANA element ids used by Strait.
const (
	IEOctetDeltaCount                  uint16 = 1
	IEPacketDeltaCount                 uint16 = 2
	IEProtocolIdentifier               uint16 = 4
	IETCPControlBits                   uint16 = 6
	IESourceTransportPort              uint16 = 7
	IESourceIPv4Address                uint16 = 8
	IEDestinationTransportPort         uint16 = 11
	IEDestinationIPv4Address           uint16 = 12
	IESourceIPv6Address                uint16 = 27
	IEDestinationIPv6Address           uint16 = 28
	IEFlowDirection                    uint16 = 61
	IEOctetTotalCount                  uint16 = 85
	IEPacketTotalCount                 uint16 = 86
	IEFlowEndReason                    uint16 = 136
	IEFlowStartSeconds                 uint16 = 150
	IEFlowEndSeconds                   uint16 = 151
	IEFlowStartMilliseconds            uint16 = 152
	IEFlowEndMilliseconds              uint16 = 153
	IEOriginalExporterIPv4Address      uint16 = 403
	IEOriginalExporterIPv6Address      uint16 = 404
	IEOriginalObservationDomainID      uint16 = 405
	IEPaddingOctets                    uint16 = 210
	IEObservationDomainID              uint16 = 149
	IEExporterIPv4Address              uint16 = 130
	IEExporterIPv6Address              uint16 = 131
	IESystemInitTimeMilliseconds       uint16 = 160
	IEFlowStartSysUpTime               uint16 = 22
	IEFlowEndSysUpTime                 uint16 = 21
	IEIPVersion                        uint16 = 60
	IEIngressInterface                 uint16 = 10
	IEEgressInterface                  uint16 = 14
	IEPostNATSourceIPv4Address         uint16 = 225
	IEPostNATDestinationIPv4Address    uint16 = 226
	IEPostNAPTSourceTransportPort      uint16 = 227
	IEPostNAPTDestinationTransportPort uint16 = 228
	IEPostNATSourceIPv6Address         uint16 = 281
	IEPostNATDestinationIPv6Address    uint16 = 282
)

// Strait's private element ids (enterprise StraitPEN). They start at 101, clear of the IANA ids whose
// RFC 5103 reverse elements Strait sends (1, 2, 85, 86): nfacctd 1.7 looks enterprise elements up by id
// alone, so a 99999:1 after a 29305:1 in one template decoded as the reverse element.
const (
	IESourcePodName                              uint16 = 101
	IESourcePodNamespace                         uint16 = 102
	IESourceNodeName                             uint16 = 103
	IEDestinationPodName                         uint16 = 104
	IEDestinationPodNamespace                    uint16 = 105
	IEDestinationNodeName                        uint16 = 106
	IEDestinationServiceName                     uint16 = 107
	IEFlowType                                   uint16 = 108
	IESourcePodLabels                            uint16 = 109
	IEDestinationPodLabels                       uint16 = 110
	IETCPState                                   uint16 = 111
	IEThroughput                                 uint16 = 112
	IEReverseThroughput                          uint16 = 113
	IEDestinationServiceIPv4Address              uint16 = 114
	IEDestinationServiceIPv6Address              uint16 = 115
	IEDestinationServicePort                     uint16 = 116
	IEOctetTotalCountFromSourceNode              uint16 = 120
	IEPacketTotalCountFromSourceNode             uint16 = 121
	IEOctetTotalCountFromDestinationNode         uint16 = 122
	IEPacketTotalCountFromDestinationNode        uint16 = 123
	IEReverseOctetTotalCountFromSourceNode       uint16 = 124
	IEReversePacketTotalCountFromSourceNode      uint16 = 125
	IEReverseOctetTotalCountFromDestinationNode  uint16 = 126
	IEReversePacketTotalCountFromDestinationNode uint16 = 127
)

// Flow types carried in IEFlowType.
const (
	FlowTypeIntraNode    uint8 = 1
	FlowTypeInterNode    uint8 = 2
	FlowTypeToExternal   uint8 = 3
	FlowTypeFromExternal uint8 = 4
)

// ianaElements is the IANA subset Strait knows by name. reversible marks those that get an RFC 5103 reverse
// element under enterprise 29305.
func ianaElements() []struct {
	ie         InfoElement
	reversible bool
} {
	type e = struct {
		ie         InfoElement
		reversible bool
	}
	u := func(id uint16, name string, t DataType, l uint16, rev bool) e {
		return e{InfoElement{Name: name, ID: id, Type: t, Len: l}, rev}
	}
	return []e{
		u(1, "octetDeltaCount", Unsigned64, 8, true),
		u(2, "packetDeltaCount", Unsigned64, 8, true),
		u(3, "deltaFlowCount", Unsigned64, 8, false),
		u(4, "protocolIdentifier", Unsigned8, 1, false),
		u(5, "ipClassOfService", Unsigned8, 1, true),
		u(6, "tcpControlBits", Unsigned16, 2, true),
		u(7, "sourceTransportPort", Unsigned16, 2, false),
		u(8, "sourceIPv4Address", IPv4Address, 4, false),
		u(9, "sourceIPv4PrefixLength", Unsigned8, 1, false),
		u(10, "ingressInterface", Unsigned32, 4, false),
		u(11, "destinationTransportPort", Unsigned16, 2, false),
		u(12, "destinationIPv4Address", IPv4Address, 4, false),
		u(13, "destinationIPv4PrefixLength", Unsigned8, 1, false),
		u(14, "egressInterface", Unsigned32, 4, false),
		u(15, "ipNextHopIPv4Address", IPv4Address, 4, false),
		u(16, "bgpSourceAsNumber", Unsigned32, 4, false),
		u(17, "bgpDestinationAsNumber", Unsigned32, 4, false),
		u(21, "flowEndSysUpTime", Unsigned32, 4, true),
		u(22, "flowStartSysUpTime", Unsigned32, 4, true),
		u(27, "sourceIPv6Address", IPv6Address, 16, false),
		u(28, "destinationIPv6Address", IPv6Address, 16, false),
		u(29, "sourceIPv6PrefixLength", Unsigned8, 1, false),
		u(30, "destinationIPv6PrefixLength", Unsigned8, 1, false),
		u(31, "flowLabelIPv6", Unsigned32, 4, false),
		u(32, "icmpTypeCodeIPv4", Unsigned16, 2, false),
		u(34, "samplingInterval", Unsigned32, 4, false),
		u(35, "samplingAlgorithm", Unsigned8, 1, false),
		u(36, "flowActiveTimeout", Unsigned16, 2, false),
		u(37, "flowIdleTimeout", Unsigned16, 2, false),
		u(40, "exportedOctetTotalCount", Unsigned64, 8, false),
		u(41, "exportedMessageTotalCount", Unsigned64, 8, false),
		u(42, "exportedFlowRecordTotalCount", Unsigned64, 8, false),
		u(56, "sourceMacAddress", MacAddress, 6, false),
		u(58, "vlanId", Unsigned16, 2, false),
		u(60, "ipVersion", Unsigned8, 1, false),
		u(61, "flowDirection", Unsigned8, 1, false),
		u(62, "ipNextHopIPv6Address", IPv6Address, 16, false),
		u(80, "destinationMacAddress", MacAddress, 6, false),
		u(85, "octetTotalCount", Unsigned64, 8, true),
		u(86, "packetTotalCount", Unsigned64, 8, true),
		u(130, "exporterIPv4Address", IPv4Address, 4, false),
		u(131, "exporterIPv6Address", IPv6Address, 16, false),
		u(136, "flowEndReason", Unsigned8, 1, false),
		u(139, "icmpTypeCodeIPv6", Unsigned16, 2, false),
		u(144, "exportingProcessId", Unsigned32, 4, false),
		u(148, "flowId", Unsigned64, 8, false),
		u(149, "observationDomainId", Unsigned32, 4, false),
		u(150, "flowStartSeconds", DateTimeSeconds, 4, true),
		u(151, "flowEndSeconds", DateTimeSeconds, 4, true),
		u(152, "flowStartMilliseconds", DateTimeMilliseconds, 8, true),
		u(153, "flowEndMilliseconds", DateTimeMilliseconds, 8, true),
		u(154, "flowStartMicroseconds", DateTimeMicroseconds, 8, true),
		u(155, "flowEndMicroseconds", DateTimeMicroseconds, 8, true),
		u(160, "systemInitTimeMilliseconds", DateTimeMilliseconds, 8, false),
		u(161, "flowDurationMilliseconds", Unsigned32, 4, false),
		u(163, "observedFlowTotalCount", Unsigned64, 8, false),
		u(164, "ignoredPacketTotalCount", Unsigned64, 8, false),
		u(165, "ignoredOctetTotalCount", Unsigned64, 8, false),
		u(166, "notSentFlowTotalCount", Unsigned64, 8, false),
		u(176, "icmpTypeIPv4", Unsigned8, 1, false),
		u(177, "icmpCodeIPv4", Unsigned8, 1, false),
		u(178, "icmpTypeIPv6", Unsigned8, 1, false),
		u(179, "icmpCodeIPv6", Unsigned8, 1, false),
		u(210, "paddingOctets", OctetArray, VarLen, false),
		u(214, "exportProtocolVersion", Unsigned8, 1, false),
		u(215, "exportTransportProtocol", Unsigned8, 1, false),
		u(225, "postNATSourceIPv4Address", IPv4Address, 4, false),
		u(226, "postNATDestinationIPv4Address", IPv4Address, 4, false),
		u(227, "postNAPTSourceTransportPort", Unsigned16, 2, false),
		u(228, "postNAPTDestinationTransportPort", Unsigned16, 2, false),
		u(239, "biflowDirection", Unsigned8, 1, false),
		u(281, "postNATSourceIPv6Address", IPv6Address, 16, false),
		u(282, "postNATDestinationIPv6Address", IPv6Address, 16, false),
		u(403, "originalExporterIPv4Address", IPv4Address, 4, false),
		u(404, "originalExporterIPv6Address", IPv6Address, 16, false),
		u(405, "originalObservationDomainId", Unsigned32, 4, false),
	}
}

func straitElements() []InfoElement {
	s := func(id uint16, name string, t DataType, l uint16) InfoElement {
		return InfoElement{Name: name, PEN: StraitPEN, ID: id, Type: t, Len: l}
	}
	return []InfoElement{
		s(IESourcePodName, "sourcePodName", String, VarLen),
		s(IESourcePodNamespace, "sourcePodNamespace", String, VarLen),
		s(IESourceNodeName, "sourceNodeName", String, VarLen),
		s(IEDestinationPodName, "destinationPodName", String, VarLen),
		s(IEDestinationPodNamespace, "destinationPodNamespace", String, VarLen),
		s(IEDestinationNodeName, "destinationNodeName", String, VarLen),
		s(IEDestinationServiceName, "destinationServiceName", String, VarLen),
		s(IEFlowType, "flowType", Unsigned8, 1),
		s(IESourcePodLabels, "sourcePodLabels", String, VarLen),
		s(IEDestinationPodLabels, "destinationPodLabels", String, VarLen),
		s(IETCPState, "tcpState", Unsigned8, 1),
		s(IEThroughput, "throughput", Unsigned64, 8),
		s(IEReverseThroughput, "reverseThroughput", Unsigned64, 8),
		s(IEDestinationServiceIPv4Address, "destinationServiceIPv4Address", IPv4Address, 4),
		s(IEDestinationServiceIPv6Address, "destinationServiceIPv6Address", IPv6Address, 16),
		s(IEDestinationServicePort, "destinationServicePort", Unsigned16, 2),
		s(IEOctetTotalCountFromSourceNode, "octetTotalCountFromSourceNode", Unsigned64, 8),
		s(IEPacketTotalCountFromSourceNode, "packetTotalCountFromSourceNode", Unsigned64, 8),
		s(IEOctetTotalCountFromDestinationNode, "octetTotalCountFromDestinationNode", Unsigned64, 8),
		s(IEPacketTotalCountFromDestinationNode, "packetTotalCountFromDestinationNode", Unsigned64, 8),
		s(IEReverseOctetTotalCountFromSourceNode, "reverseOctetTotalCountFromSourceNode", Unsigned64, 8),
		s(IEReversePacketTotalCountFromSourceNode, "reversePacketTotalCountFromSourceNode", Unsigned64, 8),
		s(IEReverseOctetTotalCountFromDestinationNode, "reverseOctetTotalCountFromDestinationNode", Unsigned64, 8),
		s(IEReversePacketTotalCountFromDestinationNode, "reversePacketTotalCountFromDestinationNode", Unsigned64, 8),
	}
}

type ieKey struct {
	pen uint32
	id  uint16
}

// Registry maps (enterprise, element id) to element descriptions. It is read-only after NewRegistry and safe
// for concurrent use.
type Registry struct {
	byKey  map[ieKey]InfoElement
	byName map[string]InfoElement
}

// NewRegistry returns a registry with the IANA subset, the RFC 5103 reverse elements and Strait's elements.
func NewRegistry() *Registry {
	r := &Registry{byKey: map[ieKey]InfoElement{}, byName: map[string]InfoElement{}}
	add := func(ie InfoElement) {
		r.byKey[ieKey{ie.PEN, ie.ID}] = ie
		r.byName[ie.Name] = ie
	}
	for _, e := range ianaElements() {
		add(e.ie)
		if e.reversible {
			rev := e.ie
			rev.PEN = ReversePEN
			rev.Name = "reverse" + strings.ToUpper(rev.Name[:1]) + rev.Name[1:]
			add(rev)
		}
	}
	for _, ie := range straitElements() {
		add(ie)
	}
	return r
}

// Lookup returns the element (pen, id). Unknown elements come back with ok=false and a generated name
// ("pen:id", or "ie:id" for IANA) typed as octetArray.
func (r *Registry) Lookup(pen uint32, id uint16) (InfoElement, bool) {
	if ie, ok := r.byKey[ieKey{pen, id}]; ok {
		return ie, true
	}
	name := "ie" + strconv.Itoa(int(id))
	if pen != 0 {
		name = strconv.FormatUint(uint64(pen), 10) + ":" + strconv.Itoa(int(id))
	}
	return InfoElement{Name: name, PEN: pen, ID: id, Type: OctetArray, Len: VarLen}, false
}

// ByName returns the element called name.
func (r *Registry) ByName(name string) (InfoElement, bool) {
	ie, ok := r.byName[name]
	return ie, ok
}

// Uint decodes an unsigned integer of 1 to 8 bytes (reduced-size encoding, RFC 7011 6.2).
func Uint(b []byte) uint64 {
	var v uint64
	if len(b) > 8 {
		b = b[len(b)-8:]
	}
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// Value converts a raw field value to a Go value for display and JSON: uint64, int64, float64, bool, string
// (strings, addresses, MACs, RFC 3339 times, hex for octet arrays).
func Value(ie InfoElement, b []byte) any {
	switch ie.Type {
	case Unsigned8, Unsigned16, Unsigned32, Unsigned64:
		return Uint(b)
	case Signed8, Signed16, Signed32, Signed64:
		if len(b) == 0 || len(b) > 8 {
			return hex.EncodeToString(b)
		}
		v := Uint(b)
		shift := 64 - 8*uint(len(b))
		return int64(v<<shift) >> shift
	case Float32:
		if len(b) == 4 {
			return float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
		}
	case Float64:
		if len(b) == 8 {
			return math.Float64frombits(binary.BigEndian.Uint64(b))
		}
	case Boolean:
		if len(b) == 1 {
			return b[0] == 1
		}
	case MacAddress:
		if len(b) == 6 {
			const digits = "0123456789abcdef"
			out := make([]byte, 0, 17)
			for i, c := range b {
				if i > 0 {
					out = append(out, ':')
				}
				out = append(out, digits[c>>4], digits[c&15])
			}
			return string(out)
		}
	case String:
		if utf8.Valid(b) {
			return string(b)
		}
	case IPv4Address:
		if len(b) == 4 {
			return netip.AddrFrom4([4]byte(b)).String()
		}
	case IPv6Address:
		if len(b) == 16 {
			return netip.AddrFrom16([16]byte(b)).String()
		}
	case DateTimeSeconds:
		if len(b) == 4 {
			return time.Unix(int64(Uint(b)), 0).UTC().Format(time.RFC3339)
		}
	case DateTimeMilliseconds:
		if len(b) == 8 {
			return time.UnixMilli(int64(Uint(b))).UTC().Format(time.RFC3339Nano)
		}
	case DateTimeMicroseconds, DateTimeNanoseconds:
		if len(b) == 8 {
			return ntpTime(Uint(b)).UTC().Format(time.RFC3339Nano)
		}
	}
	return hex.EncodeToString(b)
}

// ntpTime converts an NTP 64-bit timestamp (RFC 7011 6.1.9/6.1.10) to time.
func ntpTime(v uint64) time.Time {
	const ntpToUnix = 2208988800
	sec := int64(v>>32) - ntpToUnix
	frac := (v & 0xffffffff) * 1e9 >> 32
	return time.Unix(sec, int64(frac))
}
