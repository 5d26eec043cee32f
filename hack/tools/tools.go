//go:build tools

// Package tools pins the reference CNI plugins the tests chain after strait
// (portmap, bandwidth) and compare against (bridge, host-local). Debian's
// build stops at CNI 1.0.0; these speak 1.1.0.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/bandwidth"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
