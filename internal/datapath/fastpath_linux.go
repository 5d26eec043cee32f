package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strait-net/strait/internal/datapath/bpf"
)

// Names in fastpath.c.
const (
	fpProgFromPod = "strait_from_pod"
	fpProgToPod   = "strait_to_pod"
	fpMapDevs     = "fp_devs"
	fpMapPods4    = "fp_pods4"
	fpMapPods6    = "fp_pods6"
	fpMapCounters = "fp_counters"
	fpMapVTEPs    = "fp_vteps"
	fpLinksDir    = "links"
)

// Device kinds and flags of struct dev in fastpath.c.
const (
	fpDevPod    = 1
	fpDevUplink = 2
	fpHasV4     = 1
	fpHasV6     = 2
	fpVXLAN4    = 4
)

// fpDev is struct dev of fastpath.c (addresses and port in network byte
// order).
type fpDev struct {
	Kind  uint32
	Flags uint32
	V4    [4]byte
	V6    [16]byte
	VNI   uint32
	Port  [2]byte
	Pad   uint16
}

// fpVTEPKey is struct vtep_key of fastpath.c: a remote VTEP's MAC; the
// value in fp_vteps is its underlay IPv4 address.
type fpVTEPKey struct {
	MAC [6]byte
	Pad uint16
}

// fpCounters is the number of entries in fp_counters (CNT_MAX).
const fpCounters = 8

// fpLPM4 and fpLPM6 are the LPM trie keys of fp_pods4 and fp_pods6.
type fpLPM4 struct {
	PrefixLen uint32
	Addr      [4]byte
}

type fpLPM6 struct {
	PrefixLen uint32
	Addr      [16]byte
}

// fastPathState is the loaded fast path: programs and maps of the object,
// the maps pinned under dir. Its mutex serializes SetFastPath.
type fastPathState struct {
	mu   sync.Mutex
	dir  string
	coll *ebpf.Collection
	// From the last successful SetFastPath, for manageHops: the
	// uplinks whose neighbours the programs use (name -> ifindex) and the
	// pod ranges.
	uplinks map[string]int
	ranges  []netip.Prefix
}

func (s *fastPathState) close() {
	if s.coll != nil {
		s.coll.Close()
		s.coll = nil
	}
	s.dir, s.uplinks, s.ranges = "", nil, nil
}

// fpDevice is one interface the fast path attaches to.
type fpDevice struct {
	name    string
	ifindex int
	prog    string
	val     fpDev
}

// SetFastPath makes the node's eBPF fast path match fp, idempotently: with
// fp.Enabled, the programs are attached (tcx ingress) to every Strait pod's
// host veth and to fp.Uplinks, and the maps hold exactly those devices (each
// pod with the addresses of its host routes, for the source check) and
// fp.PodRanges. Links already pinned under fp.PinDir are adopted (updated in
// place to this process's programs, never detached on the way), links of
// devices that are gone are unpinned. With !fp.Enabled everything under
// fp.PinDir is removed, which detaches the programs.
//
// The fast path skips conntrack, so it is refused while flow tracking
// (EnableFlowTracking) is on: IPFIX export would miss the connections it
// carries.
func (d *Datapath) SetFastPath(fp FastPath) (FastPathStatus, error) {
	st, err := d.setFastPath(fp)
	if err != nil {
		return FastPathStatus{}, fmt.Errorf("set fast path (%s): %w", fp.PinDir, err)
	}
	return st, nil
}

