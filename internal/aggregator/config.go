package aggregator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Mode is the aggregator's mode.
type Mode string

// Modes.
const (
	ModeAggregate Mode = "aggregate"
	ModeProxy     Mode = "proxy"
)

// Config is the aggregator's configuration file (YAML). Zero values take the defaults noted.
type Config struct {
	// Mode: aggregate (correlate the two nodes' records of a connection) or proxy (forward every record with
	// originalExporterIPv4/IPv6Address and originalObservationDomainId added). Default proxy.
	Mode Mode `json:"mode"`
	// ObservationDomainID of the aggregator's own IPFIX output (default 1).
	ObservationDomainID uint32 `json:"observationDomainID"`
	// ActiveFlowRecordTimeout and InactiveFlowRecordTimeout (aggregate mode; default 60s / 90s).
	ActiveFlowRecordTimeout   Duration `json:"activeFlowRecordTimeout"`
	InactiveFlowRecordTimeout Duration `json:"inactiveFlowRecordTimeout"`
	// MaxConnections bounds aggregate mode's table (default 1000000).
	MaxConnections int `json:"maxConnections"`
	// TemplateTimeout is how long a template received over UDP lives without refresh (default 30m).
	TemplateTimeout Duration `json:"templateTimeout"`
	// Collector: the listeners; at least one.
	Collector CollectorConfig `json:"collector"`
	// Destinations: where records go; at least one.
	Destinations []DestinationConfig `json:"destinations"`
	// RecordContents: optional additions to forwarded records.
	RecordContents RecordContents `json:"recordContents"`
	// API: metrics, health and the flows API.
	API APIConfig `json:"api"`
	// Kubernetes is the API server that recordContents.podLabels reads pods from.
	Kubernetes KubernetesConfig `json:"kubernetes"`
}

// KubernetesConfig locates the API server.
type KubernetesConfig struct {
	// Kubeconfig is a kubeconfig file; empty: the in-cluster service account.
	Kubeconfig string `json:"kubeconfig"`
}

// CollectorConfig lists the listeners.
type CollectorConfig struct {
	UDP *UDPListener `json:"udp"`
	TCP *TCPListener `json:"tcp"`
	TLS *TLSListener `json:"tls"`
}

// UDPListener receives IPFIX over UDP.
type UDPListener struct {
	Address string `json:"address"`
	// BufferSize is the receive buffer per datagram (default 2048; larger datagrams are counted malformed).
	BufferSize int `json:"bufferSize"`
}

// TCPListener receives IPFIX over TCP.
type TCPListener struct {
	Address string `json:"address"`
}

// TLSListener receives IPFIX over TLS with mutual authentication: clients must present a certificate signed
// by CAFile.
type TLSListener struct {
	Address  string `json:"address"`
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	CAFile   string `json:"caFile"`
}

// Destination types.
const (
	DestIPFIX  = "ipfix"
	DestFile   = "file"
	DestStdout = "stdout"
)

// DestinationConfig is one destination.
type DestinationConfig struct {
	// Name identifies the destination in metrics and logs (default: type and index).
	Name string `json:"name"`
	// Type: ipfix, file (JSON lines) or stdout (JSON lines).
	Type string `json:"type"`
	// QueueSize is the destination's queue in messages' worth of records (default 1024); when full, records
	// for this destination are dropped and counted.
	QueueSize int `json:"queueSize"`

	// ipfix: Address host:port, Transport udp|tcp|tls (default tcp), TemplateRefresh for UDP (default 60s),
	// MaxMessageSize (default 1400 on UDP, 65535 otherwise), TLS client certificate and CA.
	Address         string          `json:"address"`
	Transport       string          `json:"transport"`
	TemplateRefresh Duration        `json:"templateRefresh"`
	MaxMessageSize  int             `json:"maxMessageSize"`
	TLS             *TLSClientFiles `json:"tls"`

	// file: Path, rotated when it exceeds MaxSizeMB (default 100), keeping MaxBackups old files (default 3).
	Path       string `json:"path"`
	MaxSizeMB  int    `json:"maxSizeMB"`
	MaxBackups int    `json:"maxBackups"`
}

