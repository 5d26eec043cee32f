package lab

import (
	"fmt"
	"net/netip"
	"strings"
)

// BGP in the lab (`strait-lab up --router frr|bird`, docs/lab.md): the router
// namespace runs FRR (zebra + bgpd) or BIRD 2 in AS 64512 and accepts a BGP
// session from every node of both node subnets (dynamic neighbours); every
// node's agent runs its speaker in AS 64513 with the node-to-node mesh on
// and peers with the router's address on its own subnet. Learned routes go
// into the router namespace's kernel, so the outside host (behind br-ext)
// reaches pod blocks and LoadBalancer addresses over them.
//
// This file is the pure part: names, addresses and the rendered configs
// (golden tests in router_test.go). router_run.go starts and checks it.
const (
	// RouterFRR and RouterBIRD are the values of `--router`.
	RouterFRR  = "frr"
	RouterBIRD = "bird"
	// RouterASN is the router's AS, ClusterASN the nodes' (BGPConfiguration default).
	RouterASN  = 64512
	ClusterASN = 64513
	// SubnetLabel is the node label the lab sets (through kubelet's
	// --node-labels) so one BGPPeer per subnet selects its nodes.
	SubnetLabel = "strait.dev/lab-subnet"
	// The LoadBalancerIPPool the lab creates and the BGPConfiguration
	// advertises; nothing else in the lab uses these ranges.
	LBPoolV4 = "10.100.50.0/24"
	LBPoolV6 = "fd42:150::/112"
	// External IPs a Service may use (advertised, not allocated).
	ExternalIPsV4 = "10.100.60.0/24"
	ExternalIPsV6 = "fd42:160::/112"
)

// nodeSegments are the segments whose nodes peer with the router.
var nodeSegments = []segment{segA, segB}

// checkRouter validates `--router` ("" is no router).
func checkRouter(kind string) error {
	switch kind {
	case "", RouterFRR, RouterBIRD:
		return nil
	}
	return fmt.Errorf("--router %q: want %s or %s", kind, RouterFRR, RouterBIRD)
}

// routerID is the router's BGP identifier: its address on br-ext.
func routerID() netip.Addr { a, _ := segExt.router(); return a }

// routerState is the router part of State (nil without --router).
type routerState struct {
	// Kind is "frr" or "bird".
	Kind string `json:"kind"`
	// Dir holds the daemons' configs, pid files and control sockets.
	Dir string `json:"dir"`
}

// frrZebraConfig is zebra's config: log to stdout (the lab's log file).
func frrZebraConfig() string {
	return "hostname router-zebra\nlog stdout informational\n"
}

// frrBGPConfig is bgpd's config: a peer group for the nodes, filled by
// `bgp listen range` for each node subnet, IPv4 and IPv6 unicast on the
// (IPv4) sessions, ECMP for addresses several nodes advertise.
func frrBGPConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults traditional\nhostname router-bgpd\nlog stdout informational\n")
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n", RouterASN, routerID())
	b.WriteString(" no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n no bgp network import-check\n bgp graceful-restart\n")
	fmt.Fprintf(&b, " neighbor NODES peer-group\n neighbor NODES remote-as %d\n neighbor NODES timers 3 9\n", ClusterASN)
	for _, seg := range nodeSegments {
		fmt.Fprintf(&b, " bgp listen range %s peer-group NODES\n", seg.v4)
	}
	b.WriteString(" address-family ipv4 unicast\n  neighbor NODES activate\n  maximum-paths 8\n exit-address-family\n")
	b.WriteString(" address-family ipv6 unicast\n  neighbor NODES activate\n  neighbor NODES route-map NODES-V6-IN in\n  maximum-paths 8\n exit-address-family\n")
	// A node that sends a link-local next hop beside its global one (FRR
	// does) is installed via the global one, so `ip -6 route` names the node.
	b.WriteString("route-map NODES-V6-IN permit 10\n set ipv6 next-hop prefer-global\n")
	return b.String()
}

// birdConfig is BIRD 2's config: one dynamic BGP protocol per node subnet
// (`neighbor range`), every BGP route exported to the kernel, equal paths
// merged (ECMP for addresses several nodes advertise).
func birdConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "log stderr all;\nrouter id %s;\nprotocol device {}\n", routerID())
	b.WriteString("protocol kernel k4 { merge paths on; ipv4 { export where source = RTS_BGP; }; }\n")
	b.WriteString("protocol kernel k6 { merge paths on; ipv6 { export where source = RTS_BGP; }; }\n")
	b.WriteString("template bgp nodes {\n  hold time 9; keepalive time 3; connect retry time 1;\n  graceful restart on;\n" +
		"  ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n")
	for _, seg := range nodeSegments {
		r4, _ := seg.router()
		fmt.Fprintf(&b, "protocol bgp subnet_%s from nodes {\n  local %s as %d;\n  neighbor range %s as %d;\n  dynamic name \"%s_\";\n}\n",
			seg.name, r4, RouterASN, seg.v4, ClusterASN, seg.name)
	}
	return b.String()
}

// agentBGPConfig is the `bgp` section of every node's agent config when
// the lab runs a router ("" otherwise).
func agentBGPConfig(router string) string {
	if router == "" {
		return ""
	}
	return "bgp:\n  enabled: true\n  statusPeriod: 5s\n"
}

// kubeletRouterArgs are the kubelet flags a node gets when the lab runs a
// router: the subnet label the BGPPeers select on (none otherwise).
func kubeletRouterArgs(router string, n labNode) []string {
	if router == "" {
		return nil
	}
	return []string{"--node-labels=" + SubnetLabel + "=" + n.Subnet}
}

// routerObjects are the API objects the lab creates with a router: the
// cluster's BGPConfiguration, one BGPPeer per node subnet (the router's
// address there, selecting that subnet's nodes) and the LoadBalancer pool.
func routerObjects() string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: strait.dev/v1alpha1
kind: BGPConfiguration
metadata:
  name: default
spec:
  asNumber: %d
  nodeToNodeMesh: {enabled: true}
  # Short, so that a node taken away leaves the router within seconds.
  gracefulRestart: {restartTime: 15s}
  serviceLoadBalancerIPs:
  - cidr: %s
  - cidr: %s
  serviceExternalIPs:
  - cidr: %s
  - cidr: %s
`, ClusterASN, LBPoolV4, LBPoolV6, ExternalIPsV4, ExternalIPsV6)
	for _, seg := range nodeSegments {
		r4, _ := seg.router()
		fmt.Fprintf(&b, `---
apiVersion: strait.dev/v1alpha1
kind: BGPPeer
metadata:
  name: lab-router-%s
spec:
  peerIP: %s
  asNumber: %d
  nodeSelector:
    matchLabels: {%s: %s}
  families: [ipv4-unicast, ipv6-unicast]
  nextHop: {mode: Auto}
  timers: {keepaliveTime: 3s, holdTime: 9s, connectRetryTime: 2s}
`, seg.name, r4, RouterASN, SubnetLabel, seg.name)
	}
	fmt.Fprintf(&b, `---
apiVersion: strait.dev/v1alpha1
kind: LoadBalancerIPPool
metadata:
  name: lab
spec:
  cidrs: [%s, %s]
`, LBPoolV4, LBPoolV6)
	return b.String()
}

// systemNamespace is Strait's namespace, made on every lab.
const systemNamespace = `apiVersion: v1
kind: Namespace
metadata:
  name: strait-system
`

// routerPeerOf is the router's address a node peers with (its subnet's .1).
func routerPeerOf(n labNode) string {
	r4, _ := segmentOf(n.Subnet).router()
	return r4.String()
}
