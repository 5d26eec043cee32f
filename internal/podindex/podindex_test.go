package podindex

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

func pod(name, node string, labels map[string]string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels},
		Spec: corev1.PodSpec{NodeName: node}}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

func slim(t *testing.T, p *corev1.Pod) any {
	t.Helper()
	o, err := Slim(p)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestIndex(t *testing.T) {
	x := New()
	x.Update(slim(t, pod("web-1", "n1", map[string]string{"tier": "front", "app": "web"}, "10.244.0.5", "fd10:244::5")), false)
	hostNet := pod("kube-proxy", "n2", nil, "198.51.100.2")
	hostNet.Spec.HostNetwork = true
	x.Update(slim(t, hostNet), false)

	for _, a := range []string{"10.244.0.5", "fd10:244::5", "::ffff:10.244.0.5"} {
		got, ok := x.Lookup(netip.MustParseAddr(a))
		if !ok || got.Name != "web-1" || got.Namespace != "shop" || got.Node != "n1" || got.Labels["app"] != "web" ||
			got.LabelsJSON != `{"app":"web","tier":"front"}` {
			t.Errorf("%s: %+v %v", a, got, ok)
		}
	}
	if _, ok := x.Lookup(netip.MustParseAddr("198.51.100.2")); ok {
		t.Error("a host-network pod's address resolved as a pod")
	}

	// Deleted, also through a tombstone.
	x.Update(cache.DeletedFinalStateUnknown{Key: "shop/web-1", Obj: pod("web-1", "n1", nil, "10.244.0.5", "fd10:244::5")}, true)
	if x.Len() != 0 {
		t.Errorf("deleted pod still indexed: %d addresses", x.Len())
	}

	// A finished pod (a Job's) keeps its object but not its address, which
	// a new pod may already hold; the new pod stays when the old one ends.
	job := pod("job-1", "n2", nil, "10.244.1.8")
	x.Update(job, false)
	x.Update(pod("web-2", "n2", nil, "10.244.1.8"), false)
	job.Status.Phase = corev1.PodSucceeded
	x.Update(slim(t, job), false)
	if got, ok := x.Lookup(netip.MustParseAddr("10.244.1.8")); !ok || got.Name != "web-2" {
		t.Errorf("address of a finished pod reused by web-2 resolves to %+v %v", got, ok)
	}
	failed := pod("job-2", "n2", nil, "10.244.1.9")
	x.Update(failed, false)
	failed.Status.Phase = corev1.PodFailed
	x.Update(slim(t, failed), false)
	if got, ok := x.Lookup(netip.MustParseAddr("10.244.1.9")); ok {
		t.Errorf("a failed pod's address still resolves: %+v", got)
	}
	// An update moving a label: the old object is removed, the new added.
	x.Update(pod("web-2", "n2", map[string]string{"app": "web"}, "10.244.1.8"), false)
	if got, _ := x.Lookup(netip.MustParseAddr("10.244.1.8")); got.LabelsJSON != `{"app":"web"}` {
		t.Errorf("labels after an update: %+v", got)
	}
}
