// Package flowrec is the wire layout of the flow records Strait's agents
// export: the two IPFIX templates (IPv4 and IPv6) and the encoding and
// decoding of one record. The agent's exporter encodes with it; the
// aggregator decodes with it (by element, so any template carrying the
// elements works, also one from another exporter).
package flowrec

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/strait-net/strait/internal/flow/ipfix"
)

// FlowType classifies a connection (the values of ipfix.IEFlowType).
type FlowType uint8

// Flow types.
const (
	FlowTypeUnknown      FlowType = 0
	FlowTypeIntraNode    FlowType = FlowType(ipfix.FlowTypeIntraNode)
	FlowTypeInterNode    FlowType = FlowType(ipfix.FlowTypeInterNode)
	FlowTypeToExternal   FlowType = FlowType(ipfix.FlowTypeToExternal)
	FlowTypeFromExternal FlowType = FlowType(ipfix.FlowTypeFromExternal)
)

func (t FlowType) String() string {
	switch t {
	case FlowTypeIntraNode:
		return "intra-node"
	case FlowTypeInterNode:
		return "inter-node"
	case FlowTypeToExternal:
		return "to-external"
	case FlowTypeFromExternal:
		return "from-external"
	}
	return "unknown"
}

// Template ids of the agent's records.
const (
	TemplateIPv4 uint16 = 256
	TemplateIPv6 uint16 = 257
)

// Fields is one flow record. As in Antrea, the destination is where the
// packets really went (the Service backend after DNAT) and the Service
// address the client used is carried separately, so the records of both
// nodes of a connection share the 5-tuple.
type Fields struct {
	Start, End       time.Time
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
	// ServiceAddr/ServicePort: the destination before DNAT, when it was
	// translated (Strait elements 14/15 and 16); Service names it
	// ("namespace/name:port").
	ServiceAddr netip.Addr
	ServicePort uint16
	Service     string
	// PostNATSrc/PostNATSrcPort: the source after SNAT (masquerade), when
	// it was translated (IANA 225/281 and 227).
	PostNATSrc     netip.Addr
	PostNATSrcPort uint16
	// Delta counts since the previous record of this flow, and totals.
	Packets, Bytes, ReversePackets, ReverseBytes                     uint64
	TotalPackets, TotalBytes, ReverseTotalPackets, ReverseTotalBytes uint64
	EndReason                                                        uint8
	// Egress: the exporting node hosts the source (flowDirection 1).
	Egress   bool
	FlowType FlowType
	// TCPState in conntrack's numbering (0 for other protocols).
	TCPState uint8
	// Pod metadata (empty when not a pod); labels are JSON objects.
	SrcPod, SrcNamespace, SrcNode, SrcLabels string
	DstPod, DstNamespace, DstNode, DstLabels string
}

type field struct {
	spec ipfix.FieldSpec
	put  func(rb *ipfix.RecordBuilder, f *Fields)
	get  func(f *Fields, b []byte)
}

func iana(id, n uint16) ipfix.FieldSpec { return ipfix.FieldSpec{ID: id, Length: n} }
func rev(id, n uint16) ipfix.FieldSpec {
	return ipfix.FieldSpec{ID: id, Length: n, PEN: ipfix.ReversePEN}
}
func strait(id uint16) ipfix.FieldSpec {
	return ipfix.FieldSpec{ID: id, Length: ipfix.VarLen, PEN: ipfix.StraitPEN}
}
func straitN(id, n uint16) ipfix.FieldSpec {
	return ipfix.FieldSpec{ID: id, Length: n, PEN: ipfix.StraitPEN}
}

func addr(b []byte) netip.Addr {
	a, ok := netip.AddrFromSlice(b)
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}

