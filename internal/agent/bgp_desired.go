package agent

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/bgp"
)

// Origins of advertised paths (bgp.Path.Origin).
const (
	originPodBlock        = "pod-block"
	originServiceLB       = "service-lb"
	originServiceExternal = "service-external"
	originServiceCluster  = "service-cluster"
)

// meshPeerPrefix names node-to-node mesh peers: "mesh-<node>".
const meshPeerPrefix = "mesh-"

// bgpNode is another node as the mesh sees it.
type bgpNode struct {
	Name   string
	V4, V6 netip.Addr // InternalIPs
}

// bgpService is what advertising needs of a Service.
type bgpService struct {
	Key         string // namespace/name
	ClusterIPs  []netip.Addr
	ExternalIPs []netip.Addr
	// LoadBalancerIPs are status.loadBalancer.ingress IPs.
	LoadBalancerIPs []netip.Addr
	// Local is externalTrafficPolicy (LB, external IPs) or
	// internalTrafficPolicy (ClusterIP) Local: the address is advertised
	// only by nodes with a ready endpoint, as a host route.
	ExternalLocal, InternalLocal bool
	// LocalReady: this node has a ready endpoint of the Service.
	LocalReady bool
}

// bgpInputs is everything desiredBGP reads.
type bgpInputs struct {
	Node           string
	NodeLabels     map[string]string
	NodeV4, NodeV6 netip.Addr
	// Default and Override are the "default" and "node.<Node>"
	// BGPConfigurations (nil when absent).
	Default, Override *v1alpha1.BGPConfigurationSpec
	Peers             []v1alpha1.BGPPeer
	// Secrets of strait-system: name -> key -> value.
	Secrets map[string]map[string][]byte
	Nodes   []bgpNode      // every node, this one included
	Blocks  []netip.Prefix // this node's pod blocks
	// Services: every Service with an address to consider.
	Services []bgpService
}

