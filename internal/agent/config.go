package agent

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"
)

// Config is the agent's configuration file (YAML or JSON).
type Config struct {
	// NodeName identifies this node (default: the hostname).
	NodeName string `json:"nodeName,omitempty"`
	// IPAMMode: "static" (PodCIDRs below, no cluster), "blocks" (Strait's
	// own blocks claimed from IPPools through the API; the default with a
	// cluster) or "node-cidr" (Node.spec.podCIDRs from kube-controller-manager).
	IPAMMode string `json:"ipamMode,omitempty"`
	// PodCIDRs are the node's pod address ranges in static mode: at most one
	// IPv4 and one IPv6 prefix (dual-stack when both are given).
	PodCIDRs []string `json:"podCIDRs,omitempty"`
	// Kubeconfig for the API server; empty uses the in-cluster config.
	// Ignored in static mode.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// DefaultIPPools are created when the cluster has no IPPool.
	DefaultIPPools []DefaultPool `json:"defaultIPPools,omitempty"`
	// VXLAN settings of the overlay.
	VXLAN VXLANConfig `json:"vxlan,omitempty"`
	// NodeCIDREncapsulation is the encapsulation in node-cidr mode.
	NodeCIDREncapsulation string `json:"nodeCIDREncapsulation,omitempty"`
	// ResyncPeriod of the datapath: drift is repaired within it (default 10s).
	ResyncPeriod Duration `json:"resyncPeriod,omitempty"`
	// MTU of pod interfaces; 0 derives it from the uplink (minus 50 bytes
	// for VXLAN over IPv4, 70 over IPv6) in cluster modes and keeps the
	// kernel default in static mode.
	MTU int `json:"mtu,omitempty"`
	// SocketPath the CNI server listens on.
	SocketPath string `json:"socketPath,omitempty"`
	// StateDir holds the crash-safe IPAM store.
	StateDir string `json:"stateDir,omitempty"`
	// HealthAddr serves /healthz, /readyz and /metrics (default
	// 127.0.0.1:9099; "off" disables it).
	HealthAddr string `json:"healthAddr,omitempty"`
	// LogLevel: debug, info, warn, error.
	LogLevel string `json:"logLevel,omitempty"`
	// CNI describes the conflist the agent installs once it is ready.
	CNI CNIConfig `json:"cni,omitempty"`
	// BGP switches the BGP speaker on (bgp_controller.go).
	BGP BGPAgentConfig `json:"bgp,omitempty"`
	// LoadBalancerIPAM runs the LoadBalancer IP allocator (leader-elected
	// among the agents) in cluster modes; default true.
	LoadBalancerIPAM *bool `json:"loadBalancerIPAM,omitempty"`
	// Flows configures the conntrack-based IPFIX flow exporter (flows.go).
	Flows FlowsConfig `json:"flows,omitempty"`
	// FastPath switches the opt-in eBPF fast path (fastpath.go).
	FastPath FastPathConfig `json:"fastPath,omitempty"`
}

// CNIConfig is the CNI network configuration the agent writes when ready, the
// way a DaemonSet's install step does: a runtime sees the network only once
// the agent can serve it.
type CNIConfig struct {
	// ConfDir to write the conflist into; empty writes none.
	ConfDir string `json:"confDir,omitempty"`
	// ConfName of the file (default 10-strait.conflist).
	ConfName string `json:"confName,omitempty"`
	// NetworkName in the conflist (default "strait").
	NetworkName string `json:"networkName,omitempty"`
	// CNIVersion of the conflist (default 1.0.0, which containerd 1.6/1.7
	// understand; set 1.1.0 for runtimes that call GC and STATUS).
	CNIVersion string `json:"cniVersion,omitempty"`
	// LogFile and LogLevel for the CNI shim.
	LogFile  string `json:"logFile,omitempty"`
	LogLevel string `json:"logLevel,omitempty"`
	// Chained plugin configurations after strait (default: portmap and
	// bandwidth with their capabilities).
	Chained []json.RawMessage `json:"chained,omitempty"`
}

// DefaultPool is an IPPool the agent creates when the cluster has none.
type DefaultPool struct {
	Name          string `json:"name"`
	CIDR          string `json:"cidr"`
	BlockSize     int    `json:"blockSize,omitempty"`
	Encapsulation string `json:"encapsulation,omitempty"`
	NATOutgoing   *bool  `json:"natOutgoing,omitempty"`
}

// VXLANConfig configures the overlay devices.
type VXLANConfig struct {
	VNIv4 int `json:"vniV4,omitempty"`
	VNIv6 int `json:"vniV6,omitempty"`
	Port  int `json:"port,omitempty"`
	// TrackOuterPackets keeps the devices' outer UDP packets in conntrack.
	// By default they skip it (nothing NATs them, and each pod connection
	// across the overlay would cost both nodes a second entry); a host
	// firewall that accepts the VXLAN port only as "ct state new" needs
	// this, or a rule that accepts "ct state untracked".
	TrackOuterPackets bool `json:"trackOuterPackets,omitempty"`
}

// Duration is a time.Duration written as "10s" in the config file.
type Duration struct{ time.Duration }

// UnmarshalJSON parses "10s", "1m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// IPAM modes.
const (
	IPAMStatic   = "static"
	IPAMBlocks   = "blocks"
	IPAMNodeCIDR = "node-cidr"
)

// Defaults.
const (
	DefaultSocketPath = "/run/strait/cni.sock"
	DefaultStateDir   = "/var/lib/strait"
)

