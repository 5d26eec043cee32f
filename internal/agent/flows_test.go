package agent

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/strait-net/strait/internal/flow"
	"github.com/strait-net/strait/internal/flow/flowrec"
	"github.com/strait-net/strait/internal/ipam"
	"github.com/strait-net/strait/internal/podindex"
)

func TestFlowsConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  FlowsConfig
		err  string
	}{
		{"disabled needs nothing", FlowsConfig{Transport: "carrier pigeon"}, ""},
		{"defaults", FlowsConfig{Enabled: true, Collector: "aggregator.flows:4739"}, ""},
		{"collector without port", FlowsConfig{Enabled: true, Collector: "aggregator"}, "flows.collector"},
		{"bad transport", FlowsConfig{Enabled: true, Collector: "a:1", Transport: "sctp"}, "flows.transport"},
		{"tls without CA", FlowsConfig{Enabled: true, Collector: "a:1", Transport: "tls"}, "flows.tls.caFile"},
		{"tls with a cert but no key", FlowsConfig{Enabled: true, Collector: "a:1", Transport: "tls", TLS: FlowsTLS{CAFile: "ca", CertFile: "c"}}, "flows.tls"},
		{"bad service CIDR", FlowsConfig{Enabled: true, Collector: "a:1", ServiceCIDRs: []string{"10.96.0.0"}}, "flows.serviceCIDRs[0]"},
		{"negative timeout", FlowsConfig{Enabled: true, Collector: "a:1", IdleTimeout: Duration{-time.Second}}, "flows.idleTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			err := c.validate()
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one naming %s", err, tc.err)
			}
			if tc.name == "defaults" && (c.Transport != "tcp" || c.ActiveTimeout.Duration != 5*time.Second ||
				c.IdleTimeout.Duration != 15*time.Second || c.ServiceCIDRs[0] != "10.96.0.0/12") {
				t.Errorf("defaults: %+v", c)
			}
		})
	}
}

func TestPodIndex(t *testing.T) {
	alloc, err := ipam.New(ipam.NewMemStore(), []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	al, _, err := alloc.Allocate(ipam.Owner{Key: ipam.Key{Network: "strait", ContainerID: "c1", IfName: "eth0"}, PodNamespace: "shop", PodName: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	local := al.Addrs[0]
	p := newPodIndex("n1", alloc)
	if got, ok := p.ResolvePod(local); !ok || got.Name != "web-1" || got.Namespace != "shop" || got.Node != "n1" {
		t.Fatalf("local pod from IPAM: %+v %v", got, ok)
	}
	pod := func(name, node, ip string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels},
			Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: ip}}}}
	}
	slim, _ := podindex.Slim(pod("web-1", "n1", local.String(), map[string]string{"app": "web"}))
	p.pods.Update(slim, false)
	p.pods.Update(pod("db-0", "n2", "10.244.1.7", map[string]string{"app": "db"}), false)
	hostNet := pod("kube-proxy", "n2", "198.51.100.2", nil)
	hostNet.Spec.HostNetwork = true
	p.pods.Update(hostNet, false)

	if got, _ := p.ResolvePod(local); got.Labels["app"] != "web" || got.Name != "web-1" {
		t.Errorf("local pod with informer labels: %+v", got)
	}
	if got, ok := p.ResolvePod(netip.MustParseAddr("10.244.1.7")); !ok || got.Node != "n2" || got.Labels["app"] != "db" {
		t.Errorf("remote pod: %+v %v", got, ok)
	}
	if _, ok := p.ResolvePod(netip.MustParseAddr("198.51.100.2")); ok {
		t.Error("a host-network pod's address resolved as a pod")
	}
	p.pods.Update(pod("db-0", "n2", "10.244.1.7", nil), true)
	if _, ok := p.ResolvePod(netip.MustParseAddr("10.244.1.7")); ok {
		t.Error("deleted pod still resolves")
	}
	// A finished pod (a Job's) keeps its object but not its address, which
	// a new pod may already hold; the new pod stays when the old one ends.
	job := pod("job-1", "n2", "10.244.1.8", nil)
	p.pods.Update(job, false)
	p.pods.Update(pod("web-2", "n2", "10.244.1.8", nil), false)
	job.Status.Phase = corev1.PodSucceeded
	slimJob, _ := podindex.Slim(job)
	p.pods.Update(slimJob, false)
	if got, ok := p.ResolvePod(netip.MustParseAddr("10.244.1.8")); !ok || got.Name != "web-2" {
		t.Errorf("address of a finished pod reused by web-2 resolves to %+v %v", got, ok)
	}
	failed := pod("job-2", "n2", "10.244.1.9", nil)
	p.pods.Update(failed, false)
	failed.Status.Phase = corev1.PodFailed
	slimFailed, _ := podindex.Slim(failed)
	p.pods.Update(slimFailed, false)
	if got, ok := p.ResolvePod(netip.MustParseAddr("10.244.1.9")); ok {
		t.Errorf("a failed pod's address still resolves: %+v", got)
	}

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "data"},
		Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.10", "fd10:96::10"},
			Ports: []corev1.ServicePort{{Name: "pg", Port: 5432, Protocol: corev1.ProtocolTCP}, {Port: 53, Protocol: corev1.ProtocolUDP}}}}
	p.setService(svc, false)
	for _, c := range []struct {
		addr  string
		port  uint16
		proto uint8
		want  string
	}{
		{"10.96.0.10", 5432, 6, "data/db:pg"}, {"fd10:96::10", 5432, 6, "data/db:pg"},
		{"10.96.0.10", 53, 17, "data/db:53"}, {"10.96.0.10", 53, 6, ""},
	} {
		if got := p.service(netip.MustParseAddr(c.addr), c.port, c.proto); got != c.want {
			t.Errorf("service %s:%d/%d = %q, want %q", c.addr, c.port, c.proto, got, c.want)
		}
	}
	p.setService(svc, true)
	if got := p.service(netip.MustParseAddr("10.96.0.10"), 5432, 6); got != "" {
		t.Errorf("deleted service still named %q", got)
	}
}

