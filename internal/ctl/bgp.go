package ctl

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/strait-net/strait/internal/ctl/api"
)

// BGPOptions is `straitctl bgp SUBCOMMAND [flags]`.
type BGPOptions struct {
	// Sub is peers, routes, policies or config.
	Sub string
	// Family (ipv4|ipv6), Direction (advertised|received; "" = local RIB)
	// and Peer (name or address) select routes.
	Family, Direction, Peer string
}

const bgpUsage = `usage: straitctl bgp peers|routes|policies|config [-o table|wide|json|yaml]
       straitctl bgp routes [--family ipv4|ipv6] [--advertised|--received] [--peer NAME|ADDR]
`

// parseBGP parses what follows "bgp".
func parseBGP(args []string, stderr io.Writer, o *Options) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: bgp needs a subcommand: peers, routes, policies or config", ErrUsage)
	}
	b := BGPOptions{Sub: args[0]}
	switch b.Sub {
	case "peers", "routes", "policies", "config":
	default:
		return fmt.Errorf("%w: unknown bgp subcommand %q (want peers, routes, policies or config)", ErrUsage, b.Sub)
	}
	fs := flag.NewFlagSet("straitctl bgp "+b.Sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, bgpUsage) }
	fs.StringVar(&o.Output, "o", o.Output, "output format: table, wide, json or yaml")
	fs.StringVar(&o.Output, "output", o.Output, "output format: table, wide, json or yaml")
	var adv, recv bool
	if b.Sub == "routes" {
		fs.StringVar(&b.Family, "family", "", "ipv4 or ipv6 (default both)")
		fs.BoolVar(&adv, "advertised", false, "routes sent to peers")
		fs.BoolVar(&recv, "received", false, "routes received from peers")
		fs.StringVar(&b.Peer, "peer", "", "one peer, by name or address")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	switch {
	case adv && recv:
		return fmt.Errorf("%w: --advertised and --received exclude each other", ErrUsage)
	case adv:
		b.Direction = "advertised"
	case recv:
		b.Direction = "received"
	}
	switch b.Family {
	case "", "ipv4", "ipv6":
	default:
		return fmt.Errorf("%w: --family must be ipv4 or ipv6, got %q", ErrUsage, b.Family)
	}
	o.BGP = b
	return nil
}

// bgpRequest is what Run fetches and how it renders it.
func bgpRequest(b BGPOptions, now time.Time) (any, string, func(io.Writer, bool) error) {
	switch b.Sub {
	case "peers":
		var ps []api.BGPPeer
		return &ps, api.PathBGPPeers, func(w io.Writer, wide bool) error { return renderBGPPeers(w, ps, wide, now) }
	case "routes":
		q := url.Values{}
		for k, v := range map[string]string{"family": b.Family, "direction": b.Direction, "peer": b.Peer} {
			if v != "" {
				q.Set(k, v)
			}
		}
		path := api.PathBGPRoutes
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		var rs []api.BGPRoute
		return &rs, path, func(w io.Writer, wide bool) error { return renderBGPRoutes(w, rs, wide, now) }
	case "policies":
		var ps []api.BGPPolicy
		return &ps, api.PathBGPPolicies, func(w io.Writer, wide bool) error { return renderBGPPolicies(w, ps, wide) }
	default:
		c := &api.BGPConfig{}
		return c, api.PathBGPConfig, func(w io.Writer, wide bool) error { return renderBGPConfig(w, c, wide) }
	}
}

func since(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return age(t, now)
}

func familyCell(fs []api.BGPFamily, f func(api.BGPFamily) string) string {
	var out []string
	for _, x := range fs {
		out = append(out, strings.TrimSuffix(x.Family, "-unicast")+":"+f(x))
	}
	return strings.Join(out, " ")
}