// fields lists the record layout; v6 selects the address elements. The
// getters write through f (set by decode), so they are built per call.
func fields(v6 bool) []field {
	a4 := func(id uint16, get func(*Fields) *netip.Addr) field {
		sp := iana(id, 4)
		if v6 {
			sp.Length = 16
		}
		return field{spec: sp,
			put: func(rb *ipfix.RecordBuilder, f *Fields) {
				if v6 {
					rb.IPv6(*get(f))
				} else {
					rb.IPv4(*get(f))
				}
			},
			get: func(f *Fields, b []byte) { *get(f) = addr(b) }}
	}
	svc := func(id uint16) field {
		f := a4(id, func(f *Fields) *netip.Addr { return &f.ServiceAddr })
		f.spec.PEN = ipfix.StraitPEN
		return f
	}
	pick := func(v4id, v6id uint16) uint16 {
		if v6 {
			return v6id
		}
		return v4id
	}
	u := func(spec ipfix.FieldSpec, get func(*Fields) *uint64) field {
		return field{spec: spec, put: func(rb *ipfix.RecordBuilder, f *Fields) { rb.Uint64(*get(f)) },
			get: func(f *Fields, b []byte) { *get(f) = ipfix.Uint(b) }}
	}
	port := func(id uint16, get func(*Fields) *uint16) field {
		return field{spec: iana(id, 2), put: func(rb *ipfix.RecordBuilder, f *Fields) { rb.Uint16(*get(f)) },
			get: func(f *Fields, b []byte) { *get(f) = uint16(ipfix.Uint(b)) }}
	}
	str := func(id uint16, get func(*Fields) *string) field {
		return field{spec: strait(id), put: func(rb *ipfix.RecordBuilder, f *Fields) { rb.String(*get(f)) },
			get: func(f *Fields, b []byte) { *get(f) = string(b) }}
	}
	ms := func(id uint16, get func(*Fields) *time.Time) field {
		return field{spec: iana(id, 8), put: func(rb *ipfix.RecordBuilder, f *Fields) { rb.Milliseconds(*get(f)) },
			get: func(f *Fields, b []byte) { *get(f) = time.UnixMilli(int64(ipfix.Uint(b))) }}
	}
	u8 := func(spec ipfix.FieldSpec, get func(*Fields) *uint8) field {
		return field{spec: spec, put: func(rb *ipfix.RecordBuilder, f *Fields) { rb.Uint8(*get(f)) },
			get: func(f *Fields, b []byte) { *get(f) = uint8(ipfix.Uint(b)) }}
	}
	return []field{
		ms(ipfix.IEFlowStartMilliseconds, func(f *Fields) *time.Time { return &f.Start }),
		ms(ipfix.IEFlowEndMilliseconds, func(f *Fields) *time.Time { return &f.End }),
		a4(pick(ipfix.IESourceIPv4Address, ipfix.IESourceIPv6Address), func(f *Fields) *netip.Addr { return &f.Src }),
		a4(pick(ipfix.IEDestinationIPv4Address, ipfix.IEDestinationIPv6Address), func(f *Fields) *netip.Addr { return &f.Dst }),
		port(ipfix.IESourceTransportPort, func(f *Fields) *uint16 { return &f.SrcPort }),
		port(ipfix.IEDestinationTransportPort, func(f *Fields) *uint16 { return &f.DstPort }),
		u8(iana(ipfix.IEProtocolIdentifier, 1), func(f *Fields) *uint8 { return &f.Proto }),
		a4(pick(ipfix.IEPostNATSourceIPv4Address, ipfix.IEPostNATSourceIPv6Address), func(f *Fields) *netip.Addr { return &f.PostNATSrc }),
		port(ipfix.IEPostNAPTSourceTransportPort, func(f *Fields) *uint16 { return &f.PostNATSrcPort }),
		u(iana(ipfix.IEPacketDeltaCount, 8), func(f *Fields) *uint64 { return &f.Packets }),
		u(iana(ipfix.IEOctetDeltaCount, 8), func(f *Fields) *uint64 { return &f.Bytes }),
		u(iana(ipfix.IEPacketTotalCount, 8), func(f *Fields) *uint64 { return &f.TotalPackets }),
		u(iana(ipfix.IEOctetTotalCount, 8), func(f *Fields) *uint64 { return &f.TotalBytes }),
		u(rev(ipfix.IEPacketDeltaCount, 8), func(f *Fields) *uint64 { return &f.ReversePackets }),
		u(rev(ipfix.IEOctetDeltaCount, 8), func(f *Fields) *uint64 { return &f.ReverseBytes }),
		u(rev(ipfix.IEPacketTotalCount, 8), func(f *Fields) *uint64 { return &f.ReverseTotalPackets }),
		u(rev(ipfix.IEOctetTotalCount, 8), func(f *Fields) *uint64 { return &f.ReverseTotalBytes }),
		u8(iana(ipfix.IEFlowEndReason, 1), func(f *Fields) *uint8 { return &f.EndReason }),
		{spec: iana(ipfix.IEFlowDirection, 1),
			put: func(rb *ipfix.RecordBuilder, f *Fields) {
				if f.Egress {
					rb.Uint8(1)
				} else {
					rb.Uint8(0)
				}
			},
			get: func(f *Fields, b []byte) { f.Egress = ipfix.Uint(b) == 1 }},
		u8(straitN(ipfix.IEFlowType, 1), func(f *Fields) *uint8 { return (*uint8)(&f.FlowType) }),
		u8(straitN(ipfix.IETCPState, 1), func(f *Fields) *uint8 { return &f.TCPState }),
		str(ipfix.IESourcePodName, func(f *Fields) *string { return &f.SrcPod }),
		str(ipfix.IESourcePodNamespace, func(f *Fields) *string { return &f.SrcNamespace }),
		str(ipfix.IESourceNodeName, func(f *Fields) *string { return &f.SrcNode }),
		str(ipfix.IEDestinationPodName, func(f *Fields) *string { return &f.DstPod }),
		str(ipfix.IEDestinationPodNamespace, func(f *Fields) *string { return &f.DstNamespace }),
		str(ipfix.IEDestinationNodeName, func(f *Fields) *string { return &f.DstNode }),
		str(ipfix.IEDestinationServiceName, func(f *Fields) *string { return &f.Service }),
		svc(pick(ipfix.IEDestinationServiceIPv4Address, ipfix.IEDestinationServiceIPv6Address)),
		{spec: straitN(ipfix.IEDestinationServicePort, 2), put: func(rb *ipfix.RecordBuilder, f *Fields) { rb.Uint16(f.ServicePort) },
			get: func(f *Fields, b []byte) { f.ServicePort = uint16(ipfix.Uint(b)) }},
		str(ipfix.IESourcePodLabels, func(f *Fields) *string { return &f.SrcLabels }),
		str(ipfix.IEDestinationPodLabels, func(f *Fields) *string { return &f.DstLabels }),
	}
}

