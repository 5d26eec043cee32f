package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/bgp"
	"github.com/strait-net/strait/internal/kubeutil"
	"github.com/strait-net/strait/internal/lbipam"
)

// BGPAgentConfig is the agent's bgp section. The BGP configuration itself
// is in the API (BGPConfiguration, BGPPeer); this only switches the speaker
// on and sets process-level options.
type BGPAgentConfig struct {
	// Enabled runs the BGP speaker (cluster modes only).
	Enabled bool `json:"enabled,omitempty"`
	// GRPCListen, when set (127.0.0.1:PORT), serves GoBGP's own gRPC API so
	// the upstream gobgp CLI works against the agent: the expert layer.
	GRPCListen string `json:"grpcListen,omitempty"`
	// GRPCReadOnly rejects mutating gRPC calls (default true).
	GRPCReadOnly *bool `json:"grpcReadOnly,omitempty"`
	// StatusPeriod is how often BGPNodeStatus is written (default 10s).
	StatusPeriod Duration `json:"statusPeriod,omitempty"`
	// Namespace holds the password Secrets (default strait-system).
	Namespace string `json:"namespace,omitempty"`
}

func (c *BGPAgentConfig) validate() error {
	if c.StatusPeriod.Duration == 0 {
		c.StatusPeriod.Duration = 10 * time.Second
	}
	if c.Namespace == "" {
		c.Namespace = "strait-system"
	}
	if c.GRPCReadOnly == nil {
		t := true
		c.GRPCReadOnly = &t
	}
	if c.GRPCListen != "" {
		ap, err := netip.ParseAddrPort(c.GRPCListen)
		if err != nil || !ap.Addr().IsLoopback() {
			return fmt.Errorf("bgp.grpcListen: must be a loopback address and port such as 127.0.0.1:50051, got %q", c.GRPCListen)
		}
	}
	return nil
}

// Strait's BGP resources.
var (
	gvrBGPConfigurations = v1alpha1.SchemeGroupVersion.WithResource("bgpconfigurations")
	gvrBGPPeers          = v1alpha1.SchemeGroupVersion.WithResource("bgppeers")
	gvrBGPNodeStatuses   = v1alpha1.SchemeGroupVersion.WithResource("bgpnodestatuses")
)

// bgpController keeps the speaker configured as desiredBGP says and
// reports its sessions in BGPNodeStatus.
type bgpController struct {
	log     *slog.Logger
	node    string
	cfg     BGPAgentConfig
	c       clusterClients
	speaker bgp.Speaker

	nodes, services, slices, secrets cache.Indexer
	configs, peers, blocks, pools    cache.Indexer

	// routes installs learned routes (native routing, bgp_native.go); nil
	// when the datapath cannot. nodeCIDREncap is the encapsulation of the
	// Nodes' podCIDRs in node-cidr mode, else "".
	routes        LearnedRouteDatapath
	nodeCIDREncap string

	mu          sync.Mutex
	applied     bgp.Config
	problems    []string
	setErr      error
	learned     []bgp.Route
	nativeSkips []string
}

// startBGP starts the speaker and its controller; it runs until ctx ends.
func (a *Agent) startBGP(ctx context.Context, c clusterClients, routes LearnedRouteDatapath) (*bgpController, error) {
	sp, err := a.deps.BGPSpeaker(a.log.With("component", "bgp-speaker"), bgp.Options{
		GRPCListen: a.cfg.BGP.GRPCListen, GRPCReadOnly: *a.cfg.BGP.GRPCReadOnly,
	})
	if err != nil {
		return nil, fmt.Errorf("start BGP speaker: %w", err)
	}
	b := &bgpController{log: a.log.With("component", "bgp"), node: a.cfg.NodeName, cfg: a.cfg.BGP, c: c, speaker: sp, routes: routes}
	if a.cfg.IPAMMode == IPAMNodeCIDR {
		b.nodeCIDREncap = a.cfg.NodeCIDREncapsulation
	}
	if err := b.start(ctx); err != nil {
		_ = sp.Close()
		return nil, err
	}
	return b, nil
}

