package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/datapath"
)

// Resources of Strait's API (strait.dev/v1alpha1).
var (
	gvrIPPools    = schema.GroupVersionResource{Group: "strait.dev", Version: "v1alpha1", Resource: "ippools"}
	gvrIPAMBlocks = schema.GroupVersionResource{Group: "strait.dev", Version: "v1alpha1", Resource: "ipamblocks"}
)

// nodeFromObject reads what the datapath needs from a Node: its published
// VTEPs and underlay subnets (strait.dev/vtep-v4|v6, node-subnet-v4|v6), or,
// before it published any, nothing (routes to it wait).
func nodeFromObject(n *corev1.Node, log *slog.Logger) nodeInfo {
	info := nodeInfo{Name: n.Name}
	for _, f := range []struct {
		vtepKey, subnetKey string
		dst                **vtepInfo
	}{
		{v1alpha1.AnnotationVTEPv4, v1alpha1.AnnotationNodeSubnetV4, &info.V4},
		{v1alpha1.AnnotationVTEPv6, v1alpha1.AnnotationNodeSubnetV6, &info.V6},
	} {
		s, ok := n.Annotations[f.vtepKey]
		if !ok {
			continue
		}
		v, err := v1alpha1.ParseVTEPAnnotation(f.vtepKey, s)
		if err != nil {
			log.Warn("ignoring bad VTEP annotation", "node", n.Name, "annotation", f.vtepKey, "error", err)
			continue
		}
		vi := &vtepInfo{Underlay: v.IP, MAC: v.MAC, TunnelAddr: v.TunnelAddr}
		if sub, ok := n.Annotations[f.subnetKey]; ok {
			if p, err := v1alpha1.ParseNodeSubnet(sub); err == nil {
				vi.Subnet = p
			} else {
				log.Warn("ignoring bad subnet annotation", "node", n.Name, "annotation", f.subnetKey, "error", err)
			}
		}
		*f.dst = vi
	}
	return info
}

// internalIPs returns a Node's InternalIP addresses, one per family.
func internalIPs(n *corev1.Node) (v4, v6 netip.Addr) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		if ip.Is4() && !v4.IsValid() {
			v4 = ip
		} else if ip.Is6() && !v6.IsValid() {
			v6 = ip
		}
	}
	return v4, v6
}

// blockFromObject reads an IPAMBlock.
func blockFromObject(u *unstructured.Unstructured) (blockInfo, string, error) {
	cidr, _, _ := unstructured.NestedString(u.Object, "spec", "cidr")
	node, _, _ := unstructured.NestedString(u.Object, "spec", "node")
	pool, _, _ := unstructured.NestedString(u.Object, "spec", "pool")
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return blockInfo{}, "", fmt.Errorf("IPAMBlock %s: spec.cidr: %w", u.GetName(), err)
	}
	return blockInfo{CIDR: p, Node: node}, pool, nil
}

// poolSettings are the parts of an IPPool the datapath uses.
type poolSettings struct {
	CIDR          netip.Prefix
	Encapsulation string
	NATOutgoing   bool
	Disabled      bool
}

func poolFromObject(u *unstructured.Unstructured) (poolSettings, error) {
	cidr, _, _ := unstructured.NestedString(u.Object, "spec", "cidr")
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return poolSettings{}, fmt.Errorf("IPPool %s: spec.cidr: %w", u.GetName(), err)
	}
	enc, found, _ := unstructured.NestedString(u.Object, "spec", "encapsulation")
	if !found || enc == "" {
		enc = EncapVXLANCrossSubnet
	}
	nat, found, _ := unstructured.NestedBool(u.Object, "spec", "natOutgoing")
	if !found {
		nat = true
	}
	dis, _, _ := unstructured.NestedBool(u.Object, "spec", "disabled")
	return poolSettings{CIDR: p, Encapsulation: enc, NATOutgoing: nat, Disabled: dis}, nil
}

// OverlayDatapath is the part of the datapath the cluster controller drives.
type OverlayDatapath interface {
	EnsureVTEPs(ctx context.Context, vteps []datapath.VTEPConfig) error
	SetPeer(ctx context.Context, p datapath.Peer) (datapath.OpStats, error)
	DeletePeer(ctx context.Context, name string) (datapath.OpStats, error)
	Resync(ctx context.Context, peers []datapath.Peer) (datapath.OpStats, []string, error)
	SetNAT(ctx context.Context, cfg datapath.NATConfig) error
	UplinkFor(ctx context.Context, addr netip.Addr) (datapath.Uplink, error)
	SetFastPath(fp datapath.FastPath) (datapath.FastPathStatus, error)
	FastPathCounters(pinDir string) (datapath.FastPathCounters, error)
	FastPathNextHops() ([]datapath.NextHop, error)
}

// clusterClients are the API clients of the cluster modes.
type clusterClients struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

