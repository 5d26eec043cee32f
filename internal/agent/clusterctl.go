package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"

	"github.com/strait-net/strait/internal/agent/blocks"
	"github.com/strait-net/strait/internal/datapath"
	"github.com/strait-net/strait/internal/ipam"
	"github.com/strait-net/strait/internal/kubeutil"
)

// clusterController drives the datapath from the Kubernetes API: it claims
// blocks, publishes this node's VTEPs, and keeps one peer entry per remote
// node in the kernel, changing only the entries of the node an event is
// about, with a periodic full resync that repairs drift.
type clusterController struct {
	log    *slog.Logger
	cfg    *Config
	c      clusterClients
	dp     OverlayDatapath
	alloc  *ipam.Allocator
	blocks *blocks.Manager
	topo   *topology
	podMTU int
	// metrics may be nil (tests).
	metrics *metrics
	// allocReport writes block usage into IPAMBlock status (blocks mode,
	// made on the first resync).
	allocReport *blocks.AllocationReporter

	dirtyMu sync.Mutex
	dirty   map[string]bool // node names; "*" = everything
	wake    chan struct{}
	// fastWake asks the loop to re-apply the fast path (a pod came or went).
	fastWake chan struct{}
	// fastStatus is what the last SetFastPath left (nil before the first).
	fastStatus atomic.Pointer[datapath.FastPathStatus]
}

// blockAllocator is the Allocator the CNI handler uses in blocks mode: when
// this node's blocks of a family are full it claims another and retries.
type blockAllocator struct {
	*ipam.Allocator
	cc *clusterController
}

func (b blockAllocator) Allocate(o ipam.Owner) (ipam.Allocation, bool, error) {
	for attempt := 0; ; attempt++ {
		al, created, err := b.Allocator.Allocate(o)
		if err == nil || !errors.Is(err, ipam.ErrExhausted) || attempt >= 4 {
			return al, created, err
		}
		if cerr := b.cc.claimMore(context.Background()); cerr != nil {
			return al, created, fmt.Errorf("%w; claiming another block: %w", err, cerr)
		}
	}
}

