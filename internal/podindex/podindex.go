// Package podindex maps pod addresses to the pods holding them (namespace,
// name, node, labels), fed by a pod informer. The agent's flow exporter and
// the Flow Aggregator's proxy mode both use it, so they agree on which pod
// an address belongs to: host-network pods share their node's address and
// are left out, and a finished pod (Succeeded, Failed) gives its addresses
// up at once, since a new pod may already hold them.
package podindex

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// Pod is what the index knows of the pod holding an address.
type Pod struct {
	Namespace, Name, Node string
	Labels                map[string]string
	// LabelsJSON is Labels as a JSON object (keys sorted), "" without labels.
	LabelsJSON string
}

// Index is safe for concurrent use.
type Index struct {
	mu   sync.RWMutex
	byIP map[netip.Addr]Pod
}

// New returns an empty index.
func New() *Index { return &Index{byIP: map[netip.Addr]Pod{}} }

// Watch makes the pod informer keep only what the index reads (Slim) and
// feeds the index from it; the registration's HasSynced turns true once the
// index holds the initial list (the informer's own HasSynced turns true
// earlier, when its store does). Call it before the informer starts.
func (x *Index) Watch(inf cache.SharedIndexInformer) (cache.ResourceEventHandlerRegistration, error) {
	if err := inf.SetTransform(Slim); err != nil {
		return nil, fmt.Errorf("pod informer transform: %w", err)
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { x.Update(o, false) },
		UpdateFunc: func(old, o any) { x.Update(old, true); x.Update(o, false) },
		DeleteFunc: func(o any) { x.Update(o, true) },
	})
	if err != nil {
		return nil, fmt.Errorf("pod informer handler: %w", err)
	}
	return reg, nil
}

// Lookup returns the pod holding a (an IPv4-mapped address is unmapped).
func (x *Index) Lookup(a netip.Addr) (Pod, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	p, ok := x.byIP[a.Unmap()]
	return p, ok
}

// Len is the number of addresses indexed.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byIP)
}

// Slim keeps of a pod only what the index reads (an informer transform).
func Slim(o any) (any, error) {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, Labels: pod.Labels,
			UID: pod.UID, ResourceVersion: pod.ResourceVersion},
		Spec:   corev1.PodSpec{NodeName: pod.Spec.NodeName, HostNetwork: pod.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: pod.Status.Phase, PodIPs: pod.Status.PodIPs},
	}, nil
}

// Update applies one informer event: pod o (or its tombstone) was added or
// changed, or removed when remove. An address is removed only from the pod
// that holds it.
func (x *Index) Update(o any, remove bool) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	pod, ok := o.(*corev1.Pod)
	if !ok || pod.Spec.HostNetwork {
		return
	}
	remove = remove || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	entry := Pod{Namespace: pod.Namespace, Name: pod.Name, Node: pod.Spec.NodeName, Labels: pod.Labels}
	if len(pod.Labels) > 0 && !remove {
		if b, err := json.Marshal(pod.Labels); err == nil { // map keys come out sorted
			entry.LabelsJSON = string(b)
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, pip := range pod.Status.PodIPs {
		a, err := netip.ParseAddr(pip.IP)
		if err != nil {
			continue
		}
		a = a.Unmap()
		if remove {
			if cur, ok := x.byIP[a]; ok && cur.Namespace == pod.Namespace && cur.Name == pod.Name {
				delete(x.byIP, a)
			}
			continue
		}
		x.byIP[a] = entry
	}
}
