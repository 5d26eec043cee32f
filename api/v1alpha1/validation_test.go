package v1alpha1

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func pool(name, cidr string, mutate ...func(*IPPoolSpec)) *IPPool {
	p := &IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: IPPoolSpec{CIDR: cidr}}
	for _, m := range mutate {
		m(&p.Spec)
	}
	return p
}

func blockSize(n int32) func(*IPPoolSpec) { return func(s *IPPoolSpec) { s.BlockSize = n } }

// wantErr checks errs holds exactly one error, on path, whose text
// contains want; want "" means no errors.
func wantErr(t *testing.T, errs field.ErrorList, path, want string) {
	t.Helper()
	if want == "" {
		if len(errs) != 0 {
			t.Fatalf("unexpected errors: %v", errs.ToAggregate())
		}
		return
	}
	if len(errs) != 1 {
		t.Fatalf("want one error on %s containing %q, got %d: %v", path, want, len(errs), errs.ToAggregate())
	}
	if errs[0].Field != path || !strings.Contains(errs[0].Error(), want) {
		t.Fatalf("want an error on %s containing %q, got %q", path, want, errs[0].Error())
	}
}

func TestValidateIPPool(t *testing.T) {
	for _, c := range []struct {
		name string
		p    *IPPool
		path string
		want string
	}{
		{"minimal v4", pool("p", "10.244.0.0/16"), "", ""},
		{"minimal v6", pool("p", "fd42:244::/56"), "", ""},
		{"non-canonical v6 is fine for pools", pool("p", "FD42:0244::/56"), "", ""},
		{"everything set", pool("p", "10.0.0.0/8", func(s *IPPoolSpec) {
			f := false
			s.BlockSize, s.Encapsulation, s.NATOutgoing, s.Disabled = 24, EncapsulationNone, &f, true
			s.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn, Values: []string{"a"}}}}
		}), "", ""},
		{"block = pool", pool("p", "10.0.0.0/26", blockSize(26)), "", ""},
		{"v4 /32 blocks", pool("p", "10.0.0.0/24", blockSize(32)), "", ""},
		{"v6 /128 blocks", pool("p", "fd00::/116", blockSize(128)), "", ""},

		{"no name", pool("", "10.0.0.0/16"), "metadata.name", "Required value"},
		{"bad name", pool("Pool_1", "10.0.0.0/16"), "metadata.name", "RFC 1123"},
		{"no cidr", pool("p", ""), "spec.cidr", "Required value"},
		{"not a cidr", pool("p", "banana"), "spec.cidr", `spec.cidr: Invalid value: "banana": banana is not a CIDR`},
		{"no length", pool("p", "10.0.0.0"), "spec.cidr", "is not a CIDR"},
		{"v4 length 33", pool("p", "10.0.0.0/33"), "spec.cidr", "is not a CIDR"},
		{"4in6", pool("p", "::ffff:10.0.0.0/104"), "spec.cidr", "is not a CIDR"},
		{"too long", pool("p", "1111:2222:3333:4444:5555:6666:255.255.255.0/120"), "spec.cidr", "may not be more than 43"},
		{"host bits", pool("p", "10.0.0.1/16"), "spec.cidr", `spec.cidr: Invalid value: "10.0.0.1/16": host bits set in 10.0.0.1/16: the address must be the network address (10.0.0.0/16)`},
		{"v6 host bits", pool("p", "fd42::1/64"), "spec.cidr", "host bits set"},
		{"blockSize 19", pool("p", "10.0.0.0/8", blockSize(19)), "spec.blockSize", "must be 20..32 (IPv4) or 116..128 (IPv6)"},
		{"blockSize 129", pool("p", "fd00::/64", blockSize(129)), "spec.blockSize", "must be 20..32"},
		{"v4 blockSize 33", pool("p", "10.0.0.0/8", blockSize(33)), "spec.blockSize", "out of range for cidr 10.0.0.0/8 (IPv4: 20..32, IPv6: 116..128): 33 is not an IPv4 block size"},
		{"v4 blockSize 122", pool("p", "10.0.0.0/8", blockSize(122)), "spec.blockSize", "122 is not an IPv4 block size"},
		{"v6 blockSize 26", pool("p", "fd00::/64", blockSize(26)), "spec.blockSize", "is not an IPv6 block size"},
		{"v6 blockSize 115", pool("p", "fd00::/64", blockSize(115)), "spec.blockSize", "is not an IPv6 block size"},
		{"block larger than pool v4", pool("p", "10.0.0.0/24", blockSize(20)), "spec.blockSize", "blockSize is smaller than the prefix length of cidr 10.0.0.0/24"},
		{"block larger than pool v6", pool("p", "fd00::/120", blockSize(118)), "spec.blockSize", "smaller than the prefix length"},
		{"encapsulation", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.Encapsulation = "GRE" }), "spec.encapsulation", `Unsupported value: "GRE": supported values: "VXLAN", "VXLANCrossSubnet", "None"`},
		{"encapsulation case", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.Encapsulation = "vxlan" }), "spec.encapsulation", "Unsupported value"},
		{"selector operator", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) {
			s.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Like"}}}
		}), "spec.nodeSelector.matchExpressions[0].operator", "not a valid selector operator"},
		{"selector In without values", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) {
			s.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpIn}}}
		}), "spec.nodeSelector.matchExpressions[0].values", "must be specified"},
		{"negative status", &IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: IPPoolSpec{CIDR: "10.0.0.0/8"}, Status: IPPoolStatus{AllocatedBlocks: -1}}, "status.allocatedBlocks", "must be >= 0"},
	} {
		t.Run(c.name, func(t *testing.T) { wantErr(t, ValidateIPPool(c.p), c.path, c.want) })
	}
}

