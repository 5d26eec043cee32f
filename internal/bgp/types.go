// Package bgp is Strait's BGP speaker: a declarative Speaker (Set the whole
// desired configuration, read status, routes, policies and learned routes)
// over an embedded engine. Only gobgp.go knows the engine is GoBGP; everything
// else, including the agent, codes against the types in this file.
package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
)

// Family is an address family and subsequent address family (AFI/SAFI).
type Family uint8

const (
	// IPv4Unicast is AFI 1 / SAFI 1.
	IPv4Unicast Family = iota + 1
	// IPv6Unicast is AFI 2 / SAFI 1.
	IPv6Unicast
)

// String is the family's name as in the BGPPeer CRD: ipv4-unicast, ipv6-unicast.
func (f Family) String() string {
	switch f {
	case IPv4Unicast:
		return "ipv4-unicast"
	case IPv6Unicast:
		return "ipv6-unicast"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// ParseFamily accepts ipv4-unicast, ipv6-unicast, ipv4 and ipv6.
func ParseFamily(s string) (Family, error) {
	switch strings.ToLower(s) {
	case "ipv4-unicast", "ipv4":
		return IPv4Unicast, nil
	case "ipv6-unicast", "ipv6":
		return IPv6Unicast, nil
	}
	return 0, fmt.Errorf("parse BGP family %q: want ipv4-unicast or ipv6-unicast", s)
}

// FamilyOf is the unicast family of an address (IPv4-mapped IPv6 counts as IPv4).
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4Unicast
	}
	return IPv6Unicast
}

// NextHopMode says how the next hop of advertised routes is chosen per peer.
type NextHopMode string

const (
	// NextHopAuto: the session's own local address for the session's family;
	// for the other family a real (global, not deprecated/temporary/dynamic)
	// address of the interface that holds the session's local address. For
	// IPv4 routes on an IPv6 session without such an address, an RFC 8950
	// IPv6 next hop is sent only if the peer negotiated extended-nexthop.
	NextHopAuto NextHopMode = "Auto"
	// NextHopFixed: NextHopPolicy.IPv4 / IPv6 as given.
	NextHopFixed NextHopMode = "Fixed"
	// NextHopFromInterface: addresses of NextHopPolicy.Interface, skipping
	// link-local, deprecated, temporary and dynamic ones.
	NextHopFromInterface NextHopMode = "FromInterface"
)

// NextHopPolicy is a peer's next-hop rule. The zero value is Auto.
type NextHopPolicy struct {
	Mode      NextHopMode
	IPv4      netip.Addr // Fixed
	IPv6      netip.Addr // Fixed
	Interface string     // FromInterface
}

// Timers of a session. Zero fields take DefaultTimers' values.
type Timers struct {
	Keepalive    time.Duration
	Hold         time.Duration
	ConnectRetry time.Duration
}

// DefaultTimers are fast but safe: a dead peer without BFD is noticed within
// 30 s, a peer that comes up later is dialled within 2 s.
var DefaultTimers = Timers{Keepalive: 10 * time.Second, Hold: 30 * time.Second, ConnectRetry: 2 * time.Second}

// GracefulRestart (RFC 4724): peers keep our routes, marked stale, for
// RestartTime while we restart.
type GracefulRestart struct {
	RestartTime time.Duration // 0 = 120 s
}

// BFD liveness detection for one session (single hop).
type BFD struct {
	MinTx      time.Duration // 0 = 300 ms
	MinRx      time.Duration // 0 = 300 ms
	Multiplier uint8         // 0 = 3
}

// Peer is one BGP neighbour and how we talk to it.
type Peer struct {
	// Name identifies the peer in status and policies (e.g. the BGPPeer name,
	// or "mesh-<node>"). Unique within a Config.
	Name    string
	Address netip.Addr
	Port    uint16 // 0 = 179
	ASN     uint32
	// Password enables TCP-MD5 (RFC 2385) when not empty.
	Password string
	// LocalAddress is the session's source address. When zero, SourceInterface's
	// first usable address of the peer's family is used, else the source the
	// kernel picks to reach the peer (resolved once per Set, then pinned so the
	// next hops computed from it stay true).
	LocalAddress    netip.Addr
	SourceInterface string
	// Families carried on the session; empty = IPv4 and IPv6 unicast.
	Families []Family
	NextHop  NextHopPolicy
	Timers   Timers
	// EBGPMultihop is the TTL for eBGP sessions to peers that are not directly
	// connected; 0 = directly connected (TTL 1).
	EBGPMultihop    uint8
	GracefulRestart *GracefulRestart // nil = Config.GracefulRestart
	BFD             *BFD             // nil = no BFD
	Passive         bool             // wait for the peer to connect
	// Learn delivers the peer's best routes through Speaker.Learned (mesh
	// peers for native routing; external peers only if configured).
	Learn bool
}

