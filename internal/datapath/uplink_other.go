//go:build !linux

package datapath

import (
	"context"
	"net/netip"
)

// Uplink is the node's interface that holds an underlay address.
type Uplink struct {
	Name   string
	MTU    int
	Prefix netip.Prefix
}

// UplinkFor fails: the datapath is only supported on Linux.
func (d *Datapath) UplinkFor(context.Context, netip.Addr) (Uplink, error) {
	return Uplink{}, errUnsupported
}