// TLSClientFiles are an IPFIX destination's TLS client certificate and the CA that signs the collector's.
type TLSClientFiles struct {
	CertFile   string `json:"certFile"`
	KeyFile    string `json:"keyFile"`
	CAFile     string `json:"caFile"`
	ServerName string `json:"serverName"`
}

// RecordContents selects optional record contents.
type RecordContents struct {
	// PodLabels adds sourcePodLabels/destinationPodLabels (Strait elements 109/110) in proxy mode to records
	// that do not carry them, from a pod informer on the API server of kubernetes (RBAC: list and watch
	// pods). In aggregate mode the agents add them (flows.podLabels of the agent configuration).
	PodLabels bool `json:"podLabels"`
}

// APIConfig is the HTTP server for /metrics, /healthz, /readyz and the flows API.
type APIConfig struct {
	// Address (default 127.0.0.1:10380); "off" disables the server.
	Address string `json:"address"`
	// RecentFlows bounds proxy mode's table of recent records served by the flows API (default 10000; 0 keeps
	// the default, -1 disables).
	RecentFlows int `json:"recentFlows"`
}

// Duration is a time.Duration written as "30s" in the config. A bad value is reported by Validate, with the
// field's name.
type Duration struct {
	time.Duration
	err error
}

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		d.err = fmt.Errorf("%s: want a duration string like \"30s\"", b)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.err = err
		return nil
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// LoadConfig reads, defaults and validates a config file; unknown fields are errors.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read aggregator config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig parses, defaults and validates config YAML.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("parse aggregator config: %w", err)
	}
	c.Default()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Default fills in defaults.
func (c *Config) Default() {
	if c.Mode == "" {
		c.Mode = ModeProxy
	}
	if c.ObservationDomainID == 0 {
		c.ObservationDomainID = 1
	}
	def := func(d *Duration, v time.Duration) {
		if d.Duration == 0 {
			d.Duration = v
		}
	}
	def(&c.ActiveFlowRecordTimeout, 60*time.Second)
	def(&c.InactiveFlowRecordTimeout, 90*time.Second)
	def(&c.TemplateTimeout, 30*time.Minute)
	if c.MaxConnections == 0 {
		c.MaxConnections = 1_000_000
	}
	if u := c.Collector.UDP; u != nil && u.BufferSize == 0 {
		u.BufferSize = 2048
	}
	for i := range c.Destinations {
		d := &c.Destinations[i]
		if d.Name == "" {
			d.Name = fmt.Sprintf("%s-%d", d.Type, i)
		}
		if d.QueueSize == 0 {
			d.QueueSize = 1024
		}
		if d.Type == DestIPFIX {
			if d.Transport == "" {
				d.Transport = "tcp"
			}
			def(&d.TemplateRefresh, 60*time.Second)
			if d.MaxMessageSize == 0 {
				d.MaxMessageSize = 65535
				if d.Transport == "udp" {
					d.MaxMessageSize = 1400
				}
			}
		}
		if d.Type == DestFile {
			if d.MaxSizeMB == 0 {
				d.MaxSizeMB = 100
			}
			if d.MaxBackups == 0 {
				d.MaxBackups = 3
			}
		}
	}
	switch c.API.Address {
	case "":
		c.API.Address = "127.0.0.1:10380"
	case "false": // YAML 1.1 reads an unquoted off as false
		c.API.Address = "off"
	}
	if c.API.RecentFlows == 0 {
		c.API.RecentFlows = 10000
	}
}

