// Package controlplane renders the command lines of a Kubernetes control
// plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
// from a Spec, and waits for a started process to be ready. It runs
// nothing itself: the lab and the integration tier start the Commands.
package controlplane

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/strait-net/strait/internal/lab/pki"
)

// Component names, which are also the binaries' names in BinDir.
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
)

// AllComponents returns every component in start order.
func AllComponents() []string {
	return []string{Etcd, APIServer, ControllerManager, Scheduler}
}

// Default secure ports of kube-controller-manager and kube-scheduler.
const (
	DefaultControllerManagerPort = 10257
	DefaultSchedulerPort         = 10259
)

// Default node CIDR sizes for AllocateNodeCIDRs.
const (
	DefaultNodeCIDRMaskV4 = 24
	DefaultNodeCIDRMaskV6 = 64
)

// ServiceAccountIssuer is the iss claim of service-account tokens.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// Spec describes the control plane. Paths must be absolute.
type Spec struct {
	// BinDir holds the component binaries, named as the components.
	BinDir string
	// DataDir holds etcd's data (DataDir/etcd).
	DataDir string
	// LogDir is where the caller writes each component's output (LogFile).
	LogDir string
	// PKI are the cluster's credentials (pki.GenerateCluster). Required
	// unless only etcd runs. Its APIServerIPs must include BindIP: the
	// apiserver, controller-manager and scheduler serving certificates
	// carry them, and WaitReady verifies them.
	PKI *pki.Cluster
	// BindIP is the only address every component listens on (never
	// 0.0.0.0 or ::).
	BindIP string
	// AdvertiseIP is the apiserver's address in the kubernetes Service's
	// endpoints; BindIP when empty. With a loopback address the endpoint
	// reconciler is turned off (pods could not reach it anyway).
	AdvertiseIP string
	// EtcdClientPort, EtcdPeerPort and APIServerPort are required with
	// etcd and kube-apiserver.
	EtcdClientPort int
	EtcdPeerPort   int
	APIServerPort  int
	// EtcdMetricsPort adds a separate etcd metrics listener; 0 serves
	// metrics on the client port only.
	EtcdMetricsPort int
	// ControllerManagerPort and SchedulerPort are their secure (health,
	// metrics) ports; DefaultControllerManagerPort/DefaultSchedulerPort when 0.
	ControllerManagerPort int
	SchedulerPort         int
	// ServiceCIDRs: one per IP family, primary first (dual-stack: v4,v6).
	ServiceCIDRs []string
	// ClusterCIDRs are the pod CIDRs, one per family, primary first.
	ClusterCIDRs []string
	// AllocateNodeCIDRs makes kube-controller-manager give every node a
	// Spec.PodCIDRs slice of ClusterCIDRs, NodeCIDRMaskV4/V6 long
	// (DefaultNodeCIDRMaskV4/V6 when 0).
	AllocateNodeCIDRs bool
	NodeCIDRMaskV4    int
	NodeCIDRMaskV6    int
	// Components to run, a subset of AllComponents; all when empty.
	// Commands returns them in start order whatever the order here.
	Components []string
}

// normalized is a validated Spec with its defaults applied.
type normalized struct {
	Spec
	bind, advertise        netip.Addr
	serviceCIDRs           []netip.Prefix
	clusterCIDRs           []netip.Prefix
	components             map[string]bool
	etcdURL, apiURL        string
	kcmPort, schedPort     int
	nodeMaskV4, nodeMaskV6 int
}

func (s Spec) normalize() (*normalized, error) {
	n := &normalized{Spec: s, components: map[string]bool{}}
	comps := s.Components
	if len(comps) == 0 {
		comps = AllComponents()
	}
	for _, c := range comps {
		if !slices.Contains(AllComponents(), c) {
			return nil, fmt.Errorf("Spec.Components: unknown component %q (want a subset of %v)", c, AllComponents())
		}
		if n.components[c] {
			return nil, fmt.Errorf("Spec.Components: %q twice", c)
		}
		n.components[c] = true
	}
	for _, d := range []struct{ name, path string }{
		{"BinDir", s.BinDir}, {"DataDir", s.DataDir}, {"LogDir", s.LogDir},
	} {
		if !filepath.IsAbs(d.path) {
			return nil, fmt.Errorf("Spec.%s %q: want an absolute path", d.name, d.path)
		}
	}
	var err error
	if n.bind, err = hostIP("BindIP", s.BindIP); err != nil {
		return nil, err
	}
	n.advertise = n.bind
	if s.AdvertiseIP != "" {
		if n.advertise, err = hostIP("AdvertiseIP", s.AdvertiseIP); err != nil {
			return nil, err
		}
	}
	if err := n.ports(); err != nil {
		return nil, err
	}
	needsPKI := n.components[APIServer] || n.components[ControllerManager] || n.components[Scheduler]
	if needsPKI && s.PKI == nil {
		return nil, errors.New("Spec.PKI: required with kube-apiserver, kube-controller-manager or kube-scheduler")
	}
	if n.components[ControllerManager] || n.components[Scheduler] {
		if err := n.checkServerURL(); err != nil {
			return nil, err
		}
	}
	if n.components[APIServer] || n.components[ControllerManager] {
		if n.serviceCIDRs, err = cidrs("ServiceCIDRs", s.ServiceCIDRs); err != nil {
			return nil, err
		}
		if len(n.serviceCIDRs) == 0 {
			return nil, errors.New("Spec.ServiceCIDRs: required with kube-apiserver and kube-controller-manager")
		}
	}
	if n.clusterCIDRs, err = cidrs("ClusterCIDRs", s.ClusterCIDRs); err != nil {
		return nil, err
	}
	if s.AllocateNodeCIDRs {
		if err := n.nodeMasks(); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func hostIP(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("Spec.%s %q: %w", field, s, err)
	}
	if a.IsUnspecified() || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("Spec.%s %q: want one specific address", field, s)
	}
	return a.Unmap(), nil
}

