package datapath

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The programs forward with the MAC that bpf_fib_lookup reads from the
// kernel's neighbour table, and nothing they send confirms or refreshes
// the entry. With every packet of a flow redirected, the entry of a next
// hop on the uplink goes stale and stays so; a next hop that changes its
// MAC (a replaced node or NIC, the same address) would be sent to at its
// old MAC until the stack itself happened to send there. So the fast path
// keeps the neighbours it forwards to as kernel-managed entries
// (NTF_EXT_MANAGED, Linux 5.16+): the kernel re-probes them whenever they
// are not reachable, as it does for Cilium's next hops. They also carry
// NTF_EXT_LEARNED (exempt from garbage collection), and that flag pair on
// an uplink marks the entries as the fast path's: `ip neigh` shows them as
// "extern_learn managed".

// fpNextHop is one neighbour the programs forward to: an address on an
// uplink.
type fpNextHop struct {
	ifindex int
	ip      netip.Addr
}

// fpUplinkIndexes are the devices among devs whose neighbours the programs
// use: the attached uplinks that are not Strait's VXLAN devices (their
// neighbours are the overlay's permanent entries).
func fpUplinkIndexes(devs []fpDevice) map[int]bool {
	out := map[int]bool{}
	for _, dv := range devs {
		if dv.prog == fpProgToPod && !IsVTEPDevice(dv.name) {
			out[dv.ifindex] = true
		}
	}
	return out
}

// fpNextHops lists the neighbours the programs forward to out of the
// uplinks: the gateways of main-table routes into the pod ranges (the
// overlay's native routes and BGP-learned ones alike), and, for every
// remote VTEP the programs encapsulate to, the underlay next hop of the
// main table's best route to it (the VTEP itself when that route has no
// gateway). Policy routing is not followed; a next hop missed here is
// resolved by the stack as before.
func fpNextHops(routes []netlink.Route, uplinks map[int]bool, ranges []netip.Prefix, vteps map[fpVTEPKey][4]byte) map[fpNextHop]bool {
	out := map[fpNextHop]bool{}
	add := func(idx int, gw []byte) {
		ip, ok := netip.AddrFromSlice(gw)
		if ok && uplinks[idx] && !ip.Unmap().IsUnspecified() {
			out[fpNextHop{ifindex: idx, ip: ip.Unmap()}] = true
		}
	}
	// The IPv4 unicast routes by destination, the lowest metric kept, for
	// the VTEPs' longest matches (at most 33 lookups each).
	v4 := map[netip.Prefix]*netlink.Route{}
	for i := range routes {
		r := &routes[i]
		if r.Type != unix.RTN_UNICAST {
			continue
		}
		dst, ok := prefixOf(r.Dst)
		if !ok {
			if r.Dst != nil || (r.Family != unix.AF_INET && r.Family != unix.AF_INET6) {
				continue
			}
			dst = defaultPrefix(r.Family)
		}
		for _, rg := range ranges {
			if rg.Bits() <= dst.Bits() && rg.Contains(dst.Addr()) {
				add(r.LinkIndex, r.Gw)
				for _, nh := range r.MultiPath {
					add(nh.LinkIndex, nh.Gw)
				}
				break
			}
		}
		if b, ok := v4[dst]; dst.Addr().Is4() && (!ok || r.Priority < b.Priority) {
			v4[dst] = r
		}
	}
	for _, v := range vteps {
		vtep := netip.AddrFrom4(v)
		for bits := 32; bits >= 0; bits-- {
			r, ok := v4[netip.PrefixFrom(vtep, bits).Masked()]
			switch {
			case !ok:
				continue
			case len(r.MultiPath) > 0:
			case r.Gw != nil:
				add(r.LinkIndex, r.Gw)
			default:
				add(r.LinkIndex, vtep.AsSlice())
			}
			break
		}
	}
	return out
}

// fpOwnNeigh says whether n is one of the fast path's managed next hops.
func fpOwnNeigh(n netlink.Neigh) bool {
	return n.Flags&netlink.NTF_EXT_LEARNED != 0 && n.FlagsExt&netlink.NTF_EXT_MANAGED != 0
}

