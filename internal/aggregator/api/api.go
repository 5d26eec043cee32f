// Package api holds the JSON types of the Flow Aggregator's HTTP API, shared by the aggregator (server) and
// straitctl (client).
//
//	GET /api/v1/flows?pod=NAMESPACE/NAME&top=N
//
// returns FlowsResponse. pod keeps flows whose source or destination pod matches; top keeps the N flows with
// the most bytes (both directions), sorted by bytes descending; without top the order is unspecified. In
// aggregate mode the flows are the correlator's live connections; in proxy mode they are the most recent
// records forwarded (a bounded table keyed by exporter and 5-tuple, see the config's api.recentFlows).
package api

import "time"

// FlowsPath is the path of the flows endpoint.
const FlowsPath = "/api/v1/flows"

// FlowsResponse is the answer of GET FlowsPath.
type FlowsResponse struct {
	// Mode is "aggregate" or "proxy".
	Mode string `json:"mode"`
	// Total is the number of flows matching the pod filter before top was applied.
	Total int    `json:"total"`
	Flows []Flow `json:"flows"`
}

// Flow is one connection (aggregate mode) or one forwarded record (proxy mode).
type Flow struct {
	SourceIP        string `json:"sourceIP"`
	DestinationIP   string `json:"destinationIP"`
	SourcePort      uint16 `json:"sourcePort"`
	DestinationPort uint16 `json:"destinationPort"`
	Protocol        uint8  `json:"protocol"`

	SourcePod            string `json:"sourcePod,omitempty"`
	SourceNamespace      string `json:"sourceNamespace,omitempty"`
	SourceNode           string `json:"sourceNode,omitempty"`
	DestinationPod       string `json:"destinationPod,omitempty"`
	DestinationNamespace string `json:"destinationNamespace,omitempty"`
	DestinationNode      string `json:"destinationNode,omitempty"`
	// DestinationService is "namespace/name:port" when the client addressed a Service.
	DestinationService string `json:"destinationService,omitempty"`
	// FlowType is intra-node, inter-node, to-external or from-external (empty when unknown).
	FlowType string `json:"flowType,omitempty"`

	Start time.Time `json:"start"`
	End   time.Time `json:"end"`

	Packets        uint64 `json:"packets"`
	Bytes          uint64 `json:"bytes"`
	ReversePackets uint64 `json:"reversePackets"`
	ReverseBytes   uint64 `json:"reverseBytes"`
	// Throughput and ReverseThroughput in bits/s (aggregate mode).
	Throughput        uint64 `json:"throughput,omitempty"`
	ReverseThroughput uint64 `json:"reverseThroughput,omitempty"`

	// Correlated (aggregate mode): every node that should report the connection did.
	Correlated bool `json:"correlated,omitempty"`
	// Exporter and ObservationDomain (proxy mode): who sent the record.
	Exporter          string `json:"exporter,omitempty"`
	ObservationDomain uint32 `json:"observationDomain,omitempty"`
}
