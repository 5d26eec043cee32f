// Package api holds the wire types of the agent's local CLI API, served as
// JSON over HTTP on the agent's root-only unix socket and read by straitctl.
// It depends on nothing but the standard library so that the CLI stays small.
package api

import "time"

// Paths of the API.
const (
	PathStatus = "/api/v1/status"
	PathRoutes = "/api/v1/routes"
	PathIPAM   = "/api/v1/ipam"
)

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Status is GET /api/v1/status.
type Status struct {
	Node string `json:"node"`
	// Ready is true when the agent serves CNI requests; NotReadyReason says
	// why not otherwise.
	Ready          bool   `json:"ready"`
	NotReadyReason string `json:"notReadyReason,omitempty"`
	IPAMMode       string `json:"ipamMode"`
	// PodMTU is the MTU given to pod interfaces (0 until known).
	PodMTU int `json:"podMTU"`
	// Uplink is the underlay interface (cluster modes).
	Uplink string `json:"uplink,omitempty"`
	// Pools are this node's address ranges (pod CIDRs, or claimed blocks).
	Pools []Pool `json:"pools"`
	// VTEPs are this node's VXLAN endpoints, one per family.
	VTEPs   []VTEP    `json:"vteps"`
	Peers   int       `json:"peers"`
	Skipped []Skipped `json:"skipped"`
	// FastPath is the eBPF fast path's state when it is enabled.
	FastPath *FastPath `json:"fastPath,omitempty"`
}

// FastPath is the state of the eBPF fast path on a node.
type FastPath struct {
	PinDir string `json:"pinDir"`
	// Devices have the programs attached; Pods counts the pods among them.
	Devices int `json:"devices"`
	Pods    int `json:"pods"`
	// NextHops counts the neighbours on the uplink the programs forward
	// to that the kernel keeps resolved (managed entries).
	NextHops int `json:"nextHops"`
	// Packets by what the programs did with them: redirected, or left to
	// the stack and why (local, nat, spoofed, notPod, fib, other); and
	// encapsulated: of the redirected, those the programs encapsulated in
	// VXLAN themselves.
	Packets map[string]uint64 `json:"packets,omitempty"`
	// Error is why the state or the counters could not be read.
	Error string `json:"error,omitempty"`
}

// Pool is one range this node allocates pod addresses from.
type Pool struct {
	CIDR string `json:"cidr"`
	// IPPool is the cluster IPPool a block belongs to (blocks mode).
	IPPool   string `json:"ipPool,omitempty"`
	Capacity uint64 `json:"capacity"`
	InUse    int    `json:"inUse"`
}

// VTEP is one of this node's VXLAN endpoints.
type VTEP struct {
	Family     int    `json:"family"`
	Device     string `json:"device"`
	VNI        int    `json:"vni,omitempty"`
	Underlay   string `json:"underlay"`
	Subnet     string `json:"subnet,omitempty"`
	MAC        string `json:"mac"`
	TunnelAddr string `json:"tunnelAddr,omitempty"`
}

// Skipped is a route the agent wants but cannot install, and why.
type Skipped struct {
	Block  string `json:"block"`
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// Routes is GET /api/v1/routes.
type Routes struct {
	// Overlay are the managed kernel entries (route, neigh, fdb).
	Overlay []OverlayEntry `json:"overlay"`
	// OverlayError is set when the kernel state could not be read.
	OverlayError string `json:"overlayError,omitempty"`
	// Pods are the per-pod host routes.
	Pods []PodRoute `json:"pods"`
	// Skipped are the desired routes that are not installed, and why.
	Skipped []Skipped `json:"skipped"`
	// NextHops are the eBPF fast path's kernel-managed neighbours (only
	// with the fast path on); NextHopsError says why they could not be read.
	NextHops      []NextHop `json:"fastPathNextHops,omitempty"`
	NextHopsError string    `json:"fastPathNextHopsError,omitempty"`
}

// NextHop is a neighbour on the uplink that the fast path's programs
// forward to, kept resolved by the kernel (a managed entry).
type NextHop struct {
	Dev string `json:"dev"`
	IP  string `json:"ip"`
	// MAC is empty while unresolved.
	MAC string `json:"mac,omitempty"`
	// State is the kernel's: reachable, stale, delay, probe, incomplete,
	// failed.
	State string `json:"state"`
	// Peers are the remote nodes whose blocks are routed through it when
	// that is known from their routes (the node itself, for a native route
	// or an on-link VTEP); an underlay gateway lists none.
	Peers []string `json:"peers,omitempty"`
}

// OverlayEntry is one kernel route, neighbour or FDB entry of the overlay.
type OverlayEntry struct {
	Kind string `json:"kind"`
	// Peer is the remote node the entry serves ("unknown": stale, the next
	// resync deletes it).
	Peer string `json:"peer"`
	// Blocks are the remote pod blocks the entry serves.
	Blocks []string `json:"blocks,omitempty"`
	Dev    string   `json:"dev"`
	Dst    string   `json:"dst,omitempty"`
	// IP is a route's gateway, a neighbour's address or an FDB entry's
	// remote underlay address.
	IP     string `json:"ip,omitempty"`
	MAC    string `json:"mac,omitempty"`
	Onlink bool   `json:"onlink,omitempty"`
}

// PodRoute is the host route to one pod address.
type PodRoute struct {
	Dst          string `json:"dst"`
	Dev          string `json:"dev"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	ContainerID  string `json:"containerID"`
}

// IPAM is GET /api/v1/ipam.
type IPAM struct {
	Mode        string       `json:"mode"`
	Pools       []Pool       `json:"pools"`
	Allocations []Allocation `json:"allocations"`
}

// Allocation is one pod attachment's addresses.
type Allocation struct {
	PodNamespace string    `json:"podNamespace,omitempty"`
	PodName      string    `json:"podName,omitempty"`
	PodUID       string    `json:"podUID,omitempty"`
	Network      string    `json:"network"`
	ContainerID  string    `json:"containerID"`
	IfName       string    `json:"ifName"`
	HostIface    string    `json:"hostIface,omitempty"`
	Addrs        []string  `json:"addrs"`
	Created      time.Time `json:"created"`
}