// start runs the informers, waits for them and starts the loop.
func (b *bgpController) start(ctx context.Context) error {
	kf := informers.NewSharedInformerFactory(b.c.kube, 0)
	sf := informers.NewSharedInformerFactoryWithOptions(b.c.kube, 0, informers.WithNamespace(b.cfg.Namespace))
	df := dynamicinformer.NewDynamicSharedInformerFactory(b.c.dyn, 0)
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: func(any) { poke() }, UpdateFunc: func(any, any) { poke() }, DeleteFunc: func(any) { poke() }}
	var synced []cache.InformerSynced
	add := func(inf cache.SharedIndexInformer, dst *cache.Indexer) error {
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("bgp informer: %w", err)
		}
		*dst = inf.GetIndexer()
		synced = append(synced, inf.HasSynced)
		return nil
	}
	for _, x := range []struct {
		inf cache.SharedIndexInformer
		dst *cache.Indexer
	}{
		{kf.Core().V1().Nodes().Informer(), &b.nodes},
		{kf.Core().V1().Services().Informer(), &b.services},
		{kf.Discovery().V1().EndpointSlices().Informer(), &b.slices},
		{sf.Core().V1().Secrets().Informer(), &b.secrets},
		{df.ForResource(gvrBGPConfigurations).Informer(), &b.configs},
		{df.ForResource(gvrBGPPeers).Informer(), &b.peers},
		{df.ForResource(gvrIPAMBlocks).Informer(), &b.blocks},
		{df.ForResource(gvrIPPools).Informer(), &b.pools},
	} {
		if err := add(x.inf, x.dst); err != nil {
			return err
		}
	}
	kf.Start(ctx.Done())
	sf.Start(ctx.Done())
	df.Start(ctx.Done())
	b.log.Info("waiting for the BGP informers")
	if !kubeutil.WaitForSync(ctx, synced...) {
		return fmt.Errorf("bgp: informers did not sync (are the BGP CRDs installed?): %w", ctx.Err())
	}
	go b.loop(ctx, wake)
	return nil
}

func (b *bgpController) loop(ctx context.Context, wake chan struct{}) {
	defer func() { _ = b.speaker.Close() }()
	status := time.NewTicker(b.cfg.StatusPeriod.Duration)
	defer status.Stop()
	resync := time.NewTicker(time.Minute)
	defer resync.Stop()
	b.reconcile(ctx)
	var retry learnedRetry
	retry.after(b.applyLearned(ctx))
	b.writeStatus(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
			// Let a burst of events (a Service and its slices) settle.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return
			}
			b.reconcile(ctx)
			retry.after(b.applyLearned(ctx)) // pools and blocks may have changed
		case <-resync.C:
			b.reconcile(ctx)
			retry.after(b.applyLearned(ctx)) // repairs drift of the learned routes
		case <-retry.C:
			retry.after(b.applyLearned(ctx))
		case routes, ok := <-b.speaker.Learned():
			if !ok {
				return
			}
			b.mu.Lock()
			b.learned = routes
			b.mu.Unlock()
			retry.after(b.applyLearned(ctx))
		case <-status.C:
			b.writeStatus(ctx)
		}
	}
}

// reconcile computes the desired configuration and applies it if changed.
func (b *bgpController) reconcile(ctx context.Context) {
	cfg, probs := desiredBGP(b.inputs())
	b.mu.Lock()
	same := reflect.DeepEqual(cfg, b.applied) && b.setErr == nil
	b.mu.Unlock()
	if same {
		return
	}
	err := b.speaker.Set(ctx, cfg)
	if err != nil {
		b.log.Error("BGP configuration not applied", "error", err)
	} else {
		b.log.Info("BGP configuration applied", "asn", cfg.ASN, "routerID", cfg.RouterID, "peers", len(cfg.Peers), "paths", len(cfg.Paths), "problems", len(probs))
	}
	for _, p := range probs {
		b.log.Warn("BGP configuration problem", "problem", p)
	}
	b.mu.Lock()
	b.applied, b.problems, b.setErr = cfg, probs, err
	b.mu.Unlock()
}