func (d *Datapath) setFastPath(fp FastPath) (FastPathStatus, error) {
	if fp.PinDir == "" || !filepath.IsAbs(fp.PinDir) {
		return FastPathStatus{}, fmt.Errorf("pin directory %q: want an absolute path on a bpffs", fp.PinDir)
	}
	dir := filepath.Clean(fp.PinDir)
	d.fast.mu.Lock()
	defer d.fast.mu.Unlock()
	if !fp.Enabled {
		d.fast.close()
		// Only a node that had the fast path has managed next hops; they
		// go first, so that a failure leaves dir to mark them.
		if _, err := os.Stat(dir); err == nil {
			if err := d.withNode(func(h netlinksafe.Handle) error { return dropNextHops(h, fp.Uplinks) }); err != nil {
				return FastPathStatus{}, err
			}
		}
		return FastPathStatus{}, removeFastPath(dir)
	}
	d.nftMu.Lock()
	tracking := d.flowTracking
	d.nftMu.Unlock()
	if tracking {
		return FastPathStatus{}, errors.New("flow export is on: fast-pathed connections skip conntrack, which flow export reads")
	}
	v4, v6, err := fpRanges(fp.PodRanges)
	if err != nil {
		return FastPathStatus{}, err
	}
	// Checked on dir or its nearest existing parent, so a wrong path is
	// refused before anything is created; the directories MkdirAll adds
	// below it are on the same filesystem.
	if err := requireBPFFS(existingAncestor(dir)); err != nil {
		return FastPathStatus{}, err
	}
	if err := os.MkdirAll(filepath.Join(dir, fpLinksDir), 0o700); err != nil {
		return FastPathStatus{}, err
	}
	if d.fast.coll == nil || d.fast.dir != dir {
		d.fast.close()
		coll, err := loadFastPath(dir)
		if err != nil {
			return FastPathStatus{}, err
		}
		d.fast.coll, d.fast.dir = coll, dir
	}
	coll := d.fast.coll

	var (
		devs   []fpDevice
		vteps  map[fpVTEPKey][4]byte
		routes []netlink.Route
	)
	err = d.withNode(func(h netlinksafe.Handle) error {
		var err error
		routes, err = h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("list routes: %w", err)
		}
		if devs, err = fpDevices(h, routes, fp.Uplinks); err != nil {
			return err
		}
		vteps, err = fpVTEPs(h, devs)
		return err
	})
	if err != nil {
		return FastPathStatus{}, err
	}
	want := map[uint32]fpDev{}
	for _, dv := range devs {
		want[uint32(dv.ifindex)] = dv.val
	}
	if err := syncMap(coll.Maps[fpMapDevs], want); err != nil {
		return FastPathStatus{}, fmt.Errorf("map %s: %w", fpMapDevs, err)
	}
	if err := syncMap(coll.Maps[fpMapPods4], v4); err != nil {
		return FastPathStatus{}, fmt.Errorf("map %s: %w", fpMapPods4, err)
	}
	if err := syncMap(coll.Maps[fpMapPods6], v6); err != nil {
		return FastPathStatus{}, fmt.Errorf("map %s: %w", fpMapPods6, err)
	}
	if err := syncMap(coll.Maps[fpMapVTEPs], vteps); err != nil {
		return FastPathStatus{}, fmt.Errorf("map %s: %w", fpMapVTEPs, err)
	}
	if err := d.syncLinks(filepath.Join(dir, fpLinksDir), coll, devs); err != nil {
		return FastPathStatus{}, err
	}
	var st FastPathStatus
	uplinks := fpUplinkIndexes(devs)
	hops := fpNextHops(routes, uplinks, fp.PodRanges, vteps)
	err = d.withNode(func(h netlinksafe.Handle) error {
		var err error
		st.NextHops, err = syncNextHops(h, uplinks, hops)
		return err
	})
	if err != nil {
		return FastPathStatus{}, err
	}
	d.fast.uplinks, d.fast.ranges = map[string]int{}, slices.Clone(fp.PodRanges)
	for _, dv := range devs {
		st.Devices = append(st.Devices, dv.name)
		if dv.val.Kind == fpDevPod {
			st.Pods++
		}
		if uplinks[dv.ifindex] {
			d.fast.uplinks[dv.name] = dv.ifindex
		}
	}
	slices.Sort(st.Devices)
	return st, nil
}

// fpRanges turns pod ranges into LPM keys per family.
func fpRanges(ranges []netip.Prefix) (map[fpLPM4]uint8, map[fpLPM6]uint8, error) {
	v4, v6 := map[fpLPM4]uint8{}, map[fpLPM6]uint8{}
	for _, r := range ranges {
		p, ok := normPrefix(r)
		if !ok {
			return nil, nil, fmt.Errorf("invalid pod range %v", r)
		}
		if p.Addr().Is4() {
			v4[fpLPM4{PrefixLen: uint32(p.Bits()), Addr: p.Addr().As4()}] = 1
		} else {
			v6[fpLPM6{PrefixLen: uint32(p.Bits()), Addr: p.Addr().As16()}] = 1
		}
	}
	return v4, v6, nil
}