func TestFlowsResponse(t *testing.T) {
	mk := func(src, dst string, bytes uint64, srcPod, dstPod flow.Pod) flow.Flow {
		f := flow.Flow{Conn: flow.Conn{Orig: flow.Tuple{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: 1000, DstPort: 80, Proto: 6},
			Bytes: bytes}, SrcPod: srcPod, DstPod: dstPod, FlowType: flowrec.FlowTypeInterNode}
		return f
	}
	web := flow.Pod{Name: "web-1", Namespace: "shop", Node: "n1"}
	db := flow.Pod{Name: "db-0", Namespace: "data", Node: "n2"}
	svcFlow := mk("10.244.0.5", "10.96.0.10", 10, web, db)
	svcFlow.PostNATDst, svcFlow.PostNATDstPort, svcFlow.Service = netip.MustParseAddr("10.244.1.7"), 5432, "data/db:pg"
	fs := []flow.Flow{mk("10.244.0.5", "10.244.1.7", 300, web, db), mk("10.244.0.6", "203.0.113.9", 200, flow.Pod{Name: "x", Namespace: "shop"}, flow.Pod{}), svcFlow}

	resp, err := flowsResponse(fs, "data/db-0", "")
	if err != nil || resp.Total != 2 || len(resp.Flows) != 2 || resp.Mode != "agent" {
		t.Fatalf("pod filter: %+v %v", resp, err)
	}
	if f := resp.Flows[1]; f.DestinationIP != "10.244.1.7" || f.DestinationPort != 5432 || f.DestinationService != "data/db:pg" || f.FlowType != "inter-node" {
		t.Errorf("service flow rendered with the backend as destination: %+v", f)
	}
	resp, err = flowsResponse(fs, "", "1")
	if err != nil || resp.Total != 3 || len(resp.Flows) != 1 || resp.Flows[0].Bytes != 300 {
		t.Errorf("top 1: %+v %v", resp, err)
	}
	for _, bad := range [][2]string{{"web-1", ""}, {"/x", ""}, {"", "-1"}, {"", "many"}} {
		if _, err := flowsResponse(fs, bad[0], bad[1]); err == nil {
			t.Errorf("pod=%q top=%q accepted", bad[0], bad[1])
		}
	}
}

func TestFlowsAPIDisabled(t *testing.T) {
	a := &Agent{cfg: &Config{}}
	mux := http.NewServeMux()
	a.registerFlowsAPI(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/flows", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "not enabled") {
		t.Errorf("%d %s", rec.Code, rec.Body.String())
	}
}
