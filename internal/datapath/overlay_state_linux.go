package datapath

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
)

// The in-memory side of the overlay: what each peer wants, which peer owns
// each kernel entry, and what this Datapath believes the kernel holds. It
// makes SetPeer and DeletePeer O(entries of that peer), and Resync rebuilds
// it from the kernel after an agent restart.

type entryKind uint8

const (
	kindFDB entryKind = iota + 1
	kindNeigh
	kindRoute
)

func (k entryKind) String() string {
	switch k {
	case kindFDB:
		return EntryFDB
	case kindNeigh:
		return EntryNeigh
	case kindRoute:
		return EntryRoute
	}
	return "unknown"
}

// entryKey identifies one kernel object: a route by destination (main
// table, one route per block), a neighbour by device and address, an FDB
// entry by device and MAC (one remote per unicast MAC).
type entryKey struct {
	kind entryKind
	dev  string       // neigh, fdb
	dst  netip.Prefix // route
	ip   netip.Addr   // neigh
	mac  string       // fdb: 6 raw bytes
}

// entryVal is the part of an object that may differ from the desired one.
type entryVal struct {
	ip     netip.Addr // route: gateway; fdb: remote underlay address
	dev    string     // route: device
	mac    string     // neigh: lladdr
	onlink bool       // route
}

func (k entryKey) entry(v entryVal, peer string) ManagedEntry {
	e := ManagedEntry{Kind: k.kind.String(), Peer: peer}
	switch k.kind {
	case kindRoute:
		e.Dst, e.IP, e.Dev, e.Onlink = k.dst, v.ip, v.dev, v.onlink
	case kindNeigh:
		e.IP, e.Dev, e.MAC = k.ip, k.dev, net.HardwareAddr(v.mac)
	case kindFDB:
		e.IP, e.Dev, e.MAC = v.ip, k.dev, net.HardwareAddr(k.mac)
	}
	return e
}

func (k entryKey) String() string {
	switch k.kind {
	case kindRoute:
		return fmt.Sprintf("route %s", k.dst)
	case kindNeigh:
		return fmt.Sprintf("neigh %s dev %s", k.ip, k.dev)
	default:
		return fmt.Sprintf("fdb %s dev %s", net.HardwareAddr(k.mac), k.dev)
	}
}

// compareKeys orders installs: FDB, neighbour, route (a route is usable
// the moment it appears); deletions run in the reverse order.
func compareKeys(a, b entryKey) int {
	return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.dev, b.dev),
		a.dst.Addr().Compare(b.dst.Addr()), cmp.Compare(a.dst.Bits(), b.dst.Bits()),
		a.ip.Compare(b.ip), cmp.Compare(a.mac, b.mac))
}

// overlayState is the overlay's memory; its zero value is ready. mu
// serializes the overlay operations of a Datapath and guards the rest.
type overlayState struct {
	mu sync.Mutex
	// vtepDev is the VXLAN device of each family (index 4 and 6), as set
	// by EnsureVTEPs; empty means the default name.
	vtepDev [7]string
	// peers holds each peer's desired entries, as last set.
	peers map[string]map[entryKey]entryVal
	// holders lists, per entry, the peers wanting it, in claim order: the
	// last one owns it and its value is the one installed.
	holders map[entryKey][]string
	// installed is what this Datapath believes the kernel holds.
	installed map[entryKey]entryVal
	// dirty entries failed to converge; the next call for the peer named
	// retries them (Resync retries all).
	dirty map[entryKey]string
	// links caches interface indexes by name.
	links map[string]int
	// batch is the socket changes are sent through, opened on first use
	// and closed by Datapath.Close.
	batch *rtBatch
}

func (o *overlayState) init() {
	if o.peers == nil {
		o.peers = map[string]map[entryKey]entryVal{}
		o.holders = map[entryKey][]string{}
		o.installed = map[entryKey]entryVal{}
		o.dirty = map[entryKey]string{}
		o.links = map[string]int{}
	}
}

func (o *overlayState) vtepDevice(family int) string {
	if d := o.vtepDev[family]; d != "" {
		return d
	}
	return DefaultVTEPDevice(family)
}