// requireBPFFS refuses a directory that is not on a bpffs: pins cannot live
// elsewhere, and removeFastPath must never delete an ordinary directory.
func requireBPFFS(dir string) error {
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if s.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%s is not on a bpffs (mount -t bpf bpf /sys/fs/bpf)", dir)
	}
	return nil
}

// existingAncestor returns dir or the nearest of its parents that exists.
func existingAncestor(dir string) string {
	for {
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}

// removeFastPath deletes the pins under dir (detaching the programs) and
// dir itself. A missing dir is no error.
func removeFastPath(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := requireBPFFS(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove pins: %w", err)
	}
	return nil
}

// loadFastPath loads the object with its maps pinned by name under dir,
// reusing pinned maps. Maps pinned by an incompatible build are replaced
// (their contents are rebuilt by the caller anyway).
func loadFastPath(dir string) (*ebpf.Collection, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bpf.FastPath())
	if err != nil {
		return nil, fmt.Errorf("parse the fast path object: %w", err)
	}
	opts := ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}
	coll, err := ebpf.NewCollectionWithOptions(spec, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		for name := range spec.Maps {
			if rerr := os.Remove(filepath.Join(dir, name)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				return nil, fmt.Errorf("replace incompatible map %s: %w", name, rerr)
			}
		}
		coll, err = ebpf.NewCollectionWithOptions(spec, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("load the fast path: %w", err)
	}
	return coll, nil
}

// fpDevices lists the devices to attach to: every Strait host veth, with
// the pod addresses its host routes carry (routes: the main table),
// and the uplinks by name.
func fpDevices(h netlinksafe.Handle, routes []netlink.Route, uplinks []string) ([]fpDevice, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	hostRoutes := map[int][]netip.Addr{} // link index -> /32 and /128 destinations
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.IsSingleIP() {
			hostRoutes[r.LinkIndex] = append(hostRoutes[r.LinkIndex], p.Addr())
		}
	}
	var out []fpDevice
	for _, l := range links {
		a := l.Attrs()
		if !IsHostIface(a.Name) || l.Type() != "veth" {
			continue
		}
		dv := fpDevice{name: a.Name, ifindex: a.Index, prog: fpProgFromPod, val: fpDev{Kind: fpDevPod}}
		for _, ad := range hostRoutes[a.Index] {
			switch {
			case ad.Is4() && dv.val.Flags&fpHasV4 == 0:
				dv.val.Flags |= fpHasV4
				dv.val.V4 = ad.As4()
			case ad.Is6() && dv.val.Flags&fpHasV6 == 0:
				dv.val.Flags |= fpHasV6
				dv.val.V6 = ad.As16()
			}
		}
		out = append(out, dv)
	}
	for _, name := range uplinks {
		l, err := h.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("uplink %s: %w", name, err)
		}
		if slices.ContainsFunc(out, func(dv fpDevice) bool { return dv.name == name }) {
			continue
		}
		out = append(out, fpDevice{name: name, ifindex: l.Attrs().Index, prog: fpProgToPod, val: fpUplink(l)})
	}
	return out, nil
}

// fpUplink is the map value of an uplink: an IPv4 VXLAN device with a
// local address and a destination port also carries what the programs need
// to encapsulate for it.
func fpUplink(l netlink.Link) fpDev {
	val := fpDev{Kind: fpDevUplink}
	v, ok := l.(*netlink.Vxlan)
	if !ok || v.Port <= 0 || v.Port > 0xffff || v.VxlanId < 0 || v.VxlanId >= 1<<24 || v.FlowBased {
		return val
	}
	local, ok := netip.AddrFromSlice(v.SrcAddr)
	if !ok || !local.Unmap().Is4() || local.Unmap().IsUnspecified() {
		return val
	}
	val.Flags |= fpVXLAN4
	val.V4 = local.Unmap().As4()
	val.VNI = uint32(v.VxlanId)
	binary.BigEndian.PutUint16(val.Port[:], uint16(v.Port))
	return val
}

