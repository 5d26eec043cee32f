package bgp

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetlinkAddrs reads addresses and routes of the current network namespace
// through netlink. It only reads.
type NetlinkAddrs struct{}

var _ AddrSource = NetlinkAddrs{}

// InterfaceAddrs lists the named interface's addresses with their flags.
func (NetlinkAddrs) InterfaceAddrs(name string) ([]IfAddr, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", name, err)
	}
	out := make([]IfAddr, 0, len(list))
	for _, a := range list {
		if ia, ok := toIfAddr(a); ok {
			out = append(out, ia)
		}
	}
	return out, nil
}

func toIfAddr(a netlink.Addr) (IfAddr, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok || a.IPNet == nil {
		return IfAddr{}, false
	}
	ones, _ := a.Mask.Size()
	return IfAddr{
		Prefix:     netip.PrefixFrom(ip.Unmap(), ones),
		Deprecated: a.Flags&unix.IFA_F_DEPRECATED != 0,
		Temporary:  ip.Unmap().Is6() && a.Flags&unix.IFA_F_TEMPORARY != 0,
		Dynamic:    a.Flags&unix.IFA_F_PERMANENT == 0,
	}, true
}

// InterfaceOf names the interface that holds addr.
func (NetlinkAddrs) InterfaceOf(addr netip.Addr) (string, error) {
	list, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return "", fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() != addr.Unmap() {
			continue
		}
		link, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return "", fmt.Errorf("interface %d holding %s: %w", a.LinkIndex, addr, err)
		}
		return link.Attrs().Name, nil
	}
	return "", fmt.Errorf("no interface holds %s", addr)
}

// SourceFor is the preferred source of the kernel's route to dst.
func (NetlinkAddrs) SourceFor(dst netip.Addr) (netip.Addr, error) {
	routes, err := netlink.RouteGet(net.IP(dst.Unmap().AsSlice()))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("route to %s: %w", dst, err)
	}
	for _, r := range routes {
		if src, ok := netip.AddrFromSlice(r.Src); ok && src.IsValid() && !src.IsUnspecified() {
			return src.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("route to %s has no source address", dst)
}