func (n *normalized) ports() error {
	n.kcmPort, n.schedPort = n.ControllerManagerPort, n.SchedulerPort
	if n.kcmPort == 0 {
		n.kcmPort = DefaultControllerManagerPort
	}
	if n.schedPort == 0 {
		n.schedPort = DefaultSchedulerPort
	}
	type port struct {
		field string
		value int
		used  bool
	}
	all := []port{
		{"EtcdClientPort", n.EtcdClientPort, n.components[Etcd] || n.components[APIServer]},
		{"EtcdPeerPort", n.EtcdPeerPort, n.components[Etcd]},
		{"EtcdMetricsPort", n.EtcdMetricsPort, n.components[Etcd] && n.EtcdMetricsPort != 0},
		{"APIServerPort", n.APIServerPort, n.components[APIServer]},
		{"ControllerManagerPort", n.kcmPort, n.components[ControllerManager]},
		{"SchedulerPort", n.schedPort, n.components[Scheduler]},
	}
	seen := map[int]string{}
	for _, p := range all {
		if !p.used {
			continue
		}
		if p.value < 1 || p.value > 65535 {
			return fmt.Errorf("Spec.%s %d: want 1-65535", p.field, p.value)
		}
		if other, ok := seen[p.value]; ok {
			return fmt.Errorf("Spec.%s %d: also Spec.%s", p.field, p.value, other)
		}
		seen[p.value] = p.field
	}
	n.etcdURL = "http://" + hostPort(n.bind, n.EtcdClientPort)
	n.apiURL = "https://" + hostPort(n.bind, n.APIServerPort)
	return nil
}

// checkServerURL: kube-controller-manager and kube-scheduler reach the
// apiserver through the URL in the PKI's kubeconfigs.
func (n *normalized) checkServerURL() error {
	u, err := url.Parse(n.PKI.APIServerURL)
	if err != nil {
		return fmt.Errorf("Spec.PKI.APIServerURL: %w", err)
	}
	if n.components[APIServer] && u.Port() != strconv.Itoa(n.APIServerPort) {
		return fmt.Errorf("Spec.PKI.APIServerURL %q: port is not Spec.APIServerPort %d", n.PKI.APIServerURL, n.APIServerPort)
	}
	return nil
}

func cidrs(field string, in []string) ([]netip.Prefix, error) {
	if len(in) > 2 {
		return nil, fmt.Errorf("Spec.%s %v: at most one per IP family", field, in)
	}
	var out []netip.Prefix
	for i, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("Spec.%s[%d]: %w", field, i, err)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("Spec.%s[%d] %q: host bits set (want %s)", field, i, s, p.Masked())
		}
		out = append(out, p)
	}
	if len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4() {
		return nil, fmt.Errorf("Spec.%s %v: two of one IP family (dual-stack wants one IPv4 and one IPv6)", field, in)
	}
	return out, nil
}

func (n *normalized) nodeMasks() error {
	if len(n.clusterCIDRs) == 0 {
		return errors.New("Spec.ClusterCIDRs: required with AllocateNodeCIDRs")
	}
	n.nodeMaskV4, n.nodeMaskV6 = n.NodeCIDRMaskV4, n.NodeCIDRMaskV6
	if n.nodeMaskV4 == 0 {
		n.nodeMaskV4 = DefaultNodeCIDRMaskV4
	}
	if n.nodeMaskV6 == 0 {
		n.nodeMaskV6 = DefaultNodeCIDRMaskV6
	}
	for i, p := range n.clusterCIDRs {
		field, mask := "NodeCIDRMaskV4", n.nodeMaskV4
		if p.Addr().Is6() {
			field, mask = "NodeCIDRMaskV6", n.nodeMaskV6
		}
		// kube-controller-manager's CIDR sets hold at most 2^16 node CIDRs.
		if mask <= p.Bits() || mask > p.Addr().BitLen() || mask-p.Bits() > 16 {
			return fmt.Errorf("Spec.%s %d: want a mask longer than Spec.ClusterCIDRs[%d] %s by 1 to 16 bits", field, mask, i, p)
		}
	}
	return nil
}

func (n *normalized) maskFor(p netip.Prefix) int {
	if p.Addr().Is4() {
		return n.nodeMaskV4
	}
	return n.nodeMaskV6
}

func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}
