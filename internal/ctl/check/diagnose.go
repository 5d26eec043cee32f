package check

import (
	"fmt"
	"net/netip"
	"strings"
)

// Route is one line of `ip route show` on a node.
type Route struct {
	// Type is the route type when not unicast (unreachable, blackhole, ...).
	Type string
	Dst  netip.Prefix
	Via  netip.Addr
	Dev  string
	// Raw is the line as the kernel printed it.
	Raw string
}

// Block is a pod address block and the node that owns it.
type Block struct {
	CIDR netip.Prefix
	Node string
}

// routeTypes are the `ip route` type keywords that may start a line.
var routeTypes = map[string]bool{
	"unicast": true, "local": true, "broadcast": true, "multicast": true, "anycast": true,
	"unreachable": true, "blackhole": true, "prohibit": true, "throw": true, "nat": true,
}

// dropTypes deliver nothing.
var dropTypes = map[string]bool{"unreachable": true, "blackhole": true, "prohibit": true}

// ParseRoutes reads the output of `ip route show` (iproute2 or busybox,
// either family). Lines it does not understand (multipath continuations)
// are skipped.
func ParseRoutes(out string) []Route {
	var routes []Route
	for _, line := range strings.Split(out, "\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		f := strings.Fields(line)
		r := Route{Raw: strings.TrimSpace(line)}
		if len(f) > 1 && routeTypes[f[0]] {
			if f[0] != "unicast" {
				r.Type = f[0]
			}
			f = f[1:]
		}
		dst, ok := parseDst(f[0], line)
		if !ok {
			continue
		}
		r.Dst = dst
		for i := 1; i+1 < len(f); i++ {
			switch f[i] {
			case "via":
				v := f[i+1]
				if (v == "inet" || v == "inet6") && i+2 < len(f) {
					v = f[i+2]
				}
				if a, err := netip.ParseAddr(v); err == nil {
					r.Via = a
				}
			case "dev":
				r.Dev = f[i+1]
			}
		}
		routes = append(routes, r)
	}
	return routes
}

func parseDst(s, line string) (netip.Prefix, bool) {
	if s == "default" {
		if strings.Contains(line, ":") && !strings.Contains(line, ".") {
			return netip.MustParsePrefix("::/0"), true
		}
		return netip.MustParsePrefix("0.0.0.0/0"), true
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// lookup returns the longest-prefix route of routes to a.
func lookup(routes []Route, a netip.Addr) (Route, bool) {
	var best Route
	found := false
	for _, r := range routes {
		if r.Dst.Addr().Is4() != a.Is4() || !r.Dst.Contains(a) {
			continue
		}
		if !found || r.Dst.Bits() > best.Dst.Bits() {
			best, found = r, true
		}
	}
	return best, found
}

// Env is what the diagnosis knows about the cluster.
type Env struct {
	Blocks []Block
	// Routes are each node's kernel routes (both families).
	Routes map[string][]Route
	// RouteErrors say why a node's routes could not be read.
	RouteErrors map[string]string
}

func (e Env) blockOf(a netip.Addr) (Block, bool) {
	var best Block
	found := false
	for _, b := range e.Blocks {
		if b.CIDR.Contains(a) && (!found || b.CIDR.Bits() > best.CIDR.Bits()) {
			best, found = b, true
		}
	}
	return best, found
}

// reach explains why node cannot route to a, or returns "" and a
// description of the route it uses. An address in a pod block needs a
// specific route: the pod's host route on the block's own node, a route
// covering the block elsewhere (a default route sends pod traffic to a
// router that does not know pod blocks). Other addresses need any route.
func (e Env) reach(node string, a netip.Addr) (problem, used string) {
	if msg, ok := e.RouteErrors[node]; ok {
		return fmt.Sprintf("could not read the routes of %s: %s", node, msg), ""
	}
	routes, ok := e.Routes[node]
	if !ok {
		return fmt.Sprintf("no host probe on %s to read its routes", node), ""
	}
	r, found := lookup(routes, a)
	b, inBlock := e.blockOf(a)
	switch {
	case inBlock && b.Node == node:
		if !found || r.Dst.Bits() != a.BitLen() {
			return fmt.Sprintf("%s has no host route to its own pod %s (block %s)", node, a, b.CIDR), ""
		}
	case inBlock:
		if !found || r.Dst.Bits() == 0 {
			return fmt.Sprintf("%s has no route to %s (block of %s)", node, b.CIDR, b.Node), ""
		}
	case !found:
		return fmt.Sprintf("%s has no route to %s", node, a), ""
	}
	if dropTypes[r.Type] {
		return fmt.Sprintf("%s drops traffic to %s: %q", node, a, r.Raw), ""
	}
	return "", fmt.Sprintf("%s: %s", node, r.Raw)
}

// Diagnose names the broken hop of a failed probe: the route missing on
// the way there (on the source node) or back (on the destination node, to
// the source pod's block), or, when every route is in place, where to look.
func Diagnose(h Hop, e Env) string {
	fwd, fwdRoute := e.reach(h.From, h.Dst)
	if fwd != "" {
		return fwd
	}
	if h.Kind == PodToExternal {
		return fmt.Sprintf("the route out is in place (%s): check NAT outgoing of the pod's pool (straitctl status on %s), and the external host's route back", fwdRoute, h.From)
	}
	back, backRoute := e.reach(h.To, h.Src)
	if back != "" {
		return back
	}
	if h.From == h.To {
		return fmt.Sprintf("routes are in place (%s; %s): check the pod's interface and firewall rules on %s", fwdRoute, backRoute, h.From)
	}
	return fmt.Sprintf("routes are in place both ways (%s; %s): packets are lost between the nodes: check the underlay, the VXLAN neighbour and FDB entries (straitctl routes) and firewall rules", fwdRoute, backRoute)
}