// fpVTEPs reads the remote VTEPs of the IPv4 VXLAN devices among devs from
// the kernel's FDB: what the devices themselves would send to.
func fpVTEPs(h netlinksafe.Handle, devs []fpDevice) (map[fpVTEPKey][4]byte, error) {
	out := map[fpVTEPKey][4]byte{}
	vx := map[int]bool{}
	for _, dv := range devs {
		if dv.val.Flags&fpVXLAN4 != 0 {
			vx[dv.ifindex] = true
		}
	}
	if len(vx) == 0 {
		return out, nil
	}
	fdb, err := neighList(h, 0, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("list fdb: %w", err)
	}
	for _, n := range fdb {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !vx[n.LinkIndex] || !ok || !ip.Unmap().Is4() || n.Flags&netlink.NTF_SELF == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		k, ok := fpVTEPKeyOf(string(n.HardwareAddr))
		if !ok {
			continue
		}
		out[k] = ip.Unmap().As4()
	}
	return out, nil
}

// fpVTEPKeyOf is the fp_vteps key of a unicast MAC (6 raw bytes).
func fpVTEPKeyOf(mac string) (fpVTEPKey, bool) {
	var k fpVTEPKey
	if len(mac) != 6 || mac[0]&1 != 0 || mac == "\x00\x00\x00\x00\x00\x00" {
		return k, false
	}
	copy(k.MAC[:], mac)
	return k, true
}

// mirrorOverlay follows the overlay's changes (done: the successful FDB and
// route changes, as applyChanges collects them) while the fast path is
// loaded. It is called with overlay.mu held (lock order: overlay.mu before
// fast.mu).
//   - FDB changes go into fp_vteps at once, so that the programs never
//     encapsulate towards an address the kernel's FDB no longer holds, nor
//     wait for the next SetFastPath to use a new node. A failed update is
//     logged and repaired by the next SetFastPath, which rebuilds the map
//     from the FDB.
//   - The next hops of new routes and VTEPs become managed neighbours at
//     once (manageNewNextHops).
func (d *Datapath) mirrorOverlay(done []change) {
	d.fast.mu.Lock()
	defer d.fast.mu.Unlock()
	if d.fast.coll == nil {
		return
	}
	m := d.fast.coll.Maps[fpMapVTEPs]
	for _, c := range done {
		if c.key.kind != kindFDB {
			continue
		}
		k, ok := fpVTEPKeyOf(c.key.mac)
		if !ok || !c.val.ip.Is4() {
			continue
		}
		var err error
		if c.del {
			if err = m.Delete(k); errors.Is(err, ebpf.ErrKeyNotExist) {
				err = nil
			}
		} else {
			err = m.Put(k, c.val.ip.As4())
		}
		if err != nil {
			d.log.Warn("fast path: mirror an FDB change into "+fpMapVTEPs+" (the next resync repairs it)",
				"entry", c.key.String(), "delete", c.del, "error", err)
		}
	}
	d.manageNewNextHops(done)
}

// syncMap makes m hold exactly want, writing only the entries that differ
// (a resync of an unchanged node with 1,000 VTEPs writes nothing).
func syncMap[K, V comparable](m *ebpf.Map, want map[K]V) error {
	have, err := readMap[K, V](m)
	if err != nil {
		return err
	}
	for k := range have {
		if _, ok := want[k]; ok {
			continue
		}
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete: %w", err)
		}
	}
	for k, v := range want {
		if hv, ok := have[k]; ok && hv == v {
			continue
		}
		if err := m.Put(k, v); err != nil {
			return fmt.Errorf("put: %w", err)
		}
	}
	return nil
}

// mapBatch is the number of entries readMap asks the kernel for at once.
const mapBatch = 256

// readMap reads every entry of m: a hash map in batches of mapBatch (a
// few system calls instead of two per entry), other maps (LPM tries have
// no batch operations) and a hash map whose batch read fails entry by
// entry.
func readMap[K comparable, V any](m *ebpf.Map) (map[K]V, error) {
	if m.Type() == ebpf.Hash {
		if out, err := readMapBatch[K, V](m); err == nil {
			return out, nil
		}
	}
	out := map[K]V{}
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate: %w", err)
	}
	return out, nil
}

