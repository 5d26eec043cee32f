package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/strait-net/strait/internal/cni"
	"github.com/strait-net/strait/internal/datapath"
	"github.com/strait-net/strait/internal/ipam"
)

// PodDatapath is the part of the datapath the CNI handler drives; the Linux
// implementation is *datapath.Datapath, tests use a fake.
type PodDatapath interface {
	// EnsureHost sets the node-wide prerequisites (IPv6 forwarding).
	EnsureHost(ctx context.Context) error
	SetupPod(ctx context.Context, p datapath.Pod) (datapath.PodLinks, error)
	TeardownPod(ctx context.Context, hostIface, netns, ifName string) error
	CheckPod(ctx context.Context, p datapath.Pod) error
	HostIfaces(ctx context.Context) ([]string, error)
}

// Allocator is the IPAM the handler uses (*ipam.Allocator).
type Allocator interface {
	Allocate(o ipam.Owner) (ipam.Allocation, bool, error)
	Release(k ipam.Key) (ipam.Allocation, bool, error)
	Get(k ipam.Key) (ipam.Allocation, bool)
	List() []ipam.Allocation
}

// cniHandler implements cni.Handler over IPAM and the datapath.
type cniHandler struct {
	log   *slog.Logger
	mtu   int
	ready func() error // nil when ready, else why not
	alloc func() Allocator
	dp    PodDatapath
	locks keyedMutex
	// podsChanged, if set, is told that a pod's host veth came or went
	// (the fast path attaches to it).
	podsChanged func()
}

func (h *cniHandler) notifyPods() {
	if h.podsChanged != nil {
		h.podsChanged()
	}
}

var _ cni.Handler = (*cniHandler)(nil)

func (h *cniHandler) allocator() (Allocator, error) {
	if err := h.ready(); err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "strait agent not ready", err.Error())
	}
	return h.alloc(), nil
}

func keyOf(a *cni.Attachment) ipam.Key {
	return ipam.Key{Network: a.Conf.Name, ContainerID: a.ContainerID, IfName: a.IfName}
}

func podOf(a *cni.Attachment, addrs []netip.Addr, hostIface string, mtu int) datapath.Pod {
	return datapath.Pod{Netns: a.Netns, IfName: a.IfName, HostIface: hostIface, Addrs: addrs, MTU: mtu}
}

// Add allocates addresses and wires the pod; on failure it rolls back what
// this call created, so nothing is left half-configured.
func (h *cniHandler) Add(ctx context.Context, a *cni.Attachment) (*current.Result, error) {
	alloc, err := h.allocator()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(a.Netns); err != nil {
		return nil, types.NewError(types.ErrUnknownContainer, "strait: network namespace not found", fmt.Sprintf("CNI_NETNS %s: %v", a.Netns, err))
	}
	key := keyOf(a)
	unlock := h.locks.Lock(key.String())
	defer unlock()

	hostIface := datapath.HostIfaceName(key.Network, key.ContainerID, key.IfName)
	owner := ipam.Owner{Key: key, PodNamespace: a.Pod.Namespace, PodName: a.Pod.Name, PodUID: a.Pod.UID, Netns: a.Netns, HostIface: hostIface}
	al, created, err := alloc.Allocate(owner)
	if err != nil {
		if errors.Is(err, ipam.ErrExhausted) {
			return nil, types.NewError(types.ErrTryAgainLater, "strait: no free pod address on this node", err.Error())
		}
		return nil, types.NewError(types.ErrInternal, "strait: address allocation failed", err.Error())
	}
	links, err := h.dp.SetupPod(ctx, podOf(a, al.Addrs, hostIface, h.mtu))
	if err != nil {
		if created {
			if _, _, rerr := alloc.Release(key); rerr != nil {
				h.log.Error("rollback: release addresses", "key", key.String(), "error", rerr)
			}
		}
		if errors.Is(err, datapath.ErrNetnsNotFound) {
			return nil, types.NewError(types.ErrUnknownContainer, "strait: network namespace not found", err.Error())
		}
		return nil, types.NewError(types.ErrInternal, "strait: pod network setup failed", err.Error())
	}
	h.notifyPods()
	return buildResult(a, al.Addrs, links), nil
}

func buildResult(a *cni.Attachment, addrs []netip.Addr, links datapath.PodLinks) *current.Result {
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: links.HostIface, Mac: links.HostMAC.String()},
			{Name: links.PodIface, Mac: links.PodMAC.String(), Sandbox: a.Netns},
		},
		DNS: a.Conf.DNS,
	}
	for _, addr := range addrs {
		bits, gw, def := 32, datapath.GatewayV4, "0.0.0.0/0"
		if addr.Is6() {
			bits, gw, def = 128, datapath.GatewayV6, "::/0"
		}
		res.IPs = append(res.IPs, &current.IPConfig{
			Interface: current.Int(1),
			Address:   net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(bits, bits)},
			Gateway:   gw.AsSlice(),
		})
		_, dst, _ := net.ParseCIDR(def)
		res.Routes = append(res.Routes, &types.Route{Dst: *dst, GW: gw.AsSlice()})
	}
	return res
}

