package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/bgp"
	"github.com/strait-net/strait/internal/testutil"
	"github.com/strait-net/strait/internal/testutil/kubeapi"
)

func TestNodeStatus(t *testing.T) {
	since := time.Date(2026, 1, 1, 10, 0, 0, 500, time.UTC)
	v := bgpView{Applied: bgp.Config{ASN: 65001, RouterID: a("198.51.100.1"), Paths: make([]bgp.Path, 3)}, Problems: []string{"BGPPeer x: password: Secret strait-system/y not found"}}
	st := nodeStatus(v, []bgp.PeerStatus{
		{Name: "mesh-n2", Address: a("198.51.100.2"), ASN: 65001, State: bgp.StateEstablished, Since: since,
			Families: []bgp.FamilyStatus{{Family: bgp.IPv4Unicast, Sent: 2, Received: 1, NextHop: a("198.51.100.1")}, {Family: bgp.IPv6Unicast, Sent: 1, Received: 1, NextHop: a("2001:db8:100::1")}}},
		{Name: "frr", Address: a("198.51.100.254"), ASN: 65000, State: bgp.StateActive, Error: "no answer: TCP-MD5 password mismatch or peer down",
			Families: []bgp.FamilyStatus{{Family: bgp.IPv6Unicast, Reason: "no global IPv6 address on eth0"}}},
	}, since)
	if st.RouterID != "198.51.100.1" || st.ASNumber != 65001 || st.Advertised != 3 || st.PeerCount != 2 || st.EstablishedCount != 1 {
		t.Fatalf("status %+v", st)
	}
	mesh, frr := st.Peers[0], st.Peers[1] // by address
	if mesh.Source != "mesh" || mesh.Node != "n2" || mesh.PrefixesSent != 3 || mesh.PrefixesReceived != 2 || mesh.Since == nil || !mesh.Since.Time.Equal(since.Truncate(time.Second)) {
		t.Errorf("mesh peer %+v", mesh)
	}
	if frr.Source != "frr" || frr.State != "Active" || !strings.Contains(frr.LastError, "TCP-MD5") || frr.Families[0] != "ipv6-unicast (withheld: no global IPv6 address on eth0)" {
		t.Errorf("frr peer %+v", frr)
	}
	c := readyCondition(st)
	if c.Status != metav1.ConditionFalse || c.Reason != "SessionsDown" || !strings.Contains(c.Message, "198.51.100.254 (Active: no answer") {
		t.Errorf("condition %+v", c)
	}
	st.Peers = st.Peers[:1]
	if c := readyCondition(st); c.Reason != "ConfigurationProblems" {
		t.Errorf("condition %+v", c)
	}
}

// fakeSpeaker records what the controller sets.
type fakeSpeaker struct {
	mu       sync.Mutex
	cfg      bgp.Config
	sets     int
	learned  chan []bgp.Route
	routes   []bgp.Route
	policies []bgp.PolicyView
	query    bgp.RouteQuery
}

func (f *fakeSpeaker) Set(_ context.Context, cfg bgp.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg, f.sets = cfg, f.sets+1
	return nil
}

func (f *fakeSpeaker) Peers(context.Context) ([]bgp.PeerStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bgp.PeerStatus
	for _, p := range f.cfg.Peers {
		out = append(out, bgp.PeerStatus{Name: p.Name, Address: p.Address, ASN: p.ASN, State: bgp.StateEstablished,
			Families: []bgp.FamilyStatus{{Family: bgp.IPv4Unicast, Sent: uint64(len(f.cfg.Paths))}}})
	}
	return out, nil
}

func (f *fakeSpeaker) Routes(_ context.Context, q bgp.RouteQuery) ([]bgp.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.query = q
	return f.routes, nil
}

func (f *fakeSpeaker) Policies(context.Context) ([]bgp.PolicyView, error) { return f.policies, nil }
func (f *fakeSpeaker) Learned() <-chan []bgp.Route                        { return f.learned }
func (f *fakeSpeaker) Close() error                                       { return nil }

