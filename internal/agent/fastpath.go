package agent

import (
	"fmt"
	"path/filepath"

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
	if !fp.Enabled {
		return fp
	}
	fp.PodRanges = cc.natConfig().AllPools
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
		cc.log.Debug("fast path", "devices", len(st.Devices), "pods", st.Pods)
	}
	return nil
}

// kickFastPath asks the loop to attach the fast path to a pod just wired
// (or forget one just deleted) without waiting for the next resync.
func (cc *clusterController) kickFastPath() {
	select {
	case cc.fastWake <- struct{}{}:
	default:
	}
}
