package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/strait-net/strait/internal/datapath"
)

// metrics are the agent's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg            *prometheus.Registry
	reconcile      *prometheus.HistogramVec
	netlinkOps     *prometheus.CounterVec
	driftRepaired  prometheus.Counter
	cniRequests    *prometheus.CounterVec
	cniDuration    *prometheus.HistogramVec
	poolCapacity   *prometheus.GaugeVec
	poolInUse      *prometheus.GaugeVec
	peers          prometheus.Gauge
	vteps          prometheus.Gauge
	skippedRoutes  prometheus.Gauge
	blockClaims    prometheus.Counter
	blockClaimErrs prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reconcile: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "strait_reconcile_duration_seconds",
			Help:    "Time to apply one peer (kind=peer) or the whole desired state (kind=resync) to the kernel.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"kind"}),
		netlinkOps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strait_netlink_operations_total",
			Help: "Kernel changes made by the overlay, by object and action."}, []string{"object", "action"}),
		driftRepaired: prometheus.NewCounter(prometheus.CounterOpts{Name: "strait_drift_repaired_total",
			Help: "Kernel entries found missing or wrong by a resync and repaired."}),
		cniRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strait_cni_requests_total",
			Help: "CNI requests served, by command and result."}, []string{"command", "result"}),
		cniDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "strait_cni_request_duration_seconds",
			Help: "Time the agent spent on a CNI request.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12)}, []string{"command"}),
		poolCapacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "strait_ipam_block_capacity",
			Help: "Usable addresses in each of this node's blocks (pools in static mode)."}, []string{"block"}),
		poolInUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "strait_ipam_block_allocations",
			Help: "Addresses allocated in each of this node's blocks."}, []string{"block"}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "strait_peers", Help: "Remote nodes with routes in the kernel."}),
		vteps: prometheus.NewGauge(prometheus.GaugeOpts{Name: "strait_vteps", Help: "Remote VTEPs (FDB entries) this node encapsulates to."}),
		skippedRoutes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "strait_routes_skipped",
			Help: "Blocks of other nodes with no route here, see straitctl routes for why."}),
		blockClaims:    prometheus.NewCounter(prometheus.CounterOpts{Name: "strait_ipam_block_claims_total", Help: "Blocks claimed by this node."}),
		blockClaimErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "strait_ipam_block_claim_errors_total", Help: "Failed block claims."}),
	}
	m.reg.MustRegister(m.reconcile, m.netlinkOps, m.driftRepaired, m.cniRequests, m.cniDuration, m.poolCapacity,
		m.poolInUse, m.peers, m.vteps, m.skippedRoutes, m.blockClaims, m.blockClaimErrs,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observeOps(s datapath.OpStats) {
	for _, c := range []struct {
		obj, act string
		n        int
	}{
		{"route", "add", s.RouteAdds}, {"route", "delete", s.RouteDels},
		{"neighbour", "add", s.NeighAdds}, {"neighbour", "delete", s.NeighDels},
		{"fdb", "add", s.FDBAdds}, {"fdb", "delete", s.FDBDels},
	} {
		if c.n > 0 {
			m.netlinkOps.WithLabelValues(c.obj, c.act).Add(float64(c.n))
		}
	}
}

// serveHealth serves /healthz (the process answers), /readyz (the agent can
// serve ADD: 503 with the reason otherwise) and /metrics on addr.
func (a *Agent) serveHealth(ctx context.Context, addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.refreshGauges()
		promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health and metrics listener on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("health server", "error", err)
		}
	}()
	return nil
}

// refreshGauges sets the gauges that are read from state at scrape time.
func (a *Agent) refreshGauges() {
	a.mu.RLock()
	alloc, cc := a.ipamAlloc, a.cluster
	a.mu.RUnlock()
	if alloc != nil {
		a.metrics.poolCapacity.Reset()
		a.metrics.poolInUse.Reset()
		for _, u := range alloc.Usage() {
			a.metrics.poolCapacity.WithLabelValues(u.Prefix.String()).Set(float64(u.Capacity))
			a.metrics.poolInUse.WithLabelValues(u.Prefix.String()).Set(float64(u.InUse))
		}
	}
	if cc != nil {
		peers, skips := cc.desired()
		vteps := map[string]bool{}
		for _, p := range peers {
			for _, r := range p.Routes {
				if r.Encap {
					vteps[r.VTEPMAC.String()+r.VTEPIP.String()] = true
				}
			}
		}
		a.metrics.peers.Set(float64(len(peers)))
		a.metrics.vteps.Set(float64(len(vteps)))
		a.metrics.skippedRoutes.Set(float64(len(skips)))
	}
}

// observeCNI counts one CNI request by command and result.
func (m *metrics) observeCNI(command string, failed bool, d time.Duration) {
	result := "ok"
	if failed {
		result = "error"
	}
	m.cniRequests.WithLabelValues(command, result).Inc()
	m.cniDuration.WithLabelValues(command).Observe(d.Seconds())
}
