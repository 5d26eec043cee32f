package lbipam

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/testutil"
	"github.com/strait-net/strait/internal/testutil/kubeapi"
)

type apiEnv struct {
	t    *testing.T
	ctx  context.Context
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	c := kubeapi.Start(t, kubeapi.BinDir(t))
	dyn, err := dynamic.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	e := &apiEnv{t: t, ctx: ctx, kube: c.Client, dyn: dyn}
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "crds", "strait.dev_loadbalancerippools.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := dyn.Resource(crdGVR).Create(ctx, &unstructured.Unstructured{Object: crd}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "strait-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually(20*time.Second, "LoadBalancerIPPool CRD serving", func() error {
		_, err := dyn.Resource(gvrPools).List(ctx, metav1.ListOptions{})
		return err
	})
	return e
}

func (e *apiEnv) eventually(d time.Duration, what string, f func() error) {
	e.t.Helper()
	testutil.Eventually(e.t, d, 50*time.Millisecond, func() error {
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

func (e *apiEnv) pool(name string, cidrs ...string) {
	e.t.Helper()
	var cs []any
	for _, c := range cidrs {
		cs = append(cs, c)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "strait.dev/v1alpha1", "kind": "LoadBalancerIPPool", "metadata": map[string]any{"name": name},
		"spec": map[string]any{"cidrs": cs},
	}}
	if _, err := e.dyn.Resource(gvrPools).Create(e.ctx, u, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *apiEnv) service(name string, mut func(*corev1.Service)) {
	e.t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	if mut != nil {
		mut(s)
	}
	if _, err := e.kube.CoreV1().Services("default").Create(e.ctx, s, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create Service %s: %v", name, err)
	}
	time.Sleep(1100 * time.Millisecond) // creation timestamps have second precision: order them
}

// wantIngress waits until Service name's ingress is want (nil: none).
func (e *apiEnv) wantIngress(name string, want ...string) {
	e.t.Helper()
	e.eventually(15*time.Second, "Service "+name+" ingress "+fmt.Sprint(want), func() error {
		s, err := e.kube.CoreV1().Services("default").Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := ingressOf(s); !slices.Equal(got, want) {
			return fmt.Errorf("ingress %v, conditions %+v", got, s.Status.Conditions)
		}
		return nil
	})
}

func (e *apiEnv) wantCondition(name string, status metav1.ConditionStatus, reason string) {
	e.t.Helper()
	e.eventually(15*time.Second, "Service "+name+" condition "+reason, func() error {
		s, err := e.kube.CoreV1().Services("default").Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(s.Status.Conditions, ConditionAllocated)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
}

func (e *apiEnv) wantEvent(name, reason string) {
	e.t.Helper()
	e.eventually(15*time.Second, "event "+reason+" on "+name, func() error {
		l, err := e.kube.CoreV1().Events("default").List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return err
		}
		for _, ev := range l.Items {
			if ev.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("%d events, none %s", len(l.Items), reason)
	})
}

// allocator runs Run as identity until the returned stop is called.
func (e *apiEnv) allocator(identity string) (stop func()) {
	ctx, cancel := context.WithCancel(e.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := Run(ctx, Config{Kube: e.kube, Dynamic: e.dyn, Identity: identity, Resync: 2 * time.Second,
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
			Log: slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelInfo}))})
		if err != nil {
			e.t.Errorf("Run %s: %v", identity, err)
		}
	}()
	return func() { cancel(); wg.Wait() }
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestAllocatorAgainstAPIServer runs two allocators (one leads) against a
// real kube-apiserver: assignment, fixed addresses, another class,
// conflict, exhaustion, release on type change and deletion, pool status,
// and a leader change that keeps every address.
func TestAllocatorAgainstAPIServer(t *testing.T) {
	e := newAPIEnv(t)
	// 198.18.0.0/30: four addresses.
	e.pool("lb", "198.18.0.0/30")
	stopA := e.allocator("node-a")
	stopB := e.allocator("node-b")
	defer stopB()

	e.service("web", nil)
	e.wantIngress("web", "198.18.0.0")
	e.wantCondition("web", metav1.ConditionTrue, "Allocated")
	e.wantEvent("web", "IPAllocated")

	e.service("fixed", func(s *corev1.Service) { s.Annotations[v1alpha1.AnnotationLoadBalancerIPs] = "198.18.0.3" })
	e.wantIngress("fixed", "198.18.0.3")
	e.service("legacy", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "198.18.0.2" })
	e.wantIngress("legacy", "198.18.0.2")
	other := "example.com/lb"
	e.service("foreign", func(s *corev1.Service) { s.Spec.LoadBalancerClass = &other })
	e.service("conflict", func(s *corev1.Service) { s.Annotations[v1alpha1.AnnotationLoadBalancerIPs] = "198.18.0.3" })
	e.wantCondition("conflict", metav1.ConditionFalse, ReasonConflict)
	e.wantEvent("conflict", ReasonConflict)
	e.wantIngress("conflict")
	e.service("auto2", nil)
	e.wantIngress("auto2", "198.18.0.1")
	e.service("waiting", nil)
	e.wantCondition("waiting", metav1.ConditionFalse, ReasonExhausted)
	e.wantEvent("waiting", ReasonExhausted)
	e.eventually(15*time.Second, "pool status", func() error {
		u, err := e.dyn.Resource(gvrPools).Get(e.ctx, "lb", metav1.GetOptions{})
		if err != nil {
			return err
		}
		n, _, _ := unstructured.NestedInt64(u.Object, "status", "allocatedIPv4")
		free, _, _ := unstructured.NestedInt64(u.Object, "status", "availableIPv4")
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		if n != 4 || free != 0 || !strings.Contains(fmt.Sprint(conds), "no free IPv4 address") {
			return fmt.Errorf("allocated %d, available %d, conditions %v", n, free, conds)
		}
		return nil
	})
	// The foreign Service was never touched.
	f, err := e.kube.CoreV1().Services("default").Get(e.ctx, "foreign", metav1.GetOptions{})
	if err != nil || len(f.Status.LoadBalancer.Ingress) != 0 || len(f.Status.Conditions) != 0 {
		t.Errorf("foreign Service: %+v %v", f.Status, err)
	}

	// A type change releases web's address, which the waiting Service gets.
	s, err := e.kube.CoreV1().Services("default").Get(e.ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Type = corev1.ServiceTypeClusterIP
	s.Spec.Ports[0].NodePort = 0
	s.Spec.ExternalTrafficPolicy, s.Spec.AllocateLoadBalancerNodePorts = "", nil
	if _, err := e.kube.CoreV1().Services("default").Update(e.ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.wantIngress("web")
	e.wantIngress("waiting", "198.18.0.0")
	e.eventually(15*time.Second, "web's condition removed", func() error {
		s, err := e.kube.CoreV1().Services("default").Get(e.ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if c := meta.FindStatusCondition(s.Status.Conditions, ConditionAllocated); c != nil {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
	// Deleting the fixed Service frees 198.18.0.3 for the conflicting one.
	if err := e.kube.CoreV1().Services("default").Delete(e.ctx, "fixed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.wantIngress("conflict", "198.18.0.3")
	e.wantCondition("conflict", metav1.ConditionTrue, "Allocated")

	// The leader goes away; the other takes over and keeps every address
	// (rebuilt from the Services' status), and still serves new changes.
	lease, err := e.kube.CoordinationV1().Leases("strait-system").Get(e.ctx, "strait-lb-ipam", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first := *lease.Spec.HolderIdentity
	if first == "node-a" {
		stopA()
	} else {
		stopB()
	}
	e.eventually(20*time.Second, "a new leader", func() error {
		l, err := e.kube.CoordinationV1().Leases("strait-system").Get(e.ctx, "strait-lb-ipam", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == first || *l.Spec.HolderIdentity == "" {
			return fmt.Errorf("holder %v", l.Spec.HolderIdentity)
		}
		return nil
	})
	if err := e.kube.CoreV1().Services("default").Delete(e.ctx, "legacy", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.service("after", nil)
	e.wantIngress("after", "198.18.0.2")
	for name, want := range map[string]string{"conflict": "198.18.0.3", "auto2": "198.18.0.1", "waiting": "198.18.0.0"} {
		e.wantIngress(name, want)
	}
	if first == "node-a" {
		stopB()
	} else {
		stopA()
	}
}
