//go:build !linux

package datapath

import (
	"context"
	"errors"
)

// Datapath programs the kernel of the node's network namespace; it only
// exists on Linux.
type Datapath struct{}

var errUnsupported = errors.New("datapath: only supported on linux")

// New fails: the datapath is only supported on Linux.
func New(Options) (*Datapath, error) { return nil, errUnsupported }

// Close does nothing.
func (d *Datapath) Close() {}

// EnsureHost fails: the datapath is only supported on Linux.
func (d *Datapath) EnsureHost(context.Context) error { return errUnsupported }

// SetupPod fails: the datapath is only supported on Linux.
func (d *Datapath) SetupPod(context.Context, Pod) (PodLinks, error) {
	return PodLinks{}, errUnsupported
}

// TeardownPod fails: the datapath is only supported on Linux.
func (d *Datapath) TeardownPod(context.Context, string, string, string) error {
	return errUnsupported
}

// CheckPod fails: the datapath is only supported on Linux.
func (d *Datapath) CheckPod(context.Context, Pod) error { return errUnsupported }

// HostIfaces fails: the datapath is only supported on Linux.
func (d *Datapath) HostIfaces(context.Context) ([]string, error) { return nil, errUnsupported }

// SetFastPath fails: the datapath is only supported on Linux.
func (d *Datapath) SetFastPath(FastPath) (FastPathStatus, error) {
	return FastPathStatus{}, errUnsupported
}

// FastPathCounters fails: the datapath is only supported on Linux.
func (d *Datapath) FastPathCounters(string) (FastPathCounters, error) {
	return FastPathCounters{}, errUnsupported
}

// FastPathNextHops fails: the datapath is only supported on Linux.
func (d *Datapath) FastPathNextHops() ([]NextHop, error) { return nil, errUnsupported }