// claimMore claims one more block for every family whose blocks are full.
func (cc *clusterController) claimMore(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var errs []error
	for _, fam := range cc.families() {
		if !cc.familyFull(fam) {
			continue
		}
		b, err := cc.blocks.Claim(ctx, fam)
		if err != nil {
			if cc.metrics != nil {
				cc.metrics.blockClaimErrs.Inc()
			}
			errs = append(errs, err)
			continue
		}
		if cc.metrics != nil {
			cc.metrics.blockClaims.Inc()
		}
		cc.log.Info("claimed another block", "block", b.CIDR.String(), "pool", b.Pool)
		if err := cc.alloc.AddPool(b.CIDR); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (cc *clusterController) families() []int {
	var fams []int
	if cc.topo.self.V4 != nil {
		fams = append(fams, 4)
	}
	if cc.topo.self.V6 != nil {
		fams = append(fams, 6)
	}
	return fams
}

func (cc *clusterController) familyFull(fam int) bool {
	free := false
	for _, u := range cc.alloc.Usage() {
		if (u.Prefix.Addr().Is4()) == (fam == 4) && uint64(u.InUse) < u.Capacity {
			free = true
		}
	}
	return !free
}

// start brings the node to a ready datapath: it waits for the Node object,
// finds the uplink, claims the first blocks, creates the VTEPs, publishes
// them, syncs the informers and applies the whole desired state once.
func (cc *clusterController) start(ctx context.Context) error {
	// The informers list the cluster while this node is set up; the
	// handlers only fill the topology, and the first resync waits for them.
	synced, err := cc.startInformers(ctx)
	if err != nil {
		return err
	}
	node, err := waitForNode(ctx, cc.c.kube, cc.cfg.NodeName, cc.log)
	if err != nil {
		return err
	}
	v4, v6 := internalIPs(node)
	self := nodeInfo{Name: node.Name}
	minMTU := 0
	var uplinkName string
	for _, ip := range []netip.Addr{v4, v6} {
		if !ip.IsValid() {
			continue
		}
		up, err := cc.dp.UplinkFor(ctx, ip)
		if err != nil {
			return fmt.Errorf("find the uplink of %s: %w", ip, err)
		}
		uplinkName = up.Name
		v := &vtepInfo{Underlay: ip, Subnet: up.Prefix, MAC: datapath.VTEPMAC(node.Name, famOf(ip))}
		overhead := 50
		if ip.Is6() {
			overhead = 70
			self.V6 = v
		} else {
			self.V4 = v
		}
		if m := up.MTU - overhead; minMTU == 0 || m < minMTU {
			minMTU = m
		}
	}
	cc.podMTU = cc.cfg.MTU
	if cc.podMTU == 0 {
		cc.podMTU = minMTU
	}

	// This node's pod address ranges.
	var own []netip.Prefix
	switch cc.cfg.IPAMMode {
	case IPAMBlocks:
		if err := cc.ensureDefaultPools(ctx); err != nil {
			return err
		}
		bs, err := cc.blocks.EnsureOne(ctx)
		if err != nil {
			return fmt.Errorf("claim this node's first blocks: %w", err)
		}
		for _, b := range bs {
			own = append(own, b.CIDR)
		}
	case IPAMNodeCIDR:
		for _, s := range node.Spec.PodCIDRs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return fmt.Errorf("Node %s spec.podCIDRs: %w", node.Name, err)
			}
			own = append(own, p)
		}
		if len(own) == 0 {
			return fmt.Errorf("ipamMode node-cidr: Node %s has no spec.podCIDRs (is kube-controller-manager allocating node CIDRs?)", node.Name)
		}
	}
	// Keep the manager's order (oldest block first): the first block of a
	// family carries the tunnel address.
	if err := cc.alloc.SetPools(own); err != nil {
		return fmt.Errorf("set IPAM pools: %w", err)
	}
	// The VTEP's tunnel address: the network address of the node's first
	// block of the family (reserved by IPAM, never given to a pod).
	var vteps []datapath.VTEPConfig
	for _, fam := range []int{4, 6} {
		v := self.V4
		dev, vni := "strait.vxlan4", cc.cfg.VXLAN.VNIv4
		if fam == 6 {
			v, dev, vni = self.V6, "strait.vxlan6", cc.cfg.VXLAN.VNIv6
		}
		if v == nil {
			continue
		}
		for _, p := range own {
			if famOf(p.Addr()) == fam {
				v.TunnelAddr = p.Addr()
				break
			}
		}
		if !v.TunnelAddr.IsValid() {
			continue
		}
		vteps = append(vteps, datapath.VTEPConfig{Family: fam, Device: dev, VNI: vni, Port: cc.cfg.VXLAN.Port,
			MTU: cc.podMTU, LocalIP: v.Underlay, MAC: v.MAC, TunnelAddr: v.TunnelAddr})
	}
	if err := cc.dp.EnsureVTEPs(ctx, vteps); err != nil {
		return fmt.Errorf("create VTEPs: %w", err)
	}
	cc.topo.mu.Lock()
	cc.topo.self, cc.topo.uplink = self, uplinkName
	cc.topo.mu.Unlock()
	if err := annotateNode(ctx, cc.c.kube, node.Name, self); err != nil {
		return err
	}
	if !kubeutil.WaitForSync(ctx, synced...) {
		return errors.New("informers did not sync")
	}
	// The first resync covers every event so far: the loop need not apply
	// them again (events from here on stay marked).
	cc.takeDirty()
	if !cc.cfg.FastPath.Enabled {
		// Switched off since the last run: detach what that run pinned.
		if err := cc.applyFastPath(); err != nil {
			cc.log.Warn("removing an earlier fast path", "error", err)
		}
	}
	if err := cc.resync(ctx); err != nil {
		return err
	}
	go cc.loop(ctx)
	return nil
}

func famOf(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// startInformers watches Nodes, IPAMBlocks and IPPools and marks the nodes
// an event concerns as dirty. It returns its handlers' HasSynced, each true
// once that handler has seen its informer's initial list: the handlers fill
// the topology, and an informer's own HasSynced turns true when its store
// is filled, before the handlers have been told (a resync then saw a third
// of 1,000 Nodes).
func (cc *clusterController) startInformers(ctx context.Context) ([]cache.InformerSynced, error) {
	kf, df := cc.c.informers(0)
	type watch struct {
		inf cache.SharedIndexInformer
		on  func(o any, deleted bool)
	}
	watches := []watch{{kf.Core().V1().Nodes().Informer(), cc.onNode}}
	if cc.cfg.IPAMMode == IPAMBlocks {
		watches = append(watches, watch{df.ForResource(gvrIPAMBlocks).Informer(), cc.onBlock},
			watch{df.ForResource(gvrIPPools).Informer(), cc.onPool})
	}
	syncs := make([]cache.InformerSynced, 0, len(watches))
	for _, w := range watches {
		reg, err := w.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { w.on(o, false) },
			UpdateFunc: func(_, o any) { w.on(o, false) },
			DeleteFunc: func(o any) { w.on(o, true) },
		})
		if err != nil {
			return nil, err
		}
		syncs = append(syncs, reg.HasSynced)
	}
	kf.Start(ctx.Done())
	df.Start(ctx.Done())
	return syncs, nil
}

func unwrapTombstone(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}