// peerEntries computes the kernel entries a peer wants.
func (o *overlayState) peerEntries(p Peer) (map[entryKey]entryVal, error) {
	if p.Name == "" {
		return nil, fmt.Errorf("empty peer name")
	}
	want := make(map[entryKey]entryVal, 3*len(p.Routes))
	put := func(k entryKey, v entryVal) error {
		if old, ok := want[k]; ok && old != v {
			return fmt.Errorf("conflicting %s and %s", k.entry(old, ""), k.entry(v, ""))
		}
		want[k] = v
		return nil
	}
	for _, r := range p.Routes {
		dst, gw := r.Dst, r.Gateway.Unmap().WithZone("")
		fam := ipVersion(dst.Addr())
		switch {
		case !dst.IsValid() || dst != dst.Masked():
			return nil, fmt.Errorf("route %v: invalid block (want a masked prefix)", dst)
		case !gw.IsValid() || ipVersion(gw) != fam || gw.IsUnspecified():
			return nil, fmt.Errorf("route %s: invalid gateway %v", dst, r.Gateway)
		}
		if !r.Encap {
			if !validIfName(r.Dev) {
				return nil, fmt.Errorf("route %s: invalid device %q for a native route", dst, r.Dev)
			}
			if err := put(entryKey{kind: kindRoute, dst: dst}, entryVal{ip: gw, dev: r.Dev}); err != nil {
				return nil, err
			}
			continue
		}
		vtepIP := r.VTEPIP.Unmap().WithZone("")
		switch {
		case len(r.VTEPMAC) != 6 || r.VTEPMAC[0]&0x01 != 0:
			return nil, fmt.Errorf("route %s: invalid VTEP MAC %q", dst, r.VTEPMAC)
		case !vtepIP.IsValid() || ipVersion(vtepIP) != fam || vtepIP.IsUnspecified() || vtepIP.IsMulticast():
			return nil, fmt.Errorf("route %s: invalid VTEP address %v (want a unicast IPv%d underlay address)", dst, r.VTEPIP, fam)
		}
		dev, mac := o.vtepDevice(fam), string(r.VTEPMAC)
		for _, e := range []struct {
			k entryKey
			v entryVal
		}{
			{entryKey{kind: kindFDB, dev: dev, mac: mac}, entryVal{ip: vtepIP}},
			{entryKey{kind: kindNeigh, dev: dev, ip: gw}, entryVal{mac: mac}},
			{entryKey{kind: kindRoute, dst: dst}, entryVal{ip: gw, dev: dev, onlink: true}},
		} {
			if err := put(e.k, e.v); err != nil {
				return nil, err
			}
		}
	}
	return want, nil
}

// target is the value the kernel should hold for k: the owner's.
func (o *overlayState) target(k entryKey) (entryVal, bool) {
	hs := o.holders[k]
	if len(hs) == 0 {
		return entryVal{}, false
	}
	v, ok := o.peers[hs[len(hs)-1]][k]
	return v, ok
}

// setPeer records what a peer now wants (nil: nothing, the peer is gone)
// and returns the entries whose installed value may have to change.
func (o *overlayState) setPeer(name string, want map[entryKey]entryVal) []entryKey {
	old := o.peers[name]
	affected := make([]entryKey, 0, len(old)+len(want)+len(o.dirty))
	for k := range old {
		if _, keep := want[k]; !keep {
			o.holders[k] = removeHolder(o.holders[k], name)
			if len(o.holders[k]) == 0 {
				delete(o.holders, k)
			}
			affected = append(affected, k)
		}
	}
	for k, v := range want {
		prev, had := old[k]
		switch {
		case !had:
			o.holders[k] = append(o.holders[k], name)
		case prev != v:
			// A peer changing an entry takes it over.
			o.holders[k] = append(removeHolder(o.holders[k], name), name)
		}
		affected = append(affected, k)
	}
	for k, peer := range o.dirty {
		if peer == name {
			affected = append(affected, k)
		}
	}
	if len(want) == 0 {
		delete(o.peers, name)
	} else {
		o.peers[name] = want
	}
	return affected
}

func removeHolder(hs []string, name string) []string {
	if i := slices.Index(hs, name); i >= 0 {
		return slices.Delete(hs, i, i+1)
	}
	return hs
}

// change is one kernel operation: install val (replace), or delete old.
type change struct {
	key    entryKey
	del    bool
	val    entryVal // install: the new value; delete: the installed value
	reason string   // for Resync's report
}

// plan turns affected entries into kernel operations, comparing each
// entry's target with what is installed: installs first (FDB, neighbour,
// route), then deletions (route, neighbour, FDB).
func (o *overlayState) plan(affected []entryKey) []change {
	slices.SortFunc(affected, compareKeys)
	affected = slices.Compact(affected)
	var adds, dels []change
	for _, k := range affected {
		want, ok := o.target(k)
		have, installed := o.installed[k]
		switch {
		case ok && (!installed || have != want):
			adds = append(adds, change{key: k, val: want})
		case !ok && installed:
			dels = append(dels, change{key: k, del: true, val: have})
		default:
			delete(o.dirty, k)
		}
	}
	slices.Reverse(dels)
	return append(adds, dels...)
}

