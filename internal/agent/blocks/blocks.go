// Package blocks claims and gives back this node's IPAM blocks through the
// Kubernetes API, Calico style: the cluster's IPPools are carved into
// blocks of the pool's blockSize, a node claims a block by creating the
// IPAMBlock named after it (v1alpha1.BlockName: two nodes racing for a block
// get one Create and one AlreadyExists), allocates pod addresses from its
// blocks locally (internal/ipam) and deletes a block to give it back. The
// leader-elected releaser (RunReleaser) deletes the blocks of nodes that are
// gone once no pod uses them any more.
//
// It uses client-go's dynamic client with unstructured objects (and
// api/v1alpha1 for names and defaults); no netlink.
package blocks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// ErrPoolsExhausted is returned (wrapped) by Claim when every block of
// every pool that selects the node is claimed.
var ErrPoolsExhausted = errors.New("blocks: no free block left in the pools selecting this node")

// ErrNoPool is returned (wrapped) by Claim when no enabled pool of the
// family selects the node.
var ErrNoPool = errors.New("blocks: no enabled pool selects this node")

// Block is one IPAM block a node holds, with the settings of its pool.
type Block struct {
	Name string // the IPAMBlock's name, v1alpha1.BlockName(CIDR)
	CIDR netip.Prefix
	Pool string
	Node string
	// Encapsulation and NATOutgoing are the pool's (its defaults when the
	// pool is gone).
	Encapsulation string
	NATOutgoing   bool

	uid types.UID
}

// Family is 4 or 6.
func (b Block) Family() int { return familyOf(b.CIDR) }

// Config configures a Manager.
type Config struct {
	Client   dynamic.Interface    // IPPools and IPAMBlocks
	Kube     kubernetes.Interface // this node's Node object (labels)
	NodeName string
	Log      *slog.Logger // default slog.Default()
}

// Manager claims, lists, reports on and releases one node's blocks. It keeps
// no cache: every call reads the API, so pool changes (new pools, changed
// selectors, disabled pools) apply to the next Claim. It is safe for
// concurrent use; concurrent Claims of one Manager run one after the other
// (they would race for the same blocks) and each claims a different block.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	claimMu sync.Mutex
}

// NewManager returns a Manager for cfg.NodeName.
func NewManager(cfg Config) *Manager {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cfg: cfg, log: log.With("node", cfg.NodeName)}
}

func (m *Manager) blocks() dynamic.ResourceInterface {
	return m.cfg.Client.Resource(gvr(resourceBlocks))
}