// MeshPassive says whether the session between two speakers of a full mesh
// is passive on the side at local: the higher address connects, the lower
// waits. Both sides derive the same answer from the same two addresses, so
// the pair never opens two connections at once (GoBGP's collision handling
// can then pick different connections at the two ends and retry in step).
func MeshPassive(local, remote netip.Addr) bool {
	return local.IsValid() && remote.IsValid() && local.Less(remote)
}

// LargeCommunity is an RFC 8092 large community GlobalAdmin:Local1:Local2.
type LargeCommunity struct {
	GlobalAdmin, LocalData1, LocalData2 uint32
}

// String formats as GA:L1:L2.
func (c LargeCommunity) String() string {
	return fmt.Sprintf("%d:%d:%d", c.GlobalAdmin, c.LocalData1, c.LocalData2)
}

// Community is an RFC 1997 standard community, AS<<16 | value.
type Community uint32

// String formats as AS:VALUE.
func (c Community) String() string { return fmt.Sprintf("%d:%d", uint32(c)>>16, uint32(c)&0xffff) }

// ParseCommunity accepts AS:VALUE (each 0-65535) or a plain 32-bit number.
func ParseCommunity(s string) (Community, error) {
	var a, v uint32
	if _, err := fmt.Sscanf(s, "%d:%d", &a, &v); err == nil && a <= 0xffff && v <= 0xffff && fmt.Sprintf("%d:%d", a, v) == s {
		return Community(a<<16 | v), nil
	}
	var n uint32
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && fmt.Sprint(n) == s {
		return Community(n), nil
	}
	return 0, fmt.Errorf("parse community %q: want AS:VALUE with both in 0-65535", s)
}

// ParseLargeCommunity accepts GA:L1:L2, each a 32-bit number.
func ParseLargeCommunity(s string) (LargeCommunity, error) {
	var c LargeCommunity
	if _, err := fmt.Sscanf(s, "%d:%d:%d", &c.GlobalAdmin, &c.LocalData1, &c.LocalData2); err != nil || c.String() != s {
		return LargeCommunity{}, fmt.Errorf("parse large community %q: want GA:L1:L2", s)
	}
	return c, nil
}

// Path is one prefix we originate.
type Path struct {
	Prefix           netip.Prefix
	Communities      []Community
	LargeCommunities []LargeCommunity
	// Origin says why it is advertised ("pod-block", "service-lb",
	// "service-external", "service-cluster"); shown in policies and routes.
	Origin string
	// Peers restricts the path to the named peers; empty = every peer.
	Peers []string
}

// Config is the whole desired state of the speaker. Set replaces the previous
// one; the speaker computes and applies the difference.
type Config struct {
	ASN      uint32
	RouterID netip.Addr // IPv4
	// ListenPort for incoming sessions: 0 = 179, -1 = no listener (only
	// outgoing connections; passive peers then cannot work).
	ListenPort      int32
	GracefulRestart *GracefulRestart // default for peers; nil = off
	Peers           []Peer
	Paths           []Path
}

// SessionState of a peer, named as in RFC 4271.
type SessionState string

// Session states.
const (
	StateIdle        SessionState = "Idle"
	StateConnect     SessionState = "Connect"
	StateActive      SessionState = "Active"
	StateOpenSent    SessionState = "OpenSent"
	StateOpenConfirm SessionState = "OpenConfirm"
	StateEstablished SessionState = "Established"
	// StateRejected: Strait did not configure the peer (bad config); see Error.
	StateRejected SessionState = "Rejected"
)

// FamilyStatus is per-family status of a session.
type FamilyStatus struct {
	Family   Family
	Sent     uint64 // prefixes advertised
	Received uint64 // prefixes received
	Accepted uint64 // prefixes received and accepted
	// NextHop we send for this family ("" when withheld), and why it was chosen
	// or why the family is withheld.
	NextHop netip.Addr
	Reason  string
}

