package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostGatewayV6 is the address the host veth carries so the pod can resolve
// and ping its IPv6 gateway.
var hostGatewayV6 = netip.PrefixFrom(GatewayV6, 64)

// SetupPod wires one routed pod, idempotently: a veth pair whose host end
// p.HostIface stays in the node's namespace and whose peer is created
// directly in p.Netns as p.IfName; host routes to the pod's /32 and /128 via
// the host end; in the pod, the addresses, link-local gateways with
// permanent neighbours and default routes. An existing pair is reconciled; a
// stale host veth whose peer is elsewhere is replaced. On failure, the veth
// created by this call is deleted again.
func (d *Datapath) SetupPod(ctx context.Context, p Pod) (PodLinks, error) {
	links, err := d.setupPod(ctx, p)
	if err != nil {
		return PodLinks{}, fmt.Errorf("setup pod %s in %s: %w", p.IfName, p.Netns, err)
	}
	return links, nil
}

func (d *Datapath) setupPod(ctx context.Context, p Pod) (_ PodLinks, err error) {
	addrs, err := validatePod(p)
	if err != nil {
		return PodLinks{}, err
	}
	if err := ctx.Err(); err != nil {
		return PodLinks{}, err
	}
	podNS, podH, err := openPodNetns(p.Netns)
	if err != nil {
		return PodLinks{}, err
	}
	defer func() { _ = podNS.Close() }()
	defer podH.Close()

	log := d.log.With("netns", p.Netns, "ifname", p.IfName, "host_iface", p.HostIface)
	host, created, err := d.ensureVeth(p, podNS, podH, log)
	if err != nil {
		return PodLinks{}, err
	}
	if created {
		defer func() {
			if err == nil {
				return
			}
			log.Warn("setup failed, deleting the veth it created", "error", err)
			if _, derr := d.deleteHostLink(p.HostIface); derr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", derr))
			}
		}()
	}
	if err := ctx.Err(); err != nil {
		return PodLinks{}, err
	}
	if err := d.setupHostSide(host, p, addrs); err != nil {
		return PodLinks{}, err
	}
	podMAC, err := setupPodSide(podH, p, addrs)
	if err != nil {
		return PodLinks{}, err
	}
	log.Debug("pod wired", "created", created, "addrs", addrs.prefixes())
	return PodLinks{
		HostIface: p.HostIface,
		HostMAC:   append(net.HardwareAddr(nil), HostVethMAC...),
		PodIface:  p.IfName,
		PodMAC:    podMAC,
	}, nil
}

// ensureVeth returns the host end of the pod's veth pair, creating the pair
// (created=true) unless a host veth of that name already has p.IfName in the
// pod's namespace as its peer.
func (d *Datapath) ensureVeth(p Pod, podNS ns.NetNS, podH netlinksafe.Handle, log *slog.Logger) (host netlink.Link, created bool, err error) {
	err = d.withNode(func(h netlinksafe.Handle) error {
		existing, err := h.LinkByName(p.HostIface)
		switch {
		case err == nil:
			why, err := vethPeerMismatch(h, existing, podNS, podH, p.IfName)
			if err != nil {
				return err
			}
			if why == "" {
				host = existing
				return nil
			}
			log.Info("replacing stale host veth", "reason", why)
			if err := h.LinkDel(existing); err != nil && !isLinkNotFound(err) {
				return fmt.Errorf("delete stale host veth %s: %w", p.HostIface, err)
			}
		case !isLinkNotFound(err):
			return fmt.Errorf("look up host veth %s: %w", p.HostIface, err)
		}

		// With no host veth, a p.IfName in the pod cannot be our peer.
		if l, err := podH.LinkByName(p.IfName); err == nil {
			return fmt.Errorf("interface %s already exists in the pod netns (type %s)", p.IfName, l.Type())
		} else if !isLinkNotFound(err) {
			return fmt.Errorf("look up pod interface %s: %w", p.IfName, err)
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = p.HostIface
		attrs.HardwareAddr = HostVethMAC
		attrs.MTU = p.MTU
		veth := &netlink.Veth{
			LinkAttrs:     attrs,
			PeerName:      p.IfName,
			PeerNamespace: netlink.NsFd(int(podNS.Fd())),
		}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s with peer %s: %w", p.HostIface, p.IfName, err)
		}
		created = true
		if host, err = h.LinkByName(p.HostIface); err != nil {
			return fmt.Errorf("look up created host veth %s: %w", p.HostIface, err)
		}
		return noLinkLocal(h, host)
	})
	if err != nil && created {
		// Created, but could not be read back: do not leak it.
		if _, derr := d.deleteHostLink(p.HostIface); derr != nil {
			err = errors.Join(err, fmt.Errorf("roll back: %w", derr))
		}
		created = false
	}
	return host, created, err
}

