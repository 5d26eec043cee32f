package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/strait-net/strait/internal/aggregator/api"
	"github.com/strait-net/strait/internal/flow"
	"github.com/strait-net/strait/internal/ipam"
	"github.com/strait-net/strait/internal/podindex"
)

// FlowsConfig is the "flows" section: the conntrack-based IPFIX flow
// exporter (docs/flows.md).
type FlowsConfig struct {
	// Enabled turns the exporter on (default off).
	Enabled bool `json:"enabled,omitempty"`
	// Collector is the aggregator's (or any IPFIX collector's) host:port.
	Collector string `json:"collector,omitempty"`
	// Transport: tcp (default), tls or udp.
	Transport string `json:"transport,omitempty"`
	// ActiveTimeout (default 5s) and IdleTimeout (default 15s).
	ActiveTimeout Duration `json:"activeTimeout,omitempty"`
	IdleTimeout   Duration `json:"idleTimeout,omitempty"`
	// TemplateRefresh over UDP (default 60s).
	TemplateRefresh Duration `json:"templateRefresh,omitempty"`
	// ObservationDomain of the messages (default 1).
	ObservationDomain uint32 `json:"observationDomain,omitempty"`
	// ServiceCIDRs are the cluster's Service ranges: flows to them are
	// pod-related too (default 10.96.0.0/12).
	ServiceCIDRs []string `json:"serviceCIDRs,omitempty"`
	// PodLabels adds the pods' labels to the records.
	PodLabels bool `json:"podLabels,omitempty"`
	// MaxFlows bounds the flow table (default 1,000,000).
	MaxFlows int `json:"maxFlows,omitempty"`
	// TLS: the certificates for transport tls, from PEM files or a Secret.
	TLS FlowsTLS `json:"tls,omitempty"`
}

// flowsSecretNamespace holds flows.tls.secretName (the agent's namespace,
// as for the BGP passwords).
const flowsSecretNamespace = "strait-system"

// FlowsTLS are the certificates of the tls transport: CAFile verifies the
// collector; CertFile and KeyFile authenticate this agent (mutual TLS).
// SecretName instead takes them from a Secret in strait-system with the
// keys ca.crt, tls.crt and tls.key (the layout cert-manager writes). Files
// and the Secret are read again on every connection attempt, so rotated
// certificates are used from the next reconnect on.
type FlowsTLS struct {
	SecretName string `json:"secretName,omitempty"`
	CAFile     string `json:"caFile,omitempty"`
	CertFile   string `json:"certFile,omitempty"`
	KeyFile    string `json:"keyFile,omitempty"`
	ServerName string `json:"serverName,omitempty"`
}

// validate defaults and checks the section, naming the bad field.
func (f *FlowsConfig) validate() error {
	if !f.Enabled {
		return nil
	}
	if _, _, err := net.SplitHostPort(f.Collector); err != nil {
		return fmt.Errorf("flows.collector: want host:port, got %q", f.Collector)
	}
	switch f.Transport {
	case "":
		f.Transport = flow.TransportTCP
	case flow.TransportTCP, flow.TransportUDP:
	case flow.TransportTLS:
		if f.TLS.SecretName != "" {
			if f.TLS.CAFile != "" || f.TLS.CertFile != "" || f.TLS.KeyFile != "" {
				return fmt.Errorf("flows.tls.secretName: give the Secret or the files (caFile, certFile, keyFile), not both")
			}
			break
		}
		if f.TLS.CAFile == "" {
			return fmt.Errorf("flows.tls.caFile: required with transport tls (or flows.tls.secretName)")
		}
		if (f.TLS.CertFile == "") != (f.TLS.KeyFile == "") {
			return fmt.Errorf("flows.tls: give both certFile and keyFile, or neither")
		}
	default:
		return fmt.Errorf("flows.transport: must be tcp, tls or udp, got %q", f.Transport)
	}
	for name, d := range map[string]*Duration{"activeTimeout": &f.ActiveTimeout, "idleTimeout": &f.IdleTimeout, "templateRefresh": &f.TemplateRefresh} {
		if d.Duration < 0 {
			return fmt.Errorf("flows.%s: negative", name)
		}
	}
	if f.ActiveTimeout.Duration == 0 {
		f.ActiveTimeout.Duration = 5 * time.Second
	}
	if f.IdleTimeout.Duration == 0 {
		f.IdleTimeout.Duration = 15 * time.Second
	}
	if len(f.ServiceCIDRs) == 0 {
		f.ServiceCIDRs = []string{"10.96.0.0/12"}
	}
	if _, err := f.serviceCIDRs(); err != nil {
		return err
	}
	if f.MaxFlows < 0 {
		return fmt.Errorf("flows.maxFlows: negative")
	}
	return nil
}