func (cc *clusterController) onNode(o any, deleted bool) {
	n, ok := unwrapTombstone(o).(*corev1.Node)
	if !ok {
		return
	}
	t := cc.topo
	t.mu.Lock()
	if deleted {
		delete(t.nodes, n.Name)
	} else {
		t.nodes[n.Name] = nodeFromObject(n, cc.log)
	}
	if cc.cfg.IPAMMode == IPAMNodeCIDR {
		for name := range t.byNode[n.Name] {
			t.dropBlock(name)
		}
		if !deleted {
			for _, s := range n.Spec.PodCIDRs {
				if p, err := netip.ParsePrefix(s); err == nil {
					t.putBlock("node/"+n.Name+"/"+s, blockInfo{CIDR: p, Node: n.Name})
				}
			}
		}
	}
	t.mu.Unlock()
	cc.markDirty(n.Name)
}

func (cc *clusterController) onBlock(o any, deleted bool) {
	u, ok := unwrapTombstone(o).(*unstructured.Unstructured)
	if !ok {
		return
	}
	b, pool, err := blockFromObject(u)
	if err != nil {
		cc.log.Warn("ignoring IPAMBlock", "error", err)
		return
	}
	t := cc.topo
	t.mu.Lock()
	prev, had := t.blocks[u.GetName()]
	if deleted {
		t.dropBlock(u.GetName())
	} else {
		t.putBlock(u.GetName(), b)
		t.bpool[u.GetName()] = pool
	}
	t.mu.Unlock()
	cc.markDirty(b.Node)
	if had && prev.Node != b.Node {
		cc.markDirty(prev.Node)
	}
}

func (cc *clusterController) onPool(o any, deleted bool) {
	u, ok := unwrapTombstone(o).(*unstructured.Unstructured)
	if !ok {
		return
	}
	t := cc.topo
	t.mu.Lock()
	if deleted {
		delete(t.pools, u.GetName())
	} else if p, err := poolFromObject(u); err == nil {
		t.pools[u.GetName()] = p
	} else {
		cc.log.Warn("ignoring IPPool", "error", err)
	}
	t.mu.Unlock()
	cc.markDirty("*")
}

func (cc *clusterController) markDirty(node string) {
	if node == "" || node == cc.cfg.NodeName {
		node = "*" // our own blocks and pools change NAT, not peers; be thorough
	}
	cc.dirtyMu.Lock()
	cc.dirty[node] = true
	cc.dirtyMu.Unlock()
	select {
	case cc.wake <- struct{}{}:
	default:
	}
}

// takeDirty returns the nodes marked since the last call and clears them.
func (cc *clusterController) takeDirty() map[string]bool {
	cc.dirtyMu.Lock()
	defer cc.dirtyMu.Unlock()
	dirty := cc.dirty
	cc.dirty = map[string]bool{}
	return dirty
}

// loop applies dirty nodes' peers as events arrive and resyncs everything
// every ResyncPeriod.
func (cc *clusterController) loop(ctx context.Context) {
	tick := time.NewTicker(cc.cfg.ResyncPeriod.Duration)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := cc.resync(ctx); err != nil {
				cc.log.Error("resync", "error", err)
			}
		case <-cc.fastWake:
			if err := cc.applyFastPath(); err != nil {
				cc.log.Error("fast path", "error", err)
			}
		case <-cc.wake:
			dirty := cc.takeDirty()
			if dirty["*"] {
				if err := cc.resync(ctx); err != nil {
					cc.log.Error("resync", "error", err)
				}
				continue
			}
			for name := range dirty {
				if err := cc.applyPeer(ctx, name); err != nil {
					cc.log.Error("apply peer", "node", name, "error", err)
				}
			}
		}
	}
}

func (cc *clusterController) desired() (map[string]datapath.Peer, []skipped) {
	t := cc.topo
	t.mu.Lock()
	defer t.mu.Unlock()
	return desiredPeers(t.self, t.uplink, t.nodes, t.blockList(cc.cfg.NodeCIDREncapsulation), cc.cfg.BGP.Enabled)
}

// desiredOf is desired for one remote node: it reads only that node's
// blocks (a Node or block event costs the same in a cluster of any size).
func (cc *clusterController) desiredOf(name string) (datapath.Peer, bool) {
	t := cc.topo
	t.mu.Lock()
	defer t.mu.Unlock()
	peers, _ := desiredPeers(t.self, t.uplink, t.nodes, t.blockListOf(name, cc.cfg.NodeCIDREncapsulation), cc.cfg.BGP.Enabled)
	p, ok := peers[name]
	return p, ok
}

// applyPeer programs one remote node's entries: O(1) netlink work per event.
func (cc *clusterController) applyPeer(ctx context.Context, name string) error {
	p, ok := cc.desiredOf(name)
	var stats datapath.OpStats
	var err error
	start := time.Now()
	if ok {
		stats, err = cc.dp.SetPeer(ctx, p)
	} else {
		stats, err = cc.dp.DeletePeer(ctx, name)
	}
	if cc.metrics != nil {
		cc.metrics.reconcile.WithLabelValues("peer").Observe(time.Since(start).Seconds())
		cc.metrics.observeOps(stats)
	}
	if err == nil && stats.Total() > 0 {
		cc.log.Info("peer updated", "node", name, "ops", stats.Total(), "routes", len(p.Routes))
	}
	return err
}

