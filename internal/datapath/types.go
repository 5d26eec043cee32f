// Package datapath is the sole owner of the kernel: links, addresses, routes,
// neighbours and sysctls. Every operation is idempotent: applying the same
// desired state twice leaves the kernel as after the first time.
package datapath

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Fixed addressing of a routed pod (the Calico scheme): the pod's default
// routes point at link-local gateways that the host-side veth answers for.
var (
	GatewayV4 = netip.MustParseAddr("169.254.1.1")
	GatewayV6 = netip.MustParseAddr("fe80::1")
	// HostVethMAC is the MAC of every host-side veth; each veth is its own L2
	// segment, so one fixed address lets the pod's gateway neighbour entry be
	// static and known before the link is up.
	HostVethMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
)

// HostIfacePrefix starts the name of every host-side veth Strait creates.
const HostIfacePrefix = "strt"

// HostIfaceName derives the host-side veth name of an attachment, stable
// across agent restarts and at most 15 bytes (IFNAMSIZ-1).
func HostIfaceName(network, containerID, ifName string) string {
	sum := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	return HostIfacePrefix + hex.EncodeToString(sum[:])[:11]
}

// IsHostIface reports whether name looks like a Strait host-side veth.
func IsHostIface(name string) bool {
	return strings.HasPrefix(name, HostIfacePrefix) && len(name) == len(HostIfacePrefix)+11
}

// Pod is the desired wiring of one routed pod attachment.
type Pod struct {
	// Netns is the path of the pod's network namespace (CNI_NETNS).
	Netns string
	// IfName is the interface name inside the pod (CNI_IFNAME).
	IfName string
	// HostIface is the host-side veth name (see HostIfaceName).
	HostIface string
	// Addrs are the pod's addresses, one per family; they are configured as
	// /32 and /128 in the pod and routed as /32 and /128 on the host.
	Addrs []netip.Addr
	// MTU of both veth ends; 0 keeps the kernel default (1500).
	MTU int
}

// PodLinks describes what SetupPod created, for the CNI result.
type PodLinks struct {
	HostIface string
	HostMAC   net.HardwareAddr
	PodIface  string
	PodMAC    net.HardwareAddr
}

// DriftError lists what CheckPod found different from the desired state;
// each entry names one object ("route 10.0.0.5/32 dev strt... missing").
type DriftError struct {
	Items []string
}

func (e *DriftError) Error() string {
	return fmt.Sprintf("datapath drift: %s", strings.Join(e.Items, "; "))
}
