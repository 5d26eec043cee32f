package v1alpha1

import "net/netip"

// SetDefaults_IPPool fills an IPPool's unset fields: blockSize (26 for an
// IPv4 cidr, 122 for IPv6; left unset if the cidr does not parse),
// encapsulation (VXLANCrossSubnet) and natOutgoing (true). The CRD defaults
// encapsulation and natOutgoing on the server; only this function defaults
// blockSize, since a CRD default cannot depend on another field.
//
// The name follows the Kubernetes defaulter convention (SetDefaults_Kind).
func SetDefaults_IPPool(p *IPPool) {
	s := &p.Spec
	if s.BlockSize == 0 {
		if c, err := netip.ParsePrefix(s.CIDR); err == nil {
			s.BlockSize = DefaultBlockSize(c)
		}
	}
	if s.Encapsulation == "" {
		s.Encapsulation = EncapsulationVXLANCrossSubnet
	}
	if s.NATOutgoing == nil {
		t := true
		s.NATOutgoing = &t
	}
}

// EffectiveBlockSize is the pool's block size: spec.blockSize, or the
// default of its cidr's family when unset (0 if the cidr does not parse).
func (s *IPPoolSpec) EffectiveBlockSize() int32 {
	if s.BlockSize != 0 {
		return s.BlockSize
	}
	c, err := netip.ParsePrefix(s.CIDR)
	if err != nil {
		return 0
	}
	return DefaultBlockSize(c)
}

// NATOutgoingEnabled is spec.natOutgoing, true when unset.
func (s *IPPoolSpec) NATOutgoingEnabled() bool {
	return s.NATOutgoing == nil || *s.NATOutgoing
}

// EffectiveEncapsulation is spec.encapsulation, VXLANCrossSubnet when unset.
func (s *IPPoolSpec) EffectiveEncapsulation() Encapsulation {
	if s.Encapsulation == "" {
		return EncapsulationVXLANCrossSubnet
	}
	return s.Encapsulation
}