// desiredBGP is the pure heart of the BGP controller: from the CRDs and the
// cluster state it computes the speaker's whole configuration for this node
// and the problems that keep part of it from being used (in words, for
// BGPNodeStatus and logs). It never fails: what cannot be configured is
// left out and reported.
func desiredBGP(in bgpInputs) (bgp.Config, []string) {
	var probs []string
	problem := func(format string, a ...any) { probs = append(probs, fmt.Sprintf(format, a...)) }
	spec := v1alpha1.MergeBGPConfiguration(in.Default, in.Override)
	cfg := bgp.Config{ASN: spec.EffectiveASNumber(), ListenPort: spec.EffectiveListenPort()}
	cfg.RouterID = routerID(spec, in, problem)
	gr := v1alpha1.EffectiveGracefulRestart(spec.GracefulRestart, nil)
	if gr.Enabled {
		cfg.GracefulRestart = &bgp.GracefulRestart{RestartTime: gr.RestartTime}
	}
	dual := in.NodeV4.IsValid() && in.NodeV6.IsValid()
	own := func(a netip.Addr) bool { return a == in.NodeV4 || a == in.NodeV6 }

	// External peers.
	var external []string
	peers := slices.Clone(in.Peers)
	slices.SortFunc(peers, func(a, b v1alpha1.BGPPeer) int { return cmp.Compare(a.Name, b.Name) })
	for _, p := range peers {
		if !selects(p.Spec.NodeSelector, in.NodeLabels) {
			continue
		}
		addr, err := netip.ParseAddr(p.Spec.PeerIP)
		if err != nil {
			problem("BGPPeer %s: peerIP %q: %v", p.Name, p.Spec.PeerIP, err)
			continue
		}
		addr = addr.Unmap()
		if own(addr) {
			continue // this node is the peer (a BGPPeer naming nodes)
		}
		bp, err := peerFromSpec(p.Name, addr, &p.Spec, spec, in, dual)
		if err != nil {
			problem("BGPPeer %s: %v", p.Name, err)
			continue
		}
		external = append(external, bp.Name)
		cfg.Peers = append(cfg.Peers, bp)
	}

	// Node-to-node mesh: iBGP with every other node, over this node's
	// primary family (IPv4 when it has an IPv4 address).
	if spec.MeshEnabled() {
		var password string
		if m := spec.NodeToNodeMesh; m != nil && m.Password != nil {
			pw, err := secretValue(in.Secrets, m.Password)
			if err != nil {
				problem("nodeToNodeMesh.password: %v; the mesh is not configured", err)
			}
			password = pw
		}
		if password != "" || spec.NodeToNodeMesh == nil || spec.NodeToNodeMesh.Password == nil {
			nodes := slices.Clone(in.Nodes)
			slices.SortFunc(nodes, func(a, b bgpNode) int { return cmp.Compare(a.Name, b.Name) })
			for _, n := range nodes {
				if n.Name == in.Node {
					continue
				}
				addr := n.V4
				if !in.NodeV4.IsValid() || !addr.IsValid() {
					addr = n.V6
				}
				if !addr.IsValid() || (addr.Is4() && !in.NodeV4.IsValid()) || (addr.Is6() && !in.NodeV6.IsValid()) {
					problem("mesh: node %s has no InternalIP of a family this node has", n.Name)
					continue
				}
				local := in.NodeV4
				if addr.Is6() {
					local = in.NodeV6
				}
				mp := bgp.Peer{Name: meshPeerPrefix + n.Name, Address: addr, ASN: cfg.ASN, Password: password,
					Families: families(nil, dual, addr), Timers: timers(nil), Learn: true, Passive: bgp.MeshPassive(local, addr)}
				setSource(&mp, "", "", spec.SourceAddress, spec.SourceInterface)
				cfg.Peers = append(cfg.Peers, mp)
			}
		}
	}

	// Paths.
	comms, cprobs := communityTable(spec)
	probs = append(probs, cprobs...)
	paths := map[netip.Prefix]*bgp.Path{}
	add := func(p netip.Prefix, origin string, to []string) {
		p = p.Masked()
		if cur, ok := paths[p]; ok {
			if len(cur.Peers) > 0 {
				cur.Peers = mergeNames(cur.Peers, to)
			}
			return
		}
		path := &bgp.Path{Prefix: p, Origin: origin, Peers: slices.Clone(to)}
		comms.attach(path)
		paths[p] = path
	}
	for _, b := range in.Blocks {
		add(b, originPodBlock, nil)
	}
	// Service addresses go to external peers only (the mesh carries pod
	// blocks for native routing); with none, there is nobody to tell.
	if len(external) > 0 {
		addServicePaths(in, spec, external, add)
	}
	for _, p := range paths {
		cfg.Paths = append(cfg.Paths, *p)
	}
	slices.SortFunc(cfg.Paths, func(a, b bgp.Path) int { return cmp.Compare(a.Prefix.String(), b.Prefix.String()) })
	return cfg, probs
}

// addServicePaths advertises Service addresses inside the configured
// CIDRs: LoadBalancer ingress IPs (or the whole CIDRs with aggregation),
// external IPs, and the ClusterIP CIDRs; with a Local traffic policy, a
// Service's address only from nodes with a ready local endpoint.
func addServicePaths(in bgpInputs, spec v1alpha1.BGPConfigurationSpec, to []string, add func(netip.Prefix, string, []string)) {
	lbCIDRs, extCIDRs, clusterCIDRs := cidrs(spec.ServiceLoadBalancerIPs), cidrs(spec.ServiceExternalIPs), cidrs(spec.ServiceClusterIPs)
	for _, c := range clusterCIDRs {
		add(c, originServiceCluster, to)
	}
	if spec.Aggregated() {
		for _, c := range lbCIDRs {
			add(c, originServiceLB, to)
		}
	}
	host := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
	svcs := slices.Clone(in.Services)
	slices.SortFunc(svcs, func(a, b bgpService) int { return cmp.Compare(a.Key, b.Key) })
	for _, s := range svcs {
		extOK := !s.ExternalLocal || s.LocalReady
		for _, a := range s.LoadBalancerIPs {
			// Aggregated: the CIDR covers Cluster-policy Services; a Local
			// one needs its host route where its endpoints are.
			if inAny(lbCIDRs, a) && extOK && (!spec.Aggregated() || s.ExternalLocal) {
				add(host(a), originServiceLB, to)
			}
		}
		for _, a := range s.ExternalIPs {
			if inAny(extCIDRs, a) && extOK {
				add(host(a), originServiceExternal, to)
			}
		}
		if s.InternalLocal && s.LocalReady {
			for _, a := range s.ClusterIPs {
				if inAny(clusterCIDRs, a) {
					add(host(a), originServiceCluster, to)
				}
			}
		}
	}
}

