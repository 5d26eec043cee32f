package v1alpha1

import (
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The validation here mirrors the CRDs' OpenAPI schemas and CEL rules, with
// the same field paths and, where the server's wording allows, the same
// messages; test/manifests runs the same cases through both. Unset optional
// fields are valid: they mean their defaults.

// ValidateIPPool checks an IPPool on its own (create).
func ValidateIPPool(p *IPPool) field.ErrorList {
	errs := validateName(p.Name, field.NewPath("metadata", "name"))
	spec := field.NewPath("spec")
	s := &p.Spec

	cidr, cerrs := validateCIDR(s.CIDR, spec.Child("cidr"), false)
	errs = append(errs, cerrs...)

	if s.BlockSize != 0 {
		bp := spec.Child("blockSize")
		switch {
		case s.BlockSize < MinBlockSizeV4 || s.BlockSize > MaxBlockSizeV6:
			errs = append(errs, field.Invalid(bp, s.BlockSize, fmt.Sprintf("must be %d..%d (IPv4) or %d..%d (IPv6)", MinBlockSizeV4, MaxBlockSizeV4, MinBlockSizeV6, MaxBlockSizeV6)))
		case !cidr.IsValid():
		case cidr.Addr().Is4() && s.BlockSize > MaxBlockSizeV4, cidr.Addr().Is6() && s.BlockSize < MinBlockSizeV6:
			fam := 4
			if cidr.Addr().Is6() {
				fam = 6
			}
			errs = append(errs, field.Invalid(bp, s.BlockSize, fmt.Sprintf("blockSize is out of range for cidr %s (IPv4: %d..%d, IPv6: %d..%d): %d is not an IPv%d block size", s.CIDR, MinBlockSizeV4, MaxBlockSizeV4, MinBlockSizeV6, MaxBlockSizeV6, s.BlockSize, fam)))
		case int(s.BlockSize) < cidr.Bits():
			errs = append(errs, field.Invalid(bp, s.BlockSize, fmt.Sprintf("blockSize is smaller than the prefix length of cidr %s: a block cannot be larger than its pool", s.CIDR)))
		}
	}

	if s.Encapsulation != "" && !validEncapsulation(s.Encapsulation) {
		errs = append(errs, field.NotSupported(spec.Child("encapsulation"), s.Encapsulation, Encapsulations()))
	}
	if s.NodeSelector != nil {
		errs = append(errs, metav1validation.ValidateLabelSelector(s.NodeSelector, metav1validation.LabelSelectorValidationOptions{}, spec.Child("nodeSelector"))...)
	}
	errs = append(errs, validateConditions(p.Status.Conditions, field.NewPath("status", "conditions"))...)
	if p.Status.Blocks < 0 {
		errs = append(errs, field.Invalid(field.NewPath("status", "blocks"), p.Status.Blocks, "must be >= 0"))
	}
	if p.Status.AllocatedBlocks < 0 {
		errs = append(errs, field.Invalid(field.NewPath("status", "allocatedBlocks"), p.Status.AllocatedBlocks, "must be >= 0"))
	}
	return errs
}

// ValidateIPPoolUpdate checks an update of old to p: p on its own, and
// cidr and the effective blockSize unchanged.
func ValidateIPPoolUpdate(p, old *IPPool) field.ErrorList {
	errs := ValidateIPPool(p)
	spec := field.NewPath("spec")
	if p.Spec.CIDR != old.Spec.CIDR {
		errs = append(errs, field.Forbidden(spec.Child("cidr"), "cidr is immutable"))
	}
	if p.Spec.EffectiveBlockSize() != old.Spec.EffectiveBlockSize() {
		errs = append(errs, field.Forbidden(spec.Child("blockSize"), "blockSize is immutable: blocks of the old size may exist"))
	}
	return errs
}

// ValidateIPAMBlock checks an IPAMBlock on its own (create): a canonical
// cidr with no host bits, the name BlockName(cidr), and pool and node names.
func ValidateIPAMBlock(b *IPAMBlock) field.ErrorList {
	spec := field.NewPath("spec")
	cidr, errs := validateCIDR(b.Spec.CIDR, spec.Child("cidr"), true)
	if cidr.IsValid() && cidr == cidr.Masked() && b.Name != BlockName(cidr) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), b.Name,
			fmt.Sprintf("metadata.name must be %s, the name of block %s (v1alpha1.BlockName)", BlockName(cidr), b.Spec.CIDR)))
	}
	errs = append(errs, validateRef(b.Spec.Pool, spec.Child("pool"))...)
	errs = append(errs, validateRef(b.Spec.Node, spec.Child("node"))...)
	if b.Status.Allocations < 0 {
		errs = append(errs, field.Invalid(field.NewPath("status", "allocations"), b.Status.Allocations, "must be >= 0"))
	}
	return append(errs, validateConditions(b.Status.Conditions, field.NewPath("status", "conditions"))...)
}

