package v1alpha1

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
)

// Node annotations through which each node's agent publishes its VXLAN
// endpoint and underlay subnet, one per address family.
const (
	// AnnotationVTEPv4 and AnnotationVTEPv6 hold the node's VTEP of that
	// family as JSON: {"ip":"192.168.1.10","mac":"66:...","tunnelAddr":"10.244.1.0"}
	// (MarshalVTEP, ParseVTEP).
	AnnotationVTEPv4 = "strait.dev/vtep-v4"
	AnnotationVTEPv6 = "strait.dev/vtep-v6"
	// AnnotationNodeSubnetV4 and AnnotationNodeSubnetV6 hold the node's
	// underlay prefix of that family, e.g. 192.168.1.0/24: nodes in the same
	// subnet route natively under VXLANCrossSubnet (FormatNodeSubnet,
	// ParseNodeSubnet).
	AnnotationNodeSubnetV4 = "strait.dev/node-subnet-v4"
	AnnotationNodeSubnetV6 = "strait.dev/node-subnet-v6"
)

// maxAnnotationValue bounds what the parsers read: the values are well
// under 200 bytes; anything longer is not ours.
const maxAnnotationValue = 1024

// VTEP is a node's VXLAN tunnel endpoint for one address family: the
// family of IP, its underlay address. Overlay traffic of a family is
// carried over the underlay of the same family.
//
// +kubebuilder:object:generate=false
type VTEP struct {
	// IP is the node's underlay address VXLAN packets are sent to.
	IP netip.Addr
	// MAC is the node's VXLAN device's address (6 bytes, unicast).
	MAC net.HardwareAddr
	// TunnelAddr is the VXLAN device's own address, the gateway through
	// which other nodes route to the node's blocks; optional (zero: none).
	TunnelAddr netip.Addr
}

// vtepJSON is the annotation's wire form. Unknown fields are ignored, so
// an older agent reads a newer agent's annotation.
type vtepJSON struct {
	IP         string `json:"ip"`
	MAC        string `json:"mac"`
	TunnelAddr string `json:"tunnelAddr,omitempty"`
}

// VTEPAnnotation returns the annotation key of a VTEP with underlay
// address ip: AnnotationVTEPv4 or AnnotationVTEPv6.
func VTEPAnnotation(ip netip.Addr) string {
	if ip.Is4() {
		return AnnotationVTEPv4
	}
	return AnnotationVTEPv6
}

// NodeSubnetAnnotation returns the annotation key of an underlay subnet of
// p's family: AnnotationNodeSubnetV4 or AnnotationNodeSubnetV6.
func NodeSubnetAnnotation(p netip.Prefix) string {
	if p.Addr().Is4() {
		return AnnotationNodeSubnetV4
	}
	return AnnotationNodeSubnetV6
}

// Validate reports what is wrong with v, naming the field.
func (v VTEP) Validate() error {
	if err := checkAddr("ip", v.IP); err != nil {
		return err
	}
	if v.IP.IsUnspecified() || v.IP.IsMulticast() {
		return fmt.Errorf("ip: %s is not a unicast address", v.IP)
	}
	if len(v.MAC) != 6 {
		return fmt.Errorf("mac: %q is not a 6-byte Ethernet address", v.MAC.String())
	}
	if v.MAC[0]&1 != 0 {
		return fmt.Errorf("mac: %s is a multicast address", v.MAC)
	}
	if v.TunnelAddr.IsValid() {
		if err := checkAddr("tunnelAddr", v.TunnelAddr); err != nil {
			return err
		}
		if v.TunnelAddr.Is4() != v.IP.Is4() {
			return fmt.Errorf("tunnelAddr: %s is not of the family of ip %s", v.TunnelAddr, v.IP)
		}
	}
	return nil
}

func checkAddr(field string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%s: missing", field)
	case a.Is4In6():
		return fmt.Errorf("%s: %s is an IPv4-mapped IPv6 address; write it as IPv4", field, a)
	case a.Zone() != "":
		return fmt.Errorf("%s: %s has a zone", field, a)
	}
	return nil
}

