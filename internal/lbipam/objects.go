package lbipam

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/strait-net/strait/api/v1alpha1"
)

// Ours says whether the allocator serves svc: type LoadBalancer with no
// loadBalancerClass or Strait's.
func Ours(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	return svc.Spec.LoadBalancerClass == nil || *svc.Spec.LoadBalancerClass == v1alpha1.LoadBalancerClass
}

// ServiceFromObject reads what Allocate needs from a Service the
// allocator serves (Ours).
func ServiceFromObject(svc *corev1.Service) Service {
	s := Service{Key: svc.Namespace + "/" + svc.Name, Created: svc.CreationTimestamp.Time, Labels: svc.Labels}
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			s.Families = append(s.Families, 4)
		case corev1.IPv6Protocol:
			s.Families = append(s.Families, 6)
		}
	}
	if len(s.Families) == 0 { // not yet defaulted: the ClusterIP's family
		s.Families = []int{4}
		if a, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil && a.Is6() && !a.Is4In6() {
			s.Families = []int{6}
		}
	}
	if v, ok := svc.Annotations[v1alpha1.AnnotationLoadBalancerIPs]; ok {
		s.Requested, s.RequestError = parseAddrs(v, v1alpha1.AnnotationLoadBalancerIPs)
	} else if svc.Spec.LoadBalancerIP != "" {
		s.Requested, s.RequestError = parseAddrs(svc.Spec.LoadBalancerIP, "spec.loadBalancerIP")
	}
	if v := svc.Annotations[v1alpha1.AnnotationLoadBalancerIPPool]; v != "" {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				s.Pools = append(s.Pools, p)
			}
		}
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			s.Current = append(s.Current, a.Unmap())
		}
	}
	return s
}

func parseAddrs(v, what string) ([]netip.Addr, string) {
	var out []netip.Addr
	seen := map[bool]bool{}
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Sprintf("%s: %q is not an IP address", what, f)
		}
		a = a.Unmap()
		if seen[a.Is4()] {
			return nil, fmt.Sprintf("%s: more than one address of a family in %q", what, v)
		}
		seen[a.Is4()] = true
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Sprintf("%s: no address in %q", what, v)
	}
	return out, ""
}

// PoolFromObject reads a LoadBalancerIPPool.
func PoolFromObject(u *unstructured.Unstructured) (Pool, error) {
	var p v1alpha1.LoadBalancerIPPool
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		return Pool{}, fmt.Errorf("LoadBalancerIPPool %s: %w", u.GetName(), err)
	}
	out := Pool{Name: p.Name, AutoAssign: p.Spec.AutoAssignEnabled()}
	for i, c := range p.Spec.CIDRs {
		pr, err := netip.ParsePrefix(c)
		if err != nil {
			return Pool{}, fmt.Errorf("LoadBalancerIPPool %s: spec.cidrs[%d]: %w", p.Name, i, err)
		}
		out.CIDRs = append(out.CIDRs, pr.Masked())
	}
	if p.Spec.ServiceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.ServiceSelector)
		if err != nil {
			return Pool{}, fmt.Errorf("LoadBalancerIPPool %s: spec.serviceSelector: %w", p.Name, err)
		}
		out.Selector = sel
	}
	return out, nil
}
