package bgp

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"time"
)

// plan is a Config resolved against the machine: every peer's local address
// and per-family next hop (or the reason a family or the peer is withheld),
// and which paths go to which peer. The engine adapter only translates it.
type plan struct {
	ASN        uint32
	RouterID   netip.Addr
	ListenPort int32
	Peers      []peerPlan // sorted by name
	Paths      []Path     // sorted by prefix, attributes normalised
}

type peerPlan struct {
	Peer     Peer // defaults filled in
	Local    netip.Addr
	Families []familyPlan
	// Rejected: the peer is not configured at all; why.
	Rejected string
	// Denied are paths restricted to other peers.
	Denied []netip.Prefix
}

type familyPlan struct {
	Family  Family
	NextHop netip.Addr // invalid = withheld
	Reason  string     // why withheld
}

// extNHFunc says whether the peer at addr advertised RFC 8950 for IPv4.
type extNHFunc func(addr netip.Addr) bool

// validateGlobal checks the speaker-wide settings.
func validateGlobal(cfg Config) error {
	if cfg.ASN == 0 {
		return errors.New("bgp config: ASN is 0")
	}
	if !cfg.RouterID.Is4() || cfg.RouterID.IsUnspecified() {
		return fmt.Errorf("bgp config: router ID %v is not a non-zero IPv4 address", cfg.RouterID)
	}
	if cfg.ListenPort < -1 || cfg.ListenPort > 65535 {
		return fmt.Errorf("bgp config: listen port %d out of range", cfg.ListenPort)
	}
	return nil
}

// makePlan resolves cfg. Per-peer problems reject that peer or withhold a
// family with a reason; only global problems are errors.
func makePlan(cfg Config, src AddrSource, extNH extNHFunc) (plan, error) {
	if err := validateGlobal(cfg); err != nil {
		return plan{}, err
	}
	p := plan{ASN: cfg.ASN, RouterID: cfg.RouterID, ListenPort: cfg.ListenPort}
	paths, err := normalisePaths(cfg.Paths)
	if err != nil {
		return plan{}, err
	}
	p.Paths = paths
	names := map[string]bool{}
	addrs := map[netip.Addr]bool{}
	for _, peer := range cfg.Peers {
		pp := planPeer(cfg, withDefaults(cfg, peer), src, extNH)
		switch {
		case peer.Name == "":
			pp.Rejected = fmt.Sprintf("peer %s has no name", peer.Address)
		case names[peer.Name]:
			pp.Rejected = fmt.Sprintf("duplicate peer name %q", peer.Name)
		case addrs[peer.Address.Unmap()]:
			pp.Rejected = fmt.Sprintf("another peer already has address %s", peer.Address)
		}
		names[peer.Name] = true
		addrs[peer.Address.Unmap()] = true
		for _, path := range paths {
			if len(path.Peers) > 0 && !slices.Contains(path.Peers, peer.Name) {
				pp.Denied = append(pp.Denied, path.Prefix)
			}
		}
		p.Peers = append(p.Peers, pp)
	}
	slices.SortStableFunc(p.Peers, func(a, b peerPlan) int { return cmp.Compare(a.Peer.Name, b.Peer.Name) })
	return p, nil
}

func withDefaults(cfg Config, p Peer) Peer {
	p.Address = p.Address.Unmap()
	if len(p.Families) == 0 {
		p.Families = []Family{IPv4Unicast, IPv6Unicast}
	}
	p.Families = slices.Clone(p.Families)
	slices.Sort(p.Families)
	p.Families = slices.Compact(p.Families)
	if p.Timers.Keepalive == 0 {
		p.Timers.Keepalive = DefaultTimers.Keepalive
	}
	if p.Timers.Hold == 0 {
		p.Timers.Hold = max(DefaultTimers.Hold, 3*p.Timers.Keepalive)
	}
	if p.Timers.ConnectRetry == 0 {
		p.Timers.ConnectRetry = DefaultTimers.ConnectRetry
	}
	if p.GracefulRestart == nil {
		p.GracefulRestart = cfg.GracefulRestart
	}
	if gr := p.GracefulRestart; gr != nil && gr.RestartTime == 0 {
		p.GracefulRestart = &GracefulRestart{RestartTime: 120 * time.Second}
	}
	if b := p.BFD; b != nil {
		c := *b
		c.MinTx = cmp.Or(c.MinTx, 300*time.Millisecond)
		c.MinRx = cmp.Or(c.MinRx, 300*time.Millisecond)
		c.Multiplier = cmp.Or(c.Multiplier, 3)
		p.BFD = &c
	}
	return p
}