// pools lists the IPPools by name; pools that cannot be read are skipped
// with a warning.
func (m *Manager) pools(ctx context.Context) ([]poolInfo, error) {
	l, err := m.cfg.Client.Resource(gvr(resourcePools)).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list IPPools: %w", err)
	}
	var out []poolInfo
	for i := range l.Items {
		p, err := poolFromObject(&l.Items[i])
		if err != nil {
			m.log.Warn("ignoring IPPool", "error", err)
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b poolInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// listBlocks returns all IPAMBlocks with their objects' creation order.
func (m *Manager) listBlocks(ctx context.Context) ([]Block, []metav1.Time, error) {
	l, err := m.blocks().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("list IPAMBlocks: %w", err)
	}
	var out []Block
	var created []metav1.Time
	for i := range l.Items {
		b, err := blockFromObject(&l.Items[i])
		if err != nil {
			m.log.Warn("ignoring IPAMBlock", "error", err)
			continue
		}
		out = append(out, b)
		created = append(created, l.Items[i].GetCreationTimestamp())
	}
	return out, created, nil
}

// Owned returns the blocks this node holds, IPv4 first, each family oldest
// first (creationTimestamp, which has second resolution, then address), so
// the first block, whose network address is the node's tunnel address,
// stays first while it is held; with their pool's settings.
func (m *Manager) Owned(ctx context.Context) ([]Block, error) {
	all, created, err := m.listBlocks(ctx)
	if err != nil {
		return nil, fmt.Errorf("blocks: owned by %s: %w", m.cfg.NodeName, err)
	}
	pools, err := m.pools(ctx)
	if err != nil {
		return nil, fmt.Errorf("blocks: owned by %s: %w", m.cfg.NodeName, err)
	}
	type owned struct {
		b       Block
		created metav1.Time
	}
	var own []owned
	for i, b := range all {
		if b.Node != m.cfg.NodeName {
			continue
		}
		b.Encapsulation, b.NATOutgoing = defaultSettings()
		if j := slices.IndexFunc(pools, func(p poolInfo) bool { return p.Name == b.Pool }); j >= 0 {
			b.Encapsulation, b.NATOutgoing = pools[j].Encapsulation, pools[j].NATOutgoing
		} else {
			m.log.Debug("block's pool not found, using default settings", "block", b.Name, "pool", b.Pool)
		}
		own = append(own, owned{b, created[i]})
	}
	slices.SortFunc(own, func(x, y owned) int {
		return cmp.Or(cmp.Compare(x.b.Family(), y.b.Family()),
			x.created.Time.Compare(y.created.Time), x.b.CIDR.Addr().Compare(y.b.CIDR.Addr()))
	})
	out := make([]Block, len(own))
	for i, o := range own {
		out[i] = o.b
	}
	return out, nil
}

// selecting returns the enabled pools of family (0: both) whose
// nodeSelector matches this node's labels, by name.
func (m *Manager) selecting(ctx context.Context, family int) ([]poolInfo, error) {
	node, err := m.cfg.Kube.CoreV1().Nodes().Get(ctx, m.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get Node %s: %w", m.cfg.NodeName, err)
	}
	pools, err := m.pools(ctx)
	if err != nil {
		return nil, err
	}
	set := labels.Set(node.Labels)
	var out []poolInfo
	for _, p := range pools {
		if p.Disabled || (family != 0 && p.family() != family) || !p.Selector.Matches(set) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// Claim claims one new block of family (4 or 6) for this node from the
// enabled pools whose nodeSelector matches the Node's labels, trying the
// pools by name. Within a pool the blocks are walked in a fixed order per
// node, from an offset hashed from the node name; blocks already taken are
// skipped, and each candidate is claimed by creating its IPAMBlock, an
// AlreadyExists (another node was faster) moving on to the next. When no
// block is left the error wraps ErrPoolsExhausted; with no selecting pool,
// ErrNoPool. After another error the Create may still have succeeded on
// the server: Owned tells.
func (m *Manager) Claim(ctx context.Context, family int) (Block, error) {
	if family != 4 && family != 6 {
		return Block{}, fmt.Errorf("blocks: claim: family %d is not 4 or 6", family)
	}
	m.claimMu.Lock()
	defer m.claimMu.Unlock()
	pools, err := m.selecting(ctx, family)
	if err != nil {
		return Block{}, fmt.Errorf("blocks: claim an IPv%d block for %s: %w", family, m.cfg.NodeName, err)
	}
	if len(pools) == 0 {
		return Block{}, fmt.Errorf("blocks: claim an IPv%d block for %s: %w", family, m.cfg.NodeName, ErrNoPool)
	}
	taken, _, err := m.listBlocks(ctx)
	if err != nil {
		return Block{}, fmt.Errorf("blocks: claim an IPv%d block for %s: %w", family, m.cfg.NodeName, err)
	}
	var names []string
	for _, p := range pools {
		b, ok, err := m.claimFrom(ctx, p, taken)
		if err != nil {
			return Block{}, fmt.Errorf("blocks: claim an IPv%d block for %s from pool %s: %w", family, m.cfg.NodeName, p.Name, err)
		}
		if ok {
			return b, nil
		}
		names = append(names, p.Name+" ("+p.CIDR.String()+")")
	}
	return Block{}, fmt.Errorf("blocks: claim an IPv%d block for %s: pools %s: %w",
		family, m.cfg.NodeName, strings.Join(names, ", "), ErrPoolsExhausted)
}

// claimFrom walks pool p's blocks from this node's offset and creates the
// first free one. ok is false when every block is taken.
func (m *Manager) claimFrom(ctx context.Context, p poolInfo, taken []Block) (Block, bool, error) {
	exact := map[netip.Prefix]bool{} // taken blocks on p's grid
	var other []netip.Prefix         // taken prefixes overlapping p off its grid
	for _, t := range taken {
		switch {
		case t.CIDR.Bits() == p.BlockSize && p.CIDR.Contains(t.CIDR.Addr()):
			exact[t.CIDR] = true
		case t.CIDR.Overlaps(p.CIDR):
			other = append(other, t.CIDR)
		}
	}
	n := blockCount(p.CIDR, p.BlockSize)
	if len(other) == 0 && uint64(len(exact)) >= n {
		return Block{}, false, nil
	}
	off := startOffset(m.cfg.NodeName, n)
	for i := uint64(0); i < n; i++ {
		if err := ctx.Err(); err != nil {
			return Block{}, false, err
		}
		c := nthBlock(p.CIDR, p.BlockSize, (off+i)%n)
		if exact[c] || slices.ContainsFunc(other, c.Overlaps) {
			continue
		}
		want := blockObject(c, p.Name, m.cfg.NodeName)
		obj, err := m.blocks().Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			m.log.Debug("block taken meanwhile, trying the next", "block", c.String(), "pool", p.Name)
			continue
		}
		if err != nil {
			return Block{}, false, fmt.Errorf("create IPAMBlock %s: %w", want.GetName(), err)
		}
		b := Block{Name: obj.GetName(), CIDR: c, Pool: p.Name, Node: m.cfg.NodeName,
			Encapsulation: p.Encapsulation, NATOutgoing: p.NATOutgoing, uid: obj.GetUID()}
		m.log.Info("claimed block", "block", c.String(), "pool", p.Name)
		return b, true, nil
	}
	return Block{}, false, nil
}

// EnsureOne claims a block for each family that has a pool selecting this
// node but no block owned by it, and returns all blocks the node then holds
// (as Owned orders them). Families whose claim failed are reported in the
// error, joined; the blocks are returned all the same.
func (m *Manager) EnsureOne(ctx context.Context) ([]Block, error) {
	own, err := m.Owned(ctx)
	if err != nil {
		return nil, fmt.Errorf("blocks: ensure one: %w", err)
	}
	pools, err := m.selecting(ctx, 0)
	if err != nil {
		return own, fmt.Errorf("blocks: ensure one for %s: %w", m.cfg.NodeName, err)
	}
	var errs []error
	claimed := false
	for _, fam := range []int{4, 6} {
		wanted := slices.ContainsFunc(pools, func(p poolInfo) bool { return p.family() == fam })
		held := slices.ContainsFunc(own, func(b Block) bool { return b.Family() == fam })
		if !wanted || held {
			continue
		}
		if _, err := m.Claim(ctx, fam); err != nil {
			errs = append(errs, err)
			continue
		}
		claimed = true
	}
	if claimed {
		if own, err = m.Owned(ctx); err != nil {
			errs = append(errs, fmt.Errorf("blocks: ensure one: %w", err))
		}
	}
	return own, errors.Join(errs...)
}

// Release gives block b back by deleting its IPAMBlock, only if this node
// owns it (spec.node is immutable; the UID read is the Delete's
// precondition). The caller checks first that no address of b is
// allocated: ipam's RemovePool refuses while one is, so "RemovePool, then
// Release (AddPool again if Release fails)" is race-free. A block already
// gone is no error.
func (m *Manager) Release(ctx context.Context, b Block) error {
	obj, err := m.blocks().Get(ctx, b.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("blocks: release %s: %w", b.Name, err)
	}
	if err := m.checkOwned(obj); err != nil {
		return fmt.Errorf("blocks: release %s: %w", b.Name, err)
	}
	uid := obj.GetUID() // the object checked, not a later claim of the block
	err = m.blocks().Delete(ctx, b.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("blocks: release %s: delete: %w", b.Name, err)
	}
	m.log.Info("released block", "block", b.CIDR.String(), "pool", b.Pool)
	return nil
}

// ReportAllocations sets status.allocations of owned block b to n through
// the status subresource, writing only when it changed (an absent value
// counts as 0).
func (m *Manager) ReportAllocations(ctx context.Context, b Block, n int) error {
	if n < 0 {
		return fmt.Errorf("blocks: report allocations of %s: negative count %d", b.Name, n)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		obj, err := m.blocks().Get(ctx, b.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := m.checkOwned(obj); err != nil {
			return err
		}
		if cur, _, _ := unstructured.NestedInt64(obj.Object, "status", "allocations"); cur == int64(n) {
			return nil
		}
		// Unstructured numbers must be int64 (DeepCopy panics on int).
		if err := unstructured.SetNestedField(obj.Object, int64(n), "status", "allocations"); err != nil {
			return err
		}
		_, err = m.blocks().UpdateStatus(ctx, obj, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("blocks: report allocations of %s: %w", b.Name, err)
	}
	return nil
}

func (m *Manager) checkOwned(obj *unstructured.Unstructured) error {
	b, err := blockFromObject(obj)
	if err != nil {
		return err
	}
	if b.Node != m.cfg.NodeName {
		return fmt.Errorf("owned by node %q, not %q", b.Node, m.cfg.NodeName)
	}
	return nil
}