// MarshalVTEP returns the annotation value of v, after validating it.
func MarshalVTEP(v VTEP) (string, error) {
	if err := v.Validate(); err != nil {
		return "", fmt.Errorf("VTEP: %w", err)
	}
	w := vtepJSON{IP: v.IP.String(), MAC: v.MAC.String()}
	if v.TunnelAddr.IsValid() {
		w.TunnelAddr = v.TunnelAddr.String()
	}
	b, err := json.Marshal(w)
	if err != nil {
		return "", fmt.Errorf("VTEP: %w", err)
	}
	return string(b), nil
}

// ParseVTEP reads a VTEP annotation value. Errors name the bad field;
// unknown fields are ignored.
func ParseVTEP(s string) (VTEP, error) {
	if len(s) > maxAnnotationValue {
		return VTEP{}, fmt.Errorf("VTEP annotation: %d bytes, more than %d", len(s), maxAnnotationValue)
	}
	var w vtepJSON
	if err := json.Unmarshal([]byte(s), &w); err != nil {
		return VTEP{}, fmt.Errorf("VTEP annotation: not a JSON object with string fields ip, mac, tunnelAddr: %w", err)
	}
	var v VTEP
	var err error
	if w.IP == "" {
		return VTEP{}, fmt.Errorf("VTEP annotation: ip: missing")
	}
	if v.IP, err = netip.ParseAddr(w.IP); err != nil {
		return VTEP{}, fmt.Errorf("VTEP annotation: ip: %w", err)
	}
	if w.MAC == "" {
		return VTEP{}, fmt.Errorf("VTEP annotation: mac: missing")
	}
	if v.MAC, err = net.ParseMAC(w.MAC); err != nil {
		return VTEP{}, fmt.Errorf("VTEP annotation: mac: %w", err)
	}
	if w.TunnelAddr != "" {
		if v.TunnelAddr, err = netip.ParseAddr(w.TunnelAddr); err != nil {
			return VTEP{}, fmt.Errorf("VTEP annotation: tunnelAddr: %w", err)
		}
	}
	if err := v.Validate(); err != nil {
		return VTEP{}, fmt.Errorf("VTEP annotation: %w", err)
	}
	return v, nil
}

// ParseVTEPAnnotation reads the value of annotation key (AnnotationVTEPv4
// or AnnotationVTEPv6) and checks that the VTEP is of the key's family.
func ParseVTEPAnnotation(key, value string) (VTEP, error) {
	if key != AnnotationVTEPv4 && key != AnnotationVTEPv6 {
		return VTEP{}, fmt.Errorf("%s is not a VTEP annotation", key)
	}
	v, err := ParseVTEP(value)
	if err != nil {
		return VTEP{}, fmt.Errorf("%s: %w", key, err)
	}
	if VTEPAnnotation(v.IP) != key {
		return VTEP{}, fmt.Errorf("%s: ip: %s is not of the annotation's family", key, v.IP)
	}
	return v, nil
}

// FormatNodeSubnet returns the annotation value of underlay prefix p (the
// network, host bits cleared: an interface's 192.168.1.10/24 is written
// 192.168.1.0/24).
func FormatNodeSubnet(p netip.Prefix) (string, error) {
	if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return "", fmt.Errorf("node subnet: %s is not an IPv4 or IPv6 prefix", p)
	}
	return p.Masked().String(), nil
}

// ParseNodeSubnet reads a node-subnet annotation value: a prefix with no
// host bits set.
func ParseNodeSubnet(s string) (netip.Prefix, error) {
	if len(s) > maxAnnotationValue {
		return netip.Prefix{}, fmt.Errorf("node subnet: %d bytes, more than %d", len(s), maxAnnotationValue)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("node subnet: %w", err)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("node subnet: %s is IPv4-mapped IPv6; write it as IPv4", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("node subnet: host bits set in %s (the network is %s)", s, p.Masked())
	}
	return p, nil
}