// inputs reads the informers' state.
func (b *bgpController) inputs() bgpInputs {
	in := bgpInputs{Node: b.node, Secrets: map[string]map[string][]byte{}}
	for _, o := range b.nodes.List() {
		n, ok := o.(*corev1.Node)
		if !ok {
			continue
		}
		v4, v6 := internalIPs(n)
		in.Nodes = append(in.Nodes, bgpNode{Name: n.Name, V4: v4, V6: v6})
		if n.Name == b.node {
			in.NodeLabels, in.NodeV4, in.NodeV6 = n.Labels, v4, v6
		}
	}
	for _, o := range b.configs.List() {
		var c v1alpha1.BGPConfiguration
		if !fromUnstructured(o, &c, b.log) {
			continue
		}
		switch c.Name {
		case v1alpha1.BGPConfigurationDefault:
			in.Default = &c.Spec
		case v1alpha1.BGPConfigurationNodeName(b.node):
			in.Override = &c.Spec
		}
	}
	for _, o := range b.peers.List() {
		var p v1alpha1.BGPPeer
		if fromUnstructured(o, &p, b.log) {
			in.Peers = append(in.Peers, p)
		}
	}
	for _, o := range b.secrets.List() {
		if s, ok := o.(*corev1.Secret); ok {
			in.Secrets[s.Name] = s.Data
		}
	}
	for _, o := range b.blocks.List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		if bi, _, err := blockFromObject(u); err == nil && bi.Node == b.node {
			in.Blocks = append(in.Blocks, bi.CIDR)
		}
	}
	ready := b.localReady()
	for _, o := range b.services.List() {
		svc, ok := o.(*corev1.Service)
		if !ok {
			continue
		}
		in.Services = append(in.Services, serviceForBGP(svc, ready[svc.Namespace+"/"+svc.Name]))
	}
	return in
}

// localReady: the Services (namespace/name) with a ready endpoint on this
// node, from the EndpointSlices.
func (b *bgpController) localReady() map[string]bool {
	out := map[string]bool{}
	for _, o := range b.slices.List() {
		es, ok := o.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.NodeName != nil && *ep.NodeName == b.node && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				out[es.Namespace+"/"+svc] = true
			}
		}
	}
	return out
}

func serviceForBGP(svc *corev1.Service, localReady bool) bgpService {
	s := bgpService{Key: svc.Namespace + "/" + svc.Name, LocalReady: localReady,
		ExternalLocal: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
		InternalLocal: svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal}
	parse := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, x := range ss {
			if a, err := netip.ParseAddr(x); err == nil {
				out = append(out, a.Unmap())
			}
		}
		return out
	}
	s.ClusterIPs = parse(svc.Spec.ClusterIPs...)
	s.ExternalIPs = parse(svc.Spec.ExternalIPs...)
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for _, in := range svc.Status.LoadBalancer.Ingress {
			s.LoadBalancerIPs = append(s.LoadBalancerIPs, parse(in.IP)...)
		}
	}
	return s
}

func fromUnstructured(o any, into any, log *slog.Logger) bool {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return false
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		log.Warn("ignoring object", "kind", u.GetKind(), "name", u.GetName(), "error", err)
		return false
	}
	return true
}

// bgpView is the controller's state for the CLI API.
type bgpView struct {
	Applied  bgp.Config
	Problems []string
	SetError string
	Learned  []bgp.Route
}

func (b *bgpController) view() bgpView {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := bgpView{Applied: b.applied, Problems: slices.Clone(b.problems), Learned: slices.Clone(b.learned)}
	if b.setErr != nil {
		v.SetError = b.setErr.Error()
	}
	return v
}

// writeStatus writes this node's BGPNodeStatus from the speaker's sessions.
func (b *bgpController) writeStatus(ctx context.Context) {
	if err := b.tryWriteStatus(ctx); err != nil && ctx.Err() == nil {
		b.log.Warn("BGPNodeStatus not written", "error", err)
	}
}

func (b *bgpController) tryWriteStatus(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	peers, err := b.speaker.Peers(sctx)
	if err != nil {
		return fmt.Errorf("read sessions: %w", err)
	}
	v := b.view()
	st := nodeStatus(v, peers, time.Now())
	res := b.c.dyn.Resource(gvrBGPNodeStatuses)
	u, err := res.Get(sctx, b.node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		u = &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "BGPNodeStatus", "metadata": map[string]any{"name": b.node},
		}}
		u, err = res.Create(sctx, u, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("get or create BGPNodeStatus %s: %w", b.node, err)
	}
	var cur v1alpha1.BGPNodeStatus
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cur); err != nil {
		return fmt.Errorf("BGPNodeStatus %s: %w", b.node, err)
	}
	for _, c := range cur.Status.Conditions { // keep the transition time
		meta.SetStatusCondition(&st.Conditions, c)
	}
	meta.SetStatusCondition(&st.Conditions, readyCondition(st))
	cur.Status = st
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cur)
	if err != nil {
		return err
	}
	if _, err := res.UpdateStatus(sctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update BGPNodeStatus %s: %w", b.node, err)
	}
	return nil
}

