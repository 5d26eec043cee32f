package blocks

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/strait-net/strait/api/v1alpha1"
)

// Resources of strait.dev/v1alpha1, read and written as unstructured
// objects through the dynamic client.
const (
	resourcePools  = "ippools"
	resourceBlocks = "ipamblocks"
	kindBlock      = "IPAMBlock"
)

func gvr(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: v1alpha1.GroupName, Version: v1alpha1.Version, Resource: resource}
}

// poolInfo is what the manager needs of an IPPool, defaults applied.
type poolInfo struct {
	Name          string
	CIDR          netip.Prefix
	BlockSize     int
	Encapsulation string
	NATOutgoing   bool
	Disabled      bool
	Selector      labels.Selector
}

func (p poolInfo) family() int { return familyOf(p.CIDR) }

func familyOf(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 4
	}
	return 6
}

// poolFromObject converts and checks an IPPool. A nil nodeSelector selects
// every node, like an empty one.
func poolFromObject(u *unstructured.Unstructured) (poolInfo, error) {
	var p v1alpha1.IPPool
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		return poolInfo{}, fmt.Errorf("IPPool %s: %w", u.GetName(), err)
	}
	v1alpha1.SetDefaults_IPPool(&p)
	cidr, err := netip.ParsePrefix(p.Spec.CIDR)
	if err != nil {
		return poolInfo{}, fmt.Errorf("IPPool %s: spec.cidr: %w", p.Name, err)
	}
	if cidr.Addr().Is4In6() || cidr != cidr.Masked() {
		return poolInfo{}, fmt.Errorf("IPPool %s: spec.cidr %s is not a canonical network prefix", p.Name, cidr)
	}
	bs := int(p.Spec.EffectiveBlockSize())
	if bs < cidr.Bits() || bs > cidr.Addr().BitLen() {
		return poolInfo{}, fmt.Errorf("IPPool %s: blockSize %d does not fit cidr %s", p.Name, bs, cidr)
	}
	sel := labels.Everything()
	if p.Spec.NodeSelector != nil {
		if sel, err = metav1.LabelSelectorAsSelector(p.Spec.NodeSelector); err != nil {
			return poolInfo{}, fmt.Errorf("IPPool %s: spec.nodeSelector: %w", p.Name, err)
		}
	}
	return poolInfo{
		Name: p.Name, CIDR: cidr, BlockSize: bs,
		Encapsulation: string(p.Spec.EffectiveEncapsulation()), NATOutgoing: p.Spec.NATOutgoingEnabled(),
		Disabled: p.Spec.Disabled, Selector: sel,
	}, nil
}

// defaultSettings are the encapsulation and NAT of a pool that sets none.
func defaultSettings() (string, bool) {
	var s v1alpha1.IPPoolSpec
	return string(s.EffectiveEncapsulation()), s.NATOutgoingEnabled()
}

// blockFromObject reads an IPAMBlock's spec and checks that its name is
// the one of its CIDR.
func blockFromObject(u *unstructured.Unstructured) (Block, error) {
	cidr, _, _ := unstructured.NestedString(u.Object, "spec", "cidr")
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return Block{}, fmt.Errorf("IPAMBlock %s: spec.cidr: %w", u.GetName(), err)
	}
	if want := v1alpha1.BlockName(p); want != u.GetName() {
		return Block{}, fmt.Errorf("IPAMBlock %s: spec.cidr %s would be named %q", u.GetName(), cidr, want)
	}
	b := Block{Name: u.GetName(), CIDR: p, uid: u.GetUID()}
	b.Pool, _, _ = unstructured.NestedString(u.Object, "spec", "pool")
	b.Node, _, _ = unstructured.NestedString(u.Object, "spec", "node")
	return b, nil
}

// blockObject is the IPAMBlock that claims block cidr of pool for node.
func blockObject(cidr netip.Prefix, pool, node string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{"cidr": cidr.String(), "pool": pool, "node": node},
	}}
	u.SetAPIVersion(v1alpha1.SchemeGroupVersion.String())
	u.SetKind(kindBlock)
	u.SetName(v1alpha1.BlockName(cidr))
	return u
}

// blockCount is how many blocks of size bits pool holds, saturated at 2^63
// (an IPv6 pool can hold more than anyone will ever claim).
func blockCount(pool netip.Prefix, bits int) uint64 {
	shift := bits - pool.Bits()
	if shift >= 63 {
		return 1 << 63
	}
	return 1 << shift
}

// nthBlock returns block i (0-based, i < blockCount) of size bits of pool.
func nthBlock(pool netip.Prefix, bits int, i uint64) netip.Prefix {
	b := pool.Addr().As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	// 128-bit add of i << (a block's host bits); an IPv4 address sits in
	// the low 32 bits of its 16-byte form.
	s := uint(pool.Addr().BitLen()) - uint(bits)
	var addHi, addLo uint64
	switch {
	case s >= 128:
	case s >= 64:
		addHi = i << (s - 64)
	case s == 0:
		addLo = i
	default:
		addLo = i << s
		addHi = i >> (64 - s)
	}
	lo2 := lo + addLo
	carry := uint64(0)
	if lo2 < lo {
		carry = 1
	}
	hi += addHi + carry
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo2)
	a := netip.AddrFrom16(b)
	if pool.Addr().Is4() {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, bits)
}

// startOffset is where node's walk through n blocks begins: a hash of the
// node name, so that nodes claiming at the same time mostly try different
// blocks instead of all racing for the first free one.
func startOffset(node string, n uint64) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	return h.Sum64() % n
}
