package v1alpha1

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The validation of the BGP and LoadBalancer kinds mirrors their CRDs'
// schemas and CEL rules, like validation.go's (same field paths; test/manifests
// sends the same cases to a real API server).

// CommunityKind is a community's wire form.
type CommunityKind int

// Community kinds.
const (
	StandardCommunity CommunityKind = iota + 1 // RFC 1997, AS:N
	LargeCommunity                             // RFC 8092, A:B:C
)

// ParseCommunity parses "AS:N" (each 0..65535) or "A:B:C" (each
// 0..4294967295) into its kind and parts.
func ParseCommunity(s string) (CommunityKind, []uint32, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 2 && len(parts) != 3 {
		return 0, nil, fmt.Errorf("%s is not a community: AS:N (each 0..65535) or large A:B:C (each 0..4294967295)", s)
	}
	bits := 16
	kind := StandardCommunity
	if len(parts) == 3 {
		bits, kind = 32, LargeCommunity
	}
	out := make([]uint32, len(parts))
	for i, p := range parts {
		if p == "" || len(p) > 10 || strings.TrimLeft(p, "0123456789") != "" {
			return 0, nil, fmt.Errorf("%s is not a community: AS:N (each 0..65535) or large A:B:C (each 0..4294967295)", s)
		}
		v, err := strconv.ParseUint(p, 10, bits)
		if err != nil {
			return 0, nil, fmt.Errorf("%s is not a community: AS:N (each 0..65535) or large A:B:C (each 0..4294967295)", s)
		}
		out[i] = uint32(v)
	}
	return kind, out, nil
}

var (
	durationPattern  = regexp.MustCompile(`^([0-9]+([.][0-9]+)?(ms|s|m|h))+$`)
	interfacePattern = regexp.MustCompile(`^[^/\s:]+$`)
	communityName    = regexp.MustCompile(`^[a-zA-Z][-_a-zA-Z0-9]*$`)
	secretKeyPattern = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

// ValidateBGPConfiguration checks a BGPConfiguration.
func ValidateBGPConfiguration(c *BGPConfiguration) field.ErrorList {
	errs := validateName(c.Name, field.NewPath("metadata", "name"))
	if len(errs) == 0 && c.Name != BGPConfigurationDefault && !strings.HasPrefix(c.Name, BGPConfigurationNodePrefix) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), c.Name, "metadata.name must be default (cluster-wide) or node.<nodename> (one node's override)"))
	}
	sp := field.NewPath("spec")
	s := &c.Spec
	if s.ASNumber != nil {
		errs = append(errs, validateASN(*s.ASNumber, sp.Child("asNumber"))...)
	}
	if r := s.RouterID; r != nil {
		rp := sp.Child("routerID")
		switch r.Source {
		case "", RouterIDNodeIPv4, RouterIDHash, RouterIDExplicit:
		default:
			errs = append(errs, field.NotSupported(rp.Child("source"), r.Source, []RouterIDSource{RouterIDExplicit, RouterIDNodeIPv4, RouterIDHash}))
		}
		if r.ID != "" {
			if a, err := netip.ParseAddr(r.ID); err != nil || !a.Is4() {
				errs = append(errs, field.Invalid(rp.Child("id"), r.ID, r.ID+" is not a router ID (an IPv4 address such as 198.51.100.1)"))
			}
		} else if r.Source == RouterIDExplicit {
			errs = append(errs, field.Required(rp.Child("id"), "routerID.id is required when routerID.source is Explicit"))
		}
	}
	if s.ListenPort != nil && (*s.ListenPort < 1 || *s.ListenPort > 65535) {
		errs = append(errs, field.Invalid(sp.Child("listenPort"), *s.ListenPort, "must be 1..65535"))
	}
	if m := s.NodeToNodeMesh; m != nil && m.Password != nil {
		errs = append(errs, validateSecretKeyRef(m.Password, sp.Child("nodeToNodeMesh", "password"))...)
	}
	for _, l := range []struct {
		name   string
		blocks []ServiceIPBlock
	}{{"serviceClusterIPs", s.ServiceClusterIPs}, {"serviceExternalIPs", s.ServiceExternalIPs}, {"serviceLoadBalancerIPs", s.ServiceLoadBalancerIPs}} {
		lp := sp.Child(l.name)
		if len(l.blocks) > 64 {
			errs = append(errs, field.TooMany(lp, len(l.blocks), 64))
		}
		for i, b := range l.blocks {
			_, cerrs := validateCIDR(b.CIDR, lp.Index(i).Child("cidr"), false)
			errs = append(errs, cerrs...)
		}
	}
	switch s.ServiceLoadBalancerAggregation {
	case "", "Enabled", "Disabled":
	default:
		errs = append(errs, field.NotSupported(sp.Child("serviceLoadBalancerAggregation"), s.ServiceLoadBalancerAggregation, []string{"Enabled", "Disabled"}))
	}
	names := map[string]bool{}
	for i, cm := range s.Communities {
		cp := sp.Child("communities").Index(i)
		if !communityName.MatchString(cm.Name) || len(cm.Name) > 63 {
			errs = append(errs, field.Invalid(cp.Child("name"), cm.Name, "must start with a letter and hold letters, digits, - and _ (at most 63)"))
		} else if names[cm.Name] {
			errs = append(errs, field.Duplicate(cp.Child("name"), cm.Name))
		}
		names[cm.Name] = true
		if _, _, err := ParseCommunity(cm.Value); err != nil {
			errs = append(errs, field.Invalid(cp.Child("value"), cm.Value, err.Error()))
		}
	}
	for i, pa := range s.PrefixAdvertisements {
		pp := sp.Child("prefixAdvertisements").Index(i)
		_, cerrs := validateCIDR(pa.CIDR, pp.Child("cidr"), false)
		errs = append(errs, cerrs...)
		if len(pa.Communities) == 0 {
			errs = append(errs, field.Required(pp.Child("communities"), "at least one community name or value"))
		}
		for j, v := range pa.Communities {
			if communityName.MatchString(v) {
				continue // a name: resolved when used (it may be in the default object)
			}
			if _, _, err := ParseCommunity(v); err != nil {
				errs = append(errs, field.Invalid(pp.Child("communities").Index(j), v, "neither a community name nor a value: "+err.Error()))
			}
		}
	}
	errs = append(errs, validateSource(s.SourceAddress, s.SourceInterface, netip.Addr{}, sp)...)
	if s.GracefulRestart != nil {
		errs = append(errs, validateGracefulRestart(s.GracefulRestart, sp.Child("gracefulRestart"))...)
	}
	return errs
}