// topology is the controller's view of the cluster, guarded by mu.
type topology struct {
	mu     sync.Mutex
	self   nodeInfo
	uplink string
	nodes  map[string]nodeInfo
	blocks map[string]blockInfo // by object name; change through putBlock and dropBlock
	bpool  map[string]string    // block name -> pool name
	// byNode indexes blocks by node, so that an event for one node reads
	// and changes only that node's blocks.
	byNode  map[string]map[string]bool
	pools   map[string]poolSettings
	applied map[string]datapath.Peer
}

func newTopology() *topology {
	return &topology{nodes: map[string]nodeInfo{}, blocks: map[string]blockInfo{}, bpool: map[string]string{},
		byNode: map[string]map[string]bool{}, pools: map[string]poolSettings{}, applied: map[string]datapath.Peer{}}
}

// putBlock records block name (replacing what it was) and indexes it by node.
func (t *topology) putBlock(name string, b blockInfo) {
	t.dropBlock(name)
	t.blocks[name] = b
	if t.byNode[b.Node] == nil {
		t.byNode[b.Node] = map[string]bool{}
	}
	t.byNode[b.Node][name] = true
}

// dropBlock forgets block name.
func (t *topology) dropBlock(name string) {
	b, ok := t.blocks[name]
	if !ok {
		return
	}
	delete(t.blocks, name)
	delete(t.bpool, name)
	if delete(t.byNode[b.Node], name); len(t.byNode[b.Node]) == 0 {
		delete(t.byNode, b.Node)
	}
}

// blockList resolves each block's encapsulation from its pool; blocks of an
// unknown pool fall back to the pool whose CIDR contains them.
func (t *topology) blockList(nodeCIDREncap string) []blockInfo {
	out := make([]blockInfo, 0, len(t.blocks))
	for name, b := range t.blocks {
		out = append(out, t.resolve(name, b, nodeCIDREncap))
	}
	return out
}

// blockListOf is blockList for one node's blocks.
func (t *topology) blockListOf(node, nodeCIDREncap string) []blockInfo {
	out := make([]blockInfo, 0, len(t.byNode[node]))
	for name := range t.byNode[node] {
		out = append(out, t.resolve(name, t.blocks[name], nodeCIDREncap))
	}
	return out
}

func (t *topology) resolve(name string, b blockInfo, nodeCIDREncap string) blockInfo {
	b.Encapsulation = nodeCIDREncap
	if p, ok := t.pools[t.bpool[name]]; ok {
		b.Encapsulation = p.Encapsulation
		return b
	}
	for _, p := range t.pools {
		if p.CIDR.Contains(b.CIDR.Addr()) {
			b.Encapsulation = p.Encapsulation
		}
	}
	return b
}

// waitForNode waits for this node's Node object (kubelet registers it).
func waitForNode(ctx context.Context, kube kubernetes.Interface, name string, log *slog.Logger) (*corev1.Node, error) {
	for {
		n, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			v4, v6 := internalIPs(n)
			if v4.IsValid() || v6.IsValid() {
				return n, nil
			}
			err = errors.New("no InternalIP yet")
		}
		log.Info("waiting for this node's Node object", "node", name, "error", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for Node %s: %w", name, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// annotateNode publishes this node's VTEPs and underlay subnets.
func annotateNode(ctx context.Context, kube kubernetes.Interface, name string, self nodeInfo) error {
	ann := map[string]any{}
	for _, f := range []struct {
		v                  *vtepInfo
		vtepKey, subnetKey string
	}{
		{self.V4, v1alpha1.AnnotationVTEPv4, v1alpha1.AnnotationNodeSubnetV4},
		{self.V6, v1alpha1.AnnotationVTEPv6, v1alpha1.AnnotationNodeSubnetV6},
	} {
		if f.v == nil {
			continue
		}
		vs, err := v1alpha1.MarshalVTEP(v1alpha1.VTEP{IP: f.v.Underlay, MAC: f.v.MAC, TunnelAddr: f.v.TunnelAddr})
		if err != nil {
			return fmt.Errorf("publish VTEP: %w", err)
		}
		ss, err := v1alpha1.FormatNodeSubnet(f.v.Subnet)
		if err != nil {
			return fmt.Errorf("publish subnet: %w", err)
		}
		ann[f.vtepKey], ann[f.subnetKey] = vs, ss
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if _, err := kube.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("publish VTEP annotations on Node %s: %w", name, err)
	}
	return nil
}

// informers builds the Node and Strait resource informers.
func (c clusterClients) informers(resync time.Duration) (informers.SharedInformerFactory, dynamicinformer.DynamicSharedInformerFactory) {
	return informers.NewSharedInformerFactory(c.kube, resync), dynamicinformer.NewDynamicSharedInformerFactory(c.dyn, resync)
}
