package agent

import (
	"fmt"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strait-net/strait/internal/ctl/api"
	"github.com/strait-net/strait/internal/datapath"
)

// DefaultFastPathPinDir holds the fast path's maps and links on the node's
// bpffs.
const DefaultFastPathPinDir = "/sys/fs/bpf/strait"

// FastPathConfig switches the opt-in eBPF fast path (docs/fast-path.md).
type FastPathConfig struct {
	// Enabled attaches the fast path's programs (default off).
	Enabled bool `json:"enabled,omitempty"`
	// PinDir is a directory on a bpffs for its maps and links (default
	// /sys/fs/bpf/strait). The programs stay attached while the agent is
	// down and a restarted agent adopts them.
	PinDir string `json:"pinDir,omitempty"`
}

func (c *Config) validateFastPath() error {
	if c.FastPath.PinDir == "" {
		c.FastPath.PinDir = DefaultFastPathPinDir
	}
	if !filepath.IsAbs(c.FastPath.PinDir) {
		return fmt.Errorf("fastPath.pinDir: %q is not an absolute path", c.FastPath.PinDir)
	}
	if !c.FastPath.Enabled {
		return nil
	}
	if c.IPAMMode == IPAMStatic {
		return fmt.Errorf("fastPath.enabled: needs a cluster mode (ipamMode blocks or node-cidr), not %s", IPAMStatic)
	}
	if c.Flows.Enabled {
		return fmt.Errorf("fastPath.enabled: flow export (flows.enabled) reads conntrack, which the connections the fast path carries skip; enable one of the two")
	}
	return nil
}

// fastPathConfig is the desired fast path: every pool (and node-cidr
// block) is a pod range; traffic arrives from other nodes on the uplink and
// this node's VXLAN devices.
func (cc *clusterController) fastPathConfig() datapath.FastPath {
	fp := datapath.FastPath{Enabled: cc.cfg.FastPath.Enabled, PinDir: cc.cfg.FastPath.PinDir}
	if fp.Enabled {
		fp.PodRanges = cc.natConfig().AllPools
	}
	// Also when off: a fast path switched off removes its managed next
	// hops from the uplink.
	t := cc.topo
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.uplink != "" {
		fp.Uplinks = append(fp.Uplinks, t.uplink)
	}
	if t.self.V4 != nil && t.self.V4.TunnelAddr.IsValid() {
		fp.Uplinks = append(fp.Uplinks, datapath.VTEPDevice4)
	}
	if t.self.V6 != nil && t.self.V6.TunnelAddr.IsValid() {
		fp.Uplinks = append(fp.Uplinks, datapath.VTEPDevice6)
	}
	return fp
}

// applyFastPath attaches the fast path to every pod and uplink, or, when
// it is off, removes one left by an earlier configuration.
func (cc *clusterController) applyFastPath() error {
	fp := cc.fastPathConfig()
	st, err := cc.dp.SetFastPath(fp)
	if err != nil {
		return err
	}
	if fp.Enabled {
		cc.fastStatus.Store(&st)
		cc.log.Debug("fast path", "devices", len(st.Devices), "pods", st.Pods, "nextHops", st.NextHops)
	}
	return nil
}

// fastPathAPI is the fast path's state for straitctl status.
func (cc *clusterController) fastPathAPI() *api.FastPath {
	out := &api.FastPath{PinDir: cc.cfg.FastPath.PinDir}
	st := cc.fastStatus.Load()
	if st == nil {
		out.Error = "not applied yet"
		return out
	}
	out.Devices, out.Pods, out.NextHops = len(st.Devices), st.Pods, st.NextHops
	c, err := cc.dp.FastPathCounters(cc.cfg.FastPath.PinDir)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.Packets = fastPathPackets(c)
	out.Packets["encapsulated"] = c.Encapsulated
	return out
}

// fastPathPackets are the programs' results, each packet counted in one.
func fastPathPackets(c datapath.FastPathCounters) map[string]uint64 {
	return map[string]uint64{"redirected": c.Redirected, "nat": c.NAT, "spoofed": c.Spoofed,
		"notPod": c.NotPod, "fib": c.FIB, "other": c.Other, "local": c.Local}
}

// fastPathCollector exports the programs' counters, read at every scrape.
type fastPathCollector struct {
	cc      *clusterController
	packets *prometheus.Desc
	encap   *prometheus.Desc
	devices *prometheus.Desc
	hops    *prometheus.Desc
}

func newFastPathCollector(cc *clusterController) *fastPathCollector {
	return &fastPathCollector{cc: cc,
		packets: prometheus.NewDesc("strait_fastpath_packets_total",
			"Packets the eBPF fast path's programs saw, by result: redirected, or left to the stack and why.", []string{"result"}, nil),
		encap: prometheus.NewDesc("strait_fastpath_encapsulated_packets_total",
			"Of the redirected packets, those the fast path encapsulated in VXLAN itself and sent out of the uplink.", nil, nil),
		devices: prometheus.NewDesc("strait_fastpath_devices", "Interfaces with the fast path's programs attached.", nil, nil),
		hops: prometheus.NewDesc("strait_fastpath_next_hops",
			"The fast path's kernel-managed next hops on the uplink, by neighbour state (incomplete or failed: unresolvable).", []string{"state"}, nil),
	}
}

func (f *fastPathCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- f.packets
	ch <- f.encap
	ch <- f.devices
	ch <- f.hops
}

func (f *fastPathCollector) Collect(ch chan<- prometheus.Metric) {
	st := f.cc.fastStatus.Load()
	if st == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(f.devices, prometheus.GaugeValue, float64(len(st.Devices)))
	if hops, err := f.cc.dp.FastPathNextHops(); err != nil {
		ch <- prometheus.NewInvalidMetric(f.hops, err)
	} else {
		by := map[string]int{}
		for _, h := range hops {
			by[h.State]++
		}
		// Every state a managed entry can be in, zero included, so that
		// an alert on "failed" has a series.
		for _, state := range []string{"reachable", "stale", "delay", "probe", "incomplete", "failed", "none"} {
			ch <- prometheus.MustNewConstMetric(f.hops, prometheus.GaugeValue, float64(by[state]), state)
		}
	}
	c, err := f.cc.dp.FastPathCounters(f.cc.cfg.FastPath.PinDir)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(f.packets, err)
		ch <- prometheus.NewInvalidMetric(f.encap, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(f.encap, prometheus.CounterValue, float64(c.Encapsulated))
	for result, n := range fastPathPackets(c) {
		ch <- prometheus.MustNewConstMetric(f.packets, prometheus.CounterValue, float64(n), result)
	}
}

// kickFastPath asks the loop to attach the fast path to a pod just wired
// (or forget one just deleted) without waiting for the next resync.
func (cc *clusterController) kickFastPath() {
	select {
	case cc.fastWake <- struct{}{}:
	default:
	}
}