// Codec encodes and decodes records; build one with NewCodec and reuse it.
// Not safe for concurrent use.
type Codec struct {
	layout [2][]field // IPv4, IPv6
	decode []field    // the union of both
	tmpl   [2]*ipfix.Template
	rb     ipfix.RecordBuilder
}

// NewCodec builds the two templates.
func NewCodec() (*Codec, error) {
	c := &Codec{}
	for i, id := range []uint16{TemplateIPv4, TemplateIPv6} {
		c.layout[i] = fields(i == 1)
		specs := make([]ipfix.FieldSpec, len(c.layout[i]))
		for j, f := range c.layout[i] {
			specs[j] = f.spec
		}
		t, err := ipfix.NewTemplate(id, 0, specs...)
		if err != nil {
			return nil, fmt.Errorf("flow record template %d: %w", id, err)
		}
		c.tmpl[i] = t
	}
	c.decode = slices.Clone(c.layout[0])
	for _, f := range c.layout[1] {
		if c.tmpl[0].Index(f.spec.PEN, f.spec.ID) < 0 {
			c.decode = append(c.decode, f)
		}
	}
	return c, nil
}

// Templates returns the IPv4 and IPv6 templates.
func (c *Codec) Templates() []*ipfix.Template { return c.tmpl[:] }

// Encode appends f as one data record to e in domain.
func (c *Codec) Encode(e *ipfix.Encoder, domain uint32, f *Fields) error {
	i := 0
	if f.Src.Is6() && !f.Src.Is4In6() {
		i = 1
	}
	c.rb.Reset()
	for _, fl := range c.layout[i] {
		fl.put(&c.rb, f)
	}
	return e.AppendRecord(domain, c.tmpl[i].ID, c.rb.Bytes())
}

// Decode reads the elements of Fields that r carries, whatever its
// template; it fails when the 5-tuple is missing.
func (c *Codec) Decode(r *ipfix.Record, f *Fields) error {
	*f = Fields{}
	found := 0
	for _, fl := range c.decode {
		b, ok := r.Lookup(fl.spec.PEN, fl.spec.ID)
		if !ok {
			continue
		}
		if fl.spec.PEN == 0 && (fl.spec.ID == ipfix.IESourceIPv4Address || fl.spec.ID == ipfix.IESourceIPv6Address) {
			found++
		}
		fl.get(f, b)
	}
	if found == 0 || !f.Dst.IsValid() {
		return fmt.Errorf("flow record: no source/destination address in template %d", r.Template.ID)
	}
	return nil
}
