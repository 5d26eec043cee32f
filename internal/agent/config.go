package agent

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Config is the agent's configuration file (YAML or JSON).
type Config struct {
	// NodeName identifies this node (default: the hostname).
	NodeName string `json:"nodeName,omitempty"`
	// PodCIDRs are the node's pod address ranges: at most one IPv4 and one
	// IPv6 prefix (dual-stack when both are given).
	PodCIDRs []string `json:"podCIDRs"`
	// MTU of pod interfaces; 0 keeps the kernel default.
	MTU int `json:"mtu,omitempty"`
	// SocketPath the CNI server listens on.
	SocketPath string `json:"socketPath,omitempty"`
	// StateDir holds the crash-safe IPAM store.
	StateDir string `json:"stateDir,omitempty"`
	// LogLevel: debug, info, warn, error.
	LogLevel string `json:"logLevel,omitempty"`
	// CNI describes the conflist the agent installs once it is ready.
	CNI CNIConfig `json:"cni,omitempty"`
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
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("nodeName: unset and hostname unknown: %w", err)
		}
		c.NodeName = h
	}
	if c.SocketPath == "" {
		c.SocketPath = DefaultSocketPath
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
	if _, err := c.Pools(); err != nil {
		return err
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		return fmt.Errorf("mtu: %d out of range 576..65535", c.MTU)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("logLevel: must be debug, info, warn or error, got %q", c.LogLevel)
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
