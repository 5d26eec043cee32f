package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Datapath programs the kernel of one network namespace, the node's: the
// agent runs there and passes no NodeNetns. It is safe for concurrent use;
// calls for different pods may run in parallel.
type Datapath struct {
	log *slog.Logger

	// life guards closed, nodeNS and handles against Close: every operation
	// holds it for reading while it uses them.
	life   sync.RWMutex
	closed bool
	// nodeNS is the node's namespace; /proc/sys/net access happens inside
	// nodeNS.Do because the /proc/sys/net view follows the calling thread.
	nodeNS ns.NetNS

	// handles are idle netlink handles at the node's namespace. A
	// netlink.Handle is not goroutine-safe, so each operation takes one for
	// its duration; several operations run at once (a veth deletion waits
	// ~40 ms for the kernel and must not hold up the other pods).
	handles chan netlinksafe.Handle

	// overlay is the in-memory state of the cluster overlay (overlay_*.go).
	overlay overlayState
	// learnedMu serializes SetLearnedRoutes (learned_linux.go).
	learnedMu sync.Mutex

	// nftMu serializes the writers of the nftables table inet NATTable;
	// flowTracking says EnableFlowTracking was called, so SetNAT keeps its
	// chain (nat_linux.go).
	nftMu        sync.Mutex
	flowTracking bool

	// fast is the loaded eBPF fast path (fastpath_linux.go); lock order:
	// overlay.mu, then fast.mu, then life and nftMu.
	fast fastPathState
}

// maxIdleHandles bounds the node handles kept open between operations.
const maxIdleHandles = 8

var errClosed = errors.New("datapath: closed")

// New opens a persistent netlink handle at the node's namespace
// (Options.NodeNetns, or the calling thread's namespace).
func New(opts Options) (*Datapath, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		nodeNS ns.NetNS
		err    error
	)
	if opts.NodeNetns == "" {
		nodeNS, err = ns.GetCurrentNS()
	} else {
		nodeNS, err = ns.GetNS(opts.NodeNetns)
	}
	if err != nil {
		return nil, fmt.Errorf("datapath: open node netns %q: %w", opts.NodeNetns, err)
	}
	d := &Datapath{log: log, nodeNS: nodeNS, handles: make(chan netlinksafe.Handle, maxIdleHandles)}
	h, err := d.newNodeHandle()
	if err != nil {
		_ = nodeNS.Close()
		return nil, err
	}
	d.handles <- h
	return d, nil
}

func (d *Datapath) newNodeHandle() (netlinksafe.Handle, error) {
	h, err := netlinksafe.NewHandleAt(nsHandle(d.nodeNS))
	if err != nil {
		return netlinksafe.Handle{}, fmt.Errorf("datapath: open netlink handle in node netns %s: %w", d.nodeNS.Path(), err)
	}
	return h, nil
}

// Close releases the netlink handle and the namespace reference. Calls
// after Close fail.
func (d *Datapath) Close() {
	// fast.mu before life: SetFastPath takes life while it holds fast.mu.
	d.fast.mu.Lock()
	defer d.fast.mu.Unlock()
	d.life.Lock()
	defer d.life.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	// The fast path's links stay pinned: it keeps forwarding without us.
	d.fast.close()
	if d.overlay.batch != nil {
		d.overlay.batch.close()
		d.overlay.batch = nil
	}
	for {
		select {
		case h := <-d.handles:
			h.Close()
		default:
			_ = d.nodeNS.Close()
			return
		}
	}
}

// withNode runs f with exclusive use of a netlink handle at the node's
// namespace, taken from the idle ones or opened for the occasion.
func (d *Datapath) withNode(f func(h netlinksafe.Handle) error) error {
	d.life.RLock()
	defer d.life.RUnlock()
	if d.closed {
		return errClosed
	}
	var h netlinksafe.Handle
	select {
	case h = <-d.handles:
	default:
		var err error
		if h, err = d.newNodeHandle(); err != nil {
			return err
		}
	}
	defer func() {
		select {
		case d.handles <- h:
		default:
			h.Close()
		}
	}()
	return f(h)
}

// inNode runs f on a locked OS thread inside the node's namespace. Only
// /proc/sys/net access needs it; netlink goes through the handle.
func (d *Datapath) inNode(f func() error) error {
	d.life.RLock()
	defer d.life.RUnlock()
	if d.closed {
		return errClosed
	}
	return d.nodeNS.Do(func(ns.NetNS) error { return f() })
}

