//go:build !linux

package datapath

import "context"

// SetLearnedRoutes fails: the datapath is only supported on Linux.
func (d *Datapath) SetLearnedRoutes(context.Context, []LearnedRoute) (LearnedResult, error) {
	return LearnedResult{}, errUnsupported
}
