package datapath

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CheckPod compares a pod's wiring with the desired state. It returns nil,
// a *DriftError whose items each name one drifted object, or an operational
// error (a missing pod namespace wraps ErrNetnsNotFound).
func (d *Datapath) CheckPod(ctx context.Context, p Pod) error {
	if err := d.checkPod(ctx, p); err != nil {
		if _, ok := err.(*DriftError); ok {
			return err
		}
		return fmt.Errorf("check pod %s in %s: %w", p.IfName, p.Netns, err)
	}
	return nil
}

func (d *Datapath) checkPod(ctx context.Context, p Pod) error {
	addrs, err := validatePod(p)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	podNS, podH, err := openPodNetns(p.Netns)
	if err != nil {
		return err
	}
	defer func() { _ = podNS.Close() }()
	defer podH.Close()

	var items []string
	var host netlink.Link
	err = d.withNode(func(h netlinksafe.Handle) error {
		var err error
		items, host, err = checkHostSide(h, p, addrs)
		if err != nil || host == nil {
			return err
		}
		why, err := vethPeerMismatch(h, host, podNS, podH, p.IfName)
		if err == nil && why != "" {
			items = append(items, fmt.Sprintf("host veth %s: %s", p.HostIface, why))
		}
		return err
	})
	if err != nil {
		return err
	}
	if host != nil {
		var drift []string
		err := d.inNode(func() error {
			var err error
			drift, err = sysctlDrift(hostIfaceSysctls(p.HostIface))
			return err
		})
		if err != nil {
			return err
		}
		for _, s := range drift {
			items = append(items, fmt.Sprintf("host veth %s: %s", p.HostIface, s))
		}
	}
	podItems, err := checkPodSide(podH, p, addrs)
	if err != nil {
		return err
	}
	items = append(items, podItems...)
	if len(items) > 0 {
		return &DriftError{Items: items}
	}
	return nil
}

// checkHostSide checks the host veth and the routes through it; host is nil
// when the veth is missing.
func checkHostSide(h netlinksafe.Handle, p Pod, addrs podAddrs) (items []string, host netlink.Link, err error) {
	host, err = h.LinkByName(p.HostIface)
	if isLinkNotFound(err) {
		return []string{fmt.Sprintf("host veth %s missing", p.HostIface)}, nil, nil
	} else if err != nil {
		return nil, nil, fmt.Errorf("look up host veth %s: %w", p.HostIface, err)
	}
	a := host.Attrs()
	if _, ok := host.(*netlink.Veth); !ok {
		items = append(items, fmt.Sprintf("host veth %s is a %s, not a veth", p.HostIface, host.Type()))
	}
	if a.Flags&net.FlagUp == 0 {
		items = append(items, fmt.Sprintf("host veth %s is down", p.HostIface))
	}
	if !bytes.Equal(a.HardwareAddr, HostVethMAC) {
		items = append(items, fmt.Sprintf("host veth %s has mac %s, want %s", p.HostIface, a.HardwareAddr, HostVethMAC))
	}
	if p.MTU > 0 && a.MTU != p.MTU {
		items = append(items, fmt.Sprintf("host veth %s has mtu %d, want %d", p.HostIface, a.MTU, p.MTU))
	}
	if addrs.v6.IsValid() {
		have, err := addrList(h, host, netlink.FAMILY_V6)
		if err != nil {
			return nil, nil, fmt.Errorf("list addresses of host veth %s: %w", p.HostIface, err)
		}
		if !slices.ContainsFunc(have, func(a netlink.Addr) bool { pfx, ok := prefixOf(a.IPNet); return ok && pfx == hostGatewayV6 }) {
			items = append(items, fmt.Sprintf("host veth %s: address %s missing", p.HostIface, hostGatewayV6))
		}
	}
	for _, pfx := range addrs.prefixes() {
		want := hostRoute(a.Index, pfx)
		routes, err := h.RouteListFiltered(familyOf(pfx.Addr()), want,
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, nil, fmt.Errorf("list host routes to %s: %w", pfx, err)
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Gw == nil && r.Scope == want.Scope }) {
			items = append(items, fmt.Sprintf("host route %s dev %s missing", pfx, p.HostIface))
		}
	}
	return items, host, nil
}

func checkPodSide(h netlinksafe.Handle, p Pod, addrs podAddrs) ([]string, error) {
	link, err := h.LinkByName(p.IfName)
	if isLinkNotFound(err) {
		return []string{fmt.Sprintf("pod %s missing", p.IfName)}, nil
	} else if err != nil {
		return nil, fmt.Errorf("look up pod interface %s: %w", p.IfName, err)
	}
	var items []string
	add := func(format string, args ...any) {
		items = append(items, fmt.Sprintf("pod %s: ", p.IfName)+fmt.Sprintf(format, args...))
	}
	a := link.Attrs()
	if a.Flags&net.FlagUp == 0 {
		items = append(items, fmt.Sprintf("pod %s is down", p.IfName))
	}
	if p.MTU > 0 && a.MTU != p.MTU {
		add("mtu %d, want %d", a.MTU, p.MTU)
	}

	have, err := addrList(h, link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of pod interface %s: %w", p.IfName, err)
	}
	var got []netip.Prefix
	for _, ad := range have {
		if pfx, ok := prefixOf(ad.IPNet); ok && !pfx.Addr().IsLinkLocalUnicast() {
			got = append(got, pfx)
		}
	}
	want := addrs.prefixes()
	for _, pfx := range want {
		if !slices.Contains(got, pfx) {
			add("address %s missing", pfx)
		}
	}
	for _, pfx := range got {
		if !slices.Contains(want, pfx) {
			add("unexpected address %s", pfx)
		}
	}

	idx := a.Index
	type gateway struct {
		enabled bool
		gw      netip.Addr
	}
	for _, g := range []gateway{{addrs.v4.IsValid(), GatewayV4}, {addrs.v6.IsValid(), GatewayV6}} {
		if !g.enabled {
			continue
		}
		fam := familyOf(g.gw)
		routes, err := h.RouteListFiltered(fam, &netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes of pod interface %s: %w", p.IfName, err)
		}
		if g.gw.Is4() && !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			pfx, ok := prefixOf(r.Dst)
			return ok && pfx == netip.PrefixFrom(g.gw, 32) && r.Gw == nil && r.Scope == netlink.SCOPE_LINK
		}) {
			add("route %s scope link missing", g.gw)
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			pfx, ok := prefixOf(r.Dst)
			isDefault := r.Dst == nil || (ok && pfx.Bits() == 0)
			gw, _ := netip.AddrFromSlice(r.Gw)
			return isDefault && gw.Unmap() == g.gw
		}) {
			add("default route via %s missing", g.gw)
		}
		neighs, err := neighList(h, idx, fam)
		if err != nil {
			return nil, fmt.Errorf("list neighbours of pod interface %s: %w", p.IfName, err)
		}
		if !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
			ip, _ := netip.AddrFromSlice(n.IP)
			return ip.Unmap() == g.gw && n.State&netlink.NUD_PERMANENT != 0 && bytes.Equal(n.HardwareAddr, HostVethMAC)
		}) {
			add("permanent neighbour %s lladdr %s missing", g.gw, HostVethMAC)
		}
	}
	return items, nil
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}