func renderBGPPeers(w io.Writer, ps []api.BGPPeer, wide bool, now time.Time) error {
	tw := newTab(w)
	if wide {
		row(tw, "PEER", "ADDRESS", "AS", "STATE", "SINCE", "SENT", "RECEIVED", "LOCAL", "NEXT HOP", "EXT-NH", "ERROR")
	} else {
		row(tw, "PEER", "ADDRESS", "AS", "STATE", "SINCE", "SENT", "RECEIVED", "ERROR")
	}
	for _, p := range ps {
		sent := familyCell(p.Families, func(f api.BGPFamily) string { return strconv.FormatUint(f.Sent, 10) })
		recv := familyCell(p.Families, func(f api.BGPFamily) string { return strconv.FormatUint(f.Received, 10) })
		if wide {
			nh := familyCell(p.Families, func(f api.BGPFamily) string { return orWithheld(f) })
			row(tw, p.Name, p.Address, strconv.FormatUint(uint64(p.ASN), 10), p.State, since(p.Since, now), sent, recv, p.LocalAddress, nh, yesNo(p.ExtendedNextHop), p.Error)
		} else {
			row(tw, p.Name, p.Address, strconv.FormatUint(uint64(p.ASN), 10), p.State, since(p.Since, now), sent, recv, p.Error)
		}
	}
	return tw.Flush()
}

func orWithheld(f api.BGPFamily) string {
	if f.NextHop != "" {
		return f.NextHop
	}
	return "withheld(" + f.Reason + ")"
}

func renderBGPRoutes(w io.Writer, rs []api.BGPRoute, wide bool, now time.Time) error {
	tw := newTab(w)
	if wide {
		row(tw, "PREFIX", "NEXT HOP", "PEER", "BEST", "STALE", "AGE", "AS PATH", "COMMUNITIES")
	} else {
		row(tw, "PREFIX", "NEXT HOP", "PEER", "BEST", "AGE")
	}
	for _, r := range rs {
		peer := r.Peer
		if peer == "" {
			peer = "local"
		}
		if wide {
			var path []string
			for _, as := range r.ASPath {
				path = append(path, strconv.FormatUint(uint64(as), 10))
			}
			row(tw, r.Prefix, r.NextHop, peer, yesNo(r.Best), yesNo(r.Stale), since(r.Age, now), strings.Join(path, " "), strings.Join(r.Communities, " "))
		} else {
			row(tw, r.Prefix, r.NextHop, peer, yesNo(r.Best), since(r.Age, now))
		}
	}
	return tw.Flush()
}

func renderBGPPolicies(w io.Writer, ps []api.BGPPolicy, wide bool) error {
	for i, p := range ps {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "Peer %s (%s)\n", p.Peer, p.Address)
		tw := newTab(w)
		row(tw, "  FAMILY", "NEXT HOP", "WHY")
		for _, f := range p.Families {
			nh := f.NextHop
			if nh == "" {
				nh = "withheld"
			}
			row(tw, "  "+f.Family, nh, f.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		tw = newTab(w)
		row(tw, "  EXPORTED", "ORIGIN", "COMMUNITIES")
		for _, x := range p.Exported {
			row(tw, "  "+x.Prefix, x.Origin, strings.Join(x.Communities, " "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if wide && p.Rendered != "" {
			fmt.Fprintf(w, "  engine policy:\n    %s\n", strings.ReplaceAll(strings.TrimSpace(p.Rendered), "\n", "\n    "))
		}
	}
	return nil
}

func renderBGPConfig(w io.Writer, c *api.BGPConfig, wide bool) error {
	tw := newTab(w)
	fmt.Fprintf(tw, "AS:\t%d\n", c.ASN)
	fmt.Fprintf(tw, "Router ID:\t%s\n", c.RouterID)
	fmt.Fprintf(tw, "Listen port:\t%d\n", c.ListenPort)
	gr := c.GracefulRestart
	if gr == "" {
		gr = "off"
	}
	fmt.Fprintf(tw, "Graceful restart:\t%s\n", gr)
	if c.Error != "" {
		fmt.Fprintf(tw, "Not applied:\t%s\n", c.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTab(w)
	row(tw, "PEER", "ADDRESS", "AS", "FAMILIES", "LOCAL")
	for _, p := range c.Peers {
		row(tw, p.Name, p.Address, strconv.FormatUint(uint64(p.ASN), 10), familyCell(p.Families, func(api.BGPFamily) string { return "on" }), p.LocalAddress)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTab(w)
	if wide {
		row(tw, "PATH", "ORIGIN", "TO", "COMMUNITIES")
	} else {
		row(tw, "PATH", "ORIGIN", "TO")
	}
	for _, p := range c.Paths {
		to := strings.Join(p.Peers, ",")
		if to == "" {
			to = "all"
		}
		if wide {
			row(tw, p.Prefix, p.Origin, to, strings.Join(p.Communities, " "))
		} else {
			row(tw, p.Prefix, p.Origin, to)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range c.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	return nil
}
