package bgp

import (
	"errors"
	"fmt"
	"net/netip"
)

// NextHopInput is everything next-hop selection depends on for one peer and
// one route family. Resolution is pure: the caller reads the interfaces.
type NextHopInput struct {
	Policy NextHopPolicy
	// Local is the session's local address (its family is the session's).
	Local netip.Addr
	// Family of the routes the next hop is for.
	Family Family
	// LocalIfAddrs are the addresses of the interface holding Local (Auto).
	LocalIfAddrs []IfAddr
	// PolicyIfAddrs are the addresses of Policy.Interface (FromInterface).
	PolicyIfAddrs []IfAddr
	// ExtendedNextHop: the peer advertised RFC 8950 extended next hop for
	// IPv4 unicast over IPv6 (known once the session is up).
	ExtendedNextHop bool
}

// ErrNoNextHop is wrapped by every "this family cannot be advertised" result.
var ErrNoNextHop = errors.New("no usable next hop")

// ResolveNextHop picks the next hop to send for in.Family, or explains why
// the family must not be advertised to this peer. It never returns an
// IPv4-mapped IPv6 address or a link-local address; it returns an IPv6 next
// hop for IPv4 routes (RFC 8950) only on an IPv6 session whose peer advertised
// the extended-nexthop capability, and only when no IPv4 address is usable.
func ResolveNextHop(in NextHopInput) (netip.Addr, error) {
	local := in.Local.Unmap()
	if !local.IsValid() {
		return netip.Addr{}, fmt.Errorf("%w for %s: the session's local address is not known", ErrNoNextHop, in.Family)
	}
	sessionFamily := FamilyOf(local)
	var cand netip.Addr
	var why string
	switch in.Policy.Mode {
	case "", NextHopAuto:
		if in.Family == sessionFamily {
			return local, nil
		}
		cand = firstUsable(in.LocalIfAddrs, in.Family)
		why = fmt.Sprintf("the interface holding the session address %s has no usable %s address", local, familyWord(in.Family))
	case NextHopFixed:
		cand = in.Policy.IPv4
		if in.Family == IPv6Unicast {
			cand = in.Policy.IPv6
		}
		if cand.IsValid() {
			if err := checkNextHop(cand, in.Family); err != nil {
				return netip.Addr{}, err
			}
			return cand, nil
		}
		why = fmt.Sprintf("nextHop.%s is not set", familyWord(in.Family))
	case NextHopFromInterface:
		if in.Policy.Interface == "" {
			return netip.Addr{}, fmt.Errorf("%w for %s: mode FromInterface needs nextHop.interface", ErrNoNextHop, in.Family)
		}
		if in.Family == sessionFamily && hasAddr(in.PolicyIfAddrs, local) {
			return local, nil
		}
		cand = firstUsable(in.PolicyIfAddrs, in.Family)
		why = fmt.Sprintf("interface %s has no usable %s address", in.Policy.Interface, familyWord(in.Family))
	default:
		return netip.Addr{}, fmt.Errorf("%w for %s: unknown next-hop mode %q (want Auto, Fixed or FromInterface)", ErrNoNextHop, in.Family, in.Policy.Mode)
	}
	if cand.IsValid() {
		return cand, nil
	}
	// IPv4 routes over an IPv6 session may use the session's IPv6 address as
	// next hop, but only if the peer said it understands that (RFC 8950).
	if in.Family == IPv4Unicast && sessionFamily == IPv6Unicast && !local.IsLinkLocalUnicast() {
		if in.ExtendedNextHop {
			return local, nil
		}
		return netip.Addr{}, fmt.Errorf("%w for %s: %s, and the peer did not negotiate extended-nexthop (RFC 8950) for an IPv6 next hop", ErrNoNextHop, in.Family, why)
	}
	return netip.Addr{}, fmt.Errorf("%w for %s: %s", ErrNoNextHop, in.Family, why)
}

// checkNextHop rejects next hops no peer can install.
func checkNextHop(a netip.Addr, f Family) error {
	switch {
	case a.Is4In6():
		return fmt.Errorf("%w for %s: %s is IPv4-mapped; give a real address", ErrNoNextHop, f, a)
	case a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
		return fmt.Errorf("%w for %s: %s is not a global unicast address", ErrNoNextHop, f, a)
	case FamilyOf(a) != f:
		return fmt.Errorf("%w for %s: %s is of the other family", ErrNoNextHop, f, a)
	}
	return nil
}

// usable says whether an interface address can be a next hop.
func usable(a IfAddr, f Family) bool {
	ip := a.Prefix.Addr()
	return a.Prefix.IsValid() && !a.Deprecated && !a.Temporary && !a.Dynamic &&
		checkNextHop(ip, f) == nil
}

func firstUsable(addrs []IfAddr, f Family) netip.Addr {
	for _, a := range addrs {
		if usable(a, f) {
			return a.Prefix.Addr()
		}
	}
	return netip.Addr{}
}

func hasAddr(addrs []IfAddr, ip netip.Addr) bool {
	for _, a := range addrs {
		if a.Prefix.Addr() == ip {
			return true
		}
	}
	return false
}

func familyWord(f Family) string {
	if f == IPv4Unicast {
		return "ipv4"
	}
	return "ipv6"
}

// pickLocal chooses the session's local address: configured, else the first
// usable address of SourceInterface in the peer's family, else the kernel's
// source for the peer.
func pickLocal(p Peer, src AddrSource) (netip.Addr, error) {
	if p.LocalAddress.IsValid() {
		if FamilyOf(p.LocalAddress) != FamilyOf(p.Address) {
			return netip.Addr{}, fmt.Errorf("local address %s and peer %s are of different families", p.LocalAddress, p.Address)
		}
		return p.LocalAddress.Unmap(), nil
	}
	if src == nil {
		return netip.Addr{}, errors.New("no address source to find the session's local address")
	}
	if p.SourceInterface != "" {
		addrs, err := src.InterfaceAddrs(p.SourceInterface)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("source interface: %w", err)
		}
		for _, a := range addrs {
			ip := a.Prefix.Addr()
			if FamilyOf(ip) == FamilyOf(p.Address) && !ip.IsLinkLocalUnicast() && !a.Deprecated && !a.Temporary {
				return ip, nil
			}
		}
		return netip.Addr{}, fmt.Errorf("source interface %s has no usable %s address", p.SourceInterface, familyWord(FamilyOf(p.Address)))
	}
	a, err := src.SourceFor(p.Address.Unmap())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("find the source address towards %s: %w", p.Address, err)
	}
	return a.Unmap(), nil
}