// noLinkLocal stops the kernel from generating an IPv6 link-local address on
// a new host veth (addrgenmode none; set before the link goes up). The host
// side needs none: with IPv6 it carries fe80::1 for the pod's gateway. Each
// generated address also put routes into the node's IPv6 table, and with a
// hundred pods they doubled the cost of deleting a veth (15.6 ms -> 31 ms,
// see docs/benchmarks.md). Without IPv6 in the node's kernel there is nothing
// to stop.
func noLinkLocal(h netlinksafe.Handle, host netlink.Link) error {
	const in6AddrGenModeNone = 1 // IN6_ADDR_GEN_MODE_NONE, linux/if_link.h
	err := h.LinkSetIP6AddrGenMode(host, in6AddrGenModeNone)
	if err != nil && !errors.Is(err, unix.EAFNOSUPPORT) && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("host veth %s: set IPv6 addrgenmode none: %w", host.Attrs().Name, err)
	}
	return nil
}

// vethPeerMismatch returns "" when host is a veth whose peer is ifName in the
// pod's namespace, else why not. Interface indexes are per namespace, so the
// check also compares the namespace ids each side records for the other.
func vethPeerMismatch(nodeH netlinksafe.Handle, host netlink.Link, podNS ns.NetNS, podH netlinksafe.Handle, ifName string) (string, error) {
	hv, ok := host.(*netlink.Veth)
	if !ok {
		return fmt.Sprintf("host link is a %s, not a veth", host.Type()), nil
	}
	peer, err := podH.LinkByName(ifName)
	if isLinkNotFound(err) {
		return fmt.Sprintf("no %s in the pod netns", ifName), nil
	} else if err != nil {
		return "", fmt.Errorf("look up pod interface %s: %w", ifName, err)
	}
	pv, ok := peer.(*netlink.Veth)
	if !ok {
		return fmt.Sprintf("pod %s is a %s, not a veth", ifName, peer.Type()), nil
	}
	if hv.ParentIndex != pv.Index || pv.ParentIndex != hv.Index {
		return fmt.Sprintf("pod %s is not the peer of the host veth", ifName), nil
	}
	podID, err := nodeH.GetNetNsIdByFd(int(podNS.Fd()))
	if err != nil {
		return "", fmt.Errorf("get id of pod netns: %w", err)
	}
	if podID < 0 || hv.NetNsID != podID {
		return "host veth peer is in another netns", nil
	}
	return "", nil
}

