package api

import "time"

// Paths of the BGP API (straitctl bgp ...).
const (
	PathBGPPeers    = "/api/v1/bgp/peers"
	PathBGPRoutes   = "/api/v1/bgp/routes" // ?family=ipv4|ipv6&direction=local|advertised|received&peer=NAME|ADDR
	PathBGPPolicies = "/api/v1/bgp/policies"
	PathBGPConfig   = "/api/v1/bgp/config"
)

// BGPFamily is one family of a session.
type BGPFamily struct {
	Family   string `json:"family"`
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Accepted uint64 `json:"accepted"`
	// NextHop sent for the family ("" when withheld) and why.
	NextHop string `json:"nextHop,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// BGPPeer is one session (GET /api/v1/bgp/peers answers a list).
type BGPPeer struct {
	Name            string      `json:"name"`
	Address         string      `json:"address"`
	ASN             uint32      `json:"asn"`
	LocalAddress    string      `json:"localAddress,omitempty"`
	State           string      `json:"state"`
	Since           time.Time   `json:"since,omitzero"`
	ExtendedNextHop bool        `json:"extendedNextHop,omitempty"`
	Families        []BGPFamily `json:"families"`
	Error           string      `json:"error,omitempty"`
}

// BGPRoute is one path in a RIB (GET /api/v1/bgp/routes answers a list).
type BGPRoute struct {
	Prefix      string    `json:"prefix"`
	NextHop     string    `json:"nextHop"`
	Peer        string    `json:"peer,omitempty"`
	PeerAddress string    `json:"peerAddress,omitempty"`
	ASPath      []uint32  `json:"asPath,omitempty"`
	Communities []string  `json:"communities,omitempty"`
	Best        bool      `json:"best"`
	Stale       bool      `json:"stale,omitempty"`
	Age         time.Time `json:"age,omitzero"`
}

// BGPPath is a prefix this node originates.
type BGPPath struct {
	Prefix      string   `json:"prefix"`
	Origin      string   `json:"origin"`
	Communities []string `json:"communities,omitempty"`
	// Peers it goes to; empty: every peer.
	Peers []string `json:"peers,omitempty"`
}

// BGPPolicy is what is exported to one peer (GET /api/v1/bgp/policies
// answers a list).
type BGPPolicy struct {
	Peer     string      `json:"peer"`
	Address  string      `json:"address"`
	Families []BGPFamily `json:"families"`
	Exported []BGPPath   `json:"exported"`
	Rendered string      `json:"rendered,omitempty"`
}

// BGPConfig is the effective configuration of this node's speaker (GET
// /api/v1/bgp/config).
type BGPConfig struct {
	ASN             uint32    `json:"asn"`
	RouterID        string    `json:"routerID"`
	ListenPort      int32     `json:"listenPort"`
	GracefulRestart string    `json:"gracefulRestart,omitempty"`
	Peers           []BGPPeer `json:"peers"`
	Paths           []BGPPath `json:"paths"`
	Problems        []string  `json:"problems,omitempty"`
	Error           string    `json:"error,omitempty"`
}