// resync compares the whole desired state with the kernel and repairs it,
// and refreshes NAT.
func (cc *clusterController) resync(ctx context.Context) error {
	peers, skips := cc.desired()
	list := make([]datapath.Peer, 0, len(peers))
	for _, p := range peers {
		list = append(list, p)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	start := time.Now()
	stats, repaired, err := cc.dp.Resync(ctx, list)
	if cc.metrics != nil {
		cc.metrics.reconcile.WithLabelValues("resync").Observe(time.Since(start).Seconds())
		cc.metrics.observeOps(stats)
		cc.metrics.driftRepaired.Add(float64(len(repaired)))
	}
	if err != nil {
		return err
	}
	// A node joining a large cluster "repairs" every entry on its first
	// resync: name the first few, summarise the rest.
	const maxNamed = 10
	for i, r := range repaired {
		if i == maxNamed {
			cc.log.Warn("repaired drift: more entries not named", "more", len(repaired)-maxNamed)
			break
		}
		cc.log.Warn("repaired drift", "what", r)
	}
	if stats.Total() > 0 {
		cc.log.Info("resync", "peers", len(list), "ops", stats.Total())
	}
	for _, s := range skips {
		cc.log.Debug("route not installed", "block", s.Block.String(), "node", s.Node, "reason", s.Reason)
	}
	cc.reportAllocations(ctx)
	if err := cc.dp.SetNAT(ctx, cc.natConfig()); err != nil {
		return err
	}
	if cc.cfg.FastPath.Enabled {
		return cc.applyFastPath()
	}
	return nil
}

// natConfig masquerades traffic from pools with natOutgoing that leaves all
// pools and the cluster's node addresses.
func (cc *clusterController) natConfig() datapath.NATConfig {
	t := cc.topo
	t.mu.Lock()
	defer t.mu.Unlock()
	var cfg datapath.NATConfig
	if cc.cfg.IPAMMode == IPAMNodeCIDR {
		for _, b := range t.blocks {
			cfg.AllPools = append(cfg.AllPools, b.CIDR)
			cfg.Masquerade = append(cfg.Masquerade, b.CIDR)
		}
	}
	for _, p := range t.pools {
		cfg.AllPools = append(cfg.AllPools, p.CIDR)
		if p.NATOutgoing && !p.Disabled {
			cfg.Masquerade = append(cfg.Masquerade, p.CIDR)
		}
	}
	for _, n := range t.nodes {
		for _, v := range []*vtepInfo{n.V4, n.V6} {
			if v != nil {
				cfg.NodeAddrs = append(cfg.NodeAddrs, v.Underlay)
			}
		}
	}
	// The node has a VXLAN device when it has a tunnel address (see
	// start): its outer packets to and from the nodes skip conntrack unless
	// the config keeps them tracked.
	for _, v := range []*vtepInfo{t.self.V4, t.self.V6} {
		if v != nil && v.TunnelAddr.IsValid() && !cc.cfg.VXLAN.TrackOuterPackets {
			cfg.TunnelPort = uint16(cc.cfg.VXLAN.Port)
		}
	}
	return cfg
}

// ensureDefaultPools creates the configured default IPPools when the cluster
// has none. Creation is by fixed name, so agents racing at start-up create
// each pool once.
func (cc *clusterController) ensureDefaultPools(ctx context.Context) error {
	if len(cc.cfg.DefaultIPPools) == 0 {
		return nil
	}
	list, err := cc.c.dyn.Resource(gvrIPPools).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return fmt.Errorf("list IPPools: %w", err)
	}
	if len(list.Items) > 0 {
		return nil
	}
	for _, p := range cc.cfg.DefaultIPPools {
		spec := map[string]any{"cidr": p.CIDR}
		if p.BlockSize != 0 {
			spec["blockSize"] = int64(p.BlockSize)
		}
		if p.Encapsulation != "" {
			spec["encapsulation"] = p.Encapsulation
		}
		if p.NATOutgoing != nil {
			spec["natOutgoing"] = *p.NATOutgoing
		}
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "strait.dev/v1alpha1", "kind": "IPPool",
			"metadata": map[string]any{"name": p.Name}, "spec": spec,
		}}
		_, err := cc.c.dyn.Resource(gvrIPPools).Create(ctx, u, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create default IPPool %s: %w", p.Name, err)
		}
		if err == nil {
			cc.log.Info("created default IPPool", "name", p.Name, "cidr", p.CIDR)
		}
	}
	return nil
}
