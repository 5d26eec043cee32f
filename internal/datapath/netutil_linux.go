package datapath

import (
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func nsHandle(n ns.NetNS) netns.NsHandle { return netns.NsHandle(int(n.Fd())) }

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// defaultPrefix is the default route's destination in family fam
// (unix.AF_INET or unix.AF_INET6), which a route dump gives as a nil Dst.
func defaultPrefix(fam int) netip.Prefix {
	if fam == unix.AF_INET6 {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
}

// prefixOf converts a netlink address or route destination; ok is false for
// nil or malformed values.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	if bits == 128 && ip.Is4() {
		ones -= 96
	}
	return netip.PrefixFrom(ip, ones), true
}
