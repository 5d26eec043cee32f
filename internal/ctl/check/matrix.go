// Package check is `straitctl check connectivity`: it deploys probe pods on
// every node through the Kubernetes API, pings pod to pod (every ordered
// pair of nodes, each family), pod to node and pod to external addresses
// from them, and explains every failing hop from the nodes' kernel routes
// (read through a host-network probe on each node) and the IPAM blocks.
package check

import (
	"cmp"
	"net/netip"
	"slices"
)

// Kind is what a hop checks.
type Kind string

// The kinds of hops.
const (
	PodToPod      Kind = "pod-to-pod"
	PodToNode     Kind = "pod-to-node"
	PodToExternal Kind = "pod-to-external"
)

// External names the destination node of pod-to-external hops.
const External = "external"

// Node is one cluster node as the check sees it.
type Node struct {
	Name string
	// Addrs are the node's InternalIP addresses.
	Addrs []netip.Addr
	// PodIPs are the addresses of the probe pod on the node (none when
	// the probe did not start).
	PodIPs []netip.Addr
}

// Hop is one probe: from the probe pod on From (address Src) to Dst.
type Hop struct {
	Kind Kind   `json:"kind"`
	From string `json:"from"`
	// To is the destination node, or External.
	To     string     `json:"to"`
	Family int        `json:"family"`
	Src    netip.Addr `json:"source"`
	Dst    netip.Addr `json:"destination"`
}

func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

// BuildMatrix returns every hop to probe: from each node's probe pod, for
// each of its families, to the probe pod of every node (itself included),
// to every node address and to every external address of that family.
func BuildMatrix(nodes []Node, externals []netip.Addr) []Hop {
	var hops []Hop
	for _, src := range nodes {
		for _, s := range src.PodIPs {
			fam := family(s)
			for _, dst := range nodes {
				for _, d := range dst.PodIPs {
					if family(d) == fam {
						hops = append(hops, Hop{Kind: PodToPod, From: src.Name, To: dst.Name, Family: fam, Src: s, Dst: d})
					}
				}
			}
			for _, dst := range nodes {
				for _, d := range dst.Addrs {
					if family(d) == fam {
						hops = append(hops, Hop{Kind: PodToNode, From: src.Name, To: dst.Name, Family: fam, Src: s, Dst: d})
					}
				}
			}
			for _, d := range externals {
				if family(d) == fam {
					hops = append(hops, Hop{Kind: PodToExternal, From: src.Name, To: External, Family: fam, Src: s, Dst: d})
				}
			}
		}
	}
	slices.SortStableFunc(hops, func(a, b Hop) int {
		return cmp.Or(cmp.Compare(kindOrder(a.Kind), kindOrder(b.Kind)), cmp.Compare(a.From, b.From),
			cmp.Compare(a.Family, b.Family), cmp.Compare(a.To, b.To), a.Dst.Compare(b.Dst))
	})
	return hops
}

func kindOrder(k Kind) int {
	switch k {
	case PodToPod:
		return 0
	case PodToNode:
		return 1
	}
	return 2
}