// PeerStatus is what `straitctl bgp peers` and the status CRD show.
type PeerStatus struct {
	Name            string
	Address         netip.Addr
	ASN             uint32
	LocalAddress    netip.Addr
	State           SessionState
	Since           time.Time // when State was entered (Established: uptime start)
	ExtendedNextHop bool      // RFC 8950 negotiated
	Families        []FamilyStatus
	// Error is the last reason the session is not up or a family is withheld,
	// as far as it is known (configuration error, last NOTIFICATION, no route,
	// "no answer: TCP-MD5 password mismatch or peer down" ...).
	Error string
}

// RouteQuery selects routes for Routes.
type RouteQuery struct {
	Family Family // 0 = both
	// Direction: "" or "local" = our RIB (originated and learned best paths),
	// "advertised" = what was sent to Peer (or to every peer), "received" =
	// what Peer (or every peer) sent us.
	Direction string
	Peer      string // peer name or address; "" = all
}

// Route directions accepted by RouteQuery.
const (
	DirectionLocal      = "local"
	DirectionAdvertised = "advertised"
	DirectionReceived   = "received"
)

// Route is one path in a RIB.
type Route struct {
	Prefix           netip.Prefix
	NextHop          netip.Addr
	Peer             string     // peer name ("" for locally originated)
	PeerAddress      netip.Addr // peer address (to/from)
	ASPath           []uint32
	Communities      []Community
	LargeCommunities []LargeCommunity
	Best             bool
	Stale            bool // kept by graceful restart
	Age              time.Time
}

// PolicyView is what is exported to one peer and how it is rewritten.
type PolicyView struct {
	Peer     string
	Address  netip.Addr
	Families []FamilyStatus // next hop per family, or the reason it is withheld
	// Exported lists prefixes sent to the peer with their origin.
	Exported []Path
	// Rendered is the engine's policy as text (for experts).
	Rendered string
}

// Speaker is a BGP speaker configured declaratively.
type Speaker interface {
	// Set applies cfg: adds, updates and removes peers and paths so the
	// speaker matches it. It is idempotent. A peer whose configuration cannot
	// work is not configured and reported in Peers with StateRejected and the
	// reason; Set still applies the rest and returns nil unless the global
	// part (ASN, router ID) is invalid or the engine fails. Changing ASN,
	// RouterID or ListenPort restarts the speaker.
	Set(ctx context.Context, cfg Config) error
	// Peers reports every configured peer's session.
	Peers(ctx context.Context) ([]PeerStatus, error)
	// Routes lists routes per the query.
	Routes(ctx context.Context, q RouteQuery) ([]Route, error)
	// Policies shows what is exported to whom, with the next-hop rewrite.
	Policies(ctx context.Context) ([]PolicyView, error)
	// Learned delivers, after every change, the complete set of best routes
	// received from peers with Learn set. Only the latest set is kept: a slow
	// reader skips intermediate ones. Closed by Close.
	Learned() <-chan []Route
	// Close stops the speaker: sessions are closed (peers with graceful
	// restart keep our routes as stale for their restart time).
	Close() error
}

// Options are process-level settings of a speaker.
type Options struct {
	// GRPCListen, when set (127.0.0.1:PORT), serves the engine's own gRPC API
	// so the upstream `gobgp` CLI can inspect the speaker.
	GRPCListen string
	// GRPCReadOnly rejects every mutating gRPC method.
	GRPCReadOnly bool
	// Addrs reads interface addresses and routes; nil = the current network
	// namespace through netlink.
	Addrs AddrSource
	// Resync re-resolves peers in error and next hops this often; 0 = 30 s.
	Resync time.Duration
}

// Factory builds a Speaker; New is the GoBGP one.
type Factory func(log *slog.Logger, opts Options) (Speaker, error)

// IfAddr is one address of an interface with the flags next-hop selection
// needs. Link-local is derived from Prefix.
type IfAddr struct {
	Prefix     netip.Prefix
	Deprecated bool // preferred lifetime 0
	Temporary  bool // RFC 4941 privacy address
	Dynamic    bool // from SLAAC/DHCP, with a valid lifetime
}

// AddrSource reads the addresses the speaker needs (read-only).
type AddrSource interface {
	// InterfaceAddrs lists the addresses of the named interface.
	InterfaceAddrs(name string) ([]IfAddr, error)
	// InterfaceOf names the interface holding addr.
	InterfaceOf(addr netip.Addr) (string, error)
	// SourceFor is the source address the kernel uses to reach dst.
	SourceFor(dst netip.Addr) (netip.Addr, error)
}