// syncNextHops makes the fast path's managed neighbours on the uplinks
// exactly want: missing ones are created (an existing dynamic entry keeps
// its address and state and becomes managed), ones no longer wanted are
// deleted, and the stack resolves them on demand again. A permanent or
// NOARP entry is left as its owner set it. It returns how many of want are
// in place.
func syncNextHops(h netlinksafe.Handle, uplinks map[int]bool, want map[fpNextHop]bool) (int, error) {
	have := map[fpNextHop]bool{}
	var errs []error
	for idx := range uplinks {
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			ns, err := neighList(h, idx, fam)
			if err != nil {
				return 0, fmt.Errorf("list neighbours: %w", err)
			}
			for _, n := range ns {
				ip, ok := netip.AddrFromSlice(n.IP) // neighList keeps idx's only
				if !ok {
					continue
				}
				k := fpNextHop{ifindex: idx, ip: ip.Unmap()}
				switch {
				case want[k] && (fpOwnNeigh(n) || n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0):
					have[k] = true
				case !want[k] && fpOwnNeigh(n):
					if err := h.NeighDel(&n); err != nil && !isGone(err) {
						errs = append(errs, fmt.Errorf("delete managed neighbour %s: %w", k.ip, err))
					}
				}
			}
		}
	}
	placed := len(have)
	for k := range want {
		if have[k] {
			continue
		}
		n := &netlink.Neigh{LinkIndex: k.ifindex, Family: netFamily(k.ip), IP: k.ip.AsSlice(),
			State: netlink.NUD_NONE, Flags: netlink.NTF_EXT_LEARNED, FlagsExt: netlink.NTF_EXT_MANAGED}
		if err := h.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("managed neighbour %s (ifindex %d): %w", k.ip, k.ifindex, err))
			continue
		}
		placed++
	}
	return placed, errors.Join(errs...)
}

// dropNextHops deletes the fast path's managed neighbours on the named
// uplinks (those that exist), when the fast path is switched off.
func dropNextHops(h netlinksafe.Handle, names []string) error {
	uplinks := map[int]bool{}
	for _, name := range names {
		l, err := h.LinkByName(name)
		switch {
		case errors.As(err, new(netlink.LinkNotFoundError)):
			continue
		case err != nil:
			return fmt.Errorf("uplink %s: %w", name, err)
		case !IsVTEPDevice(name):
			uplinks[l.Attrs().Index] = true
		}
	}
	_, err := syncNextHops(h, uplinks, nil)
	return err
}

// FastPathNextHops lists the fast path's managed neighbour entries in the
// kernel, with their current address and state, sorted by device and
// address.
func (d *Datapath) FastPathNextHops() ([]NextHop, error) {
	var out []NextHop
	err := d.withNode(func(h netlinksafe.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		names := map[int]string{}
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			ns, err := neighList(h, 0, fam)
			if err != nil {
				return fmt.Errorf("list neighbours: %w", err)
			}
			for _, n := range ns {
				ip, ok := netip.AddrFromSlice(n.IP)
				if !ok || !fpOwnNeigh(n) {
					continue
				}
				out = append(out, NextHop{Dev: names[n.LinkIndex], IP: ip.Unmap(), MAC: n.HardwareAddr, State: nudName(n.State)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fast path next hops: %w", err)
	}
	slices.SortFunc(out, func(a, b NextHop) int { return cmp.Or(cmp.Compare(a.Dev, b.Dev), a.IP.Compare(b.IP)) })
	return out, nil
}

// nudName names a neighbour's NUD state as ip-neighbour(8) does, lower case.
func nudName(state int) string {
	for _, s := range []struct {
		bit  int
		name string
	}{{netlink.NUD_REACHABLE, "reachable"}, {netlink.NUD_STALE, "stale"}, {netlink.NUD_DELAY, "delay"},
		{netlink.NUD_PROBE, "probe"}, {netlink.NUD_INCOMPLETE, "incomplete"}, {netlink.NUD_FAILED, "failed"},
		{netlink.NUD_NOARP, "noarp"}, {netlink.NUD_PERMANENT, "permanent"}} {
		if state&s.bit != 0 {
			return s.name
		}
	}
	return "none"
}
