package agent

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/strait-net/strait/internal/agent/blocks"
	"github.com/strait-net/strait/internal/ipam"
	"github.com/strait-net/strait/internal/kubeutil"
)

// startCluster connects to the API server and brings up the cluster
// datapath (blocks or node-cidr mode). It returns once this node's pods can
// be wired and reached from other nodes.
func (a *Agent) startCluster(ctx context.Context, dp PodDatapath, alloc *ipam.Allocator) (*clusterController, error) {
	odp, ok := dp.(OverlayDatapath)
	if !ok {
		return nil, errors.New("the datapath does not support the cluster overlay")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", a.cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("API client config (kubeconfig %q): %w", a.cfg.Kubeconfig, err)
	}
	rc.UserAgent = "strait-agent/" + a.cfg.NodeName
	kube, err := kubernetes.NewForConfig(kubeutil.Protobuf(rc))
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	cc := &clusterController{
		log: a.log.With("component", "cluster"), cfg: a.cfg, c: clusterClients{kube: kube, dyn: dyn}, dp: odp, alloc: alloc,
		topo: newTopology(), dirty: map[string]bool{}, wake: make(chan struct{}, 1), fastWake: make(chan struct{}, 1), metrics: a.metrics,
	}
	if a.cfg.FastPath.Enabled && a.metrics != nil {
		a.metrics.reg.MustRegister(newFastPathCollector(cc))
	}
	if a.cfg.IPAMMode == IPAMBlocks {
		cc.blocks = blocks.NewManager(blocks.Config{Client: dyn, Kube: kube, NodeName: a.cfg.NodeName, Log: cc.log})
		go func() {
			err := blocks.RunReleaser(ctx, blocks.ReleaserConfig{Kube: kube, Dynamic: dyn, Identity: a.cfg.NodeName, Log: cc.log})
			if err != nil && ctx.Err() == nil {
				cc.log.Error("block releaser stopped", "error", err)
			}
		}()
	}
	if err := cc.start(ctx); err != nil {
		return nil, fmt.Errorf("join the cluster: %w", err)
	}
	return cc, nil
}