func (f *FlowsConfig) serviceCIDRs() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range f.ServiceCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("flows.serviceCIDRs[%d]: %w", i, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// flowTracker is the optional part of the datapath that makes conntrack
// track pod traffic (the Linux datapath has it).
type flowTracker interface {
	EnableFlowTracking(ctx context.Context) error
}

// flows is the running exporter and what feeds it.
type flows struct {
	exp   *flow.Exporter
	scope *flow.PrefixScope
	pods  *podIndex
}

// source returns how the exporter gets its TLS configuration on each
// connection attempt. Files are checked once here, so a bad path fails the
// start; a Secret may appear later (the exporter retries with backoff).
func (t FlowsTLS) source(cc *clusterController) (func(context.Context) (*tls.Config, error), error) {
	if t.SecretName == "" {
		if _, err := flow.ClientTLS(t.CAFile, t.CertFile, t.KeyFile, t.ServerName); err != nil {
			return nil, fmt.Errorf("flows.tls: %w", err)
		}
		return func(context.Context) (*tls.Config, error) {
			return flow.ClientTLS(t.CAFile, t.CertFile, t.KeyFile, t.ServerName)
		}, nil
	}
	if cc == nil {
		return nil, fmt.Errorf("flows.tls.secretName: needs the Kubernetes API (a cluster IPAM mode)")
	}
	kube := cc.c.kube
	return func(ctx context.Context) (*tls.Config, error) {
		return tlsFromSecret(ctx, kube, flowsSecretNamespace, t.SecretName, t.ServerName)
	}, nil
}

// tlsFromSecret builds the exporter's TLS configuration from the Secret
// namespace/name: ca.crt is required, tls.crt and tls.key both or neither.
func tlsFromSecret(ctx context.Context, kube kubernetes.Interface, namespace, name, serverName string) (*tls.Config, error) {
	s, err := kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("flows.tls.secretName: Secret %s/%s: %w", namespace, name, err)
	}
	if len(s.Data["ca.crt"]) == 0 {
		return nil, fmt.Errorf("flows.tls.secretName: Secret %s/%s has no key ca.crt", namespace, name)
	}
	cfg, err := flow.ClientTLSFromPEM(s.Data["ca.crt"], s.Data["tls.crt"], s.Data["tls.key"], serverName)
	if err != nil {
		return nil, fmt.Errorf("flows.tls.secretName: Secret %s/%s: %w", namespace, name, err)
	}
	return cfg, nil
}

// startFlows enables flow tracking in the datapath and starts the exporter
// (when configured). It runs until ctx ends.
func (a *Agent) startFlows(ctx context.Context, dp PodDatapath, alloc *ipam.Allocator, cc *clusterController) error {
	fc := a.cfg.Flows
	if !fc.Enabled {
		return nil
	}
	ft, ok := dp.(flowTracker)
	if !ok {
		return fmt.Errorf("flows: the datapath cannot enable flow tracking")
	}
	if err := ft.EnableFlowTracking(ctx); err != nil {
		return fmt.Errorf("flows: %w", err)
	}
	svcCIDRs, err := fc.serviceCIDRs()
	if err != nil {
		return err
	}
	ecfg := flow.ExportConfig{Address: fc.Collector, Transport: fc.Transport, ObservationDomain: fc.ObservationDomain,
		TemplateRefresh: fc.TemplateRefresh.Duration}
	if fc.Transport == flow.TransportTLS {
		if ecfg.TLSSource, err = fc.TLS.source(cc); err != nil {
			return err
		}
	}
	f := &flows{scope: &flow.PrefixScope{}, pods: newPodIndex(a.cfg.NodeName, alloc)}
	f.refreshScope(alloc, cc, svcCIDRs)
	exp, err := flow.New(flow.Config{
		Node: a.cfg.NodeName, Labels: fc.PodLabels, Logger: a.log,
		Table: flow.TableConfig{Scope: f.scope, Pods: f.pods, Services: f.pods.service,
			ActiveTimeout: fc.ActiveTimeout.Duration, IdleTimeout: fc.IdleTimeout.Duration, MaxFlows: fc.MaxFlows},
		Export: ecfg,
	})
	if err != nil {
		return err
	}
	f.exp = exp
	if cc != nil {
		if err := f.pods.watch(ctx, cc); err != nil {
			return err
		}
	}
	a.metrics.reg.MustRegister(flowCollector{exp})
	a.mu.Lock()
	a.flowExp = f
	a.mu.Unlock()
	go func() {
		if err := exp.Run(ctx); err != nil {
			a.log.Error("flow exporter stopped", "error", err)
		}
	}()
	// Blocks come and go.
	go wait.UntilWithContext(ctx, func(context.Context) { f.refreshScope(alloc, cc, svcCIDRs) }, 10*time.Second)
	a.log.Info("exporting flows", "collector", fc.Collector, "transport", fc.Transport)
	return nil
}

