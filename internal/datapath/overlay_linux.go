package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// EnsureVTEPs makes the node's VXLAN devices exactly vteps, idempotently: it
// creates the missing ones, fixes MTU, MAC, tunnel address and up state in
// place, recreates a device only when its VNI, port, local address or
// learning differ (the kernel cannot change those), and deletes the
// VTEPDevicePrefix devices not listed. The overlay entries a recreated
// device lost are installed again.
func (d *Datapath) EnsureVTEPs(ctx context.Context, vteps []VTEPConfig) error {
	if err := d.ensureVTEPs(ctx, vteps); err != nil {
		return fmt.Errorf("ensure VXLAN devices: %w", err)
	}
	return nil
}

func (d *Datapath) ensureVTEPs(ctx context.Context, vteps []VTEPConfig) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cfgs := make([]VTEPConfig, 0, len(vteps))
	names := map[string]bool{}
	var families [7]bool
	for _, v := range vteps {
		c, err := v.normalize()
		if err != nil {
			return err
		}
		if families[c.Family] || names[c.Device] {
			return fmt.Errorf("%s: more than one VXLAN device for IPv%d or of that name", c.Device, c.Family)
		}
		families[c.Family], names[c.Device] = true, true
		cfgs = append(cfgs, c)
	}

	o := &d.overlay
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	// The kernel flushed the entries of deleted and recreated devices.
	var recreated, deleted []string
	err := d.withNode(func(h netlinksafe.Handle) error {
		for _, c := range cfgs {
			idx, again, err := ensureVTEP(h, c, d.log)
			if err != nil {
				return err
			}
			o.links[c.Device] = idx
			if again {
				recreated = append(recreated, c.Device)
			}
		}
		links, err := h.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			name := l.Attrs().Name
			if !IsVTEPDevice(name) || names[name] {
				continue
			}
			if err := h.LinkDel(l); err != nil && !isGone(err) {
				return fmt.Errorf("delete unconfigured VXLAN device %s: %w", name, err)
			}
			d.log.Info("deleted unconfigured VXLAN device", "device", name)
			delete(o.links, name)
			deleted = append(deleted, name)
		}
		return nil
	})
	o.vtepDev = [7]string{}
	for _, c := range cfgs {
		o.vtepDev[c.Family] = c.Device
	}
	for _, dev := range deleted {
		o.forgetDevice(dev)
	}
	var keys []entryKey
	for _, dev := range recreated {
		keys = append(keys, o.forgetDevice(dev)...)
	}
	if err != nil {
		return err
	}
	if len(keys) > 0 {
		stats, err := d.applyChanges(ctx, o.plan(keys), "")
		if err != nil {
			return fmt.Errorf("reinstall overlay entries of recreated %v: %w", recreated, err)
		}
		d.log.Info("reinstalled overlay entries of recreated VXLAN devices", "devices", recreated, "ops", stats.Total())
	}
	return nil
}

