package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SetLearnedRoutes makes the kernel's learned routes (main table,
// LearnedRouteProtocol) exactly routes, declaratively: it dumps the kernel's
// routes, adds the missing ones, replaces those whose gateway or device
// changed, and deletes the learned routes no longer wanted, so that calling
// it again with the same set issues nothing and repairs any drift (a
// deleted route comes back). Routes of other protocols are never changed.
//
// A route is skipped, with the reason in the result and not as an error,
// when its input is malformed, when its gateway is not directly reachable
// (the kernel's lookup of the gateway must give a connected route, not one
// via another gateway, and not a local address), or when its prefix is held
// by a route of another protocol with the same metric (the overlay's, a
// connected subnet): a replace would steal it. The error reports only
// failures to read or delete.
func (d *Datapath) SetLearnedRoutes(ctx context.Context, routes []LearnedRoute) (LearnedResult, error) {
	d.learnedMu.Lock()
	defer d.learnedMu.Unlock()
	if err := ctx.Err(); err != nil {
		return LearnedResult{}, fmt.Errorf("set learned routes: %w", err)
	}
	var (
		res LearnedResult
		put []fpRouteHop
	)
	err := d.withNode(func(h netlinksafe.Handle) error {
		var err error
		res, put, err = setLearned(ctx, h, routes)
		return err
	})
	if len(put) > 0 {
		d.fast.mu.Lock()
		d.manageHops(put, nil)
		d.fast.mu.Unlock()
	}
	if err != nil {
		return res, fmt.Errorf("set learned routes: %w", err)
	}
	return res, nil
}

// learnedTarget is one route to install.
type learnedTarget struct {
	route LearnedRoute
	gw    netip.Addr
	link  int
}

// setLearned also returns the routes it added or replaced, for the fast
// path's next hops.
func setLearned(ctx context.Context, h netlinksafe.Handle, routes []LearnedRoute) (LearnedResult, []fpRouteHop, error) {
	var (
		res LearnedResult
		put []fpRouteHop
	)
	mine, others, err := dumpMainRoutes(h)
	if err != nil {
		return res, nil, err
	}
	skip := func(r LearnedRoute, format string, a ...any) {
		res.Skipped = append(res.Skipped, SkippedRoute{Route: r, Reason: fmt.Sprintf(format, a...)})
	}
	want := map[netip.Prefix]bool{}
	var targets []learnedTarget
	for _, r := range routes {
		t, why := resolveLearned(h, r, others)
		switch {
		case why != "":
			skip(r, "%s", why)
		case want[t.route.Prefix]:
			skip(r, "duplicate prefix (the first route for it is used)")
		default:
			want[t.route.Prefix] = true
			targets = append(targets, t)
		}
	}
	for i, t := range targets {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return res, put, err
			}
		}
		have, had := mine[t.route.Prefix]
		if had && learnedUpToDate(have, t) {
			res.Installed++
			continue
		}
		nr := &netlink.Route{
			LinkIndex: t.link, Dst: ipNet(t.route.Prefix), Gw: t.gw.AsSlice(), Table: unix.RT_TABLE_MAIN,
			Protocol: netlink.RouteProtocol(LearnedRouteProtocol), Type: unix.RTN_UNICAST,
			Scope: netlink.SCOPE_UNIVERSE, Family: netFamily(t.gw),
		}
		if err := h.RouteReplace(nr); err != nil {
			skip(t.route, "the kernel refused it: %v", err)
			want[t.route.Prefix] = had // keep a stale route rather than none
			continue
		}
		res.Installed++
		put = append(put, fpRouteHop{dst: t.route.Prefix, hop: fpNextHop{ifindex: t.link, ip: t.gw.Unmap()}})
		if had {
			res.Replaced++
		} else {
			res.Added++
		}
	}
	stale := make([]netip.Prefix, 0, len(mine))
	for p := range mine {
		if !want[p] {
			stale = append(stale, p)
		}
	}
	slices.SortFunc(stale, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	var errs []error
	for _, p := range stale {
		err := h.RouteDel(&netlink.Route{Dst: ipNet(p), Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_NOWHERE,
			Protocol: netlink.RouteProtocol(LearnedRouteProtocol), Family: netFamily(p.Addr())})
		switch {
		case err == nil:
			res.Deleted++
		case !isGone(err):
			errs = append(errs, fmt.Errorf("delete learned route %s: %w", p, err))
		}
	}
	return res, put, errors.Join(errs...)
}