// refreshScope sets this node's pod blocks, all pod ranges of the cluster
// and the Service ranges.
func (f *flows) refreshScope(alloc *ipam.Allocator, cc *clusterController, svc []netip.Prefix) {
	local := alloc.Pools()
	cluster := slices.Clone(local)
	if cc != nil {
		t := cc.topo
		t.mu.Lock()
		for _, p := range t.pools {
			cluster = append(cluster, p.CIDR)
		}
		for _, b := range t.blocks {
			cluster = append(cluster, b.CIDR)
		}
		t.mu.Unlock()
	}
	f.scope.Set(local, cluster, svc)
}

// podIndex resolves addresses to pods: this node's pods from the IPAM
// allocations (which record namespace and name), all pods and Services from
// informers in the cluster modes (labels, remote pods, ClusterIPs).
type podIndex struct {
	node  string
	alloc *ipam.Allocator
	pods  *podindex.Index

	mu       sync.RWMutex
	services map[svcKey]string
}

type svcKey struct {
	addr  netip.Addr
	port  uint16
	proto uint8
}

func newPodIndex(node string, alloc *ipam.Allocator) *podIndex {
	return &podIndex{node: node, alloc: alloc, pods: podindex.New(), services: map[svcKey]string{}}
}

// ResolvePod implements flow.PodResolver.
func (p *podIndex) ResolvePod(a netip.Addr) (flow.Pod, bool) {
	x, ok := p.pods.Lookup(a)
	pod := flow.Pod{Name: x.Name, Namespace: x.Namespace, Node: x.Node, Labels: x.Labels}
	if al, mine := p.alloc.Owner(a); mine && al.PodName != "" {
		if !ok || x.Name != al.PodName || x.Namespace != al.PodNamespace {
			pod.Labels = nil // the informer has not seen this pod (yet)
		}
		pod.Name, pod.Namespace, pod.Node = al.PodName, al.PodNamespace, p.node
		return pod, true
	}
	return pod, ok
}

func (p *podIndex) service(a netip.Addr, port uint16, proto uint8) string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.services[svcKey{a, port, proto}]
}

// watch starts pod and Service informers; they keep only what flows need.
func (p *podIndex) watch(ctx context.Context, cc *clusterController) error {
	f := informers.NewSharedInformerFactory(cc.c.kube, 0)
	svcInf := f.Core().V1().Services().Informer()
	if _, err := p.pods.Watch(f.Core().V1().Pods().Informer()); err != nil {
		return fmt.Errorf("flows: %w", err)
	}
	_, err := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { p.setService(o, false) },
		UpdateFunc: func(old, o any) { p.setService(old, true); p.setService(o, false) },
		DeleteFunc: func(o any) { p.setService(o, true) },
	})
	if err != nil {
		return fmt.Errorf("flows: service informer: %w", err)
	}
	f.Start(ctx.Done())
	return nil
}

func (p *podIndex) setService(o any, remove bool) {
	svc, ok := unwrapTombstone(o).(*corev1.Service)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ip := range svc.Spec.ClusterIPs {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue
		}
		for _, port := range svc.Spec.Ports {
			k := svcKey{a, uint16(port.Port), protoNumber(port.Protocol)}
			if remove {
				delete(p.services, k)
				continue
			}
			name := port.Name
			if name == "" {
				name = strconv.Itoa(int(port.Port))
			}
			p.services[k] = svc.Namespace + "/" + svc.Name + ":" + name
		}
	}
}

func protoNumber(p corev1.Protocol) uint8 {
	switch p {
	case corev1.ProtocolUDP:
		return 17
	case corev1.ProtocolSCTP:
		return 132
	}
	return 6
}