// peerFromSpec builds the speaker's peer from a BGPPeer.
func peerFromSpec(name string, addr netip.Addr, s *v1alpha1.BGPPeerSpec, cfg v1alpha1.BGPConfigurationSpec, in bgpInputs, dual bool) (bgp.Peer, error) {
	p := bgp.Peer{Name: name, Address: addr, ASN: uint32(s.ASNumber), Passive: s.Passive,
		Families: families(s.Families, dual, addr), Timers: timers(s.Timers), EBGPMultihop: uint8(s.EBGPMultihop)}
	if s.Port != 0 && s.Port != v1alpha1.DefaultBGPPort {
		p.Port = uint16(s.Port)
	}
	if s.Password != nil {
		pw, err := secretValue(in.Secrets, s.Password)
		if err != nil {
			return bgp.Peer{}, fmt.Errorf("password: %w", err)
		}
		p.Password = pw
	}
	if !setSource(&p, s.SourceAddress, s.SourceInterface, cfg.SourceAddress, cfg.SourceInterface) {
		return bgp.Peer{}, fmt.Errorf("sourceAddress %s is not of the family of peerIP %s", s.SourceAddress, addr)
	}
	if nh := s.NextHop; nh != nil {
		p.NextHop.Mode = bgp.NextHopMode(cmp.Or(nh.Mode, v1alpha1.NextHopAuto))
		p.NextHop.Interface = nh.Interface
		for _, f := range []struct {
			s   string
			dst *netip.Addr
		}{{nh.IPv4, &p.NextHop.IPv4}, {nh.IPv6, &p.NextHop.IPv6}} {
			if f.s == "" {
				continue
			}
			a, err := netip.ParseAddr(f.s)
			if err != nil {
				return bgp.Peer{}, fmt.Errorf("nextHop: %w", err)
			}
			*f.dst = a
		}
	}
	if s.GracefulRestart != nil {
		if g := v1alpha1.EffectiveGracefulRestart(cfg.GracefulRestart, s.GracefulRestart); g.Enabled {
			p.GracefulRestart = &bgp.GracefulRestart{RestartTime: g.RestartTime}
		}
	}
	if b := v1alpha1.EffectiveBFD(s.BFD); b != nil {
		p.BFD = &bgp.BFD{MinTx: b.MinTx, MinRx: b.MinRx, Multiplier: uint8(b.Multiplier)}
	}
	return p, nil
}

// setSource sets the session's local address: the peer's own setting, else
// the configuration's if of the peer's family. It reports false if the
// peer's own source address is of the other family.
func setSource(p *bgp.Peer, addr, ifname, defAddr, defIf string) bool {
	if addr == "" && ifname == "" {
		addr, ifname = defAddr, defIf
		if a, err := netip.ParseAddr(addr); err == nil && a.Is4() != p.Address.Is4() {
			addr = "" // the global default is for the other family
		}
	}
	p.SourceInterface = ifname
	if a, err := netip.ParseAddr(addr); err == nil {
		if a.Unmap().Is4() != p.Address.Is4() {
			return false
		}
		p.LocalAddress = a.Unmap()
	}
	return true
}

// families: the BGPPeer's, else both on a dual-stack node, else the
// session's family.
func families(fs []v1alpha1.BGPFamily, dual bool, addr netip.Addr) []bgp.Family {
	var out []bgp.Family
	for _, f := range fs {
		if bf, err := bgp.ParseFamily(string(f)); err == nil && !slices.Contains(out, bf) {
			out = append(out, bf)
		}
	}
	if len(out) > 0 {
		return out
	}
	if dual {
		return []bgp.Family{bgp.IPv4Unicast, bgp.IPv6Unicast}
	}
	return []bgp.Family{bgp.FamilyOf(addr)}
}

func timers(t *v1alpha1.BGPTimers) bgp.Timers {
	e := v1alpha1.EffectiveTimers(t)
	return bgp.Timers{Keepalive: e.Keepalive, Hold: e.Hold, ConnectRetry: e.ConnectRetry}
}