// applied records the outcome of one operation done for peer ("" when for
// no peer in particular).
func (o *overlayState) applied(c change, peer string, err error) {
	switch {
	case err != nil && peer == "":
		o.dirty[c.key] = o.owner(c.key)
	case err != nil:
		o.dirty[c.key] = peer
	case c.del:
		delete(o.installed, c.key)
		delete(o.dirty, c.key)
	default:
		o.installed[c.key] = c.val
		delete(o.dirty, c.key)
	}
}

// forgetDevice drops what is installed on a VXLAN device that was deleted
// or recreated (the kernel flushed its routes, neighbours and FDB), marking
// the entries dirty; it returns them.
func (o *overlayState) forgetDevice(dev string) []entryKey {
	var keys []entryKey
	for k, v := range o.installed {
		if k.dev == dev || (k.kind == kindRoute && v.dev == dev) {
			delete(o.installed, k)
			o.dirty[k] = o.owner(k)
			keys = append(keys, k)
		}
	}
	return keys
}

// owner names the peer whose value of k is installed, or UnknownPeer.
func (o *overlayState) owner(k entryKey) string {
	if hs := o.holders[k]; len(hs) > 0 {
		return hs[len(hs)-1]
	}
	return UnknownPeer
}

func (s *OpStats) count(c change) {
	switch {
	case c.key.kind == kindRoute && c.del:
		s.RouteDels++
	case c.key.kind == kindRoute:
		s.RouteAdds++
	case c.key.kind == kindNeigh && c.del:
		s.NeighDels++
	case c.key.kind == kindNeigh:
		s.NeighAdds++
	case c.del:
		s.FDBDels++
	default:
		s.FDBAdds++
	}
}

// normalize fills the defaults of c and validates it.
func (c VTEPConfig) normalize() (VTEPConfig, error) {
	if c.Family != 4 && c.Family != 6 {
		return c, fmt.Errorf("invalid family %d (want 4 or 6)", c.Family)
	}
	if c.Device == "" {
		c.Device = DefaultVTEPDevice(c.Family)
	}
	if c.VNI == 0 {
		c.VNI = DefaultVNI4
		if c.Family == 6 {
			c.VNI = DefaultVNI6
		}
	}
	if c.Port == 0 {
		c.Port = DefaultVXLANPort
	}
	c.LocalIP, c.TunnelAddr = c.LocalIP.Unmap().WithZone(""), c.TunnelAddr.Unmap().WithZone("")
	switch {
	case !IsVTEPDevice(c.Device) || !validIfName(c.Device):
		return c, fmt.Errorf("invalid VXLAN device name %q (must start with %s)", c.Device, VTEPDevicePrefix)
	case c.VNI < 1 || c.VNI > maxVNI:
		return c, fmt.Errorf("%s: invalid VNI %d", c.Device, c.VNI)
	case c.Port < 1 || c.Port > 65535:
		return c, fmt.Errorf("%s: invalid port %d", c.Device, c.Port)
	case c.MTU < 0 || c.MTU > 65535:
		return c, fmt.Errorf("%s: invalid MTU %d", c.Device, c.MTU)
	case !c.LocalIP.IsValid() || ipVersion(c.LocalIP) != c.Family || c.LocalIP.IsUnspecified() || c.LocalIP.IsMulticast():
		return c, fmt.Errorf("%s: invalid local underlay address %v for family %d", c.Device, c.LocalIP, c.Family)
	case !c.TunnelAddr.IsValid() || ipVersion(c.TunnelAddr) != c.Family || c.TunnelAddr.IsUnspecified() || c.TunnelAddr.IsMulticast():
		return c, fmt.Errorf("%s: invalid tunnel address %v for family %d", c.Device, c.TunnelAddr, c.Family)
	case len(c.MAC) != 6 || c.MAC[0]&0x01 != 0 || c.MAC.String() == "00:00:00:00:00:00":
		return c, fmt.Errorf("%s: invalid MAC %q (want 6-byte unicast)", c.Device, c.MAC)
	}
	return c, nil
}

// ipVersion is 4 or 6, the family numbering of VTEPConfig.
func ipVersion(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}
