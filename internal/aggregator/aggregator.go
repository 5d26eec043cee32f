// Package aggregator is Strait's Flow Aggregator: it collects IPFIX from the nodes' flow exporters (and from
// any IPFIX exporter) over UDP, TCP and TLS, and either correlates the two nodes' records of each connection
// (aggregate mode, internal/aggregator/correlate) or forwards every record with the exporter's address and
// observation domain added (proxy mode). Records go to any number of destinations (IPFIX collectors, a
// JSON-lines file, stdout), each with its own bounded queue. It serves Prometheus metrics, /healthz, /readyz
// and the flows API (package api) on one local HTTP address.
package aggregator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/strait-net/strait/internal/aggregator/api"
	"github.com/strait-net/strait/internal/aggregator/correlate"
	"github.com/strait-net/strait/internal/aggregator/podlabels"
	"github.com/strait-net/strait/internal/flow/ipfix"
)

// Options are the aggregator's dependencies; all optional.
type Options struct {
	Logger *slog.Logger
	// Stdout is where stdout destinations write (default os.Stdout).
	Stdout io.Writer
	// Labeler adds pod labels in proxy mode when recordContents.podLabels is set.
	Labeler PodLabeler
	// Correlator replaces aggregate mode's correlate.Table.
	Correlator Correlator
}

// Aggregator is a configured Flow Aggregator.
type Aggregator struct {
	cfg     *Config
	opts    Options
	log     *slog.Logger
	m       *metrics
	cache   *ipfix.TemplateCache
	col     *collector
	fan     *fanout
	recent  *recentOut
	agg     *aggregatePipeline
	addrs   map[string]string
	ready   atomic.Bool
	wg      sync.WaitGroup
	closers []io.Closer
}

// New builds the aggregator from a validated config (it opens destination files and TLS material).
func New(cfg *Config, opts Options) (*Aggregator, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	a := &Aggregator{cfg: cfg, opts: opts, log: opts.Logger, cache: ipfix.NewTemplateCache(cfg.TemplateTimeout.Duration),
		fan: &fanout{}, addrs: map[string]string{}}
	if cfg.Mode == ModeAggregate && opts.Correlator == nil {
		a.opts.Correlator = correlate.New(correlate.Config{ActiveTimeout: cfg.ActiveFlowRecordTimeout.Duration,
			InactiveTimeout: cfg.InactiveFlowRecordTimeout.Duration, MaxConnections: cfg.MaxConnections})
	}
	a.m = newMetrics(func() float64 { return float64(a.cache.Len()) }, func() float64 {
		if a.opts.Correlator == nil {
			return 0
		}
		return float64(a.opts.Correlator.Len())
	})
	reg := ipfix.NewRegistry()
	for _, d := range cfg.Destinations {
		up := a.m.destUp.WithLabelValues(d.Name)
		var out output
		switch d.Type {
		case DestIPFIX:
			o, err := newIPFIXOut(d, cfg.ObservationDomainID, a.log, up)
			if err != nil {
				a.closeAll()
				return nil, err
			}
			out = o
		case DestFile:
			f, err := openRotating(d.Path, int64(d.MaxSizeMB)<<20, d.MaxBackups)
			if err != nil {
				a.closeAll()
				return nil, fmt.Errorf("destination %s: %w", d.Name, err)
			}
			up.Set(1)
			out = newJSONOut(f, reg, func() { _ = f.Close() })
		case DestStdout:
			up.Set(1)
			out = newJSONOut(opts.Stdout, reg, nil)
		default:
			return nil, fmt.Errorf("destination %s: unknown type %q", d.Name, d.Type)
		}
		a.fan.dests = append(a.fan.dests, newDestination(d.Name, d.QueueSize, out, a.m))
	}
	pool := newBatchPool()
	var pipe pipeline
	if cfg.Mode == ModeAggregate {
		p, err := newAggregatePipeline(a.opts.Correlator, a.fan, pool)
		if err != nil {
			return nil, err
		}
		a.agg, pipe = p, p
	} else {
		if cfg.API.RecentFlows > 0 && cfg.API.Address != "off" {
			a.recent = newRecentOut(cfg.API.RecentFlows)
			a.fan.dests = append(a.fan.dests, newDestination("api", 1024, a.recent, a.m))
		}
		var labeler PodLabeler
		if cfg.RecordContents.PodLabels {
			labeler = opts.Labeler
		}
		pipe = &proxyPipeline{ids: newTemplateIDs(), labeler: labeler, out: a.fan, pool: pool}
	}
	a.col = &collector{log: a.log, cache: a.cache, pipe: pipe, m: a.m, now: time.Now}
	return a, nil
}

type proxyPipeline struct {
	ids     *templateIDs
	labeler PodLabeler
	out     *fanout
	pool    *batchPool
}

