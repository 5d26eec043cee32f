// Package podlabels is the Flow Aggregator's pod-label source for proxy
// mode: a pod informer that maps each pod IP to the pod's labels as a JSON
// object (the value of sourcePodLabels/destinationPodLabels).
package podlabels

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/strait-net/strait/internal/kubeutil"
)

// Index answers PodLabels(ip) from a pod informer.
type Index struct {
	mu   sync.RWMutex
	byIP map[netip.Addr]entry
}

type entry struct {
	namespace, name string
	labels          string // JSON object, "" for a pod without labels
}

// Client builds a clientset from kubeconfig, or from the in-cluster
// service account when kubeconfig is empty.
func Client(kubeconfig string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return kubernetes.NewForConfig(kubeutil.Protobuf(cfg))
}

// Start runs a pod informer until ctx ends and returns once its cache is
// synced (or fails when it does not sync within syncTimeout).
func Start(ctx context.Context, kube kubernetes.Interface, syncTimeout time.Duration) (*Index, error) {
	x := &Index{byIP: map[netip.Addr]entry{}}
	f := informers.NewSharedInformerFactory(kube, 0)
	inf := f.Core().V1().Pods().Informer()
	if err := inf.SetTransform(slim); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	// The handlers fill the index: wait for them, not only the store.
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { x.set(o, false) },
		UpdateFunc: func(old, o any) { x.set(old, true); x.set(o, false) },
		DeleteFunc: func(o any) { x.set(o, true) },
	})
	if err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	f.Start(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if !kubeutil.WaitForSync(syncCtx, reg.HasSynced) {
		return nil, fmt.Errorf("pod informer: not synced within %v (API server reachable? RBAC: list and watch pods)", syncTimeout)
	}
	return x, nil
}

// PodLabels returns the labels of the pod with address ip as a JSON object
// ("" when no pod has it, or it has no labels).
func (x *Index) PodLabels(ip netip.Addr) string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.byIP[ip.Unmap()].labels
}

// slim keeps of a pod only what the index reads.
func slim(o any) (any, error) {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, Labels: pod.Labels, ResourceVersion: pod.ResourceVersion},
		Spec:       corev1.PodSpec{HostNetwork: pod.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: pod.Status.Phase, PodIPs: pod.Status.PodIPs},
	}, nil
}

func (x *Index) set(o any, remove bool) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	pod, ok := o.(*corev1.Pod)
	// Host-network pods share their node's address; finished pods' addresses
	// may already belong to a new pod.
	if !ok || pod.Spec.HostNetwork {
		return
	}
	done := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	labels := ""
	if len(pod.Labels) > 0 {
		b, err := json.Marshal(pod.Labels) // keys sorted
		if err == nil {
			labels = string(b)
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, pip := range pod.Status.PodIPs {
		a, err := netip.ParseAddr(pip.IP)
		if err != nil {
			continue
		}
		cur, have := x.byIP[a]
		mine := have && cur.namespace == pod.Namespace && cur.name == pod.Name
		switch {
		case remove || done:
			if mine {
				delete(x.byIP, a)
			}
		default:
			x.byIP[a] = entry{namespace: pod.Namespace, name: pod.Name, labels: labels}
		}
	}
}