// setupHostSide configures the host end: MAC, MTU, sysctls, the IPv6
// gateway address, link up and the routes to the pod.
func (d *Datapath) setupHostSide(host netlink.Link, p Pod, addrs podAddrs) error {
	err := d.withNode(func(h netlinksafe.Handle) error {
		if !bytes.Equal(host.Attrs().HardwareAddr, HostVethMAC) {
			if err := h.LinkSetHardwareAddr(host, HostVethMAC); err != nil {
				return fmt.Errorf("set host veth mac: %w", err)
			}
		}
		if p.MTU > 0 && host.Attrs().MTU != p.MTU {
			if err := h.LinkSetMTU(host, p.MTU); err != nil {
				return fmt.Errorf("set host veth mtu %d: %w", p.MTU, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The interface exists in the node's namespace, so its sysctls do too.
	if err := d.inNode(func() error { return ensureSysctls(hostIfaceSysctls(p.HostIface)) }); err != nil {
		return fmt.Errorf("host veth %s: %w", p.HostIface, err)
	}
	return d.withNode(func(h netlinksafe.Handle) error {
		if addrs.v6.IsValid() {
			a := &netlink.Addr{IPNet: ipNet(hostGatewayV6), Flags: unix.IFA_F_NODAD}
			if err := h.AddrReplace(host, a); err != nil {
				return fmt.Errorf("add address %s to host veth: %w", hostGatewayV6, err)
			}
		}
		if host.Attrs().Flags&net.FlagUp == 0 {
			if err := h.LinkSetUp(host); err != nil {
				return fmt.Errorf("set host veth up: %w", err)
			}
		}
		for _, pfx := range addrs.prefixes() {
			if err := h.RouteReplace(hostRoute(host.Attrs().Index, pfx)); err != nil {
				return fmt.Errorf("add route %s: %w", pfx, err)
			}
		}
		return nil
	})
}

// hostRoute is the node's route to a pod address: <ip>/32 dev <host veth>
// scope link, or <ip>/128 dev <host veth>, in the main table.
func hostRoute(index int, pfx netip.Prefix) *netlink.Route {
	r := &netlink.Route{LinkIndex: index, Dst: ipNet(pfx), Table: unix.RT_TABLE_MAIN}
	if pfx.Addr().Is4() {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

// setupPodSide configures the pod end through a handle at the pod's
// namespace and returns its MAC (left as the kernel chose it).
func setupPodSide(h netlinksafe.Handle, p Pod, addrs podAddrs) (net.HardwareAddr, error) {
	link, err := h.LinkByName(p.IfName)
	if err != nil {
		return nil, fmt.Errorf("look up pod interface %s: %w", p.IfName, err)
	}
	if p.MTU > 0 && link.Attrs().MTU != p.MTU {
		if err := h.LinkSetMTU(link, p.MTU); err != nil {
			return nil, fmt.Errorf("set mtu %d: %w", p.MTU, err)
		}
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("look up lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(lo); err != nil {
			return nil, fmt.Errorf("set lo up: %w", err)
		}
	}
	if err := reconcilePodAddrs(h, link, addrs); err != nil {
		return nil, err
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set link up: %w", err)
		}
	}
	idx := link.Attrs().Index
	if addrs.v4.IsValid() {
		gw := netip.PrefixFrom(GatewayV4, 32)
		if err := h.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: ipNet(gw), Scope: netlink.SCOPE_LINK, Table: unix.RT_TABLE_MAIN}); err != nil {
			return nil, fmt.Errorf("add route %s: %w", gw, err)
		}
		if err := h.NeighSet(gatewayNeigh(idx, GatewayV4)); err != nil {
			return nil, fmt.Errorf("add neighbour %s: %w", GatewayV4, err)
		}
		if err := h.RouteReplace(defaultRoute(idx, GatewayV4)); err != nil {
			return nil, fmt.Errorf("add default route via %s: %w", GatewayV4, err)
		}
	}
	if addrs.v6.IsValid() {
		if err := h.NeighSet(gatewayNeigh(idx, GatewayV6)); err != nil {
			return nil, fmt.Errorf("add neighbour %s: %w", GatewayV6, err)
		}
		if err := h.RouteReplace(defaultRoute(idx, GatewayV6)); err != nil {
			return nil, fmt.Errorf("add default route via %s: %w", GatewayV6, err)
		}
	}
	return link.Attrs().HardwareAddr, nil
}

// reconcilePodAddrs makes the pod interface's non-link-local addresses
// exactly the pod's /32 and /128 (IPv6 without DAD, usable at once).
func reconcilePodAddrs(h netlinksafe.Handle, link netlink.Link, addrs podAddrs) error {
	want := addrs.prefixes()
	have, err := addrList(h, link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range have {
		pfx, ok := prefixOf(a.IPNet)
		if !ok || pfx.Addr().IsLinkLocalUnicast() || slices.Contains(want, pfx) {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("delete unexpected address %s: %w", pfx, err)
		}
	}
	for _, pfx := range want {
		a := &netlink.Addr{IPNet: ipNet(pfx)}
		if pfx.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrReplace(link, a); err != nil {
			return fmt.Errorf("add address %s: %w", pfx, err)
		}
	}
	return nil
}

func defaultRoute(index int, gw netip.Addr) *netlink.Route {
	r := &netlink.Route{LinkIndex: index, Gw: gw.AsSlice(), Table: unix.RT_TABLE_MAIN, Family: netlink.FAMILY_V4}
	if gw.Is6() {
		r.Family = netlink.FAMILY_V6
	}
	return r
}

func gatewayNeigh(index int, gw netip.Addr) *netlink.Neigh {
	n := &netlink.Neigh{
		LinkIndex:    index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           gw.AsSlice(),
		HardwareAddr: HostVethMAC,
	}
	if gw.Is6() {
		n.Family = netlink.FAMILY_V6
	}
	return n
}

// TeardownPod removes a pod's wiring, idempotently: it deletes the host veth
// (which deletes its peer and the routes through it). When the host veth is
// already gone and the pod's namespace still exists, a veth ifName left in
// it is deleted too. A missing namespace is not an error.
func (d *Datapath) TeardownPod(ctx context.Context, hostIface, netnsPath, ifName string) error {
	if err := d.teardownPod(ctx, hostIface, netnsPath, ifName); err != nil {
		return fmt.Errorf("teardown pod %s in %s (host veth %s): %w", ifName, netnsPath, hostIface, err)
	}
	return nil
}

func (d *Datapath) teardownPod(ctx context.Context, hostIface, netnsPath, ifName string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if hostIface != "" {
		deleted, err := d.deleteHostLink(hostIface)
		if err != nil {
			return err
		}
		if deleted {
			d.log.Debug("deleted host veth", "host_iface", hostIface)
			return nil
		}
	}
	if netnsPath == "" || ifName == "" {
		return nil
	}
	podNS, err := ns.GetNS(netnsPath)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &notExist) || errors.As(err, &notNS) {
			return nil // the namespace is gone, and everything in it
		}
		return fmt.Errorf("open netns: %w", err)
	}
	defer func() { _ = podNS.Close() }()
	return deletePodVeth(podNS, ifName, d.log)
}

func deletePodVeth(podNS ns.NetNS, ifName string, log *slog.Logger) error {
	h, err := netlinksafe.NewHandleAt(nsHandle(podNS))
	if err != nil {
		return fmt.Errorf("open netlink handle in pod netns: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if isLinkNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("look up pod interface %s: %w", ifName, err)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		log.Info("not deleting pod interface: not a veth", "ifname", ifName, "type", l.Type())
		return nil
	}
	if err := h.LinkDel(l); err != nil && !isLinkNotFound(err) {
		return fmt.Errorf("delete pod interface %s: %w", ifName, err)
	}
	log.Info("deleted leftover pod veth", "ifname", ifName)
	return nil
}

// deleteHostLink deletes the node's link of that name, reporting whether it
// existed.
func (d *Datapath) deleteHostLink(name string) (bool, error) {
	var deleted bool
	err := d.withNode(func(h netlinksafe.Handle) error {
		l, err := h.LinkByName(name)
		if isLinkNotFound(err) {
			return nil
		} else if err != nil {
			return fmt.Errorf("look up host veth %s: %w", name, err)
		}
		if err := h.LinkDel(l); err != nil {
			if isLinkNotFound(err) {
				return nil
			}
			return fmt.Errorf("delete host veth %s: %w", name, err)
		}
		deleted = true
		return nil
	})
	return deleted, err
}
