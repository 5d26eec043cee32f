package agent

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/bgp"
	"github.com/strait-net/strait/internal/datapath"
)

// Native routing: with bgp.enabled, the cluster controller leaves the
// blocks of pools with encapsulation None (and VXLANCrossSubnet blocks of
// nodes in this node's subnet) to BGP (see desiredPeers), and the BGP
// controller installs the routes to them that the node-to-node mesh
// learned, through the datapath's SetLearnedRoutes.

// LearnedRouteDatapath is the part of the datapath native routing drives.
type LearnedRouteDatapath interface {
	SetLearnedRoutes(ctx context.Context, routes []datapath.LearnedRoute) (datapath.LearnedResult, error)
}

// nativeInputs is what nativeRoutes reads besides the learned routes.
type nativeInputs struct {
	// Pools are the pod address ranges and their encapsulation (the
	// IPPools, and in node-cidr mode every Node's podCIDRs).
	Pools []poolSettings
	// Own are this node's blocks: a learned route overlapping one is never
	// installed.
	Own []netip.Prefix
	// Subnets are this node's underlay subnets (VXLANCrossSubnet: only next
	// hops inside them are routed natively).
	Subnets []netip.Prefix
}

// nativeRoutes is the pure decision of native routing: of the routes the
// speaker learned, it keeps those from mesh peers whose prefix lies inside
// a pool routed natively (None; VXLANCrossSubnet with a next hop in this
// node's subnet) and does not overlap this node's own blocks. ignored says
// why each other route is left out.
func nativeRoutes(learned []bgp.Route, in nativeInputs) (routes []datapath.LearnedRoute, ignored []string) {
	for _, r := range learned {
		why := ""
		pool, inPool := poolOf(in.Pools, r.Prefix)
		switch {
		case !strings.HasPrefix(r.Peer, meshPeerPrefix):
			why = "not from a node-to-node mesh peer"
		case !r.Prefix.IsValid() || !r.NextHop.IsValid():
			why = "no valid prefix or next hop"
		case !inPool:
			why = "outside every IP pool"
		case slices.ContainsFunc(in.Own, r.Prefix.Overlaps):
			why = "overlaps a block of this node"
		case pool.Encapsulation == EncapVXLANCrossSubnet && !slices.ContainsFunc(in.Subnets, func(s netip.Prefix) bool { return s.Contains(r.NextHop.Unmap()) }):
			why = "VXLANCrossSubnet pool and the next hop is in another subnet: the overlay routes it"
		case pool.Encapsulation != EncapNone && pool.Encapsulation != EncapVXLANCrossSubnet:
			why = fmt.Sprintf("pool %s has encapsulation %s: the overlay routes it", pool.CIDR, pool.Encapsulation)
		}
		if why != "" {
			ignored = append(ignored, fmt.Sprintf("%s via %s from %s: %s", r.Prefix, r.NextHop, cmp.Or(r.Peer, "?"), why))
			continue
		}
		routes = append(routes, datapath.LearnedRoute{Prefix: r.Prefix, Gateway: r.NextHop.Unmap()})
	}
	slices.SortFunc(routes, func(a, b datapath.LearnedRoute) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()),
			a.Gateway.Compare(b.Gateway))
	})
	return routes, ignored
}

// poolOf finds the most specific pool holding p.
func poolOf(pools []poolSettings, p netip.Prefix) (poolSettings, bool) {
	var best poolSettings
	found := false
	for _, pool := range pools {
		if pool.CIDR.Bits() <= p.Bits() && pool.CIDR.Contains(p.Addr()) && (!found || pool.CIDR.Bits() > best.CIDR.Bits()) {
			best, found = pool, true
		}
	}
	return best, found
}

// nativeInputs reads the pools, this node's blocks and its subnets from
// the informers.
func (b *bgpController) nativeInputs() nativeInputs {
	var in nativeInputs
	for _, o := range b.pools.List() {
		if u, ok := o.(*unstructured.Unstructured); ok {
			if p, err := poolFromObject(u); err == nil {
				in.Pools = append(in.Pools, p)
			}
		}
	}
	for _, o := range b.blocks.List() {
		if u, ok := o.(*unstructured.Unstructured); ok {
			if bi, _, err := blockFromObject(u); err == nil && bi.Node == b.node {
				in.Own = append(in.Own, bi.CIDR)
			}
		}
	}
	for _, o := range b.nodes.List() {
		n, ok := o.(*corev1.Node)
		if !ok {
			continue
		}
		for _, s := range n.Spec.PodCIDRs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				continue
			}
			if b.nodeCIDREncap != "" {
				in.Pools = append(in.Pools, poolSettings{CIDR: p.Masked(), Encapsulation: b.nodeCIDREncap})
			}
			if n.Name == b.node {
				in.Own = append(in.Own, p.Masked())
			}
		}
		if n.Name == b.node {
			for _, key := range []string{v1alpha1.AnnotationNodeSubnetV4, v1alpha1.AnnotationNodeSubnetV6} {
				if p, err := v1alpha1.ParseNodeSubnet(n.Annotations[key]); err == nil {
					in.Subnets = append(in.Subnets, p)
				}
			}
		}
	}
	return in
}

// applyLearned installs the learned routes native routing wants and
// removes the rest; it logs only when what is skipped changes. It reports
// whether to try again soon: the datapath skipped a route (the prefix still
// held by the overlay's route while an encapsulation changes, a next hop
// not reachable yet) or failed.
func (b *bgpController) applyLearned(ctx context.Context) (retry bool) {
	if b.routes == nil {
		return false
	}
	b.mu.Lock()
	learned := b.learned
	b.mu.Unlock()
	routes, ignored := nativeRoutes(learned, b.nativeInputs())
	res, err := b.routes.SetLearnedRoutes(ctx, routes)
	if err != nil {
		b.log.Error("learned routes not installed", "error", err)
		return true
	}
	if res.Ops() > 0 {
		b.log.Info("learned routes installed", "routes", res.Installed, "added", res.Added, "replaced", res.Replaced, "deleted", res.Deleted)
	}
	skips := make([]string, 0, len(ignored)+len(res.Skipped))
	skips = append(skips, ignored...)
	for _, s := range res.Skipped {
		skips = append(skips, s.Route.String()+": "+s.Reason)
	}
	b.mu.Lock()
	changed := !slices.Equal(skips, b.nativeSkips)
	b.nativeSkips = skips
	b.mu.Unlock()
	if changed && len(skips) > 0 {
		b.log.Info("learned routes not installed", "count", len(skips), "first", skips[0])
		for _, s := range skips {
			b.log.Debug("learned route not installed", "why", s)
		}
	}
	return len(res.Skipped) > 0
}

// learnedRetry schedules applyLearned's retries: 2 s, doubling up to a
// minute while routes keep being skipped; none once all are installed.
type learnedRetry struct {
	backoff time.Duration
	C       <-chan time.Time
}

func (r *learnedRetry) after(again bool) {
	if !again {
		r.backoff, r.C = 0, nil
		return
	}
	r.backoff = min(max(2*r.backoff, 2*time.Second), time.Minute)
	r.C = time.After(r.backoff)
}
