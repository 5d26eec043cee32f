package datapath

import (
	"net"
	"net/netip"
)

// FastPath is the desired state of the opt-in eBPF fast path
// (internal/datapath/bpf/fastpath.c): tc programs on the pods' host veths,
// the VXLAN devices and the uplink that redirect pod-to-pod traffic past the
// node's forwarding hop, netfilter and conntrack. Connections with NAT
// (Services, masquerade) and every other destination stay with the stack.
type FastPath struct {
	// Enabled attaches the programs; false detaches them and removes
	// everything under PinDir.
	Enabled bool
	// PinDir is a directory on a bpffs (for example /sys/fs/bpf/strait)
	// that holds the maps and the programs' links. The links stay attached
	// while their pins exist, so the fast path outlives the agent process
	// (kill -9 loses nothing); a restarted agent adopts them. One directory
	// per node namespace.
	PinDir string
	// PodRanges are the pod address ranges of the whole cluster (every
	// pool): only traffic from a pod to these is fast-pathed.
	PodRanges []netip.Prefix
	// Uplinks are the devices through which traffic for this node's pods
	// arrives from other nodes: the VXLAN devices and the uplink. Traffic
	// from them is fast-pathed into local pods only. With !Enabled they
	// name where the fast path's managed next hops are removed from.
	Uplinks []string
}

// FastPathCounters are the fast path's packet counters, summed over CPUs.
type FastPathCounters struct {
	Redirected uint64 // forwarded by the fast path
	// Encapsulated counts the redirected packets that the programs
	// encapsulated in VXLAN themselves and sent out of the uplink (a pod's
	// packet to an IPv4 VXLAN device's routes), skipping the device.
	Encapsulated uint64
	NAT          uint64 // left to the stack: the connection has NAT
	Spoofed      uint64 // left to the stack: a pod's source address is not its own
	NotPod       uint64 // left to the stack: not to a pod range, or out of an unmanaged device
	FIB          uint64 // left to the stack: the FIB did not forward it (unresolved neighbour, unreachable)
	Other        uint64 // left to the stack: not TCP/UDP over plain IPv4/IPv6, TTL, fragments
	Local        uint64 // left to the stack: to this node itself (local or broadcast route)
}

// FastPathStatus is what SetFastPath left in place.
type FastPathStatus struct {
	// Devices are the interfaces with a program attached, by name.
	Devices []string
	// Pods counts the pods' host veths among them.
	Pods int
	// NextHops counts the neighbours on the uplink the programs forward
	// to (gateways of native routes, underlay next hops of VXLAN peers)
	// that are kept as kernel-managed entries, so that the kernel keeps
	// re-resolving them although the programs never confirm them.
	NextHops int
}

// NextHop is one of the fast path's kernel-managed neighbour entries: a
// next hop on the uplink the programs forward to (docs/fast-path.md).
type NextHop struct {
	Dev string
	IP  netip.Addr
	// MAC is the resolved link-layer address (empty while unresolved).
	MAC net.HardwareAddr
	// State is the kernel's NUD state: reachable, stale, delay, probe,
	// incomplete, failed or none.
	State string
}