// nodeStatus is the pure mapping from the speaker's sessions to the status.
func nodeStatus(v bgpView, peers []bgp.PeerStatus, now time.Time) v1alpha1.BGPNodeStatusStatus {
	st := v1alpha1.BGPNodeStatusStatus{ASNumber: int64(v.Applied.ASN), Advertised: int32(len(v.Applied.Paths)),
		LastUpdated: metav1.NewTime(now.Truncate(time.Second))}
	if v.Applied.RouterID.IsValid() {
		st.RouterID = v.Applied.RouterID.String()
	}
	st.Problems = slices.Clone(v.Problems)
	if v.SetError != "" {
		st.Problems = append([]string{"speaker: " + v.SetError}, st.Problems...)
	}
	if len(st.Problems) > 64 {
		st.Problems = append(st.Problems[:63], fmt.Sprintf("and %d more", len(st.Problems)-63))
	}
	for _, p := range peers {
		ps := v1alpha1.BGPPeerState{PeerIP: p.Address.String(), Source: p.Name, ASNumber: int64(p.ASN), State: string(p.State), LastError: p.Error}
		if node, ok := strings.CutPrefix(p.Name, meshPeerPrefix); ok {
			ps.Source, ps.Node = "mesh", node
		}
		if !p.Since.IsZero() {
			t := metav1.NewTime(p.Since.Truncate(time.Second))
			ps.Since = &t
		}
		for _, f := range p.Families {
			ps.PrefixesSent += int64(f.Sent)
			ps.PrefixesReceived += int64(f.Received)
			name := f.Family.String()
			if f.Reason != "" && !f.NextHop.IsValid() {
				name += " (withheld: " + f.Reason + ")"
			}
			ps.Families = append(ps.Families, name)
		}
		if p.State == bgp.StateEstablished {
			st.EstablishedCount++
		}
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(a, b v1alpha1.BGPPeerState) int { return strings.Compare(a.PeerIP, b.PeerIP) })
	st.PeerCount = int32(len(st.Peers))
	return st
}

func readyCondition(st v1alpha1.BGPNodeStatusStatus) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Established",
		Message: fmt.Sprintf("%d of %d sessions established", st.EstablishedCount, st.PeerCount)}
	var down []string
	for _, p := range st.Peers {
		if p.State != string(bgp.StateEstablished) {
			why := p.State
			if p.LastError != "" {
				why += ": " + p.LastError
			}
			down = append(down, p.PeerIP+" ("+why+")")
		}
	}
	switch {
	case len(down) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, "SessionsDown"
		c.Message += "; down: " + strings.Join(down, ", ")
	case len(st.Problems) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, "ConfigurationProblems"
		c.Message += "; " + st.Problems[0]
	}
	if len(c.Message) > 32000 {
		c.Message = c.Message[:32000]
	}
	return c
}

// errBGPOff answers the CLI when BGP is not enabled.
var errBGPOff = errors.New("BGP is not enabled on this agent (bgp.enabled in its configuration)")

// startServiceRouting starts, in cluster modes, the LoadBalancer IP
// allocator (every agent campaigns, one leads) and, when bgp.enabled, the
// BGP speaker and its controller, both in the background; it fails only
// for a bad configuration.
func (a *Agent) startServiceRouting(ctx context.Context, c clusterClients) error {
	if a.cfg.LoadBalancerIPAM == nil || *a.cfg.LoadBalancerIPAM {
		go func() {
			err := lbipam.Run(ctx, lbipam.Config{Kube: c.kube, Dynamic: c.dyn, Identity: a.cfg.NodeName, Log: a.log})
			if err != nil && ctx.Err() == nil {
				a.log.Error("LoadBalancer IP allocator stopped", "error", err)
			}
		}()
	}
	a.mu.RLock()
	cc := a.cluster
	a.mu.RUnlock()
	var routes LearnedRouteDatapath
	if cc != nil {
		routes, _ = cc.dp.(LearnedRouteDatapath)
	}
	if !a.cfg.BGP.Enabled {
		// Routes learned while BGP was on must not outlive it.
		if routes != nil {
			if res, err := routes.SetLearnedRoutes(ctx, nil); err != nil {
				a.log.Warn("learned routes of an earlier BGP configuration not removed", "error", err)
			} else if res.Deleted > 0 {
				a.log.Info("removed learned routes: BGP is off", "deleted", res.Deleted)
			}
		}
		return nil
	}
	// In the background: pod networking must not wait for BGP (its CRDs
	// may be missing, the informers slow).
	go func() {
		b, err := a.startBGP(ctx, c, routes)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Error("BGP not started; pod networking is not affected", "error", err)
			}
			return
		}
		a.mu.Lock()
		a.bgp = b
		a.mu.Unlock()
	}()
	return nil
}
