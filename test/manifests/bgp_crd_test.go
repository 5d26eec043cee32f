package manifests

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	v1alpha1 "github.com/strait-net/strait/api/v1alpha1"
)

// crdCase is one object the server must reject, naming path (want in the
// message), and Go's validation too.
type crdCase struct {
	name    string
	objName string
	spec    map[string]any
	path    string
	want    string
}

// testRejects creates each case's object of kind/resource and checks the
// server and goValidate both reject it on the same field.
func (s *apiServer) testRejects(t *testing.T, kind, resource string, cases []crdCase, goValidate func(*unstructured.Unstructured) field.ErrorList) {
	ctx := context.Background()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := c.objName
			if name == "" {
				name = fmt.Sprintf("invalid-%d", i)
			}
			u := obj(kind, name, c.spec)
			_, err := s.dyn.Resource(gvr(resource)).Create(ctx, u, metav1.CreateOptions{})
			if c.path == "metadata.name" {
				// A rule on the whole object: the message names the field.
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("got %v; want %q", err, c.want)
				}
			} else {
				wantInvalid(t, err, c.path, c.want)
			}
			t.Logf("server: %v", err)
			errs := goValidate(u)
			found := false
			for _, e := range errs {
				found = found || strings.HasPrefix(e.Field, c.path)
			}
			if !found {
				t.Errorf("Go validation accepts what the server rejects (got %v)", errs.ToAggregate())
			}
		})
	}
}

