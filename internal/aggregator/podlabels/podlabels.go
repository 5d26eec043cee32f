// Package podlabels is the Flow Aggregator's pod-label source for proxy
// mode: a pod informer that maps each pod IP to the pod's labels as a JSON
// object (the value of sourcePodLabels/destinationPodLabels).
package podlabels

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/strait-net/strait/internal/kubeutil"
	"github.com/strait-net/strait/internal/podindex"
)

// Index answers PodLabels(ip) from a pod informer (internal/podindex).
type Index struct{ pods *podindex.Index }

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
	x := &Index{pods: podindex.New()}
	f := informers.NewSharedInformerFactory(kube, 0)
	// The handler fills the index: wait for it, not only the store.
	reg, err := x.pods.Watch(f.Core().V1().Pods().Informer())
	if err != nil {
		return nil, err
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
	p, _ := x.pods.Lookup(ip)
	return p.LabelsJSON
}
