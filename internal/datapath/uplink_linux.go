package datapath

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// Uplink is the node's interface that holds an underlay address.
type Uplink struct {
	Name string
	MTU  int
	// Prefix is the address with the on-link prefix length it is configured
	// with: the node's underlay subnet.
	Prefix netip.Prefix
}

// UplinkFor finds the interface in the node's namespace holding addr.
func (d *Datapath) UplinkFor(ctx context.Context, addr netip.Addr) (Uplink, error) {
	if err := ctx.Err(); err != nil {
		return Uplink{}, err
	}
	var up Uplink
	err := d.withNode(func(h netlinksafe.Handle) error {
		fam := netlink.FAMILY_V4
		if addr.Is6() {
			fam = netlink.FAMILY_V6
		}
		addrs, err := h.AddrList(nil, fam)
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || ip.Unmap() != addr {
				continue
			}
			l, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return fmt.Errorf("link of %s: %w", addr, err)
			}
			ones, _ := a.Mask.Size()
			up = Uplink{Name: l.Attrs().Name, MTU: l.Attrs().MTU, Prefix: netip.PrefixFrom(addr, ones).Masked()}
			return nil
		}
		return fmt.Errorf("no interface holds %s", addr)
	})
	return up, err
}