func convert[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

// testBGPPeer: valid peers are stored and Go accepts them; invalid ones
// are rejected by both, naming the field.
func (s *apiServer) testBGPPeer(t *testing.T) {
	ctx := context.Background()
	for i, spec := range []map[string]any{
		{"peerIP": "198.51.100.254", "asNumber": int64(65000)},
		{"peerIP": "2001:db8:100::254", "asNumber": int64(4200000000), "port": int64(1179), "passive": true,
			"families": []any{"ipv4-unicast", "ipv6-unicast"}, "sourceInterface": "eth0",
			"password":        map[string]any{"name": "bgp", "key": "frr"},
			"nextHop":         map[string]any{"mode": "Fixed", "ipv4": "198.51.100.1", "ipv6": "2001:db8:100::1"},
			"timers":          map[string]any{"keepaliveTime": "1s", "holdTime": "3s", "connectRetryTime": "1s"},
			"bfd":             map[string]any{"minTx": "300ms", "minRx": "300ms", "multiplier": int64(3)},
			"gracefulRestart": map[string]any{"enabled": true, "restartTime": "20s"},
			"ebgpMultihop":    int64(2),
			"nodeSelector":    map[string]any{"matchLabels": map[string]any{"rack": "a"}}},
		{"peerIP": "198.51.100.253", "asNumber": int64(65002), "nextHop": map[string]any{"mode": "FromInterface", "interface": "eth1"}},
	} {
		u, err := s.dyn.Resource(gvr("bgppeers")).Create(ctx, obj("BGPPeer", fmt.Sprintf("valid-%d", i), spec), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create valid BGPPeer %d: %v", i, err)
		}
		if errs := v1alpha1.ValidateBGPPeer(convert[v1alpha1.BGPPeer](t, u)); len(errs) > 0 {
			t.Errorf("ValidateBGPPeer rejects stored peer %d: %v", i, errs.ToAggregate())
		}
	}
	// Not a duration at all: Go cannot even decode it.
	_, err := s.dyn.Resource(gvr("bgppeers")).Create(ctx, obj("BGPPeer", "not-a-duration", map[string]any{
		"peerIP": "198.51.100.254", "asNumber": int64(65000), "timers": map[string]any{"holdTime": "nine"}}), metav1.CreateOptions{})
	wantInvalid(t, err, "spec.timers.holdTime", "should match")
	base := func(kv ...any) map[string]any {
		m := map[string]any{"peerIP": "198.51.100.254", "asNumber": int64(65000)}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	s.testRejects(t, "BGPPeer", "bgppeers", []crdCase{
		{name: "no peerIP", spec: map[string]any{"asNumber": int64(65000)}, path: "spec.peerIP", want: "Required value"},
		{name: "bad peerIP", spec: base("peerIP", "198.51.100.300"), path: "spec.peerIP", want: "198.51.100.300 is not an IP address"},
		{name: "link-local peer", spec: base("peerIP", "fe80::1"), path: "spec.peerIP", want: "link-local"},
		{name: "asNumber 0", spec: base("asNumber", int64(0)), path: "spec.asNumber", want: "should be greater than or equal to 1"},
		{name: "asNumber 2^32", spec: base("asNumber", int64(1)<<32), path: "spec.asNumber", want: "should be less than or equal to 4294967295"},
		{name: "port", spec: base("port", int64(70000)), path: "spec.port", want: "should be less than or equal to 65535"},
		{name: "family", spec: base("families", []any{"l2vpn-evpn"}), path: "spec.families[0]", want: `Unsupported value: "l2vpn-evpn"`},
		{name: "family twice", spec: base("families", []any{"ipv4-unicast", "ipv4-unicast"}), path: "spec.families[1]", want: "Duplicate value"},
		{name: "source both", spec: base("sourceAddress", "198.51.100.1", "sourceInterface", "eth0"), path: "spec.sourceInterface", want: "set sourceAddress or sourceInterface, not both"},
		{name: "source family", spec: base("sourceAddress", "2001:db8:100::1"), path: "spec.sourceAddress", want: "sourceAddress 2001:db8:100::1 is not of the family of peerIP 198.51.100.254"},
		{name: "password key", spec: base("password", map[string]any{"name": "bgp"}), path: "spec.password.key", want: "Required value"},
		{name: "next hop mode", spec: base("nextHop", map[string]any{"mode": "Self"}), path: "spec.nextHop.mode", want: "Unsupported value"},
		{name: "fixed without addresses", spec: base("nextHop", map[string]any{"mode": "Fixed"}), path: "spec.nextHop", want: "mode Fixed needs ipv4 or ipv6"},
		{name: "mapped v6 next hop", spec: base("nextHop", map[string]any{"mode": "Fixed", "ipv6": "::ffff:198.51.100.1"}), path: "spec.nextHop.ipv6", want: "IPv4-mapped"},
		{name: "link-local v6 next hop", spec: base("nextHop", map[string]any{"mode": "Fixed", "ipv6": "fe80::1"}), path: "spec.nextHop.ipv6", want: "link-local"},
		{name: "v6 as v4 next hop", spec: base("nextHop", map[string]any{"mode": "Fixed", "ipv4": "2001:db8::1"}), path: "spec.nextHop.ipv4", want: "2001:db8::1 is not an IPv4 address"},
		{name: "interface without FromInterface", spec: base("nextHop", map[string]any{"interface": "eth0"}), path: "spec.nextHop.interface", want: "interface is for mode FromInterface only"},
		{name: "FromInterface without interface", spec: base("nextHop", map[string]any{"mode": "FromInterface"}), path: "spec.nextHop.interface", want: "mode FromInterface needs interface"},
		{name: "hold below 3s", spec: base("timers", map[string]any{"holdTime": "2s"}), path: "spec.timers.holdTime", want: "must be between 3s and 65535s"},
		{name: "keepalive >= hold", spec: base("timers", map[string]any{"keepaliveTime": "10s", "holdTime": "9s"}), path: "spec.timers.keepaliveTime", want: "keepaliveTime must be shorter than holdTime"},
		{name: "bfd interval", spec: base("bfd", map[string]any{"minTx": "1ms"}), path: "spec.bfd.minTx", want: "must be between 10ms and 60s"},
		{name: "multihop", spec: base("ebgpMultihop", int64(256)), path: "spec.ebgpMultihop", want: "should be less than or equal to 255"},
		{name: "restart time", spec: base("gracefulRestart", map[string]any{"restartTime": "2h"}), path: "spec.gracefulRestart.restartTime", want: "must be between 1s and 4095s"},
	}, func(u *unstructured.Unstructured) field.ErrorList {
		return v1alpha1.ValidateBGPPeer(convert[v1alpha1.BGPPeer](t, u))
	})
}

// testBGPConfiguration: names, router IDs, communities, CIDRs.
func (s *apiServer) testBGPConfiguration(t *testing.T) {
	ctx := context.Background()
	for name, spec := range map[string]map[string]any{
		"default": {"asNumber": int64(65001), "serviceClusterIPs": []any{map[string]any{"cidr": "10.96.0.0/16"}},
			"serviceLoadBalancerIPs":         []any{map[string]any{"cidr": "198.18.0.0/24"}, map[string]any{"cidr": "2001:db8:18::/120"}},
			"serviceLoadBalancerAggregation": "Disabled",
			"communities":                    []any{map[string]any{"name": "lb", "value": "65001:100"}, map[string]any{"name": "large", "value": "65001:4294967295:1"}},
			"prefixAdvertisements":           []any{map[string]any{"cidr": "198.18.0.0/24", "communities": []any{"lb", "65001:7"}}},
			"gracefulRestart":                map[string]any{"restartTime": "30s"}, "nodeToNodeMesh": map[string]any{"enabled": true}},
		"node.n1": {"routerID": map[string]any{"source": "Explicit", "id": "198.51.100.1"}, "sourceAddress": "198.51.100.1"},
	} {
		u, err := s.dyn.Resource(gvr("bgpconfigurations")).Create(ctx, obj("BGPConfiguration", name, spec), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create BGPConfiguration %s: %v", name, err)
		}
		if errs := v1alpha1.ValidateBGPConfiguration(convert[v1alpha1.BGPConfiguration](t, u)); len(errs) > 0 {
			t.Errorf("ValidateBGPConfiguration rejects stored %s: %v", name, errs.ToAggregate())
		}
	}
	s.testRejects(t, "BGPConfiguration", "bgpconfigurations", []crdCase{
		{name: "other name", objName: "cluster", spec: map[string]any{}, path: "metadata.name", want: "metadata.name must be default (cluster-wide) or node.<nodename>"},
		{name: "explicit without id", objName: "node.n2", spec: map[string]any{"routerID": map[string]any{"source": "Explicit"}}, path: "spec.routerID.id", want: "routerID.id is required when routerID.source is Explicit"},
		{name: "v6 router id", objName: "node.n3", spec: map[string]any{"routerID": map[string]any{"source": "Explicit", "id": "2001:db8::1"}}, path: "spec.routerID.id", want: "2001:db8::1 is not a router ID"},
		{name: "router id source", objName: "node.n4", spec: map[string]any{"routerID": map[string]any{"source": "MAC"}}, path: "spec.routerID.source", want: "Unsupported value"},
		{name: "service cidr", objName: "node.n5", spec: map[string]any{"serviceExternalIPs": []any{map[string]any{"cidr": "198.18.0.1/24"}}}, path: "spec.serviceExternalIPs[0].cidr", want: "host bits set in 198.18.0.1/24"},
		{name: "aggregation", objName: "node.n6", spec: map[string]any{"serviceLoadBalancerAggregation": "yes"}, path: "spec.serviceLoadBalancerAggregation", want: "Unsupported value"},
		{name: "community value", objName: "node.n7", spec: map[string]any{"communities": []any{map[string]any{"name": "x", "value": "65536:1"}}}, path: "spec.communities[0].value", want: "65536:1 is not a community"},
		{name: "large community value", objName: "node.n8", spec: map[string]any{"communities": []any{map[string]any{"name": "x", "value": "1:2:4294967296"}}}, path: "spec.communities[0].value", want: "is not a community"},
		{name: "community name twice", objName: "node.n9", spec: map[string]any{"communities": []any{map[string]any{"name": "x", "value": "1:1"}, map[string]any{"name": "x", "value": "1:2"}}}, path: "spec.communities[1]", want: "Duplicate value"},
		{name: "prefix advertisement value", objName: "node.n10", spec: map[string]any{"prefixAdvertisements": []any{map[string]any{"cidr": "10.0.0.0/8", "communities": []any{"1:2:3:4"}}}}, path: "spec.prefixAdvertisements[0].communities[0]", want: "should match"},
		{name: "listen port", objName: "node.n11", spec: map[string]any{"listenPort": int64(0)}, path: "spec.listenPort", want: "should be greater than or equal to 1"},
		{name: "mesh password", objName: "node.n12", spec: map[string]any{"nodeToNodeMesh": map[string]any{"password": map[string]any{"name": "Bad_Name", "key": "k"}}}, path: "spec.nodeToNodeMesh.password.name", want: "should match"},
	}, func(u *unstructured.Unstructured) field.ErrorList {
		return v1alpha1.ValidateBGPConfiguration(convert[v1alpha1.BGPConfiguration](t, u))
	})
}

// testLoadBalancerIPPool: cidrs, selector, autoAssign's default, status.
func (s *apiServer) testLoadBalancerIPPool(t *testing.T) {
	ctx := context.Background()
	res := s.dyn.Resource(gvr("loadbalancerippools"))
	u, err := res.Create(ctx, obj("LoadBalancerIPPool", "lb", map[string]any{"cidrs": []any{"198.18.0.0/24", "2001:db8:18::/120"}}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := convert[v1alpha1.LoadBalancerIPPool](t, u)
	if p.Spec.AutoAssign == nil || !*p.Spec.AutoAssign {
		t.Errorf("autoAssign not defaulted to true: %+v", p.Spec)
	}
	if errs := v1alpha1.ValidateLoadBalancerIPPool(p); len(errs) > 0 {
		t.Errorf("ValidateLoadBalancerIPPool rejects the stored pool: %v", errs.ToAggregate())
	}
	c := u.DeepCopy()
	_ = unstructured.SetNestedField(c.Object, int64(-1), "status", "allocatedIPv4")
	_, err = res.UpdateStatus(ctx, c, metav1.UpdateOptions{})
	wantInvalid(t, err, "status.allocatedIPv4", "should be greater than or equal to 0")

	s.testRejects(t, "LoadBalancerIPPool", "loadbalancerippools", []crdCase{
		{name: "no cidrs", spec: map[string]any{}, path: "spec.cidrs", want: "Required value"},
		{name: "empty cidrs", spec: map[string]any{"cidrs": []any{}}, path: "spec.cidrs", want: "should have at least 1 items"},
		{name: "not a cidr", spec: map[string]any{"cidrs": []any{"198.18.0.0/24", "banana"}}, path: "spec.cidrs[1]", want: "banana is not a CIDR"},
		{name: "host bits", spec: map[string]any{"cidrs": []any{"198.18.0.7/24"}}, path: "spec.cidrs[0]", want: "host bits set in 198.18.0.7/24"},
		{name: "selector", spec: map[string]any{"cidrs": []any{"198.18.1.0/24"}, "serviceSelector": map[string]any{
			"matchExpressions": []any{map[string]any{"key": "a", "operator": "In"}}}}, path: "spec.serviceSelector", want: "In and NotIn need values"},
	}, func(u *unstructured.Unstructured) field.ErrorList {
		return v1alpha1.ValidateLoadBalancerIPPool(convert[v1alpha1.LoadBalancerIPPool](t, u))
	})
}

// testBGPNodeStatus: the agent creates its node's status object and
// writes the status through the subresource.
func (s *apiServer) testBGPNodeStatus(t *testing.T) {
	ctx := context.Background()
	res := s.dyn.Resource(gvr("bgpnodestatuses"))
	u, err := res.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "BGPNodeStatus", "metadata": map[string]any{"name": "node-1"},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(u.Object, map[string]any{
		"routerID": "198.51.100.1", "asNumber": int64(64512), "peerCount": int64(1), "establishedCount": int64(1),
		"peers": []any{map[string]any{"peerIP": "198.51.100.254", "state": "Established", "prefixesSent": int64(3), "source": "frr"}},
	}, "status")
	got, err := res.UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	st := convert[v1alpha1.BGPNodeStatus](t, got)
	if len(st.Status.Peers) != 1 || st.Status.Peers[0].PrefixesSent != 3 {
		t.Errorf("stored status %+v", st.Status)
	}
	out, err := s.kubectl(t, "get", "bgpnodestatuses")
	if err != nil || !strings.Contains(out, "198.51.100.1") {
		t.Errorf("kubectl get bgpnodestatuses: %v\n%s", err, out)
	}
	t.Logf("kubectl get bgpnodestatuses:\n%s", out)
}
