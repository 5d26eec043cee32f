package v1alpha1

import (
	"fmt"
	"net/netip"
	"strings"
)

// BlockName returns the name of the IPAMBlock for block p: its masked
// prefix with '.', ':' and '/' written '-', and a 0 added where "::" would
// begin the name or end the address (a DNS-1123 subdomain cannot begin with
// '-'): 10.244.1.0/26 is 10-244-1-0-26, fd42:244:0:1::/122 is
// fd42-244-0-1--0-122, ::/120 is 0--0-120. Distinct blocks get distinct
// names, and ParseBlockName inverts it. The CRD computes the same name with
// CEL and rejects IPAMBlocks named otherwise.
//
// It returns "" for an invalid prefix or an IPv4-mapped IPv6 one (which
// Kubernetes' CIDR validation rejects too).
func BlockName(p netip.Prefix) string {
	if !p.IsValid() || p.Addr().Is4In6() {
		return ""
	}
	s := p.Masked().String()
	if strings.HasPrefix(s, "::") {
		s = "0" + s
	}
	s = strings.Replace(s, "::/", "::0/", 1)
	return strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(s)
}

// ParseBlockName returns the block an IPAMBlock name stands for. It accepts
// exactly the names BlockName returns.
func ParseBlockName(name string) (netip.Prefix, error) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("block name %q: no prefix length (want e.g. 10-244-1-0-26)", name)
	}
	addr, length := name[:i], name[i+1:]
	if !strings.Contains(addr, "--") && strings.Count(addr, "-") == 3 {
		addr = strings.ReplaceAll(addr, "-", ".")
	} else {
		addr = strings.ReplaceAll(addr, "-", ":")
	}
	p, err := netip.ParsePrefix(addr + "/" + length)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("block name %q: %w", name, err)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("block name %q: IPv4-mapped IPv6 blocks are not allowed", name)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("block name %q: host bits set in %s", name, p)
	}
	if want := BlockName(p); want != name {
		return netip.Prefix{}, fmt.Errorf("block name %q: not canonical (block %s is named %s)", name, p, want)
	}
	return p, nil
}

// DefaultBlockSize is the block size of a pool with cidr p and no
// blockSize: 26 for IPv4, 122 for IPv6.
func DefaultBlockSize(p netip.Prefix) int32 {
	if p.Addr().Is4() {
		return DefaultBlockSizeV4
	}
	return DefaultBlockSizeV6
}

// BlockCount is how many blocks of blockSize a pool with cidr p holds,
// saturated at the largest int32 (an IPv6 pool can hold far more). It is 0
// when blockSize does not fit p.
func BlockCount(p netip.Prefix, blockSize int32) int32 {
	if !p.IsValid() || int(blockSize) < p.Bits() || int(blockSize) > p.Addr().BitLen() {
		return 0
	}
	shift := int(blockSize) - p.Bits()
	if shift >= 31 {
		return 1<<31 - 1
	}
	return int32(1) << shift
}
