package datapath

import "net/netip"

// NATTable is the nftables table (family inet) of the outgoing NAT.
const NATTable = "strait"

// NATConfig is the desired outgoing NAT of pod traffic (Calico's
// natOutgoing): packets from a pool with NAT leaving the cluster are
// masqueraded to the node's address. It also says which overlay traffic
// conntrack skips (TunnelPort).
type NATConfig struct {
	// Masquerade are the pools whose pods' traffic is masqueraded.
	Masquerade []netip.Prefix
	// AllPools are every pool of the cluster: traffic to them is never
	// masqueraded, so pods see each other's addresses.
	AllPools []netip.Prefix
	// NodeAddrs are the cluster nodes' addresses, never masqueraded to
	// either (node-to-pod policy and health checks need the pod's address).
	NodeAddrs []netip.Addr
	// TunnelPort is the UDP destination port of the node's VXLAN devices
	// (0: the node has none). The outer packets of the overlay, UDP to this
	// port between this node and NodeAddrs, then bypass conntrack: they are
	// never NATed, and tracking them cost every encapsulated packet two
	// more conntrack passes and both nodes a second entry for every pod
	// connection across the overlay (the outer source port hashes the inner
	// flow). The pods' own (inner) packets are tracked as before.
	TunnelPort uint16
}
