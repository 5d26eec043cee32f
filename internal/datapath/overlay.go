package datapath

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// The cluster overlay (Calico VXLAN / VXLANCrossSubnet, Flannel-style
// gateways). Each node has one VXLAN device per address family it runs:
// VTEPDevice4 carries IPv4 pod traffic over the IPv4 underlay, VTEPDevice6
// IPv6 pod traffic over the IPv6 underlay. The device holds the node's tunnel
// address (/32 or /128, the network address of its first pod block), so that
// traffic the node itself sends to remote pods has a routable source.
//
// Per remote node and pod block, an encapsulated block gets
//
//	route BLOCK via REMOTE_TUNNEL_ADDR dev strait.vxlanX onlink proto 83
//	neigh REMOTE_TUNNEL_ADDR lladdr REMOTE_VTEP_MAC dev strait.vxlanX permanent
//	fdb   REMOTE_VTEP_MAC dev strait.vxlanX dst REMOTE_UNDERLAY_IP self permanent
//
// and a natively routed one (same subnet) only
//
//	route BLOCK via REMOTE_UNDERLAY_IP dev UPLINK proto 83
const (
	// RouteProtocol marks every route the overlay installs (rtm_protocol),
	// so that a dump finds exactly ours: 83 (0x53, 'S') is neither a kernel
	// RTPROT_* value nor listed in iproute2's rt_protos. `ip route show
	// proto 83` lists them.
	RouteProtocol = 0x53
	// LearnedRouteProtocol marks the routes SetLearnedRoutes installs (pod
	// blocks of other nodes learned over BGP, native routing): 84 (0x54,
	// 'T'). Each owner dumps and deletes only routes of its own protocol,
	// so the overlay's Resync never touches a learned route and
	// SetLearnedRoutes never an overlay route. `ip route show proto 84`.
	LearnedRouteProtocol = 0x54

	// VTEPDevicePrefix starts the name of every Strait VXLAN device;
	// EnsureVTEPs deletes the ones not configured.
	VTEPDevicePrefix = "strait.vxlan"
	VTEPDevice4      = VTEPDevicePrefix + "4"
	VTEPDevice6      = VTEPDevicePrefix + "6"

	// DefaultVNI4 and DefaultVNI6 are the VXLAN network identifiers of the
	// two devices when VTEPConfig.VNI is 0 (Calico uses 4096 and 4097 too).
	DefaultVNI4 = 4096
	DefaultVNI6 = 4097
	// DefaultVXLANPort is the IANA VXLAN port, used when VTEPConfig.Port is 0.
	DefaultVXLANPort = 4789

	// VXLAN overhead: outer IP + UDP + VXLAN + inner Ethernet headers.
	vxlanOverhead4 = 20 + 8 + 8 + 14
	vxlanOverhead6 = 40 + 8 + 8 + 14
	maxVNI         = 1<<24 - 1
)

// VTEPConfig is the desired VXLAN device of one address family.
type VTEPConfig struct {
	// Family is 4 or 6: the family of the pod traffic, of the underlay
	// (LocalIP) and of the tunnel address alike.
	Family int
	// Device is the link name; empty means VTEPDevice4 or VTEPDevice6. It
	// must start with VTEPDevicePrefix.
	Device string
	// VNI is the VXLAN network identifier (0: DefaultVNI4/DefaultVNI6);
	// Port the UDP destination port (0: DefaultVXLANPort).
	VNI, Port int
	// MTU of the device; 0 means the MTU of the underlay link holding
	// LocalIP minus the VXLAN overhead (50 for IPv4, 70 for IPv6).
	MTU int
	// LocalIP is the node's underlay address, the source of encapsulated
	// packets.
	LocalIP netip.Addr
	// MAC of the device; other nodes point their FDB entries at it. Use
	// VTEPMAC(nodeName, Family).
	MAC net.HardwareAddr
	// TunnelAddr is the one address on the device (/32 or /128).
	TunnelAddr netip.Addr
}