// ensureVTEP reconciles one VXLAN device and returns its index.
func ensureVTEP(h netlinksafe.Handle, c VTEPConfig, log *slog.Logger) (idx int, recreated bool, err error) {
	mtu := c.MTU
	if mtu == 0 {
		if mtu, err = underlayMTU(h, c.LocalIP); err != nil {
			return 0, false, fmt.Errorf("%s: %w", c.Device, err)
		}
		mtu -= vxlanOverhead4
		if c.Family == 6 {
			mtu -= vxlanOverhead6 - vxlanOverhead4
		}
	}
	l, err := h.LinkByName(c.Device)
	switch {
	case isLinkNotFound(err):
		l = nil
	case err != nil:
		return 0, false, fmt.Errorf("look up %s: %w", c.Device, err)
	default:
		if why := vtepMismatch(l, c); why != "" {
			log.Info("recreating VXLAN device", "device", c.Device, "reason", why)
			if err := h.LinkDel(l); err != nil && !isGone(err) {
				return 0, false, fmt.Errorf("delete %s to recreate it: %w", c.Device, err)
			}
			l, recreated = nil, true
		}
	}
	if l == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU, attrs.HardwareAddr = c.Device, mtu, c.MAC
		// Learning off: peers are known, and a learnt entry would shadow
		// ours. UDP checksums and offloads stay the kernel's defaults.
		v := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: c.VNI, SrcAddr: c.LocalIP.AsSlice(), Port: c.Port}
		if err := h.LinkAdd(v); err != nil {
			return 0, recreated, fmt.Errorf("create %s (vni %d, local %s, dstport %d): %w", c.Device, c.VNI, c.LocalIP, c.Port, err)
		}
		if l, err = h.LinkByName(c.Device); err != nil {
			return 0, recreated, fmt.Errorf("look up created %s: %w", c.Device, err)
		}
		log.Info("created VXLAN device", "device", c.Device, "vni", c.VNI, "local", c.LocalIP, "mtu", mtu)
	}
	a := l.Attrs()
	if a.MTU != mtu {
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return 0, recreated, fmt.Errorf("set mtu %d on %s: %w", mtu, c.Device, err)
		}
		log.Info("changed VXLAN device MTU", "device", c.Device, "from", a.MTU, "to", mtu)
	}
	if !bytes.Equal(a.HardwareAddr, c.MAC) {
		if err := h.LinkSetHardwareAddr(l, c.MAC); err != nil {
			return 0, recreated, fmt.Errorf("set mac %s on %s: %w", c.MAC, c.Device, err)
		}
	}
	if err := ensureTunnelAddr(h, l, c); err != nil {
		return 0, recreated, err
	}
	if a.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return 0, recreated, fmt.Errorf("set %s up: %w", c.Device, err)
		}
	}
	return a.Index, recreated, nil
}

// vtepMismatch says why l cannot be changed into c in place, or "".
func vtepMismatch(l netlink.Link, c VTEPConfig) string {
	v, ok := l.(*netlink.Vxlan)
	if !ok {
		return fmt.Sprintf("is a %s, not a vxlan", l.Type())
	}
	local, _ := netip.AddrFromSlice(v.SrcAddr)
	switch {
	case v.VxlanId != c.VNI:
		return fmt.Sprintf("vni %d, want %d", v.VxlanId, c.VNI)
	case v.Port != c.Port:
		return fmt.Sprintf("dstport %d, want %d", v.Port, c.Port)
	case local.Unmap() != c.LocalIP:
		return fmt.Sprintf("local %v, want %s", local.Unmap(), c.LocalIP)
	case v.Learning:
		return "learning on"
	case v.FlowBased:
		return "external (flow-based)"
	case len(v.Group) > 0 && !v.Group.IsUnspecified():
		return fmt.Sprintf("group %s", v.Group)
	}
	return ""
}

// underlayMTU is the MTU of the link holding the underlay address.
func underlayMTU(h netlinksafe.Handle, local netip.Addr) (int, error) {
	fam := netlink.FAMILY_V4
	if local.Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := addrList(h, nil, fam)
	if err != nil {
		return 0, fmt.Errorf("list addresses to find underlay %s: %w", local, err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p.Addr() == local {
			l, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, fmt.Errorf("look up link of underlay %s: %w", local, err)
			}
			return l.Attrs().MTU, nil
		}
	}
	return 0, fmt.Errorf("underlay address %s is on no interface (set an explicit MTU or add the address first)", local)
}

// ensureTunnelAddr makes the tunnel address the device's only address of
// its family, besides IPv6 link-local ones.
func ensureTunnelAddr(h netlinksafe.Handle, l netlink.Link, c VTEPConfig) error {
	want := netip.PrefixFrom(c.TunnelAddr, c.TunnelAddr.BitLen())
	fam := netlink.FAMILY_V4
	if c.Family == 6 {
		fam = netlink.FAMILY_V6
	}
	have, err := addrList(h, l, fam)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", c.Device, err)
	}
	found := false
	for _, a := range have {
		p, ok := prefixOf(a.IPNet)
		switch {
		case !ok || p.Addr().IsLinkLocalUnicast():
		case p == want:
			found = true
		default:
			if err := h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("delete address %s from %s: %w", p, c.Device, err)
			}
		}
	}
	if !found {
		a := &netlink.Addr{IPNet: ipNet(want)}
		if c.Family == 6 {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrReplace(l, a); err != nil {
			return fmt.Errorf("add tunnel address %s to %s: %w", want, c.Device, err)
		}
	}
	return nil
}