// ValidateIPAMBlockUpdate checks an update of old to b: b on its own, and
// the spec unchanged.
func ValidateIPAMBlockUpdate(b, old *IPAMBlock) field.ErrorList {
	errs := ValidateIPAMBlock(b)
	spec := field.NewPath("spec")
	if b.Spec.CIDR != old.Spec.CIDR {
		errs = append(errs, field.Forbidden(spec.Child("cidr"), "cidr is immutable"))
	}
	if b.Spec.Pool != old.Spec.Pool {
		errs = append(errs, field.Forbidden(spec.Child("pool"), "pool is immutable"))
	}
	if b.Spec.Node != old.Spec.Node {
		errs = append(errs, field.Forbidden(spec.Child("node"), "node is immutable: delete the block and claim it again"))
	}
	return errs
}

// maxCIDRLength is the CRDs' maxLength of a cidr: the longest IPv6 prefix
// without embedded IPv4 notation (39 characters and "/128").
const maxCIDRLength = 43

// validateCIDR parses a pool's or block's cidr; canonical also requires
// netip's spelling. It returns the prefix if it parsed.
func validateCIDR(s string, fp *field.Path, canonical bool) (netip.Prefix, field.ErrorList) {
	if s == "" {
		return netip.Prefix{}, field.ErrorList{field.Required(fp, "a CIDR such as 10.244.0.0/16 or fd42:244::/56")}
	}
	if len(s) > maxCIDRLength {
		return netip.Prefix{}, field.ErrorList{field.TooLong(fp, s, maxCIDRLength)}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Is4In6() {
		return netip.Prefix{}, field.ErrorList{field.Invalid(fp, s, s+" is not a CIDR such as 10.244.0.0/16 or fd42:244::/56")}
	}
	var errs field.ErrorList
	if p != p.Masked() {
		errs = append(errs, field.Invalid(fp, s, fmt.Sprintf("host bits set in %s: the address must be the network address (%s)", s, p.Masked())))
	}
	if canonical && p.String() != s {
		errs = append(errs, field.Invalid(fp, s, fmt.Sprintf("%s is not in canonical form (lower case, shortest IPv6 spelling: as Go netip.Prefix.String writes it): %s", s, p)))
	}
	return p, errs
}

func validEncapsulation(e Encapsulation) bool {
	for _, v := range Encapsulations() {
		if e == v {
			return true
		}
	}
	return false
}

func validateName(name string, fp *field.Path) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(fp, "")}
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		errs = append(errs, field.Invalid(fp, name, msg))
	}
	return errs
}

// validateRef checks the name of another object (a pool, a node).
func validateRef(name string, fp *field.Path) field.ErrorList {
	return validateName(name, fp)
}

func validateConditions(cs []metav1.Condition, fp *field.Path) field.ErrorList {
	return metav1validation.ValidateConditions(cs, fp)
}