// ValidateBGPPeer checks a BGPPeer.
func ValidateBGPPeer(p *BGPPeer) field.ErrorList {
	errs := validateName(p.Name, field.NewPath("metadata", "name"))
	sp := field.NewPath("spec")
	s := &p.Spec
	peer, err := netip.ParseAddr(s.PeerIP)
	switch {
	case s.PeerIP == "":
		errs = append(errs, field.Required(sp.Child("peerIP"), "an IP address such as 198.51.100.254 or 2001:db8:100::254"))
	case err != nil || peer.Zone() != "":
		errs = append(errs, field.Invalid(sp.Child("peerIP"), s.PeerIP, s.PeerIP+" is not an IP address such as 198.51.100.254 or 2001:db8:100::254"))
		peer = netip.Addr{}
	case peer.IsLinkLocalUnicast() || peer.IsUnspecified() || peer.IsLoopback():
		errs = append(errs, field.Invalid(sp.Child("peerIP"), s.PeerIP, s.PeerIP+" cannot be a peer: link-local, unspecified and loopback addresses are not supported"))
	}
	if s.Port != 0 && (s.Port < 1 || s.Port > 65535) {
		errs = append(errs, field.Invalid(sp.Child("port"), s.Port, "must be 1..65535"))
	}
	errs = append(errs, validateASN(s.ASNumber, sp.Child("asNumber"))...)
	if s.NodeSelector != nil {
		errs = append(errs, metav1validation.ValidateLabelSelector(s.NodeSelector, metav1validation.LabelSelectorValidationOptions{}, sp.Child("nodeSelector"))...)
	}
	if s.Password != nil {
		errs = append(errs, validateSecretKeyRef(s.Password, sp.Child("password"))...)
	}
	errs = append(errs, validateSource(s.SourceAddress, s.SourceInterface, peer, sp)...)
	if len(s.Families) > 2 {
		errs = append(errs, field.TooMany(sp.Child("families"), len(s.Families), 2))
	}
	seen := map[BGPFamily]bool{}
	for i, f := range s.Families {
		fp := sp.Child("families").Index(i)
		switch {
		case f != FamilyIPv4Unicast && f != FamilyIPv6Unicast:
			errs = append(errs, field.NotSupported(fp, f, []BGPFamily{FamilyIPv4Unicast, FamilyIPv6Unicast}))
		case seen[f]:
			errs = append(errs, field.Duplicate(fp, f))
		}
		seen[f] = true
	}
	if nh := s.NextHop; nh != nil {
		errs = append(errs, validateNextHop(nh, sp.Child("nextHop"))...)
	}
	if t := s.Timers; t != nil {
		tp := sp.Child("timers")
		ka, e1 := validateDuration(t.KeepaliveTime, tp.Child("keepaliveTime"), time.Second, 21845*time.Second)
		hold, e2 := validateDuration(t.HoldTime, tp.Child("holdTime"), 3*time.Second, 65535*time.Second)
		_, e3 := validateDuration(t.ConnectRetryTime, tp.Child("connectRetryTime"), time.Second, time.Hour)
		errs = append(append(append(errs, e1...), e2...), e3...)
		if ka > 0 && hold > 0 && ka >= hold {
			errs = append(errs, field.Invalid(tp.Child("keepaliveTime"), t.KeepaliveTime.Duration.String(), "keepaliveTime must be shorter than holdTime"))
		}
	}
	if s.EBGPMultihop != 0 && (s.EBGPMultihop < 1 || s.EBGPMultihop > 255) {
		errs = append(errs, field.Invalid(sp.Child("ebgpMultihop"), s.EBGPMultihop, "must be 1..255"))
	}
	if s.GracefulRestart != nil {
		errs = append(errs, validateGracefulRestart(s.GracefulRestart, sp.Child("gracefulRestart"))...)
	}
	if b := s.BFD; b != nil {
		bp := sp.Child("bfd")
		_, e1 := validateDuration(b.MinTx, bp.Child("minTx"), 10*time.Millisecond, time.Minute)
		_, e2 := validateDuration(b.MinRx, bp.Child("minRx"), 10*time.Millisecond, time.Minute)
		errs = append(append(errs, e1...), e2...)
		if b.Multiplier != 0 && (b.Multiplier < 1 || b.Multiplier > 255) {
			errs = append(errs, field.Invalid(bp.Child("multiplier"), b.Multiplier, "must be 1..255"))
		}
	}
	return errs
}