// routerID resolves the router ID source.
func routerID(spec v1alpha1.BGPConfigurationSpec, in bgpInputs, problem func(string, ...any)) netip.Addr {
	switch spec.EffectiveRouterIDSource() {
	case v1alpha1.RouterIDExplicit:
		if spec.RouterID != nil {
			if a, err := netip.ParseAddr(spec.RouterID.ID); err == nil && a.Is4() {
				return a
			}
		}
		problem("routerID: source Explicit without a valid id; using a hash of the node name")
	case v1alpha1.RouterIDNodeIPv4:
		if in.NodeV4.IsValid() {
			return in.NodeV4
		}
		// IPv6-only node: the hash, as documented.
	}
	return hashRouterID(in.Node)
}

// hashRouterID is a stable router ID from a node name: FNV-1a, never
// 0.0.0.0 or 255.255.255.255.
func hashRouterID(node string) netip.Addr {
	h := fnv.New32a()
	_, _ = h.Write([]byte(node))
	v := h.Sum32()
	if v == 0 || v == 0xffffffff {
		v = 1
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(l))
}

func secretValue(secrets map[string]map[string][]byte, ref *v1alpha1.SecretKeyRef) (string, error) {
	data, ok := secrets[ref.Name]
	if !ok {
		return "", fmt.Errorf("Secret strait-system/%s not found", ref.Name)
	}
	v, ok := data[ref.Key]
	if !ok || len(v) == 0 {
		return "", fmt.Errorf("Secret strait-system/%s has no key %q", ref.Name, ref.Key)
	}
	return strings.TrimRight(string(v), "\r\n"), nil
}

func cidrs(bs []v1alpha1.ServiceIPBlock) []netip.Prefix {
	var out []netip.Prefix
	for _, b := range bs {
		if p, err := netip.ParsePrefix(b.CIDR); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func mergeNames(a, b []string) []string {
	if len(b) == 0 {
		return nil // every peer
	}
	out := slices.Clone(a)
	for _, n := range b {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// communityRule is one prefixAdvertisement, resolved.
type communityRule struct {
	cidr  netip.Prefix
	std   []bgp.Community
	large []bgp.LargeCommunity
}

type communityRules []communityRule

// communityTable resolves prefixAdvertisements' community names and values.
func communityTable(spec v1alpha1.BGPConfigurationSpec) (communityRules, []string) {
	var probs []string
	named := map[string]string{}
	for _, c := range spec.Communities {
		named[c.Name] = c.Value
	}
	var rules communityRules
	for i, pa := range spec.PrefixAdvertisements {
		cidr, err := netip.ParsePrefix(pa.CIDR)
		if err != nil {
			probs = append(probs, fmt.Sprintf("prefixAdvertisements[%d].cidr: %v", i, err))
			continue
		}
		r := communityRule{cidr: cidr.Masked()}
		for _, v := range pa.Communities {
			if val, ok := named[v]; ok {
				v = val
			}
			kind, parts, err := v1alpha1.ParseCommunity(v)
			switch {
			case err != nil:
				probs = append(probs, fmt.Sprintf("prefixAdvertisements[%d]: %q is neither a community in spec.communities nor a value", i, v))
			case kind == v1alpha1.LargeCommunity:
				r.large = append(r.large, bgp.LargeCommunity{GlobalAdmin: parts[0], LocalData1: parts[1], LocalData2: parts[2]})
			default:
				r.std = append(r.std, bgp.Community(parts[0]<<16|parts[1]))
			}
		}
		rules = append(rules, r)
	}
	return rules, probs
}

// attach adds the communities of every rule whose CIDR holds p's prefix.
func (rs communityRules) attach(p *bgp.Path) {
	for _, r := range rs {
		if r.cidr.Bits() > p.Prefix.Bits() || !r.cidr.Contains(p.Prefix.Addr()) || r.cidr.Addr().Is4() != p.Prefix.Addr().Is4() {
			continue
		}
		for _, c := range r.std {
			if !slices.Contains(p.Communities, c) {
				p.Communities = append(p.Communities, c)
			}
		}
		for _, c := range r.large {
			if !slices.Contains(p.LargeCommunities, c) {
				p.LargeCommunities = append(p.LargeCommunities, c)
			}
		}
	}
}
