package agent

import (
	"net"
	"net/netip"
	"sort"

	"github.com/strait-net/strait/internal/datapath"
)

// Encapsulation modes of an IP pool.
const (
	EncapVXLAN            = "VXLAN"
	EncapVXLANCrossSubnet = "VXLANCrossSubnet"
	EncapNone             = "None"
)

// vtepInfo is what a node publishes for one address family.
type vtepInfo struct {
	// Underlay is the node's address that VXLAN packets are sent to.
	Underlay netip.Addr
	// Subnet is the underlay prefix the node sits in (CrossSubnet decisions).
	Subnet netip.Prefix
	// MAC of the node's VXLAN device; TunnelAddr is the device's address,
	// the gateway remote nodes route the node's blocks through.
	MAC        net.HardwareAddr
	TunnelAddr netip.Addr
}

// nodeInfo is one node as the agent sees it.
type nodeInfo struct {
	Name   string
	V4, V6 *vtepInfo
}

func (n nodeInfo) family(is4 bool) *vtepInfo {
	if is4 {
		return n.V4
	}
	return n.V6
}

// blockInfo is one claimed block and the pool settings that apply to it.
type blockInfo struct {
	CIDR          netip.Prefix
	Node          string
	Encapsulation string
}

// skipped explains a route the agent cannot install yet.
type skipped struct {
	Block  netip.Prefix
	Node   string
	Reason string
}

// desiredPeers is the pure heart of the cluster datapath: from this node,
// every node's published VTEP data and every block, it computes the routes
// (and neighbour/FDB data) to reach each remote node's blocks. Encapsulation
// per block: VXLAN always encapsulates; VXLANCrossSubnet routes natively to
// nodes in this node's underlay subnet and encapsulates across subnets; None
// routes natively within the subnet and leaves other nodes to BGP. With
// bgpNative (bgp.enabled), every block routed natively (None, and
// VXLANCrossSubnet within the subnet) is left to BGP: the BGP controller
// installs the routes the node-to-node mesh learned (bgp_native.go).
func desiredPeers(self nodeInfo, uplink string, nodes map[string]nodeInfo, blocks []blockInfo, bgpNative bool) (map[string]datapath.Peer, []skipped) {
	peers := map[string]datapath.Peer{}
	var skips []skipped
	for _, b := range blocks {
		if b.Node == self.Name || b.Node == "" {
			continue
		}
		remote, ok := nodes[b.Node]
		if !ok {
			skips = append(skips, skipped{b.CIDR, b.Node, "node unknown (deleted, or not yet seen)"})
			continue
		}
		is4 := b.CIDR.Addr().Is4()
		mine, theirs := self.family(is4), remote.family(is4)
		if mine == nil {
			skips = append(skips, skipped{b.CIDR, b.Node, "this node has no underlay address of the block's family"})
			continue
		}
		if theirs == nil || !theirs.Underlay.IsValid() {
			skips = append(skips, skipped{b.CIDR, b.Node, "remote node has not published its VTEP for the block's family"})
			continue
		}
		sameSubnet := mine.Subnet.IsValid() && mine.Subnet.Contains(theirs.Underlay)
		var r datapath.PeerRoute
		switch {
		case bgpNative && (b.Encapsulation == EncapNone || (b.Encapsulation == EncapVXLANCrossSubnet && sameSubnet)):
			skips = append(skips, skipped{b.CIDR, b.Node, "routed natively by BGP: the route learned over the node-to-node mesh is installed"})
			continue
		case b.Encapsulation == EncapNone && !sameSubnet:
			skips = append(skips, skipped{b.CIDR, b.Node, "encapsulation None and the node is in another subnet: routed by BGP, not here"})
			continue
		case b.Encapsulation == EncapNone || (b.Encapsulation == EncapVXLANCrossSubnet && sameSubnet):
			r = datapath.PeerRoute{Dst: b.CIDR, Gateway: theirs.Underlay, Dev: uplink}
		default:
			if len(theirs.MAC) == 0 || !theirs.TunnelAddr.IsValid() {
				skips = append(skips, skipped{b.CIDR, b.Node, "remote VTEP lacks a MAC or tunnel address"})
				continue
			}
			r = datapath.PeerRoute{Dst: b.CIDR, Encap: true, Gateway: theirs.TunnelAddr, VTEPMAC: theirs.MAC, VTEPIP: theirs.Underlay}
		}
		p := peers[b.Node]
		p.Name = b.Node
		p.Routes = append(p.Routes, r)
		peers[b.Node] = p
	}
	for name, p := range peers {
		sort.Slice(p.Routes, func(i, j int) bool { return p.Routes[i].Dst.String() < p.Routes[j].Dst.String() })
		peers[name] = p
	}
	return peers, skips
}