func (f *fakeSpeaker) config() bgp.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg
}

func installCRDs(t *testing.T, ctx context.Context, dyn dynamic.Interface) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "..", "deploy", "crds", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no CRDs in deploy/crds")
	}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(crdGVR).Create(ctx, &unstructured.Unstructured{Object: m}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		_, err := dyn.Resource(gvrBGPPeers).List(ctx, metav1.ListOptions{})
		return err
	})
}

// TestBGPControllerAgainstAPIServer drives the controller from real API
// objects to a recording speaker: peers, paths, Local traffic policy from
// EndpointSlices, passwords from Secrets, withdrawals, and BGPNodeStatus.
func TestBGPControllerAgainstAPIServer(t *testing.T) {
	c := kubeapi.Start(t, kubeapi.BinDir(t))
	dyn, err := dynamic.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	installCRDs(t, ctx, dyn)
	kube := c.Client
	mustDo := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err = kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "strait-system"}}, metav1.CreateOptions{})
	mustDo("namespace", err)
	for name, ip := range map[string]string{"n1": "198.51.100.1", "n2": "198.51.100.2"} {
		n, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"rack": "a"}}}, metav1.CreateOptions{})
		mustDo("node", err)
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
		_, err = kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		mustDo("node status", err)
	}
	create := func(gvr schema.GroupVersionResource, kind, name string, spec map[string]any) {
		t.Helper()
		_, err := dyn.Resource(gvr).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "strait.dev/v1alpha1", "kind": kind, "metadata": map[string]any{"name": name}, "spec": spec}}, metav1.CreateOptions{})
		mustDo("create "+kind+" "+name, err)
	}
	create(gvrBGPConfigurations, "BGPConfiguration", "default", map[string]any{"asNumber": int64(65001),
		"serviceLoadBalancerIPs": []any{map[string]any{"cidr": "198.18.0.0/24"}}})
	create(gvrBGPPeers, "BGPPeer", "frr", map[string]any{"peerIP": "198.51.100.254", "asNumber": int64(65000),
		"password": map[string]any{"name": "bgp", "key": "frr"}})
	create(gvrIPAMBlocks, "IPAMBlock", "10-244-1-0-26", map[string]any{"cidr": "10.244.1.0/26", "pool": "default", "node": "n1"})
	create(gvrIPAMBlocks, "IPAMBlock", "10-244-2-0-26", map[string]any{"cidr": "10.244.2.0/26", "pool": "default", "node": "n2"})
	svc, err := kube.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}}}}, metav1.CreateOptions{})
	mustDo("service", err)
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.18.0.7"}}
	_, err = kube.CoreV1().Services("default").UpdateStatus(ctx, svc, metav1.UpdateOptions{})
	mustDo("service status", err)

	create(gvrIPPools, "IPPool", "default", map[string]any{"cidr": "10.244.0.0/16", "encapsulation": "None"})
	nodeNS, dp := learnedRouteNode(t)

	fake := &fakeSpeaker{learned: make(chan []bgp.Route)}
	b := &bgpController{log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), node: "n1",
		cfg: BGPAgentConfig{StatusPeriod: Duration{200 * time.Millisecond}, Namespace: "strait-system"},
		c:   clusterClients{kube: kube, dyn: dyn}, speaker: fake, routes: dp}
	mustDo("start", b.start(ctx))

	peersAndPaths := func() (peers, paths []string) {
		cfg := fake.config()
		for _, p := range cfg.Peers {
			peers = append(peers, fmt.Sprintf("%s=%s/%q", p.Name, p.Address, p.Password))
		}
		for _, p := range cfg.Paths {
			paths = append(paths, p.Prefix.String())
		}
		return peers, paths
	}
	want := func(what string, wantPeers, wantPaths []string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
			peers, paths := peersAndPaths()
			if !slices.Equal(peers, wantPeers) || !slices.Equal(paths, wantPaths) {
				return fmt.Errorf("%s: peers %v paths %v; want %v %v", what, peers, paths, wantPeers, wantPaths)
			}
			return nil
		})
	}
	// The Secret is missing: frr is left out; no local endpoint: the LB IP
	// is not advertised.
	want("start", []string{`mesh-n2=198.51.100.2/""`}, []string{"10.244.1.0/26"})
	_, err = kube.CoreV1().Secrets("strait-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp"},
		Data: map[string][]byte{"frr": []byte("s3cret")}}, metav1.CreateOptions{})
	mustDo("secret", err)
	want("secret", []string{`frr=198.51.100.254/"s3cret"`, `mesh-n2=198.51.100.2/""`}, []string{"10.244.1.0/26"})

	ready, node := true, "n1"
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: &node, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}}}
	slice, err = kube.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{})
	mustDo("endpointslice", err)
	want("local endpoint", []string{`frr=198.51.100.254/"s3cret"`, `mesh-n2=198.51.100.2/""`}, []string{"10.244.1.0/26", "198.18.0.7/32"})

	// BGPNodeStatus reports both sessions.
	testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		u, err := dyn.Resource(gvrBGPNodeStatuses).Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		var st v1alpha1.BGPNodeStatus
		if !fromUnstructured(u, &st, b.log) {
			return fmt.Errorf("decode %v", u)
		}
		if st.Status.EstablishedCount != 2 || st.Status.ASNumber != 65001 || st.Status.RouterID != "198.51.100.1" || st.Status.Advertised != 2 {
			return fmt.Errorf("status %+v", st.Status)
		}
		return nil
	})

	// Native routing: the mesh's routes to pod blocks reach the kernel;
	// our own block, a prefix outside the pools and an external peer's
	// route do not; a withdrawal removes the route.
	learn := func(routes ...bgp.Route) {
		t.Helper()
		select {
		case fake.learned <- routes:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	mesh := func(prefix, nh, peer string) bgp.Route {
		return bgp.Route{Prefix: netip.MustParsePrefix(prefix), NextHop: netip.MustParseAddr(nh), Peer: peer, Best: true}
	}
	kernel := func(what, want string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
			got := strings.TrimSpace(nodeNS.MustRun(t, "ip", "route", "show", "proto", "84"))
			if got != want {
				return fmt.Errorf("%s: kernel learned routes %q, want %q", what, got, want)
			}
			return nil
		})
	}
	// The overlay still holds the prefix (an encapsulation change in
	// progress): skipped, then installed by a retry once it is gone.
	nodeNS.MustRun(t, "ip", "route", "add", "10.244.2.0/26", "via", "198.51.100.2", "proto", "83")
	learn(mesh("10.244.2.0/26", "198.51.100.2", "mesh-n2"), mesh("10.244.1.0/26", "198.51.100.2", "mesh-n2"),
		mesh("10.96.0.0/16", "198.51.100.2", "mesh-n2"), mesh("10.244.9.0/26", "198.51.100.254", "frr"))
	time.Sleep(300 * time.Millisecond)
	kernel("held by the overlay", "")
	nodeNS.MustRun(t, "ip", "route", "del", "10.244.2.0/26", "proto", "83")
	kernel("learned", "10.244.2.0/26 via 198.51.100.2 dev eth0")
	learn()
	kernel("withdrawn", "")

	// The endpoint moves to n2: withdrawn here; the peer goes: removed.
	node2 := "n2"
	slice.Endpoints[0].NodeName = &node2
	_, err = kube.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{})
	mustDo("move endpoint", err)
	mustDo("delete peer", dyn.Resource(gvrBGPPeers).Delete(ctx, "frr", metav1.DeleteOptions{}))
	want("moved and deleted", []string{`mesh-n2=198.51.100.2/""`}, []string{"10.244.1.0/26"})
	// A node leaves: its mesh session goes.
	mustDo("delete node", kube.CoreV1().Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}))
	want("node gone", nil, []string{"10.244.1.0/26"})
	if v := b.view(); v.Applied.ASN != 65001 || !v.Applied.RouterID.IsValid() || v.Applied.RouterID != netip.MustParseAddr("198.51.100.1") {
		t.Errorf("view %+v", v)
	}
}