// LoadConfig reads, defaults and validates a configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	if err := c.Default(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// Default fills unset fields and validates the rest, naming the bad field.
func (c *Config) Default() error {
	if c.NodeName == "" {
		c.NodeName = os.Getenv("NODE_NAME") // the DaemonSet sets it from spec.nodeName
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("nodeName: unset and hostname unknown: %w", err)
		}
		c.NodeName = h
	}
	if c.SocketPath == "" {
		c.SocketPath = DefaultSocketPath
	}
	if c.HealthAddr == "" {
		c.HealthAddr = "127.0.0.1:9099"
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if !filepath.IsAbs(c.SocketPath) {
		return fmt.Errorf("socketPath: must be absolute, got %q", c.SocketPath)
	}
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("stateDir: must be absolute, got %q", c.StateDir)
	}
	if c.IPAMMode == "" {
		c.IPAMMode = IPAMBlocks
		if len(c.PodCIDRs) > 0 {
			c.IPAMMode = IPAMStatic
		}
	}
	switch c.IPAMMode {
	case IPAMStatic:
		if _, err := c.Pools(); err != nil {
			return err
		}
	case IPAMBlocks, IPAMNodeCIDR:
		if len(c.PodCIDRs) > 0 {
			return fmt.Errorf("podCIDRs: only for ipamMode static, not %q", c.IPAMMode)
		}
	default:
		return fmt.Errorf("ipamMode: must be static, blocks or node-cidr, got %q", c.IPAMMode)
	}
	if c.VXLAN.VNIv4 == 0 {
		c.VXLAN.VNIv4 = 4096
	}
	if c.VXLAN.VNIv6 == 0 {
		c.VXLAN.VNIv6 = 4097
	}
	if c.VXLAN.Port == 0 {
		c.VXLAN.Port = 4789
	}
	if c.VXLAN.Port < 1 || c.VXLAN.Port > 65535 {
		return fmt.Errorf("vxlan.port: %d out of range 1..65535", c.VXLAN.Port)
	}
	for _, v := range []struct {
		field string
		vni   int
	}{{"vxlan.vniV4", c.VXLAN.VNIv4}, {"vxlan.vniV6", c.VXLAN.VNIv6}} {
		if v.vni < 1 || v.vni > 1<<24-1 {
			return fmt.Errorf("%s: %d out of range 1..16777215", v.field, v.vni)
		}
	}
	if c.ResyncPeriod.Duration == 0 {
		c.ResyncPeriod.Duration = 10 * time.Second
	}
	switch c.NodeCIDREncapsulation {
	case "":
		c.NodeCIDREncapsulation = EncapVXLANCrossSubnet
	case EncapVXLAN, EncapVXLANCrossSubnet, EncapNone:
	default:
		return fmt.Errorf("nodeCIDREncapsulation: must be VXLAN, VXLANCrossSubnet or None, got %q", c.NodeCIDREncapsulation)
	}
	for i, p := range c.DefaultIPPools {
		if p.Name == "" {
			return fmt.Errorf("defaultIPPools[%d].name: required", i)
		}
		if _, err := netip.ParsePrefix(p.CIDR); err != nil {
			return fmt.Errorf("defaultIPPools[%d].cidr: %w", i, err)
		}
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		return fmt.Errorf("mtu: %d out of range 576..65535", c.MTU)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("logLevel: must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if err := c.Flows.validate(); err != nil {
		return err
	}
	if err := c.validateFastPath(); err != nil {
		return err
	}
	if err := c.BGP.validate(); err != nil {
		return err
	}
	if c.CNI.ConfName == "" {
		c.CNI.ConfName = "10-strait.conflist"
	}
	if c.CNI.NetworkName == "" {
		c.CNI.NetworkName = "strait"
	}
	switch c.CNI.CNIVersion {
	case "":
		c.CNI.CNIVersion = "1.0.0"
	case "0.3.1", "0.4.0", "1.0.0", "1.1.0":
	default:
		return fmt.Errorf("cni.cniVersion: must be one of 0.3.1, 0.4.0, 1.0.0, 1.1.0, got %q", c.CNI.CNIVersion)
	}
	if c.CNI.Chained == nil {
		c.CNI.Chained = []json.RawMessage{
			json.RawMessage(`{"type":"portmap","capabilities":{"portMappings":true},"snat":true}`),
			json.RawMessage(`{"type":"bandwidth","capabilities":{"bandwidth":true}}`),
		}
	}
	return nil
}

// Pools parses PodCIDRs: one or two prefixes, at most one per family.
func (c *Config) Pools() ([]netip.Prefix, error) {
	if len(c.PodCIDRs) == 0 || len(c.PodCIDRs) > 2 {
		return nil, fmt.Errorf("podCIDRs: need one IPv4 and/or one IPv6 prefix, got %d entries", len(c.PodCIDRs))
	}
	var out []netip.Prefix
	seen := map[bool]bool{}
	for i, s := range c.PodCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("podCIDRs[%d]: %w", i, err)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("podCIDRs[%d]: %s has host bits set (did you mean %s?)", i, p, p.Masked())
		}
		if seen[p.Addr().Is4()] {
			return nil, fmt.Errorf("podCIDRs[%d]: a second %s prefix; give at most one per family", i, family(p.Addr()))
		}
		seen[p.Addr().Is4()] = true
		out = append(out, p)
	}
	return out, nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