func TestValidateIPPoolUpdate(t *testing.T) {
	old := pool("p", "10.0.0.0/16")
	wantErr(t, ValidateIPPoolUpdate(pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.Disabled = true }), old), "", "")
	wantErr(t, ValidateIPPoolUpdate(pool("p", "10.1.0.0/16"), old), "spec.cidr", "cidr is immutable")
	wantErr(t, ValidateIPPoolUpdate(pool("p", "10.0.0.0/16", blockSize(24)), old), "spec.blockSize", "blockSize is immutable")
	// Writing the default explicitly is no change.
	wantErr(t, ValidateIPPoolUpdate(pool("p", "10.0.0.0/16", blockSize(26)), old), "", "")
	wantErr(t, ValidateIPPoolUpdate(old, pool("p", "10.0.0.0/16", blockSize(26))), "", "")
}

func block(name, cidr string) *IPAMBlock {
	return &IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: IPAMBlockSpec{CIDR: cidr, Pool: "default", Node: "node-1"}}
}

func TestValidateIPAMBlock(t *testing.T) {
	for _, c := range []struct {
		name string
		b    *IPAMBlock
		path string
		want string
	}{
		{"v4", block("10-244-1-0-26", "10.244.1.0/26"), "", ""},
		{"v6", block("fd42-244-0-1--0-122", "fd42:244:0:1::/122"), "", ""},
		{"wrong name", block("my-block", "10.244.1.0/26"), "metadata.name", "metadata.name must be 10-244-1-0-26"},
		{"not a cidr", block("x", "10.244.1.0"), "spec.cidr", "is not a CIDR"},
		{"host bits", block("10-244-1-0-26", "10.244.1.1/26"), "spec.cidr", "host bits set"},
		{"non-canonical", block("fd42-244-0-1--0-122", "fd42:0244:0:1::/122"), "spec.cidr", "not in canonical form (lower case, shortest IPv6 spelling: as Go netip.Prefix.String writes it): fd42:244:0:1::/122"},
		{"no pool", &IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: "10-0-0-0-26"}, Spec: IPAMBlockSpec{CIDR: "10.0.0.0/26", Node: "n"}}, "spec.pool", "Required value"},
		{"bad node", &IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: "10-0-0-0-26"}, Spec: IPAMBlockSpec{CIDR: "10.0.0.0/26", Pool: "p", Node: "Node_1"}}, "spec.node", "RFC 1123"},
	} {
		t.Run(c.name, func(t *testing.T) { wantErr(t, ValidateIPAMBlock(c.b), c.path, c.want) })
	}
	old := block("10-244-1-0-26", "10.244.1.0/26")
	moved := block("10-244-1-0-26", "10.244.1.0/26")
	moved.Spec.Node = "node-2"
	wantErr(t, ValidateIPAMBlockUpdate(moved, old), "spec.node", "node is immutable")
	other := block("10-244-1-0-26", "10.244.1.0/26")
	other.Spec.Pool = "other"
	wantErr(t, ValidateIPAMBlockUpdate(other, old), "spec.pool", "pool is immutable")
	counted := block("10-244-1-0-26", "10.244.1.0/26")
	counted.Status.Allocations = 7
	wantErr(t, ValidateIPAMBlockUpdate(counted, old), "", "")
}
