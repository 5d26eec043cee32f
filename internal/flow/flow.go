// Package flow is the agent's flow exporter: it reads connections from the
// kernel's conntrack table of the node's network namespace (a dump plus
// NEW/UPDATE/DESTROY events, resyncing with a dump when the event socket
// overflows), keeps a table of the pod-related ones with their counters, and
// exports them as IPFIX records (internal/flow/ipfix) over TCP, TLS or UDP on
// active and idle timeouts.
//
// The datapath makes conntrack track the node's traffic
// (datapath.EnableFlowTracking); this package only reads.
//
// Records use IANA elements wherever one exists: the original 5-tuple
// (sourceIPv4Address ...), the post-NAT addresses and ports (225-228,
// 281/282: the Service backend a ClusterIP was translated to, the node
// address a pod was masqueraded to), flowStart/EndMilliseconds, packet and
// octet delta and total counts, the reverse direction as RFC 5103 reverse
// elements (enterprise 29305), flowEndReason and flowDirection (1, egress:
// the exporting node hosts the source; 0, ingress: it hosts only the
// destination). Pod names, namespaces, nodes, labels, the Service name, the
// flow type and the TCP state are Strait's private elements (see
// internal/flow/ipfix).
package flow

import (
	"net/netip"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
)

// FlowType classifies a connection (intra-node, inter-node, ...).
type FlowType = flowrec.FlowType

// Pod is the identity of a pod address.
type Pod struct {
	Name, Namespace, Node string
	// Labels are optional (nil when unknown or not wanted).
	Labels map[string]string
}

// PodResolver maps an address to the pod holding it. The agent implements
// it from its IPAM allocations (local pods) and a pod informer (labels,
// remote pods).
type PodResolver interface {
	ResolvePod(addr netip.Addr) (Pod, bool)
}

// PodResolverFunc adapts a function to PodResolver.
type PodResolverFunc func(netip.Addr) (Pod, bool)

// ResolvePod calls f.
func (f PodResolverFunc) ResolvePod(a netip.Addr) (Pod, bool) { return f(a) }

// Tuple is one direction of a connection.
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
}

// Conn is one conntrack entry as the reader hands it over.
type Conn struct {
	ID uint32
	// Orig is the tuple as the client sent it; Reply as the server answers
	// (Reply.Src is the post-DNAT destination, Reply.Dst the post-SNAT
	// source).
	Orig, Reply Tuple
	Start, Stop time.Time
	// Counters: original (client -> server) and reply direction. Dumps and
	// DESTROY events carry them; NEW and UPDATE events do not (HasCounters).
	Packets, Bytes               uint64
	ReversePackets, ReverseBytes uint64
	HasCounters                  bool
	TCPState                     uint8
}

// TCP states of conntrack (enum tcp_conntrack).
var tcpStates = [...]string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

// TCPStateName names a conntrack TCP state.
func TCPStateName(s uint8) string {
	if int(s) < len(tcpStates) {
		return tcpStates[s]
	}
	return "UNKNOWN"
}

// Flow is one connection of the exporter's table, as exported and listed.
type Flow struct {
	Conn
	// PostNATSrc/Dst are Reply.Dst/Src when NAT changed them (else
	// invalid): the masqueraded source, the Service backend.
	PostNATSrc, PostNATDst         netip.Addr
	PostNATSrcPort, PostNATDstPort uint16
	FlowType                       FlowType
	// Egress: this node hosts the source (flowDirection 1).
	Egress bool
	// End is the last time the connection was seen active (or its stop).
	End     time.Time
	Ended   bool
	SrcPod  Pod
	DstPod  Pod
	Service string
	// Delta counts since the previous export of this flow.
	DeltaPackets, DeltaBytes, DeltaReversePackets, DeltaReverseBytes uint64
	// EndReason is the flowEndReason of an exported record.
	EndReason uint8
}

// EndReason values of IANA IE 136.
const (
	EndReasonIdle   uint8 = 1
	EndReasonActive uint8 = 2
	EndReasonEnd    uint8 = 3
	EndReasonForced uint8 = 4
)