// SetPeer makes the kernel's overlay entries for one remote node p, and
// only for it, what p asks: it diffs p against what was last applied for
// p (kept in memory) and issues only the needed route replaces, neighbour
// sets, FDB replaces and deletions. Setting the same peer again issues
// nothing. A peer with no routes is deleted.
func (d *Datapath) SetPeer(ctx context.Context, p Peer) (OpStats, error) {
	o := &d.overlay
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	want, err := o.peerEntries(p)
	if err != nil {
		return OpStats{}, fmt.Errorf("set peer %s: %w", p.Name, err)
	}
	stats, err := d.applyChanges(ctx, o.plan(o.setPeer(p.Name, want)), p.Name)
	if err != nil {
		return stats, fmt.Errorf("set peer %s: %w", p.Name, err)
	}
	return stats, nil
}

// DeletePeer deletes the overlay entries of one remote node (an entry
// another peer also wants gets that peer's value instead).
func (d *Datapath) DeletePeer(ctx context.Context, name string) (OpStats, error) {
	o := &d.overlay
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	stats, err := d.applyChanges(ctx, o.plan(o.setPeer(name, nil)), name)
	if err != nil {
		return stats, fmt.Errorf("delete peer %s: %w", name, err)
	}
	return stats, nil
}

// applyChanges runs the changes, rtBatchChunk per sendmsg, recording each
// outcome; a failed change stays dirty on behalf of peer and is retried by
// that peer's next call (or by Resync). It holds o.mu.
func (d *Datapath) applyChanges(ctx context.Context, changes []change, peer string) (OpStats, error) {
	var stats OpStats
	if len(changes) == 0 {
		return stats, nil
	}
	o := &d.overlay
	var (
		errs []error
		fast []change // done FDB and route changes, for the fast path
	)
	done := 0
	err := d.withNode(func(h netlinksafe.Handle) error {
		if o.batch == nil {
			b, err := openRTBatch(d.nodeNS)
			if err != nil {
				return err
			}
			o.batch = b
		}
		for done < len(changes) {
			if err := ctx.Err(); err != nil {
				return err
			}
			chunk := changes[done:min(done+rtBatchChunk, len(changes))]
			results, err := o.send(h, chunk, true)
			if err != nil {
				o.batch.close()
				o.batch = nil
				return err
			}
			for i, c := range chunk {
				err := opError(c, results[i])
				o.applied(c, peer, err)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				stats.count(c)
				if c.key.kind == kindFDB || c.key.kind == kindRoute {
					fast = append(fast, c)
				}
			}
			done += len(chunk)
		}
		return nil
	})
	if err != nil {
		for _, c := range changes[done:] {
			o.applied(c, peer, err)
		}
		errs = append(errs, err)
	}
	if len(fast) > 0 {
		d.mirrorOverlay(fast)
	}
	return stats, errors.Join(errs...)
}

