package lab

import (
	"fmt"
	"net/netip"
)

// The cluster lab's address plan. Never the machine's own 192.0.2.0/24 or
// fd00::/64. The router namespace holds one bridge per segment (the bridges
// live in a namespace, never in the root one) and routes between them.
//
//	segment  bridge  IPv4            IPv6               members
//	cp       br-cp   10.100.0.0/24   fd42:100::/64      control plane (.10)
//	a        br-a    10.100.1.0/24   fd42:100:1::/64    odd nodes (.11, .13, ...)
//	b        br-b    10.100.2.0/24   fd42:100:2::/64    even nodes (.12, .14, ...)
//	ext      br-ext  10.100.9.0/24   fd42:100:9::/64    an outside host (.10)
//
// Pod CIDRs: 10.244.0.0/16 and fd42:244::/56, node i owns 10.244.i.0/24 and
// fd42:244:0:i::/64. Services: 10.96.0.0/16 and fd42:96::/112.
type segment struct {
	name   string
	bridge string
	v4, v6 netip.Prefix
}

var (
	segCP  = segment{"cp", "br-cp", netip.MustParsePrefix("10.100.0.0/24"), netip.MustParsePrefix("fd42:100::/64")}
	segA   = segment{"a", "br-a", netip.MustParsePrefix("10.100.1.0/24"), netip.MustParsePrefix("fd42:100:1::/64")}
	segB   = segment{"b", "br-b", netip.MustParsePrefix("10.100.2.0/24"), netip.MustParsePrefix("fd42:100:2::/64")}
	segExt = segment{"ext", "br-ext", netip.MustParsePrefix("10.100.9.0/24"), netip.MustParsePrefix("fd42:100:9::/64")}
)

// Cluster-wide ranges.
const (
	ClusterCIDRv4 = "10.244.0.0/16"
	ClusterCIDRv6 = "fd42:244::/56"
	ServiceCIDRv4 = "10.96.0.0/16"
	ServiceCIDRv6 = "fd42:96::/112"
	FirstService  = "10.96.0.1"
	apiPort       = 6443
)

// host returns address n in the segment's v4 and v6 prefixes.
func (s segment) host(n int) (netip.Addr, netip.Addr) {
	v4 := s.v4.Addr().As4()
	v4[3] = byte(n)
	v6 := s.v6.Addr().As16()
	v6[15] = byte(n)
	return netip.AddrFrom4(v4), netip.AddrFrom16(v6)
}

func (s segment) router() (netip.Addr, netip.Addr) { return s.host(1) }

// labNode is one Kubernetes node of the lab.
type labNode struct {
	Index  int    `json:"index"`
	Name   string `json:"name"`
	NS     string `json:"netns"`
	IPv4   string `json:"ipv4"`
	IPv6   string `json:"ipv6"`
	Subnet string `json:"subnet"`
	PodV4  string `json:"podCIDRv4"`
	PodV6  string `json:"podCIDRv6"`
}

func (o *Options) nodes(n int) []labNode {
	var out []labNode
	for i := 1; i <= n; i++ {
		seg := segA
		if i%2 == 0 {
			seg = segB
		}
		v4, v6 := seg.host(10 + i)
		out = append(out, labNode{
			Index: i, Name: fmt.Sprintf("n%d", i), NS: o.ns(fmt.Sprintf("n%d", i)),
			IPv4: v4.String(), IPv6: v6.String(), Subnet: seg.name,
			PodV4: fmt.Sprintf("10.244.%d.0/24", i), PodV6: fmt.Sprintf("fd42:244:0:%x::/64", i),
		})
	}
	return out
}

func segmentOf(name string) segment {
	for _, s := range []segment{segCP, segA, segB, segExt} {
		if s.name == name {
			return s
		}
	}
	return segA
}

// buildTopology creates the router, control-plane, outside-host and node
// namespaces and their links, recording each namespace before creating it.
func (o *Options) buildTopology(s *State, nodes []labNode) error {
	router, cp, ext := o.ns("router"), o.ns("cp"), o.ns("ext")
	add := func(name string) error {
		s.Namespaces = append(s.Namespaces, name)
		if err := o.save(s); err != nil {
			return err
		}
		if _, err := run("ip", "netns", "add", name); err != nil {
			return err
		}
		_, err := run("ip", "-n", name, "link", "set", "lo", "up")
		return err
	}
	if err := add(router); err != nil {
		return err
	}
	cmds := [][]string{
		{"ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"},
	}
	for _, seg := range []segment{segCP, segA, segB, segExt} {
		r4, r6 := seg.router()
		cmds = append(cmds,
			[]string{"ip", "-n", router, "link", "add", seg.bridge, "type", "bridge"},
			[]string{"ip", "-n", router, "addr", "add", prefixed(r4, seg.v4), "dev", seg.bridge},
			[]string{"ip", "-n", router, "addr", "add", prefixed(r6, seg.v6), "dev", seg.bridge, "nodad"},
			[]string{"ip", "-n", router, "link", "set", seg.bridge, "up"})
	}
	if err := runAll(cmds); err != nil {
		return err
	}
	attach := func(nsName string, seg segment, hostNum int) error {
		if err := add(nsName); err != nil {
			return err
		}
		v4, v6 := seg.host(hostNum)
		r4, r6 := seg.router()
		port := fmt.Sprintf("p-%s-%d", seg.name, hostNum)
		return runAll([][]string{
			{"ip", "-n", router, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", nsName},
			{"ip", "-n", router, "link", "set", port, "master", seg.bridge, "up"},
			{"ip", "-n", nsName, "addr", "add", prefixed(v4, seg.v4), "dev", "eth0"},
			{"ip", "-n", nsName, "addr", "add", prefixed(v6, seg.v6), "dev", "eth0", "nodad"},
			{"ip", "-n", nsName, "link", "set", "eth0", "up"},
			{"ip", "-n", nsName, "route", "add", "default", "via", r4.String()},
			{"ip", "-n", nsName, "-6", "route", "add", "default", "via", r6.String()},
		})
	}
	if err := attach(cp, segCP, 10); err != nil {
		return err
	}
	if err := attach(ext, segExt, 10); err != nil {
		return err
	}
	for _, n := range nodes {
		if err := attach(n.NS, segmentOf(n.Subnet), 10+n.Index); err != nil {
			return err
		}
	}
	return nil
}

func prefixed(a netip.Addr, p netip.Prefix) string {
	return netip.PrefixFrom(a, p.Bits()).String()
}

func runAll(cmds [][]string) error {
	for _, c := range cmds {
		if _, err := run(c...); err != nil {
			return err
		}
	}
	return nil
}
