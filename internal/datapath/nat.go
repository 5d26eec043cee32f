package datapath

import "net/netip"

// NATTable is the nftables table (family inet) of the outgoing NAT.
const NATTable = "strait"

// NATConfig is the desired outgoing NAT of pod traffic (Calico's
// natOutgoing): packets from a pool with NAT leaving the cluster are
// masqueraded to the node's address.
type NATConfig struct {
	// Masquerade are the pools whose pods' traffic is masqueraded.
	Masquerade []netip.Prefix
	// AllPools are every pool of the cluster: traffic to them is never
	// masqueraded, so pods see each other's addresses.
	AllPools []netip.Prefix
	// NodeAddrs are the cluster nodes' addresses, never masqueraded to
	// either (node-to-pod policy and health checks need the pod's address).
	NodeAddrs []netip.Addr
}
