//go:build !linux

package datapath

import "context"

// EnableFlowTracking fails: the datapath is only supported on Linux.
func (d *Datapath) EnableFlowTracking(context.Context) error { return errUnsupported }