// Del removes the pod's links and releases its addresses. It succeeds when
// the netns is already gone and when called again.
func (h *cniHandler) Del(ctx context.Context, a *cni.Attachment) error {
	alloc, err := h.allocator()
	if err != nil {
		return err
	}
	key := keyOf(a)
	unlock := h.locks.Lock(key.String())
	defer unlock()
	hostIface := datapath.HostIfaceName(key.Network, key.ContainerID, key.IfName)
	if al, ok := alloc.Get(key); ok && al.HostIface != "" {
		hostIface = al.HostIface
	}
	// Links first, addresses last: a crash in between leaves an allocation
	// that a repeated DEL or GC releases, never a live link on a freed address.
	if err := h.dp.TeardownPod(ctx, hostIface, a.Netns, a.IfName); err != nil {
		return types.NewError(types.ErrInternal, "strait: pod network teardown failed", err.Error())
	}
	h.notifyPods()
	if _, _, err := alloc.Release(key); err != nil {
		return types.NewError(types.ErrInternal, "strait: release addresses failed", err.Error())
	}
	return nil
}

// Check compares the pod's kernel state and IPAM record with what ADD made.
func (h *cniHandler) Check(ctx context.Context, a *cni.Attachment, prev *current.Result) error {
	alloc, err := h.allocator()
	if err != nil {
		return err
	}
	key := keyOf(a)
	unlock := h.locks.Lock(key.String())
	defer unlock()
	al, ok := alloc.Get(key)
	if !ok {
		return types.NewError(cni.CodeDrift, "strait: CHECK: no address allocation recorded", "IPAM record for "+key.String()+" missing")
	}
	var items []string
	if prev != nil {
		items = append(items, comparePrev(al.Addrs, prev, a.Netns)...)
	}
	err = h.dp.CheckPod(ctx, podOf(a, al.Addrs, al.HostIface, h.mtu))
	var drift *datapath.DriftError
	switch {
	case errors.As(err, &drift):
		items = append(items, drift.Items...)
	case errors.Is(err, datapath.ErrNetnsNotFound):
		return types.NewError(types.ErrUnknownContainer, "strait: CHECK: network namespace not found", err.Error())
	case err != nil:
		return types.NewError(types.ErrInternal, "strait: CHECK failed", err.Error())
	}
	if len(items) > 0 {
		return types.NewError(cni.CodeDrift, "strait: CHECK: pod network drifted: "+items[0], strings.Join(items, "; "))
	}
	return nil
}

// comparePrev checks that the chain's result still carries our addresses on
// the sandbox interface.
func comparePrev(addrs []netip.Addr, prev *current.Result, netns string) []string {
	have := map[netip.Addr]bool{}
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface >= len(prev.Interfaces) || prev.Interfaces[*ip.Interface].Sandbox != netns {
			continue
		}
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			have[a.Unmap()] = true
		}
	}
	var items []string
	for _, a := range addrs {
		if !have[a] {
			items = append(items, fmt.Sprintf("prevResult lacks allocated address %s", a))
		}
	}
	return items
}

// Status reports whether ADD can be served.
func (h *cniHandler) Status(_ context.Context, _ *cni.NetConf) error {
	if err := h.ready(); err != nil {
		return types.NewError(cni.CodeNotReady, "strait agent not ready", err.Error())
	}
	return nil
}

// GC releases every attachment of this network that the runtime no longer
// knows, and removes Strait host links that no allocation owns.
func (h *cniHandler) GC(ctx context.Context, conf *cni.NetConf, valid []types.GCAttachment) error {
	alloc, err := h.allocator()
	if err != nil {
		return err
	}
	keep := map[types.GCAttachment]bool{}
	for _, v := range valid {
		keep[v] = true
	}
	var errs []error
	released := 0
	for _, al := range alloc.List() {
		if al.Network != conf.Name || keep[types.GCAttachment{ContainerID: al.ContainerID, IfName: al.IfName}] {
			continue
		}
		err := func() error {
			unlock := h.locks.Lock(al.Key.String())
			defer unlock()
			if err := h.dp.TeardownPod(ctx, al.HostIface, al.Netns, al.IfName); err != nil {
				return fmt.Errorf("teardown %s: %w", al.Key, err)
			}
			if _, _, err := alloc.Release(al.Key); err != nil {
				return fmt.Errorf("release %s: %w", al.Key, err)
			}
			return nil
		}()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		released++
	}
	if err := removeOrphanLinks(ctx, h.dp, alloc, h.log); err != nil {
		errs = append(errs, err)
	}
	h.log.Info("gc", "network", conf.Name, "valid", len(valid), "released", released)
	if len(errs) > 0 {
		return types.NewError(types.ErrInternal, "strait: GC incomplete", errors.Join(errs...).Error())
	}
	return nil
}

// removeOrphanLinks deletes host veths that no allocation owns: leftovers of a
// crash between a DEL's link removal steps, or of a failed rollback.
func removeOrphanLinks(ctx context.Context, dp PodDatapath, alloc Allocator, log *slog.Logger) error {
	names, err := dp.HostIfaces(ctx)
	if err != nil {
		return fmt.Errorf("list host links: %w", err)
	}
	owned := map[string]bool{}
	for _, al := range alloc.List() {
		owned[al.HostIface] = true
	}
	var errs []error
	for _, n := range names {
		if owned[n] {
			continue
		}
		log.Info("removing orphaned host link", "link", n)
		if err := dp.TeardownPod(ctx, n, "", ""); err != nil {
			errs = append(errs, fmt.Errorf("remove orphan %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// keyedMutex serialises operations on the same attachment while letting
// different attachments proceed in parallel.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) Lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