// EnsureHost applies the node-wide prerequisites, idempotently: IPv6
// forwarding is global in Linux (net.ipv6.conf.all.forwarding=1), and IPv4
// forwarding is decided by the ingress interface, so traffic entering through
// the node's uplink (port mappings, Services, other nodes) reaches pods only
// with net.ipv4.ip_forward=1, as Calico and Flannel also set it.
func (d *Datapath) EnsureHost(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ensure host: %w", err)
	}
	for _, sc := range []string{sysctlIPv6AllForwarding, sysctlIPv4Forward} {
		var changed bool
		err := d.inNode(func() error {
			var err error
			changed, err = ensureSysctl(sc, "1", true)
			return err
		})
		if err != nil {
			return fmt.Errorf("ensure host: %w", err)
		}
		if changed {
			d.log.Info("enabled forwarding", "sysctl", "net."+strings.ReplaceAll(sc, "/", "."))
		}
	}
	return nil
}

// HostIfaces lists the Strait host veths (IsHostIface) in the node's namespace.
func (d *Datapath) HostIfaces(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list host ifaces: %w", err)
	}
	var names []string
	err := d.withNode(func(h netlinksafe.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if IsHostIface(l.Attrs().Name) {
				names = append(names, l.Attrs().Name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list host ifaces: %w", err)
	}
	return names, nil
}

// podAddrs is a validated Pod's addresses, one per family (zero if absent).
type podAddrs struct {
	v4, v6 netip.Addr
}

func (a podAddrs) prefixes() []netip.Prefix {
	var ps []netip.Prefix
	if a.v4.IsValid() {
		ps = append(ps, netip.PrefixFrom(a.v4, 32))
	}
	if a.v6.IsValid() {
		ps = append(ps, netip.PrefixFrom(a.v6, 128))
	}
	return ps
}

func validatePod(p Pod) (podAddrs, error) {
	var a podAddrs
	switch {
	case p.Netns == "":
		return a, errors.New("empty netns path")
	case !validIfName(p.IfName):
		return a, fmt.Errorf("invalid interface name %q", p.IfName)
	case !validIfName(p.HostIface):
		return a, fmt.Errorf("invalid host interface name %q", p.HostIface)
	case p.MTU < 0:
		return a, fmt.Errorf("invalid MTU %d", p.MTU)
	case len(p.Addrs) == 0:
		return a, errors.New("no pod addresses")
	}
	for _, ip := range p.Addrs {
		ip = ip.Unmap()
		switch {
		case !ip.IsValid() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsLoopback():
			return a, fmt.Errorf("invalid pod address %v", ip)
		case ip.Is4() && !a.v4.IsValid():
			a.v4 = ip
		case ip.Is6() && !a.v6.IsValid():
			a.v6 = ip.WithZone("")
		default:
			return a, fmt.Errorf("more than one pod address of the family of %v", ip)
		}
	}
	return a, nil
}

func validIfName(name string) bool {
	if name == "" || len(name) >= unix.IFNAMSIZ || name == "." || name == ".." {
		return false
	}
	for _, c := range name {
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// openPodNetns opens a pod namespace; a missing path wraps ErrNetnsNotFound.
func openPodNetns(path string) (ns.NetNS, netlinksafe.Handle, error) {
	podNS, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		if errors.As(err, &notExist) {
			return nil, netlinksafe.Handle{}, fmt.Errorf("open netns: %w: %s", ErrNetnsNotFound, path)
		}
		return nil, netlinksafe.Handle{}, fmt.Errorf("open netns: %w", err)
	}
	h, err := netlinksafe.NewHandleAt(nsHandle(podNS))
	if err != nil {
		_ = podNS.Close()
		return nil, netlinksafe.Handle{}, fmt.Errorf("open netlink handle in pod netns: %w", err)
	}
	return podNS, h, nil
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// maxDumpAttempts bounds retries of netlink dumps interrupted by concurrent
// changes (NLM_F_DUMP_INTR), for the calls netlinksafe does not wrap.
const maxDumpAttempts = 5

func retryDump[T any](f func() ([]T, error)) ([]T, error) {
	for attempt := 1; ; attempt++ {
		v, err := f()
		if errors.Is(err, netlink.ErrDumpInterrupted) && attempt < maxDumpAttempts {
			continue
		}
		return v, err
	}
}

func addrList(h netlinksafe.Handle, l netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, family) })
}

func neighList(h netlinksafe.Handle, index, family int) ([]netlink.Neigh, error) {
	return retryDump(func() ([]netlink.Neigh, error) { return h.NeighList(index, family) })
}