// registerFlowsAPI serves GET /api/v1/flows?pod=NS/NAME&top=N from the
// exporter's live table (503 while the exporter is off).
func (a *Agent) registerFlowsAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.FlowsPath, func(w http.ResponseWriter, r *http.Request) {
		a.mu.RLock()
		f := a.flowExp
		a.mu.RUnlock()
		if f == nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the flow exporter is not enabled on this node (config section flows)"})
			return
		}
		resp, err := flowsResponse(f.exp.Flows(), r.URL.Query().Get("pod"), r.URL.Query().Get("top"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, resp)
	})
}

// flowsResponse filters and renders flows (sorted by bytes, largest first).
func flowsResponse(fs []flow.Flow, pod, top string) (api.FlowsResponse, error) {
	resp := api.FlowsResponse{Mode: "agent", Flows: []api.Flow{}}
	var ns, name string
	if pod != "" {
		var ok bool
		if ns, name, ok = strings.Cut(pod, "/"); !ok || ns == "" || name == "" {
			return resp, fmt.Errorf("pod: want NAMESPACE/NAME, got %q", pod)
		}
	}
	n := -1
	if top != "" {
		v, err := strconv.Atoi(top)
		if err != nil || v < 0 {
			return resp, fmt.Errorf("top: want a number >= 0, got %q", top)
		}
		n = v
	}
	for _, f := range fs {
		if pod != "" && !(f.SrcPod.Namespace == ns && f.SrcPod.Name == name) && !(f.DstPod.Namespace == ns && f.DstPod.Name == name) {
			continue
		}
		resp.Total++
		if n >= 0 && len(resp.Flows) >= n {
			continue
		}
		dst, dport := f.Orig.Dst, f.Orig.DstPort
		if f.PostNATDst.IsValid() {
			dst, dport = f.PostNATDst, f.PostNATDstPort
		}
		resp.Flows = append(resp.Flows, api.Flow{
			SourceIP: f.Orig.Src.String(), DestinationIP: dst.String(), SourcePort: f.Orig.SrcPort, DestinationPort: dport,
			Protocol: f.Orig.Proto, SourcePod: f.SrcPod.Name, SourceNamespace: f.SrcPod.Namespace, SourceNode: f.SrcPod.Node,
			DestinationPod: f.DstPod.Name, DestinationNamespace: f.DstPod.Namespace, DestinationNode: f.DstPod.Node,
			DestinationService: f.Service, FlowType: flowTypeName(f.FlowType), Start: f.Start, End: f.End,
			Packets: f.Packets, Bytes: f.Bytes, ReversePackets: f.ReversePackets, ReverseBytes: f.ReverseBytes,
		})
	}
	return resp, nil
}

func flowTypeName(t flow.FlowType) string {
	if s := t.String(); s != "unknown" {
		return s
	}
	return ""
}

// flowCollector exposes the exporter's Stats as Prometheus metrics.
type flowCollector struct{ exp *flow.Exporter }

func (c flowCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c flowCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.exp.Stats()
	gauge := func(name, help string, v float64) {
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help, nil, nil), prometheus.GaugeValue, v)
	}
	counter := func(name, help string, v uint64) {
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help, nil, nil), prometheus.CounterValue, float64(v))
	}
	gauge("strait_flows_active", "Connections in the flow exporter's table.", float64(s.Flows))
	connected := 0.0
	if s.Connected {
		connected = 1
	}
	gauge("strait_flows_collector_connected", "1 while the exporter is connected to its collector.", connected)
	counter("strait_flows_conntrack_dumps_total", "Conntrack dumps read.", s.Dumps)
	counter("strait_flows_conntrack_events_total", "Conntrack events read.", s.Events)
	counter("strait_flows_conntrack_overflows_total", "Conntrack event socket overflows (each followed by a resync dump).", s.Overflows)
	counter("strait_flows_conntrack_missed_destroys_total", "Connections found gone by a dump (DESTROY event lost).", s.MissedDestroys)
	counter("strait_flows_filtered_total", "Connections ignored as not pod-related.", s.Filtered)
	counter("strait_flows_table_full_total", "Connections refused at the table limit.", s.TableFull)
	counter("strait_flows_records_sent_total", "Flow records written to the collector.", s.RecordsSent)
	counter("strait_flows_records_dropped_total", "Flow records dropped at a full queue while the collector was unreachable.", s.RecordsDropped)
	counter("strait_flows_records_lost_total", "Flow records lost in a failed write.", s.RecordsLost)
	counter("strait_flows_reconnects_total", "Reconnections to the collector.", s.Reconnects)
}
