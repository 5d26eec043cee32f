package datapath

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Resync makes the kernel's overlay entries exactly what peers want: it
// dumps the routes with RouteProtocol in the main table and the permanent
// neighbours and FDB entries of the VTEPDevicePrefix devices, adds or
// replaces what is missing or different, and deletes what no peer wants
// (routes of other protocols are never looked at). It also rebuilds the
// in-memory state from peers, so that after an agent restart the first
// Resync adopts the kernel's entries as they are: no flush, and no
// operation at all when they are already right. repaired lists each change,
// human readable.
func (d *Datapath) Resync(ctx context.Context, peers []Peer) (OpStats, []string, error) {
	stats, repaired, err := d.resync(ctx, peers)
	if err != nil {
		return stats, repaired, fmt.Errorf("resync overlay: %w", err)
	}
	return stats, repaired, nil
}

func (d *Datapath) resync(ctx context.Context, peers []Peer) (OpStats, []string, error) {
	if err := ctx.Err(); err != nil {
		return OpStats{}, nil, err
	}
	o := &d.overlay
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	wants := make(map[string]map[entryKey]entryVal, len(peers))
	holders := map[entryKey][]string{}
	for _, p := range peers {
		if _, dup := wants[p.Name]; dup {
			return OpStats{}, nil, fmt.Errorf("peer %s listed twice", p.Name)
		}
		want, err := o.peerEntries(p)
		if err != nil {
			return OpStats{}, nil, fmt.Errorf("peer %s: %w", p.Name, err)
		}
		if len(want) == 0 {
			continue
		}
		wants[p.Name] = want
		for k := range want {
			holders[k] = append(holders[k], p.Name)
		}
	}
	var (
		actual map[entryKey]entryVal
		extras []change
	)
	err := d.withNode(func(h netlinksafe.Handle) error {
		var err error
		actual, extras, err = o.dump(h)
		return err
	})
	if err != nil {
		return OpStats{}, nil, err
	}

	// Adopt the kernel's state, then converge it like any other change.
	o.peers, o.holders, o.installed, o.dirty = wants, holders, actual, map[entryKey]string{}
	affected := make([]entryKey, 0, len(actual)+len(holders))
	for k := range actual {
		affected = append(affected, k)
	}
	for k := range holders {
		affected = append(affected, k)
	}
	changes := append(o.plan(affected), extras...)
	// Kernel first: a node joining a large cluster converges before its
	// thousands of repair descriptions are rendered. (actual is the
	// installed set, which applying updates: keep what each entry was.)
	type before struct {
		val entryVal
		had bool
	}
	was := make([]before, len(changes))
	for i, c := range changes {
		was[i].val, was[i].had = actual[c.key]
	}
	stats, err := d.applyChanges(ctx, changes, "")
	// The caller reports what was repaired (once, summarised past a few).
	repaired := make([]string, 0, len(changes))
	for i, c := range changes {
		peer := o.owner(c.key)
		if c.reason != "" {
			peer = ""
		}
		what := c.key.entry(c.val, peer).String()
		old, had := was[i].val, was[i].had
		switch {
		case c.reason != "":
			repaired = append(repaired, what+": "+c.reason)
		case c.del:
			repaired = append(repaired, what+": no peer wants it, deleted")
		case had:
			repaired = append(repaired, fmt.Sprintf("%s: was %s, replaced", what, c.key.entry(old, "")))
		default:
			repaired = append(repaired, what+": missing, added")
		}
	}
	return stats, repaired, err
}

// dump reads the overlay entries in the kernel. extras are deletions of
// further remotes of an FDB MAC (one per unicast MAC is wanted).
func (o *overlayState) dump(h netlinksafe.Handle) (map[entryKey]entryVal, []change, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, nil, fmt.Errorf("list links: %w", err)
	}
	names := make(map[int]string, len(links))
	vteps := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		if IsVTEPDevice(a.Name) {
			vteps[a.Index] = a.Name
			o.links[a.Name] = a.Index
		}
	}
	actual := map[entryKey]entryVal{}
	filter := &netlink.Route{Protocol: netlink.RouteProtocol(RouteProtocol), Table: unix.RT_TABLE_MAIN}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(fam, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, nil, fmt.Errorf("list routes with protocol %d: %w", RouteProtocol, err)
		}
		for _, r := range routes {
			k, v := routeEntry(r, fam, names)
			actual[k] = v
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		neighs, err := neighList(h, 0, fam)
		if err != nil {
			return nil, nil, fmt.Errorf("list neighbours: %w", err)
		}
		for _, n := range neighs {
			dev, ok := vteps[n.LinkIndex]
			ip, ipOK := netip.AddrFromSlice(n.IP)
			if !ok || !ipOK || n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			actual[entryKey{kind: kindNeigh, dev: dev, ip: ip.Unmap()}] = entryVal{mac: string(n.HardwareAddr)}
		}
	}
	fdb, err := neighList(h, 0, unix.AF_BRIDGE)
	if err != nil {
		return nil, nil, fmt.Errorf("list fdb: %w", err)
	}
	var extras []change
	for _, n := range fdb {
		dev, ok := vteps[n.LinkIndex]
		ip, ipOK := netip.AddrFromSlice(n.IP)
		if !ok || !ipOK || n.Flags&netlink.NTF_SELF == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		k, v := entryKey{kind: kindFDB, dev: dev, mac: string(n.HardwareAddr)}, entryVal{ip: ip.Unmap()}
		if _, dup := actual[k]; dup {
			extras = append(extras, change{key: k, del: true, val: v, reason: "further remote of the MAC, deleted"})
			continue
		}
		actual[k] = v
	}
	return actual, extras, nil
}

// routeEntry converts a dumped route; a multipath or non-unicast route
// gets a value no peer wants, so that it is replaced or deleted.
func routeEntry(r netlink.Route, fam int, names map[int]string) (entryKey, entryVal) {
	dst, ok := prefixOf(r.Dst)
	if !ok {
		dst = defaultPrefix(fam)
	}
	k := entryKey{kind: kindRoute, dst: dst}
	if r.Type != unix.RTN_UNICAST || len(r.MultiPath) > 0 {
		return k, entryVal{dev: fmt.Sprintf("(type %d, %d nexthops)", r.Type, len(r.MultiPath))}
	}
	gw, _ := netip.AddrFromSlice(r.Gw)
	return k, entryVal{ip: gw.Unmap(), dev: names[r.LinkIndex], onlink: r.Flags&int(netlink.FLAG_ONLINK) != 0}
}

// OverlayState lists the overlay entries in the kernel, each with the peer
// it serves according to this Datapath's memory (UnknownPeer if none), in
// install order: FDB, neighbours, routes.
func (d *Datapath) OverlayState(ctx context.Context) ([]ManagedEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("overlay state: %w", err)
	}
	o := &d.overlay
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	var (
		actual map[entryKey]entryVal
		extras []change
	)
	err := d.withNode(func(h netlinksafe.Handle) error {
		var err error
		actual, extras, err = o.dump(h)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("overlay state: %w", err)
	}
	keys := make([]entryKey, 0, len(actual))
	for k := range actual {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	entries := make([]ManagedEntry, 0, len(keys)+len(extras))
	for _, k := range keys {
		entries = append(entries, k.entry(actual[k], o.owner(k)))
	}
	for _, c := range extras {
		entries = append(entries, c.key.entry(c.val, UnknownPeer))
	}
	return entries, nil
}
