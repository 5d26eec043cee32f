package datapath

import (
	"fmt"
	"net/netip"
)

// LearnedRoute is a route to another node's pod block learned over BGP
// (native routing): Prefix via Gateway, which must be directly reachable
// (on a connected subnet of this node). Device, when set, pins the
// interface; otherwise the kernel's lookup of Gateway chooses it.
type LearnedRoute struct {
	Prefix  netip.Prefix
	Gateway netip.Addr
	Device  string
}

func (r LearnedRoute) String() string {
	s := fmt.Sprintf("%s via %s", r.Prefix, r.Gateway)
	if r.Device != "" {
		s += " dev " + r.Device
	}
	return s
}

// SkippedRoute is a learned route SetLearnedRoutes did not install, and why.
type SkippedRoute struct {
	Route  LearnedRoute
	Reason string
}

// LearnedResult is what one SetLearnedRoutes call did.
type LearnedResult struct {
	// Installed is the number of learned routes now in the kernel.
	Installed int
	// Added, Replaced and Deleted count the kernel operations issued.
	Added, Replaced, Deleted int
	// Skipped lists the routes not installed (bad input, unreachable
	// gateway, prefix held by a route of another protocol), in input order.
	Skipped []SkippedRoute
}

// Ops is the number of kernel operations issued.
func (r LearnedResult) Ops() int { return r.Added + r.Replaced + r.Deleted }
