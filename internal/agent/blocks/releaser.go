package blocks

import (
	"context"
	"errors"
	"fmt"
	"github.com/strait-net/strait/internal/leader"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/pager"
)

// ReleaserConfig configures RunReleaser. Zero durations take the defaults.
type ReleaserConfig struct {
	Kube    kubernetes.Interface // Nodes, Pods, the Lease
	Dynamic dynamic.Interface    // IPAMBlocks
	// Identity is this candidate's name in the Lease (the node name).
	Identity string
	// Namespace and LeaseName locate the Lease (default strait-system and
	// strait-block-releaser); the namespace must exist.
	Namespace string
	LeaseName string
	// Interval between two passes of the leader (default 1m).
	Interval time.Duration
	// Leader election timing (defaults 15s, 10s, 2s; LeaseDuration >
	// RenewDeadline > 1.2 * RetryPeriod): a crashed leader is replaced
	// after LeaseDuration, one whose ctx ends gives the Lease up at once.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	Log           *slog.Logger // default slog.Default()
}

// Defaults of ReleaserConfig.
const (
	DefaultReleaserNamespace = "strait-system"
	DefaultReleaserLease     = "strait-block-releaser"
	DefaultReleaserInterval  = time.Minute
)

func (c *ReleaserConfig) setDefaults() {
	c.Namespace = orDefault(c.Namespace, DefaultReleaserNamespace)
	c.LeaseName = orDefault(c.LeaseName, DefaultReleaserLease)
	c.Interval = orDefault(c.Interval, DefaultReleaserInterval)
	c.LeaseDuration = orDefault(c.LeaseDuration, 15*time.Second)
	c.RenewDeadline = orDefault(c.RenewDeadline, 10*time.Second)
	c.RetryPeriod = orDefault(c.RetryPeriod, 2*time.Second)
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// RunReleaser campaigns for the releaser Lease until ctx ends and, while it
// leads, runs a pass every Interval: each IPAMBlock whose spec.node names
// no existing Node is deleted, unless a Pod that is not Succeeded or Failed
// still has an IP inside the block (a pod on the gone node whose object is
// not deleted yet: its address must not be handed out again), in which case
// the block is kept and why is logged. After losing the Lease it waits for
// its pass to stop and campaigns again. It returns nil when ctx ends (the
// Lease is given up at once), an error only for a bad config.
func RunReleaser(ctx context.Context, cfg ReleaserConfig) error {
	cfg.setDefaults()
	if cfg.Kube == nil || cfg.Dynamic == nil || cfg.Identity == "" {
		return errors.New("blocks: releaser: Kube, Dynamic and Identity are required")
	}
	r := &releaser{cfg: cfg, log: cfg.Log.With("component", "block-releaser", "identity", cfg.Identity), kept: map[string]string{}}
	if err := leader.Run(ctx, leader.Config{
		Kube: cfg.Kube, Namespace: cfg.Namespace, Name: cfg.LeaseName, Identity: cfg.Identity,
		LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.RenewDeadline, RetryPeriod: cfg.RetryPeriod,
		Log: r.log,
	}, r.lead); err != nil {
		return fmt.Errorf("blocks: releaser: %w", err)
	}
	return nil
}

type releaser struct {
	cfg ReleaserConfig
	log *slog.Logger

	mu   sync.Mutex        // one pass at a time
	kept map[string]string // block -> why it was last kept (log on change)
}

func (r *releaser) lead(ctx context.Context) {
	if ctx.Err() != nil { // the term ended before this goroutine ran
		return
	}
	r.log.Info("leading the block releaser")
	defer r.log.Info("stopped leading the block releaser")
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if err := r.pass(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("block release pass failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pass releases the blocks of gone nodes that no pod uses.
func (r *releaser) pass(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	// Nodes first, then blocks: a block listed whose node is missing is of
	// a deleted node, or of a node created after the Node list (checked
	// again below).
	nodes, err := r.cfg.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list Nodes: %w", err)
	}
	exists := make(map[string]bool, len(nodes.Items))
	for _, n := range nodes.Items {
		exists[n.Name] = true
	}
	l, err := r.cfg.Dynamic.Resource(gvr(resourceBlocks)).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list IPAMBlocks: %w", err)
	}
	var orphans []Block
	for i := range l.Items {
		b, err := blockFromObject(&l.Items[i])
		if err != nil {
			r.log.Warn("ignoring IPAMBlock", "error", err)
			continue
		}
		if !exists[b.Node] {
			orphans = append(orphans, b)
		}
	}
	r.log.Debug("block release pass", "nodes", len(exists), "blocks", len(l.Items), "orphans", len(orphans))
	stillKept := map[string]string{}
	defer func() { r.kept = stillKept }()
	if len(orphans) == 0 {
		return nil
	}
	users, err := r.podsIn(ctx, orphans)
	if err != nil {
		return err
	}
	var errs []error
	for _, b := range orphans {
		if err := ctx.Err(); err != nil { // no longer leading
			return err
		}
		if _, err := r.cfg.Kube.CoreV1().Nodes().Get(ctx, b.Node, metav1.GetOptions{}); err == nil {
			continue // created after the list
		} else if !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("get Node %s: %w", b.Node, err))
			continue
		}
		if why, ok := users[b.Name]; ok {
			stillKept[b.Name] = why
			level := slog.LevelDebug
			if r.kept[b.Name] != why {
				level = slog.LevelInfo
			}
			r.log.Log(ctx, level, "keeping block of a deleted node: a pod still uses it",
				"block", b.CIDR.String(), "node", b.Node, "pod", why)
			continue
		}
		uid := b.uid
		err := r.cfg.Dynamic.Resource(gvr(resourceBlocks)).Delete(ctx, b.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		switch {
		case err == nil:
			r.log.Info("released block of a deleted node", "block", b.CIDR.String(), "node", b.Node, "pool", b.Pool)
		case apierrors.IsNotFound(err), apierrors.IsConflict(err): // gone, or a new claim of the block
		default:
			errs = append(errs, fmt.Errorf("delete IPAMBlock %s: %w", b.Name, err))
		}
	}
	return errors.Join(errs...)
}

// podsIn maps each block in bs that a live pod (not Succeeded or Failed)
// has an IP in to "namespace/name (IP)" of one such pod. Pods are listed
// in pages, from all namespaces.
func (r *releaser) podsIn(ctx context.Context, bs []Block) (map[string]string, error) {
	users := map[string]string{}
	p := pager.New(pager.SimplePageFunc(func(opts metav1.ListOptions) (runtime.Object, error) {
		return r.cfg.Kube.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
	}))
	err := p.EachListItem(ctx, metav1.ListOptions{}, func(o runtime.Object) error {
		pod, ok := o.(*corev1.Pod)
		if !ok || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return nil
		}
		for _, ip := range podIPs(pod) {
			for _, b := range bs {
				if _, seen := users[b.Name]; !seen && b.CIDR.Contains(ip) {
					users[b.Name] = fmt.Sprintf("%s/%s (%s, on node %q, phase %s)", pod.Namespace, pod.Name, ip, pod.Spec.NodeName, pod.Status.Phase)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list Pods: %w", err)
	}
	return users, nil
}

func podIPs(pod *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	add(pod.Status.PodIP)
	for _, ip := range pod.Status.PodIPs {
		add(ip.IP)
	}
	return out
}