// Validate checks the config; every error names the field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	hostPort := func(field, v string) {
		if v == "" {
			bad(field, "required")
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(field, "%q is not host:port: %v", v, err)
		}
	}
	file := func(field, v string) {
		if v == "" {
			bad(field, "required")
			return
		}
		if _, err := os.Stat(v); err != nil {
			bad(field, "%v", err)
		}
	}
	if c.Mode != ModeAggregate && c.Mode != ModeProxy {
		bad("mode", "%q: must be aggregate or proxy", c.Mode)
	}
	if c.RecordContents.PodLabels && c.Mode == ModeAggregate {
		bad("recordContents.podLabels", "proxy mode only: in aggregate mode the agents add the labels (flows.podLabels of the agent configuration)")
	}
	if c.Kubernetes.Kubeconfig != "" {
		file("kubernetes.kubeconfig", c.Kubernetes.Kubeconfig)
	}
	for _, d := range []struct {
		f string
		v Duration
	}{{"activeFlowRecordTimeout", c.ActiveFlowRecordTimeout}, {"inactiveFlowRecordTimeout", c.InactiveFlowRecordTimeout},
		{"templateTimeout", c.TemplateTimeout}} {
		if d.v.err != nil {
			bad(d.f, "%v", d.v.err)
		} else if d.v.Duration < 0 {
			bad(d.f, "must not be negative")
		}
	}
	if c.MaxConnections < 0 {
		bad("maxConnections", "must not be negative")
	}
	col := c.Collector
	if col.UDP == nil && col.TCP == nil && col.TLS == nil {
		bad("collector", "at least one of udp, tcp, tls is required")
	}
	if col.UDP != nil {
		hostPort("collector.udp.address", col.UDP.Address)
		if col.UDP.BufferSize < 64 || col.UDP.BufferSize > 65535 {
			bad("collector.udp.bufferSize", "%d: must be 64..65535", col.UDP.BufferSize)
		}
	}
	if col.TCP != nil {
		hostPort("collector.tcp.address", col.TCP.Address)
	}
	if col.TLS != nil {
		hostPort("collector.tls.address", col.TLS.Address)
		file("collector.tls.certFile", col.TLS.CertFile)
		file("collector.tls.keyFile", col.TLS.KeyFile)
		file("collector.tls.caFile", col.TLS.CAFile)
	}
	if len(c.Destinations) == 0 {
		bad("destinations", "at least one destination is required")
	}
	names := map[string]bool{}
	for i, d := range c.Destinations {
		f := fmt.Sprintf("destinations[%d]", i)
		if names[d.Name] {
			bad(f+".name", "%q used twice", d.Name)
		}
		names[d.Name] = true
		if d.QueueSize < 1 {
			bad(f+".queueSize", "must be positive")
		}
		switch d.Type {
		case DestIPFIX:
			hostPort(f+".address", d.Address)
			switch d.Transport {
			case "udp", "tcp":
			case "tls":
				if d.TLS == nil {
					bad(f+".tls", "required with transport tls")
				} else {
					file(f+".tls.certFile", d.TLS.CertFile)
					file(f+".tls.keyFile", d.TLS.KeyFile)
					file(f+".tls.caFile", d.TLS.CAFile)
				}
			default:
				bad(f+".transport", "%q: must be udp, tcp or tls", d.Transport)
			}
			if d.MaxMessageSize < 256 || d.MaxMessageSize > 65535 {
				bad(f+".maxMessageSize", "%d: must be 256..65535", d.MaxMessageSize)
			}
			if d.TemplateRefresh.err != nil {
				bad(f+".templateRefresh", "%v", d.TemplateRefresh.err)
			} else if d.TemplateRefresh.Duration < 0 {
				bad(f+".templateRefresh", "must not be negative")
			}
		case DestFile:
			if d.Path == "" {
				bad(f+".path", "required for type file")
			}
			if d.MaxSizeMB < 1 {
				bad(f+".maxSizeMB", "must be positive")
			}
			if d.MaxBackups < 0 {
				bad(f+".maxBackups", "must not be negative")
			}
		case DestStdout:
		default:
			bad(f+".type", "%q: must be ipfix, file or stdout", d.Type)
		}
	}
	if c.API.Address != "off" {
		hostPort("api.address", c.API.Address)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid aggregator config: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}