func validateNextHop(nh *NextHop, np *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch nh.Mode {
	case "", NextHopAuto, NextHopFixed, NextHopFromInterface:
	default:
		return field.ErrorList{field.NotSupported(np.Child("mode"), nh.Mode, []NextHopMode{NextHopAuto, NextHopFixed, NextHopFromInterface})}
	}
	if nh.IPv4 != "" {
		if a, err := netip.ParseAddr(nh.IPv4); err != nil || !a.Is4() {
			errs = append(errs, field.Invalid(np.Child("ipv4"), nh.IPv4, nh.IPv4+" is not an IPv4 address"))
		}
	}
	if nh.IPv6 != "" {
		a, err := netip.ParseAddr(nh.IPv6)
		switch {
		case err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "":
			errs = append(errs, field.Invalid(np.Child("ipv6"), nh.IPv6, nh.IPv6+" is not an IPv6 address (IPv4-mapped ::ffff: addresses are not next hops routers install)"))
		case a.IsLinkLocalUnicast():
			errs = append(errs, field.Invalid(np.Child("ipv6"), nh.IPv6, nh.IPv6+" is link-local: a next hop must be global"))
		}
	}
	if nh.Interface != "" && (!interfacePattern.MatchString(nh.Interface) || len(nh.Interface) > 15) {
		errs = append(errs, field.Invalid(np.Child("interface"), nh.Interface, "not an interface name"))
	}
	switch nh.Mode {
	case NextHopFixed:
		if nh.IPv4 == "" && nh.IPv6 == "" {
			errs = append(errs, field.Required(np, "mode Fixed needs ipv4 or ipv6 (or both)"))
		}
	case NextHopFromInterface:
		if nh.Interface == "" {
			errs = append(errs, field.Required(np.Child("interface"), "mode FromInterface needs interface"))
		}
	}
	if nh.Mode != NextHopFixed && (nh.IPv4 != "" || nh.IPv6 != "") {
		errs = append(errs, field.Forbidden(np, "ipv4 and ipv6 are for mode Fixed only"))
	}
	if nh.Mode != NextHopFromInterface && nh.Interface != "" {
		errs = append(errs, field.Forbidden(np.Child("interface"), "interface is for mode FromInterface only"))
	}
	return errs
}

