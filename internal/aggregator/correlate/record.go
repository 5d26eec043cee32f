// Package correlate is the aggregate-mode core of the Flow Aggregator: it
// merges the records that the source node and the destination node export
// for the same connection into one record with both sides' pod metadata and
// both sides' counters, computes throughput, and hands back records to export
// on active and inactive timeouts. It is pure bookkeeping (no I/O, no
// clock): the caller feeds decoded records with Add and calls Expire with
// the current time.
//
// Connections are keyed by the post-DNAT 5-tuple, the way Antrea's
// aggregator does: a node exports as destination the address the packets
// really went to (the Service backend, read from the reply tuple of
// conntrack), and the Service address separately. So the source node's
// record (which saw the ClusterIP) and the destination node's record (which
// only ever saw the pod address) share a key. A record whose start time
// differs from the connection's by more than Config.StartTolerance is a new
// connection reusing the 5-tuple: the old one is exported first.
//
// Memory is bounded by Config.MaxConnections (records for new connections
// beyond it are dropped and counted) and kept compact: connections live in
// fixed-size chunks of a flat struct without pointers, indexed by an
// open-addressing hash table of uint32, with pod names, namespaces, nodes,
// labels and Services interned and reference-counted.
package correlate

import (
	"net/netip"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
)

// Side says which node exported a record.
type Side uint8

// Sides. The exporter marks records with flowDirection (IANA IE 61):
// egress (the source pod is on the exporting node) is SourceSide, ingress
// (only the destination pod is) is DestinationSide.
const (
	SourceSide Side = iota
	DestinationSide
)

func (s Side) String() string {
	if s == SourceSide {
		return "source"
	}
	return "destination"
}

// FlowType classifies a connection (intra-node, inter-node, ...).
type FlowType = flowrec.FlowType

// EndReason values of IANA IE 136 (flowEndReason) used here.
const (
	EndReasonIdle   uint8 = 1 // idle timeout
	EndReasonActive uint8 = 2 // active timeout
	EndReasonEnd    uint8 = 3 // end of flow detected
	EndReasonLack   uint8 = 5 // lack of resources
)

// Counters are totals since the connection started, as seen by one node.
type Counters struct {
	Packets, Bytes               uint64 // forward (source -> destination)
	ReversePackets, ReverseBytes uint64
}

// Conn identifies a connection: its endpoints after DNAT (Dst is the
// Service backend for Service traffic) and the Service it was addressed to.
type Conn struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
	// ServiceAddr/ServicePort are the original destination when it was a
	// Service address (zero otherwise); ServiceName is "namespace/name:port".
	ServiceAddr netip.Addr
	ServicePort uint16
	ServiceName string
}

// Pods is the pod metadata of both ends (empty when an end is not a pod).
type Pods struct {
	SrcPod, SrcNamespace, SrcNode, SrcLabels string
	DstPod, DstNamespace, DstNode, DstLabels string
}

// Record is one decoded flow record as the aggregator fills it from IPFIX.
// Totals, not deltas, are used: they make the merge independent of the order
// and of lost records.
type Record struct {
	Conn
	Pods       // what the exporting node knows
	Side       Side
	FlowType   FlowType
	Start, End time.Time
	// Ended says the exporter saw the connection end (flowEndReason 3).
	Ended    bool
	TCPState uint8
	Counters Counters
}

// Flow is one correlated connection handed back for export.
type Flow struct {
	Conn
	Pods
	FlowType   FlowType
	Start, End time.Time
	TCPState   uint8
	EndReason  uint8
	// Correlated is true when every node that should report the connection
	// did (both for inter-node flows, one for the others).
	Correlated bool
	// Seen[side] says whether that side reported; Side[side] its totals.
	Seen [2]bool
	Side [2]Counters
	// Counters are the connection's totals (the source side's when it
	// reported, else the destination side's) and Delta the part since the
	// previous export of this connection.
	Counters, Delta Counters
	// Throughput and ReverseThroughput in bits per second over the interval
	// since the previous export (or since the start).
	Throughput, ReverseThroughput uint64
}

// Config configures a Table.
type Config struct {
	// ActiveTimeout: a live connection is exported this long after its
	// previous export (default 60 s).
	ActiveTimeout time.Duration
	// InactiveTimeout: a connection without records for this long is
	// exported and forgotten (default 90 s).
	InactiveTimeout time.Duration
	// MaxConnections bounds the table (default 1,000,000).
	MaxConnections int
	// StartTolerance is how far the two nodes' start times of one
	// connection may differ (clock skew plus latency; default 10 s).
	StartTolerance time.Duration
}

func (c *Config) defaults() {
	if c.ActiveTimeout <= 0 {
		c.ActiveTimeout = 60 * time.Second
	}
	if c.InactiveTimeout <= 0 {
		c.InactiveTimeout = 90 * time.Second
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 1_000_000
	}
	if c.StartTolerance <= 0 {
		c.StartTolerance = 10 * time.Second
	}
}

// Stats are the table's counters since New.
type Stats struct {
	Records    uint64 // records added
	Invalid    uint64 // records refused (bad addresses)
	Dropped    uint64 // records for new connections refused at MaxConnections
	Correlated uint64 // connections that got their second side
	Exported   uint64 // flows handed to Expire's callback
	Active     int    // live connections
	Strings    int    // interned strings live
}