// send issues one chunk of changes and returns each one's raw outcome. A
// change whose cached device index turned out stale (ENODEV) is sent once
// more with the index looked up again, when retry is set.
func (o *overlayState) send(h netlinksafe.Handle, chunk []change, retry bool) ([]error, error) {
	results := make([]error, len(chunk))
	reqs := make([]*nl.NetlinkRequest, 0, len(chunk))
	at := make([]int, 0, len(chunk))
	cached := map[string]bool{}
	for i, c := range chunk {
		idx := 0
		if dev := c.device(); dev != "" {
			var wasCached bool
			var err error
			if idx, wasCached, err = o.index(h, dev); err != nil {
				results[i] = err
				continue
			}
			cached[dev] = wasCached
		}
		reqs = append(reqs, changeRequest(c, idx))
		at = append(at, i)
	}
	if len(reqs) == 0 {
		return results, nil
	}
	out, err := o.batch.do(reqs)
	if err != nil {
		return nil, err
	}
	var again []int
	for j, i := range at {
		results[i] = out[j]
		if dev := chunk[i].device(); retry && cached[dev] && errors.Is(out[j], unix.ENODEV) {
			delete(o.links, dev)
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		sub := make([]change, len(again))
		for j, i := range again {
			sub[j] = chunk[i]
		}
		res, err := o.send(h, sub, false)
		if err != nil {
			return nil, err
		}
		for j, i := range again {
			results[i] = res[j]
		}
	}
	return results, nil
}

// opError turns a change's raw outcome into the error recorded for it.
func opError(c change, err error) error {
	switch {
	case err == nil:
		return nil
	case c.del && isGone(err):
		return nil // already gone
	case c.del:
		return fmt.Errorf("delete %s: %w", c.key.entry(c.val, ""), err)
	default:
		return fmt.Errorf("add %s: %w", c.key.entry(c.val, ""), err)
	}
}

// device is the link a change's request names: the route's device when
// installing a route, the neighbour's or FDB entry's device; none when
// deleting a route (it is matched by destination, table and protocol).
func (c change) device() string {
	switch {
	case c.key.kind == kindRoute && c.del:
		return ""
	case c.key.kind == kindRoute:
		return c.val.dev
	default:
		return c.key.dev
	}
}

// changeRequest is the rtnetlink request of one change, as `ip route
// replace|del`, `ip neigh replace|del` and `bridge fdb replace|del ... self`
// send it; idx is the device's index (unused by route deletions).
func changeRequest(c change, idx int) *nl.NetlinkRequest {
	k, v := c.key, c.val
	if k.kind == kindRoute {
		var msg *nl.RtMsg
		var req *nl.NetlinkRequest
		if c.del {
			msg, req = nl.NewRtDelMsg(), nl.NewNetlinkRequest(unix.RTM_DELROUTE, 0)
		} else {
			msg, req = nl.NewRtMsg(), nl.NewNetlinkRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
		}
		msg.Family = uint8(netFamily(k.dst.Addr()))
		msg.Dst_len = uint8(k.dst.Bits())
		msg.Protocol = RouteProtocol
		if !c.del && v.onlink {
			msg.Flags |= unix.RTNH_F_ONLINK
		}
		req.AddData(msg)
		req.AddData(nl.NewRtAttr(unix.RTA_DST, k.dst.Addr().AsSlice()))
		if c.del {
			return req
		}
		switch {
		case !v.ip.IsValid():
		case v.ip.Is4() == k.dst.Addr().Is4():
			req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, v.ip.AsSlice()))
		default: // a gateway of the other family: struct rtvia
			via := binary.NativeEndian.AppendUint16(nil, uint16(netFamily(v.ip)))
			req.AddData(nl.NewRtAttr(unix.RTA_VIA, append(via, v.ip.AsSlice()...)))
		}
		req.AddData(nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(idx))))
		return req
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	if c.del {
		req = nl.NewNetlinkRequest(unix.RTM_DELNEIGH, 0)
	}
	msg := &netlink.Ndmsg{Index: uint32(idx), State: netlink.NUD_PERMANENT}
	var dst netip.Addr
	var mac string
	if k.kind == kindNeigh {
		msg.Family, dst, mac = uint8(netFamily(k.ip)), k.ip, v.mac
	} else {
		// Replace, not append: appending to an existing unicast MAC with
		// another dst succeeds and changes nothing.
		msg.Family, msg.Flags, dst, mac = unix.AF_BRIDGE, netlink.NTF_SELF, v.ip, k.mac
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.NDA_DST, dst.AsSlice()))
	if mac != "" {
		req.AddData(nl.NewRtAttr(unix.NDA_LLADDR, []byte(mac)))
	}
	return req
}

// index returns the named link's index, from the cache or looked up (and
// cached); cached says which, so that a stale index can be dropped.
func (o *overlayState) index(h netlinksafe.Handle, name string) (idx int, cached bool, err error) {
	if idx, ok := o.links[name]; ok {
		return idx, true, nil
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return 0, false, fmt.Errorf("look up %s: %w", name, err)
	}
	o.links[name] = l.Attrs().Index
	return l.Attrs().Index, false, nil
}

func netFamily(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// isGone reports errors meaning the object to delete does not exist.
func isGone(err error) bool {
	return isLinkNotFound(err) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT)
}
