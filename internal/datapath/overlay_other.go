//go:build !linux

package datapath

import "context"

// EnsureVTEPs fails: the datapath is only supported on Linux.
func (d *Datapath) EnsureVTEPs(context.Context, []VTEPConfig) error { return errUnsupported }

// SetPeer fails: the datapath is only supported on Linux.
func (d *Datapath) SetPeer(context.Context, Peer) (OpStats, error) { return OpStats{}, errUnsupported }

// DeletePeer fails: the datapath is only supported on Linux.
func (d *Datapath) DeletePeer(context.Context, string) (OpStats, error) {
	return OpStats{}, errUnsupported
}

// Resync fails: the datapath is only supported on Linux.
func (d *Datapath) Resync(context.Context, []Peer) (OpStats, []string, error) {
	return OpStats{}, nil, errUnsupported
}

// OverlayState fails: the datapath is only supported on Linux.
func (d *Datapath) OverlayState(context.Context) ([]ManagedEntry, error) {
	return nil, errUnsupported
}

// SetNAT fails: the datapath is only supported on Linux.
func (d *Datapath) SetNAT(context.Context, NATConfig) error { return errUnsupported }
