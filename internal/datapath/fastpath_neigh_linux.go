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
	// the VTEPs' longest matches: one lookup per prefix length the table
	// has (at most 33, a handful in practice), longest first.
	v4 := map[netip.Prefix]*netlink.Route{}
	var lens [33]bool
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
		if inRanges(ranges, dst) {
			add(r.LinkIndex, r.Gw)
			for _, nh := range r.MultiPath {
				add(nh.LinkIndex, nh.Gw)
			}
		}
		if b, ok := v4[dst]; dst.Addr().Is4() && (!ok || r.Priority < b.Priority) {
			v4[dst] = r
			lens[dst.Bits()] = true
		}
	}
	var byLen []int
	for bits := 32; bits >= 0; bits-- {
		if lens[bits] {
			byLen = append(byLen, bits)
		}
	}
	for _, v := range vteps {
		vtep := netip.AddrFrom4(v)
		for _, bits := range byLen {
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

// inRanges says whether dst lies inside one of ranges.
func inRanges(ranges []netip.Prefix, dst netip.Prefix) bool {
	return slices.ContainsFunc(ranges, func(rg netip.Prefix) bool {
		return rg.Bits() <= dst.Bits() && rg.Contains(dst.Addr())
	})
}

// manageNewNextHops makes the next hops of the overlay's new entries (done:
// its successful changes) managed neighbours at once (manageHops): the
// gateway of a new native route, and a new IPv4 VTEP's underlay next hop.
// It holds fast.mu.
func (d *Datapath) manageNewNextHops(done []change) {
	var gws []fpRouteHop
	var vteps []netip.Addr
	for _, c := range done {
		switch {
		case c.del:
		case c.key.kind == kindRoute && c.val.ip.IsValid():
			if idx, ok := d.fast.uplinks[c.val.dev]; ok {
				gws = append(gws, fpRouteHop{dst: c.key.dst, hop: fpNextHop{ifindex: idx, ip: c.val.ip.Unmap()}})
			}
		case c.key.kind == kindFDB && c.val.ip.Is4():
			vteps = append(vteps, c.val.ip)
		}
	}
	d.manageHops(gws, vteps)
}

// fpRouteHop is a route's destination and its next hop.
type fpRouteHop struct {
	dst netip.Prefix
	hop fpNextHop
}

// manageHops makes next hops managed neighbours at once, as fpNextHops
// would at the next SetFastPath, for routes just installed: each gateway of
// gws on an uplink whose route goes into the pod ranges, and the underlay
// next hop of each VTEP (from the main table; one route lookup each). A new
// node's first packets then find its next hop resolved or being resolved,
// and a MAC change right after it appeared is followed. An existing entry
// becomes managed as in syncNextHops (a permanent or NOARP one is left as
// its owner set it). Nothing is deleted here, since a next hop may serve
// other routes; the next SetFastPath deletes those no longer wanted.
// Errors are logged: the next SetFastPath repairs. It holds fast.mu.
func (d *Datapath) manageHops(gws []fpRouteHop, vteps []netip.Addr) {
	if len(d.fast.uplinks) == 0 {
		return
	}
	uplinks := map[int]bool{}
	for _, idx := range d.fast.uplinks {
		uplinks[idx] = true
	}
	var hops []fpNextHop
	for _, g := range gws {
		if uplinks[g.hop.ifindex] && inRanges(d.fast.ranges, g.dst) {
			hops = append(hops, g.hop)
		}
	}
	if len(hops) == 0 && len(vteps) == 0 {
		return
	}
	err := d.withNode(func(h netlinksafe.Handle) error {
		var errs []error
		for _, vtep := range vteps {
			rs, err := h.RouteGet(vtep.AsSlice())
			if err != nil {
				errs = append(errs, fmt.Errorf("route to VTEP %s: %w", vtep, err))
				continue
			}
			// fpNextHops reads the main table only; a lookup answered
			// by another table (policy routing) is left to it.
			if len(rs) == 1 && rs[0].Table == unix.RT_TABLE_MAIN && uplinks[rs[0].LinkIndex] {
				gw := vtep
				if ip, ok := netip.AddrFromSlice(rs[0].Gw); ok && !ip.Unmap().IsUnspecified() {
					gw = ip.Unmap()
				}
				hops = append(hops, fpNextHop{ifindex: rs[0].LinkIndex, ip: gw})
			}
		}
		for _, k := range hops {
			n := managedNeigh(k)
			err := h.NeighAdd(n)
			if errors.Is(err, unix.EEXIST) {
				err = manageExisting(h, n, k)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("managed neighbour %s (ifindex %d): %w", k.ip, k.ifindex, err))
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		d.log.Warn("fast path: manage a new route's next hop (the next resync repairs it)", "error", err)
	}
}

// manageExisting makes the existing neighbour entry for k managed (n: the
// managed entry), as syncNextHops does: a dynamic entry keeps its address and
// state; a permanent or NOARP one, or one already managed, is left alone.
func manageExisting(h netlinksafe.Handle, n *netlink.Neigh, k fpNextHop) error {
	ns, err := neighList(h, k.ifindex, n.Family)
	if err != nil {
		return fmt.Errorf("list neighbours: %w", err)
	}
	for _, e := range ns {
		if ip, ok := netip.AddrFromSlice(e.IP); !ok || ip.Unmap() != k.ip {
			continue
		}
		if fpInPlace(e) {
			return nil
		}
		break
	}
	return h.NeighSet(n)
}

// fpOwnNeigh says whether n is one of the fast path's managed next hops.
func fpOwnNeigh(n netlink.Neigh) bool {
	return n.Flags&netlink.NTF_EXT_LEARNED != 0 && n.FlagsExt&netlink.NTF_EXT_MANAGED != 0
}

// fpInPlace says whether an existing entry for a wanted next hop stays as it
// is: already managed, or permanent or NOARP (left as its owner set it).
func fpInPlace(n netlink.Neigh) bool {
	return fpOwnNeigh(n) || n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
}

// managedNeigh is the managed entry for next hop k: no address and state of
// its own (an existing dynamic entry keeps both when replaced by it).
func managedNeigh(k fpNextHop) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: k.ifindex, Family: netFamily(k.ip), IP: k.ip.AsSlice(),
		State: netlink.NUD_NONE, Flags: netlink.NTF_EXT_LEARNED, FlagsExt: netlink.NTF_EXT_MANAGED}
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
				case want[k] && fpInPlace(n):
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
		if err := h.NeighSet(managedNeigh(k)); err != nil {
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