// ip6DefaultMetric is the metric the kernel gives an IPv6 route added with
// none (IP6_RT_PRIO_USER), as ours are.
const ip6DefaultMetric = 1024

// dumpMainRoutes reads the main table: the learned routes by prefix, and
// the protocol of every other route with our metric (the ones a replace of
// ours would overwrite).
func dumpMainRoutes(h netlinksafe.Handle) (mine map[netip.Prefix]netlink.Route, others map[netip.Prefix]int, err error) {
	mine, others = map[netip.Prefix]netlink.Route{}, map[netip.Prefix]int{}
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := h.RouteListFiltered(fam, filter, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range rs {
			p, ok := prefixOf(r.Dst)
			if !ok {
				continue // default route
			}
			switch {
			case int(r.Protocol) == LearnedRouteProtocol:
				mine[p] = r
			case r.Priority == 0 || (fam == netlink.FAMILY_V6 && r.Priority == ip6DefaultMetric):
				others[p] = int(r.Protocol)
			}
		}
	}
	return mine, others, nil
}

// resolveLearned validates r and finds the link its gateway is on; a
// non-empty reason says why it cannot be installed.
func resolveLearned(h netlinksafe.Handle, r LearnedRoute, others map[netip.Prefix]int) (learnedTarget, string) {
	t := learnedTarget{route: r}
	p, gw := r.Prefix, r.Gateway.Unmap()
	if z := gw.Zone(); z != "" && t.route.Device == "" {
		t.route.Device = z
	}
	gw = gw.WithZone("")
	t.gw = gw
	switch {
	case !p.IsValid() || p != p.Masked():
		return t, "invalid prefix (want a masked prefix)"
	case !gw.IsValid() || gw.Is4() != p.Addr().Is4() || gw.IsUnspecified() || gw.IsMulticast():
		return t, "invalid gateway (want a unicast address of the prefix's family)"
	case p.Bits() == 0:
		return t, "default route not accepted"
	case gw.IsLinkLocalUnicast() && gw.Is6() && t.route.Device == "":
		return t, "link-local gateway without a device"
	case t.route.Device != "" && !validIfName(t.route.Device):
		return t, fmt.Sprintf("invalid device name %q", t.route.Device)
	}
	if proto, held := others[p]; held {
		return t, fmt.Sprintf("prefix held by a route of protocol %d, left alone", proto)
	}
	pin := 0
	if t.route.Device != "" {
		l, err := h.LinkByName(t.route.Device)
		if err != nil {
			return t, fmt.Sprintf("device %s: %v", t.route.Device, err)
		}
		pin = l.Attrs().Index
	}
	var opts *netlink.RouteGetOptions
	if gw.IsLinkLocalUnicast() {
		opts = &netlink.RouteGetOptions{OifIndex: pin}
	}
	got, err := h.RouteGetWithOptions(gw.AsSlice(), opts)
	if err != nil || len(got) == 0 {
		return t, fmt.Sprintf("gateway %s unreachable: %v", gw, err)
	}
	g := got[0]
	switch {
	case g.Type == unix.RTN_LOCAL:
		return t, fmt.Sprintf("gateway %s is an address of this node", gw)
	case g.Type != unix.RTN_UNICAST:
		return t, fmt.Sprintf("gateway %s unreachable (route type %d)", gw, g.Type)
	case len(g.Gw) > 0 && !net.IP(g.Gw).Equal(gw.AsSlice()):
		return t, fmt.Sprintf("gateway %s not directly reachable (the kernel routes it via %s)", gw, net.IP(g.Gw))
	case pin != 0 && g.LinkIndex != pin:
		return t, fmt.Sprintf("gateway %s is not reachable on %s", gw, t.route.Device)
	}
	t.link = g.LinkIndex
	return t, ""
}

func learnedUpToDate(have netlink.Route, t learnedTarget) bool {
	gw, _ := netip.AddrFromSlice(have.Gw)
	return have.Type == unix.RTN_UNICAST && len(have.MultiPath) == 0 && have.LinkIndex == t.link &&
		gw.Unmap() == t.gw && have.Flags&int(netlink.FLAG_ONLINK) == 0
}