// ValidateLoadBalancerIPPool checks a LoadBalancerIPPool.
func ValidateLoadBalancerIPPool(p *LoadBalancerIPPool) field.ErrorList {
	errs := validateName(p.Name, field.NewPath("metadata", "name"))
	sp := field.NewPath("spec")
	cp := sp.Child("cidrs")
	switch n := len(p.Spec.CIDRs); {
	case n == 0:
		errs = append(errs, field.Required(cp, "at least one CIDR such as 198.18.0.0/24"))
	case n > 32:
		errs = append(errs, field.TooMany(cp, n, 32))
	}
	for i, c := range p.Spec.CIDRs {
		_, cerrs := validateCIDR(c, cp.Index(i), false)
		errs = append(errs, cerrs...)
	}
	if p.Spec.ServiceSelector != nil {
		errs = append(errs, metav1validation.ValidateLabelSelector(p.Spec.ServiceSelector, metav1validation.LabelSelectorValidationOptions{}, sp.Child("serviceSelector"))...)
	}
	st := field.NewPath("status")
	for name, v := range map[string]int64{"allocatedIPv4": p.Status.AllocatedIPv4, "allocatedIPv6": p.Status.AllocatedIPv6, "availableIPv4": p.Status.AvailableIPv4, "availableIPv6": p.Status.AvailableIPv6} {
		if v < 0 {
			errs = append(errs, field.Invalid(st.Child(name), v, "must be >= 0"))
		}
	}
	return append(errs, validateConditions(p.Status.Conditions, st.Child("conditions"))...)
}

func validateASN(asn int64, fp *field.Path) field.ErrorList {
	if asn < 1 || asn > 4294967295 {
		return field.ErrorList{field.Invalid(fp, asn, "must be 1..4294967295")}
	}
	return nil
}

func validateSecretKeyRef(r *SecretKeyRef, fp *field.Path) field.ErrorList {
	errs := validateRef(r.Name, fp.Child("name"))
	switch {
	case r.Key == "":
		errs = append(errs, field.Required(fp.Child("key"), ""))
	case len(r.Key) > 253 || !secretKeyPattern.MatchString(r.Key):
		errs = append(errs, field.Invalid(fp.Child("key"), r.Key, "a Secret key holds letters, digits, -, _ and ."))
	}
	return errs
}

// validateSource checks sourceAddress/sourceInterface under sp; peer, if
// valid, must be of the source address's family.
func validateSource(addr, ifname string, peer netip.Addr, sp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if addr != "" {
		a, err := netip.ParseAddr(addr)
		switch {
		case err != nil || a.Zone() != "":
			errs = append(errs, field.Invalid(sp.Child("sourceAddress"), addr, addr+" is not an IP address"))
		case peer.IsValid() && a.Is4() != peer.Is4():
			errs = append(errs, field.Invalid(sp.Child("sourceAddress"), addr, fmt.Sprintf("sourceAddress %s is not of the family of peerIP %s", addr, peer)))
		}
	}
	if ifname != "" && (!interfacePattern.MatchString(ifname) || len(ifname) > 15) {
		errs = append(errs, field.Invalid(sp.Child("sourceInterface"), ifname, "not an interface name"))
	}
	if addr != "" && ifname != "" {
		errs = append(errs, field.Forbidden(sp.Child("sourceInterface"), "set sourceAddress or sourceInterface, not both"))
	}
	return errs
}

func validateGracefulRestart(g *GracefulRestart, fp *field.Path) field.ErrorList {
	_, errs := validateDuration(g.RestartTime, fp.Child("restartTime"), time.Second, 4095*time.Second)
	return errs
}

// validateDuration checks an optional duration is within [lo, hi] and
// returns it (0 if unset or bad).
func validateDuration(d *metav1.Duration, fp *field.Path, lo, hi time.Duration) (time.Duration, field.ErrorList) {
	if d == nil {
		return 0, nil
	}
	s := d.Duration.String()
	if d.Duration < lo || d.Duration > hi || !durationPattern.MatchString(s) {
		return 0, field.ErrorList{field.Invalid(fp, s, fmt.Sprintf("must be between %v and %v", lo, hi))}
	}
	return d.Duration, nil
}