func readMapBatch[K comparable, V any](m *ebpf.Map) (map[K]V, error) {
	out := map[K]V{}
	keys, vals := make([]K, mapBatch), make([]V, mapBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			out[keys[i]] = vals[i]
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return out, nil
		case err != nil:
			return nil, err
		}
	}
}

// syncLinks attaches each device's program (tcx ingress) through a link
// pinned as dir/<device> (see fpPinName), adopting a pinned link that is still attached to
// the same interface (updated to this process's program when it runs
// another), and unpins every other link under dir.
func (d *Datapath) syncLinks(dir string, coll *ebpf.Collection, devs []fpDevice) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	wanted := map[string]fpDevice{}
	for _, dv := range devs {
		wanted[fpPinName(dv.name)] = dv
	}
	for _, e := range entries {
		if _, ok := wanted[e.Name()]; !ok {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("unpin %s: %w", e.Name(), err)
			}
		}
	}
	// The programs' IDs, read once: a pinned link already running ours is
	// left alone.
	ids := map[string]ebpf.ProgramID{}
	for name, prog := range coll.Programs {
		info, err := prog.Info()
		if err != nil {
			return fmt.Errorf("program %s info: %w", name, err)
		}
		if id, ok := info.ID(); ok {
			ids[name] = id
		}
	}
	for _, dv := range devs {
		prog := coll.Programs[dv.prog]
		if err := d.ensureLink(filepath.Join(dir, fpPinName(dv.name)), dv, prog, ids[dv.prog]); err != nil {
			return fmt.Errorf("attach to %s: %w", dv.name, err)
		}
	}
	return nil
}

// fpPinName is the pin file name of device name's link: bpffs refuses
// names with a dot (strait.vxlan4), so "%" and "." are escaped.
func fpPinName(name string) string {
	return strings.NewReplacer("%", "%25", ".", "%2E").Replace(name)
}

// ensureLink attaches prog (whose ID is id, 0 if unknown) to dv through a
// link pinned at pin, adopting a pinned link on the same interface.
func (d *Datapath) ensureLink(pin string, dv fpDevice, prog *ebpf.Program, id ebpf.ProgramID) error {
	l, err := link.LoadPinnedLink(pin, nil)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("load pinned link: %w", err)
	default:
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			return fmt.Errorf("pinned link info: %w", err)
		}
		if tcx := info.TCX(); tcx != nil && int(tcx.Ifindex) == dv.ifindex {
			if id != 0 && id == info.Program {
				return nil
			}
			if err := l.Update(prog); err != nil {
				return fmt.Errorf("update pinned link: %w", err)
			}
			return nil
		}
		// Attached elsewhere (the device was replaced) or defunct.
		if err := l.Unpin(); err != nil {
			return fmt.Errorf("unpin stale link: %w", err)
		}
	}
	// The interface index is resolved in the calling thread's namespace.
	return d.inNode(func() error {
		nl, err := link.AttachTCX(link.TCXOptions{Interface: dv.ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return fmt.Errorf("attach tcx ingress: %w", err)
		}
		defer nl.Close()
		if err := nl.Pin(pin); err != nil {
			return fmt.Errorf("pin link: %w", err)
		}
		return nil
	})
}

// FastPathCounters reads the fast path's counters pinned under pinDir.
func (d *Datapath) FastPathCounters(pinDir string) (FastPathCounters, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, fpMapCounters), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return FastPathCounters{}, fmt.Errorf("fast path counters: %w", err)
	}
	defer m.Close()
	var c [fpCounters]uint64
	for i := range c {
		var perCPU []uint64
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			return FastPathCounters{}, fmt.Errorf("fast path counters: read %d: %w", i, err)
		}
		for _, v := range perCPU {
			c[i] += v
		}
	}
	return FastPathCounters{Redirected: c[0], NAT: c[1], Spoofed: c[2], NotPod: c[3], FIB: c[4], Other: c[5], Local: c[6],
		Encapsulated: c[7]}, nil
}
