// Package cni is the contract between the strait CNI shim and the node agent:
// the network configuration Strait reads from a conflist, the request and
// response exchanged over the agent's unix socket, the handler the agent
// implements, and the shim logic that skel drives. It imports no netlink and
// no client-go.
package cni

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultSocketPath is where the agent serves CNI requests unless the network
// configuration names another socket (several agents on one host, as in the
// lab, each use their own).
const DefaultSocketPath = "/run/strait/cni.sock"

// SupportedVersions are the CNI spec versions strait speaks; results are
// returned in the version the configuration asks for.
func SupportedVersions() []string { return []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} }

// Strait-specific error codes (the spec reserves 100+ for plugins).
const (
	// CodeDrift: CHECK found the pod's network different from what ADD set up.
	CodeDrift uint = 100
	// CodeNotReady is the spec's "plugin not available" for STATUS.
	CodeNotReady uint = 50
)

// NetConf is Strait's plugin configuration inside a conflist.
type NetConf struct {
	types.PluginConf
	// SocketPath of the node agent's CNI server.
	SocketPath string `json:"socketPath,omitempty"`
	// LogFile the shim appends to; empty logs nothing.
	LogFile string `json:"logFile,omitempty"`
	// LogLevel of the shim: debug, info, warn or error (default info).
	LogLevel string `json:"logLevel,omitempty"`
	// TimeoutSeconds bounds one call to the agent (default 60).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// ParseNetConf decodes and validates a network configuration. Errors are
// *types.Error with the spec's code and the offending field in the message.
func ParseNetConf(data []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "strait: cannot decode network configuration", err.Error())
	}
	if conf.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "strait: network configuration: field \"name\" is required", "")
	}
	if !conf.IPAM.IsEmpty() {
		return nil, types.NewError(types.ErrUnsupportedField, "strait: network configuration: field \"ipam\" is not supported",
			fmt.Sprintf("strait allocates pod addresses itself; remove the ipam section (type %q)", conf.IPAM.Type))
	}
	if conf.SocketPath == "" {
		conf.SocketPath = DefaultSocketPath
	}
	if !filepath.IsAbs(conf.SocketPath) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "strait: network configuration: field \"socketPath\" must be an absolute path",
			fmt.Sprintf("got %q", conf.SocketPath))
	}
	if conf.LogFile != "" && !filepath.IsAbs(conf.LogFile) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "strait: network configuration: field \"logFile\" must be an absolute path",
			fmt.Sprintf("got %q", conf.LogFile))
	}
	switch conf.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "strait: network configuration: field \"logLevel\" must be one of debug, info, warn, error",
			fmt.Sprintf("got %q", conf.LogLevel))
	}
	if conf.TimeoutSeconds < 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "strait: network configuration: field \"timeoutSeconds\" must not be negative",
			fmt.Sprintf("got %d", conf.TimeoutSeconds))
	}
	if conf.TimeoutSeconds == 0 {
		conf.TimeoutSeconds = 60
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "strait: network configuration: cannot parse field \"prevResult\"", err.Error())
		}
	}
	return conf, nil
}

// PodIdentity is the Kubernetes identity a runtime passes in CNI_ARGS.
type PodIdentity struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	UID       string `json:"uid,omitempty"`
}

// ParsePodIdentity reads K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID from
// CNI_ARGS ("K=V;K=V"). Unknown keys are ignored, as runtimes add their own.
func ParsePodIdentity(cniArgs string) (PodIdentity, error) {
	var id PodIdentity
	if cniArgs == "" {
		return id, nil
	}
	pairs, err := splitArgs(cniArgs)
	if err != nil {
		return id, types.NewError(types.ErrInvalidEnvironmentVariables, "strait: invalid CNI_ARGS", err.Error())
	}
	for k, v := range pairs {
		switch k {
		case "K8S_POD_NAMESPACE":
			id.Namespace = v
		case "K8S_POD_NAME":
			id.Name = v
		case "K8S_POD_UID":
			id.UID = v
		}
	}
	return id, nil
}

func splitArgs(s string) (map[string]string, error) {
	out := map[string]string{}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != ';' {
			continue
		}
		pair := s[start:i]
		start = i + 1
		if pair == "" {
			continue
		}
		eq := -1
		for j := 0; j < len(pair); j++ {
			if pair[j] == '=' {
				eq = j
				break
			}
		}
		if eq <= 0 {
			return nil, fmt.Errorf("%q is not KEY=VALUE", pair)
		}
		out[pair[:eq]] = pair[eq+1:]
	}
	return out, nil
}
