package lbipam

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/strait-net/strait/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

// svc is a Service created i seconds after t0.
func svc(i int, fams ...int) Service {
	if len(fams) == 0 {
		fams = []int{4}
	}
	return Service{Key: fmt.Sprintf("default/s%d", i), Created: t0.Add(time.Duration(i) * time.Second), Families: fams}
}

func with(s Service, f func(*Service)) Service { f(&s); return s }

func wantAddrs(t *testing.T, r Result, key string, want ...string) {
	t.Helper()
	got := r.Services[key]
	if !slices.Equal(got.Addrs, addrs(want...)) {
		t.Errorf("%s: got %v (%s: %s), want %v", key, got.Addrs, got.Reason, got.Problem, want)
	}
}

func wantProblem(t *testing.T, r Result, key, reason string) {
	t.Helper()
	if got := r.Services[key]; got.Reason != reason {
		t.Errorf("%s: reason %q (%s), want %q", key, got.Reason, got.Problem, reason)
	}
}

func TestAllocateDualStackAndOrder(t *testing.T) {
	pools := []Pool{{Name: "lb", CIDRs: pfx("198.18.0.0/30", "2001:db8:18::/126"), AutoAssign: true}}
	r := Allocate(pools, []Service{svc(2), svc(1, 6, 4), svc(3, 4, 6)})
	wantAddrs(t, r, "default/s1", "2001:db8:18::", "198.18.0.0") // in ipFamilies order
	wantAddrs(t, r, "default/s2", "198.18.0.1")
	wantAddrs(t, r, "default/s3", "198.18.0.2", "2001:db8:18::1")
	u := r.Pools["lb"]
	if u.AllocatedV4 != 3 || u.AllocatedV6 != 2 || u.AvailableV4 != 1 || u.AvailableV6 != 2 {
		t.Errorf("usage %+v", u)
	}
}

func TestAllocateKeepsCurrentAndNeverSteals(t *testing.T) {
	pools := []Pool{{Name: "lb", CIDRs: pfx("198.18.0.0/29"), AutoAssign: true}}
	// A restart: the status holds addresses; the allocator rebuilds from it.
	s1 := with(svc(1), func(s *Service) { s.Current = addrs("198.18.0.5") })
	s2 := with(svc(2), func(s *Service) { s.Current = addrs("198.18.0.0") })
	// s3 holds .5 too (a stale or hand-written status): the older keeps it.
	s3 := with(svc(3), func(s *Service) { s.Current = addrs("198.18.0.5") })
	// s4 asks for s2's address: conflict, s2 keeps it.
	s4 := with(svc(4), func(s *Service) { s.Requested = addrs("198.18.0.0") })
	// s0, older than all, asks for s1's address: s1 keeps it anyway.
	s0 := with(svc(0), func(s *Service) { s.Requested = addrs("198.18.0.5") })
	r := Allocate(pools, []Service{s1, s2, s3, s4, s0})
	wantAddrs(t, r, "default/s1", "198.18.0.5")
	wantAddrs(t, r, "default/s2", "198.18.0.0")
	wantAddrs(t, r, "default/s3", "198.18.0.1")
	wantAddrs(t, r, "default/s4")
	wantProblem(t, r, "default/s4", ReasonConflict)
	wantAddrs(t, r, "default/s0")
	wantProblem(t, r, "default/s0", ReasonConflict)
	// The same input gives the same output (stable).
	r2 := Allocate(pools, []Service{s0, s4, s3, s2, s1})
	for k, a := range r.Services {
		if !slices.Equal(a.Addrs, r2.Services[k].Addrs) {
			t.Errorf("%s: %v then %v", k, a.Addrs, r2.Services[k].Addrs)
		}
	}
}