// PeerRoute is one pod block of a remote node.
type PeerRoute struct {
	// Dst is the pod block.
	Dst netip.Prefix
	// Encap sends the block through the VXLAN device of Dst's family;
	// otherwise it is routed natively via Gateway on Dev.
	Encap bool
	// Gateway is the next hop: the remote node's tunnel address when Encap,
	// else its underlay address.
	Gateway netip.Addr
	// VTEPMAC is the remote VXLAN device's MAC (Encap only).
	VTEPMAC net.HardwareAddr
	// VTEPIP is the remote node's underlay address (Encap only).
	VTEPIP netip.Addr
	// Dev is the uplink of a native route; ignored when Encap.
	Dev string
}

// Peer is a remote node and the routes to its pod blocks.
type Peer struct {
	Name   string
	Routes []PeerRoute
}

// OpStats counts the kernel operations a call issued.
type OpStats struct {
	RouteAdds, RouteDels int
	NeighAdds, NeighDels int
	FDBAdds, FDBDels     int
}

// Total is the number of operations.
func (s OpStats) Total() int {
	return s.RouteAdds + s.RouteDels + s.NeighAdds + s.NeighDels + s.FDBAdds + s.FDBDels
}

// Add returns the sum of s and o.
func (s OpStats) Add(o OpStats) OpStats {
	return OpStats{
		RouteAdds: s.RouteAdds + o.RouteAdds, RouteDels: s.RouteDels + o.RouteDels,
		NeighAdds: s.NeighAdds + o.NeighAdds, NeighDels: s.NeighDels + o.NeighDels,
		FDBAdds: s.FDBAdds + o.FDBAdds, FDBDels: s.FDBDels + o.FDBDels,
	}
}

// Entry kinds of ManagedEntry.
const (
	EntryRoute = "route"
	EntryNeigh = "neigh"
	EntryFDB   = "fdb"
)

// UnknownPeer is the ManagedEntry.Peer of a kernel entry no peer known to
// this Datapath wants (a later Resync deletes it).
const UnknownPeer = "unknown"

// ManagedEntry is one overlay route, neighbour or FDB entry in the kernel.
type ManagedEntry struct {
	// Kind is EntryRoute, EntryNeigh or EntryFDB.
	Kind string
	// Peer is the name of the peer the entry serves, or UnknownPeer.
	Peer string
	// Dev is the route's device, or the VXLAN device of a neighbour or FDB
	// entry.
	Dev string
	// Dst is a route's destination.
	Dst netip.Prefix
	// IP is a route's gateway, a neighbour's address, or the remote
	// underlay address of an FDB entry.
	IP netip.Addr
	// MAC is a neighbour's link-layer address or an FDB entry's MAC.
	MAC net.HardwareAddr
	// Onlink is set on encapsulated routes.
	Onlink bool
}

func (e ManagedEntry) String() string {
	var s string
	switch e.Kind {
	case EntryRoute:
		s = fmt.Sprintf("route %s via %s dev %s", e.Dst, e.IP, e.Dev)
		if e.Onlink {
			s += " onlink"
		}
	case EntryNeigh:
		s = fmt.Sprintf("neigh %s lladdr %s dev %s", e.IP, e.MAC, e.Dev)
	case EntryFDB:
		s = fmt.Sprintf("fdb %s dev %s dst %s", e.MAC, e.Dev, e.IP)
	default:
		s = e.Kind
	}
	if e.Peer != "" {
		s += " (peer " + e.Peer + ")"
	}
	return s
}

// VTEPMAC derives the MAC of a node's VXLAN device from its name and the
// family (4 or 6): stable across restarts and reinstalls, so peers never need
// to learn a new one, and locally administered unicast.
func VTEPMAC(nodeName string, family int) net.HardwareAddr {
	sum := sha256.Sum256(fmt.Appendf(nil, "strait-vtep\x00%s\x00%d", nodeName, family))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// DefaultVTEPDevice is the VXLAN device name of a family (4 or 6).
func DefaultVTEPDevice(family int) string {
	if family == 6 {
		return VTEPDevice6
	}
	return VTEPDevice4
}

// IsVTEPDevice reports whether name looks like a Strait VXLAN device.
func IsVTEPDevice(name string) bool { return strings.HasPrefix(name, VTEPDevicePrefix) }