func planPeer(cfg Config, peer Peer, src AddrSource, extNH extNHFunc) peerPlan {
	pp := peerPlan{Peer: peer}
	if err := validatePeer(cfg, peer); err != nil {
		pp.Rejected = err.Error()
		return pp
	}
	local, err := pickLocal(peer, src)
	if err != nil {
		pp.Rejected = err.Error()
		return pp
	}
	pp.Local = local
	in := NextHopInput{Policy: peer.NextHop, Local: local, ExtendedNextHop: extNH != nil && extNH(peer.Address)}
	if src != nil {
		if name, err := src.InterfaceOf(local); err == nil {
			in.LocalIfAddrs, _ = src.InterfaceAddrs(name)
		}
		if peer.NextHop.Mode == NextHopFromInterface && peer.NextHop.Interface != "" {
			in.PolicyIfAddrs, _ = src.InterfaceAddrs(peer.NextHop.Interface)
		}
	}
	for _, f := range peer.Families {
		in.Family = f
		nh, err := ResolveNextHop(in)
		fp := familyPlan{Family: f, NextHop: nh}
		if err != nil {
			fp.Reason = err.Error()
		}
		pp.Families = append(pp.Families, fp)
	}
	return pp
}

func validatePeer(cfg Config, p Peer) error {
	switch {
	case !p.Address.IsValid() || p.Address.IsUnspecified():
		return fmt.Errorf("peer %q: no address", p.Name)
	case p.ASN == 0:
		return fmt.Errorf("peer %q: ASN is 0", p.Name)
	case p.Passive && cfg.ListenPort == -1:
		return fmt.Errorf("peer %q: passive, but the speaker does not listen (listenPort -1)", p.Name)
	case p.Timers.Hold < 3*time.Second || p.Timers.Keepalive > p.Timers.Hold:
		return fmt.Errorf("peer %q: hold time %v must be >= 3s and >= keepalive %v", p.Name, p.Timers.Hold, p.Timers.Keepalive)
	case p.Address.IsLinkLocalUnicast():
		return fmt.Errorf("peer %q: link-local peer addresses are not supported", p.Name)
	}
	for _, f := range p.Families {
		if f != IPv4Unicast && f != IPv6Unicast {
			return fmt.Errorf("peer %q: unsupported family %v", p.Name, f)
		}
	}
	return nil
}

// normalisePaths validates and sorts paths; one path per prefix.
func normalisePaths(in []Path) ([]Path, error) {
	out := make([]Path, 0, len(in))
	seen := make(map[netip.Prefix]bool, len(in))
	for _, p := range in {
		if !p.Prefix.IsValid() {
			return nil, fmt.Errorf("bgp config: invalid path prefix %v", p.Prefix)
		}
		if p.Prefix.Addr().Is4In6() {
			return nil, fmt.Errorf("bgp config: path prefix %v is IPv4-mapped", p.Prefix)
		}
		p.Prefix = p.Prefix.Masked()
		if seen[p.Prefix] {
			return nil, fmt.Errorf("bgp config: prefix %v listed twice", p.Prefix)
		}
		seen[p.Prefix] = true
		p.Communities = slices.Compact(slices.Sorted(slices.Values(p.Communities)))
		p.LargeCommunities = slices.Clone(p.LargeCommunities)
		slices.SortFunc(p.LargeCommunities, func(a, b LargeCommunity) int {
			return cmp.Or(cmp.Compare(a.GlobalAdmin, b.GlobalAdmin), cmp.Compare(a.LocalData1, b.LocalData1), cmp.Compare(a.LocalData2, b.LocalData2))
		})
		p.LargeCommunities = slices.Compact(p.LargeCommunities)
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Path) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
	return out, nil
}

// pathAttrs digests what a path announces besides its prefix (its
// communities): an unchanged digest means re-announcing the path changes
// nothing. The speaker keeps only this per announced prefix, not a copy of
// the path (at 100k paths the copies were most of Strait's own memory).
func pathAttrs(p Path) uint64 {
	h := fnv.New64a()
	var b [12]byte
	for _, c := range p.Communities {
		binary.BigEndian.PutUint32(b[:4], uint32(c))
		h.Write(b[:4])
	}
	h.Write([]byte{0xff}) // separates the two lists
	for _, c := range p.LargeCommunities {
		binary.BigEndian.PutUint32(b[0:4], c.GlobalAdmin)
		binary.BigEndian.PutUint32(b[4:8], c.LocalData1)
		binary.BigEndian.PutUint32(b[8:12], c.LocalData2)
		h.Write(b[:])
	}
	return h.Sum64()
}