func TestAllocateFixedRequests(t *testing.T) {
	pools := []Pool{
		{Name: "a", CIDRs: pfx("198.18.0.0/30"), AutoAssign: true},
		{Name: "manual", CIDRs: pfx("198.18.1.0/30", "2001:db8:18::/126"), AutoAssign: false},
	}
	r := Allocate(pools, []Service{
		with(svc(1), func(s *Service) { s.Requested = addrs("198.18.1.2") }),                                 // from a manual pool: fine
		with(svc(2), func(s *Service) { s.Requested = addrs("203.0.113.1") }),                                // in no pool
		with(svc(3), func(s *Service) { s.Requested = addrs("2001:db8:18::1") }),                             // IPv6 for an IPv4 Service
		with(svc(4, 4, 6), func(s *Service) { s.Requested = addrs("198.18.0.3", "2001:db8:18::2") }),         // dual
		with(svc(5), func(s *Service) { s.RequestError = "strait.dev/loadBalancerIPs: \"x\" is not an IP" }), // unreadable
		with(svc(6), func(s *Service) { s.Current, s.Requested = addrs("198.18.0.0"), addrs("198.18.0.1") }), // moved
	})
	wantAddrs(t, r, "default/s1", "198.18.1.2")
	wantAddrs(t, r, "default/s2")
	wantProblem(t, r, "default/s2", ReasonNoPool)
	wantProblem(t, r, "default/s3", ReasonInvalid)
	wantAddrs(t, r, "default/s4", "198.18.0.3", "2001:db8:18::2")
	wantProblem(t, r, "default/s5", ReasonInvalid)
	wantAddrs(t, r, "default/s6", "198.18.0.1")
	if u := r.Pools["a"]; u.AllocatedV4 != 2 || u.AvailableV4 != 2 {
		t.Errorf("pool a %+v", u)
	}
}

func TestAllocateExhaustionAndRelease(t *testing.T) {
	pools := []Pool{{Name: "small", CIDRs: pfx("198.18.0.0/31"), AutoAssign: true}}
	svcs := []Service{svc(1), svc(2), svc(3)}
	r := Allocate(pools, svcs)
	wantAddrs(t, r, "default/s1", "198.18.0.0")
	wantAddrs(t, r, "default/s2", "198.18.0.1")
	wantProblem(t, r, "default/s3", ReasonExhausted)
	if u := r.Pools["small"]; u.AvailableV4 != 0 || u.AllocatedV4 != 2 {
		t.Errorf("usage %+v", u)
	}
	// s1 goes (deleted, or no longer a LoadBalancer): s3 gets its address.
	svcs[1].Current = addrs("198.18.0.1")
	r = Allocate(pools, svcs[1:])
	wantAddrs(t, r, "default/s2", "198.18.0.1")
	wantAddrs(t, r, "default/s3", "198.18.0.0")
	// The pool is deleted: nothing is kept.
	r = Allocate(nil, []Service{with(svc(2), func(s *Service) { s.Current = addrs("198.18.0.1") })})
	wantAddrs(t, r, "default/s2")
	wantProblem(t, r, "default/s2", ReasonNoPool)
}

func TestAllocateSelectorsAndPoolChoice(t *testing.T) {
	web, _ := labels.Parse("app=web")
	pools := []Pool{
		{Name: "b-web", CIDRs: pfx("198.18.2.0/30"), AutoAssign: true, Selector: web},
		{Name: "a-all", CIDRs: pfx("198.18.1.0/31"), AutoAssign: true},
		{Name: "c-overlap", CIDRs: pfx("198.18.1.0/24", "198.18.3.0/31"), AutoAssign: true},
	}
	webSvc := func(i int) Service {
		return with(svc(i), func(s *Service) { s.Labels = map[string]string{"app": "web"} })
	}
	r := Allocate(pools, []Service{
		svc(1), webSvc(2), svc(3), svc(4),
		with(svc(5), func(s *Service) { s.Pools = []string{"b-web"} }), // not selected by b-web
		with(webSvc(6), func(s *Service) { s.Pools = []string{"b-web"} }),
		with(svc(7), func(s *Service) { s.Requested = addrs("198.18.2.3") }), // b-web does not select it
	})
	wantAddrs(t, r, "default/s1", "198.18.1.0") // a-all first by name
	wantAddrs(t, r, "default/s2", "198.18.1.1")
	wantAddrs(t, r, "default/s3", "198.18.3.0") // a-all full; c-overlap's 198.18.1.0/24 is unused
	wantAddrs(t, r, "default/s4", "198.18.3.1")
	wantProblem(t, r, "default/s5", ReasonNoPool)
	wantAddrs(t, r, "default/s6", "198.18.2.0")
	wantProblem(t, r, "default/s7", ReasonNoPool)
	if p := r.Pools["c-overlap"].Problems; len(p) != 1 || p[0] != "198.18.1.0/24 overlaps 198.18.1.0/31 of pool a-all: not used" {
		t.Errorf("c-overlap problems %q", p)
	}
}

