// Package ipfix is Strait's IPFIX (RFC 7011) codec. It has no third-party dependency.
//
// It decodes and encodes IPFIX messages (version 10): the message header, template sets (set id 2), options
// template sets (set id 3), data sets (set id >= 256), template withdrawal, enterprise-specific information
// elements (field specifiers with the enterprise bit and a Private Enterprise Number), variable-length fields
// (RFC 7011 section 7), set padding and any number of sets per message.
//
// Decoding never panics: every length is checked against the bytes present and bad input is returned as an
// error. A Decoder hands each data record to a Visitor as raw bytes (Record.Data, a sub-slice of the message)
// with field offsets, so a proxy can copy a record and append elements without decoding or re-encoding any
// value; for fixed-length templates the offsets are computed once per template and decoding a record allocates
// nothing.
//
// Templates live in a TemplateCache keyed by (exporter session, observation domain, template id). Templates
// learnt over UDP expire after the cache's UDP timeout unless refreshed (RFC 7011 section 8.4); templates over
// TCP/TLS live until withdrawn or until their session ends.
//
// # Information elements and Strait's private enterprise number
//
// Registry holds the IANA elements Strait reads and writes, the reverse elements of RFC 5103 (enterprise
// 29305, same element id as the forward element) and Strait's own elements. Strait's own elements use the
// Private Enterprise Number StraitPEN = 99999. This number is NOT registered with IANA for Strait; it is an
// unregistered, private value chosen by the project and documented here and in docs/flows.md. Collectors must
// be configured with it explicitly (for example nfacctd custom primitives "field_type=99999:101"). Wherever an
// IANA element exists, Strait uses the IANA element instead of a private one.
//
// Strait's private elements (enterprise 99999):
//
//	id   name                               type       meaning
//
// The ids start at 101, clear of the IANA ids whose RFC 5103 reverse elements Strait sends (1, 2, 85, 86):
// nfacctd 1.7 looks enterprise elements up by id alone, whatever the enterprise number.
//
//	101  sourcePodName                      string
//	102  sourcePodNamespace                 string
//	103  sourceNodeName                     string
//	104  destinationPodName                 string
//	105  destinationPodNamespace            string
//	106  destinationNodeName                string
//	107  destinationServiceName             string     "namespace/name:port" of the Service IP the client used
//	108  flowType                           unsigned8  1 intra-node, 2 inter-node, 3 to-external, 4 from-external
//	109  sourcePodLabels                    string     JSON object
//	110  destinationPodLabels               string     JSON object
//	111  tcpState                           unsigned8  conntrack TCP state: 0 none, 1 SYN_SENT, 2 SYN_RECV,
//	                                                   3 ESTABLISHED, 4 FIN_WAIT, 5 CLOSE_WAIT, 6 LAST_ACK,
//	                                                   7 TIME_WAIT, 8 CLOSE, 9 SYN_SENT2
//	112  throughput                         unsigned64 bits/s, forward direction, over the last export interval
//	113  reverseThroughput                  unsigned64 bits/s, reverse direction
//	114  destinationServiceIPv4Address      ipv4Address the Service (ClusterIP) address the client used, before
//	115  destinationServiceIPv6Address      ipv6Address DNAT; destinationIPv4/IPv6Address is the backend pod
//	116  destinationServicePort             unsigned16 the Service port before DNAT
//	120  octetTotalCountFromSourceNode      unsigned64 aggregate mode: the source node's view
//	121  packetTotalCountFromSourceNode     unsigned64
//	122  octetTotalCountFromDestinationNode unsigned64 aggregate mode: the destination node's view
//	123  packetTotalCountFromDestinationNode unsigned64
//	124  reverseOctetTotalCountFromSourceNode       unsigned64
//	125  reversePacketTotalCountFromSourceNode      unsigned64
//	126  reverseOctetTotalCountFromDestinationNode  unsigned64
//	127  reversePacketTotalCountFromDestinationNode unsigned64
package ipfix