func (p *proxyPipeline) session(exporter netip.Addr) sessionSink {
	return newProxySession(exporter, p.ids, p.labeler, p.out, p.pool)
}

func (a *Aggregator) closeAll() {
	for _, d := range a.fan.dests {
		d.out.close()
	}
}

// Start binds the listeners and the HTTP server and starts every goroutine; they stop when ctx ends
// (then Wait).
func (a *Aggregator) Start(ctx context.Context) error {
	if err := a.startPodLabels(ctx); err != nil {
		return err
	}
	for _, d := range a.fan.dests {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); d.run(ctx) }()
	}
	if a.agg != nil {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.agg.run(ctx) }()
	}
	addrs, closers, err := a.col.listen(ctx, a.cfg)
	if err != nil {
		return err
	}
	a.closers = closers
	for k, v := range addrs {
		a.addrs[k] = v
	}
	if a.cfg.API.Address != "off" {
		ln, err := net.Listen("tcp", a.cfg.API.Address)
		if err != nil {
			a.closeListeners()
			return fmt.Errorf("api.address %s: %w", a.cfg.API.Address, err)
		}
		a.addrs["api"] = ln.Addr().String()
		srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("api server", "err", err)
			}
		}()
		context.AfterFunc(ctx, func() { _ = srv.Close() })
	}
	context.AfterFunc(ctx, a.closeListeners)
	a.ready.Store(true)
	a.log.Info("flow aggregator started", "mode", a.cfg.Mode, "listeners", a.addrs)
	return nil
}

func (a *Aggregator) closeListeners() {
	for _, c := range a.closers {
		_ = c.Close()
	}
}

// Addr returns the bound address of "udp", "tcp", "tls" or "api" ("" if not configured).
func (a *Aggregator) Addr(kind string) string { return a.addrs[kind] }

// Wait waits for every goroutine after ctx ended.
func (a *Aggregator) Wait() {
	a.col.wg.Wait()
	a.wg.Wait()
}

// startPodLabels gives proxy mode its pod-label source when
// recordContents.podLabels asks for labels and none was injected: a pod
// informer on the configured API server, synced before records flow.
func (a *Aggregator) startPodLabels(ctx context.Context) error {
	p, ok := a.col.pipe.(*proxyPipeline)
	if !ok || !a.cfg.RecordContents.PodLabels || p.labeler != nil {
		return nil
	}
	kube, err := podlabels.Client(a.cfg.Kubernetes.Kubeconfig)
	if err != nil {
		return fmt.Errorf("recordContents.podLabels: %w", err)
	}
	idx, err := podlabels.Start(ctx, kube, 30*time.Second)
	if err != nil {
		return fmt.Errorf("recordContents.podLabels: %w", err)
	}
	p.labeler = idx
	a.log.Info("pod labels from the API server", "kubeconfig", a.cfg.Kubernetes.Kubeconfig)
	return nil
}

// Run starts the aggregator and serves until ctx ends.
func Run(ctx context.Context, cfg *Config, opts Options) error {
	a, err := New(cfg, opts)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		cancel()
		a.Wait()
		return err
	}
	<-ctx.Done()
	a.Wait()
	return nil
}

func (a *Aggregator) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET "+api.FlowsPath, a.serveFlows)
	return mux
}

func (a *Aggregator) serveFlows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	top := 0
	if s := q.Get("top"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			http.Error(w, "top: want a non-negative integer", http.StatusBadRequest)
			return
		}
		top = n
	}
	var ns, name string
	if p := q.Get("pod"); p != "" {
		var ok bool
		ns, name, ok = strings.Cut(p, "/")
		if !ok || ns == "" || name == "" {
			http.Error(w, "pod: want NAMESPACE/NAME", http.StatusBadRequest)
			return
		}
	}
	resp := api.FlowsResponse{Mode: string(a.cfg.Mode)}
	var all []api.Flow
	switch {
	case a.agg != nil:
		all = a.agg.flows()
	case a.recent != nil:
		all = a.recent.list()
	}
	flows := all[:0]
	for _, f := range all {
		if name == "" || (f.SourceNamespace == ns && f.SourcePod == name) ||
			(f.DestinationNamespace == ns && f.DestinationPod == name) {
			flows = append(flows, f)
		}
	}
	resp.Total = len(flows)
	if top > 0 {
		sort.Slice(flows, func(i, j int) bool {
			return flows[i].Bytes+flows[i].ReverseBytes > flows[j].Bytes+flows[j].ReverseBytes
		})
		if len(flows) > top {
			flows = flows[:top]
		}
	}
	resp.Flows = flows
	if resp.Flows == nil {
		resp.Flows = []api.Flow{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}