func TestAllocateHugeV6Pool(t *testing.T) {
	pools := []Pool{{Name: "v6", CIDRs: pfx("2001:db8:18::/64"), AutoAssign: true}}
	var svcs []Service
	for i := range 1000 {
		svcs = append(svcs, svc(i, 6))
	}
	start := time.Now()
	r := Allocate(pools, svcs)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("1000 Services took %v", d)
	}
	wantAddrs(t, r, "default/s999", "2001:db8:18::3e7")
	if u := r.Pools["v6"]; u.AllocatedV6 != 1000 || u.AvailableV6 != math.MaxInt64 {
		t.Errorf("usage %+v", u)
	}
}

func TestServiceFromObject(t *testing.T) {
	other := "example.com/lb"
	own := v1alpha1.LoadBalancerClass
	lb := func(mut func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Annotations: map[string]string{}},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, IPFamilies: []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}},
		}
		mut(s)
		return s
	}
	if Ours(lb(func(s *corev1.Service) { s.Spec.LoadBalancerClass = &other })) || !Ours(lb(func(s *corev1.Service) { s.Spec.LoadBalancerClass = &own })) ||
		!Ours(lb(func(*corev1.Service) {})) || Ours(lb(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP })) {
		t.Error("Ours")
	}
	s := ServiceFromObject(lb(func(s *corev1.Service) {
		s.Annotations[v1alpha1.AnnotationLoadBalancerIPs] = "198.18.0.9, 2001:db8:18::9"
		s.Annotations[v1alpha1.AnnotationLoadBalancerIPPool] = "a,b"
		s.Spec.LoadBalancerIP = "198.18.0.1" // the annotation wins
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.18.0.9"}, {Hostname: "x"}}
	}))
	if s.Key != "ns/web" || !slices.Equal(s.Families, []int{6, 4}) || !slices.Equal(s.Requested, addrs("198.18.0.9", "2001:db8:18::9")) ||
		!slices.Equal(s.Pools, []string{"a", "b"}) || !slices.Equal(s.Current, addrs("198.18.0.9")) || s.RequestError != "" {
		t.Errorf("%+v", s)
	}
	s = ServiceFromObject(lb(func(s *corev1.Service) { s.Spec.LoadBalancerIP = "198.18.0.1" }))
	if !slices.Equal(s.Requested, addrs("198.18.0.1")) {
		t.Errorf("loadBalancerIP: %+v", s)
	}
	for _, bad := range []string{"banana", "198.18.0.1,198.18.0.2", ""} {
		s = ServiceFromObject(lb(func(s *corev1.Service) { s.Annotations[v1alpha1.AnnotationLoadBalancerIPs] = bad }))
		if s.RequestError == "" {
			t.Errorf("annotation %q accepted", bad)
		}
	}
}

func TestPoolFromObject(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "strait.dev/v1alpha1", "kind": "LoadBalancerIPPool", "metadata": map[string]any{"name": "p"},
		"spec": map[string]any{"cidrs": []any{"198.18.0.0/24"}, "autoAssign": false, "serviceSelector": map[string]any{"matchLabels": map[string]any{"a": "b"}}},
	}}
	p, err := PoolFromObject(u)
	if err != nil || p.AutoAssign || len(p.CIDRs) != 1 || !p.Selector.Matches(labels.Set{"a": "b"}) || p.Selector.Matches(labels.Set{}) {
		t.Errorf("%+v %v", p, err)
	}
	_ = unstructured.SetNestedStringSlice(u.Object, []string{"nope"}, "spec", "cidrs")
	if _, err := PoolFromObject(u); err == nil {
		t.Error("bad cidr accepted")
	}
}
