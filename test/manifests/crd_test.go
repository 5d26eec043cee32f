package manifests

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	v1alpha1 "github.com/strait-net/strait/api/v1alpha1"
)

func toPool(t *testing.T, u *unstructured.Unstructured) *v1alpha1.IPPool {
	t.Helper()
	var p v1alpha1.IPPool
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func toBlock(t *testing.T, u *unstructured.Unstructured) *v1alpha1.IPAMBlock {
	t.Helper()
	var b v1alpha1.IPAMBlock
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

// testIPPoolValidation sends invalid IPPools to the API server and to
// v1alpha1.ValidateIPPool: both must reject each, naming the same field.
func (s *apiServer) testIPPoolValidation(t *testing.T) {
	ctx := context.Background()
	for i, c := range []struct {
		name string
		spec map[string]any
		path string
		want string // in the server's message
	}{
		{"not a CIDR", map[string]any{"cidr": "banana"}, "spec.cidr", "banana is not a CIDR"},
		{"no prefix length", map[string]any{"cidr": "10.0.0.0"}, "spec.cidr", "10.0.0.0 is not a CIDR"},
		{"prefix too long", map[string]any{"cidr": "10.0.0.0/33"}, "spec.cidr", "is not a CIDR"},
		{"IPv4-mapped", map[string]any{"cidr": "::ffff:10.0.0.0/104"}, "spec.cidr", "is not a CIDR"},
		{"too long", map[string]any{"cidr": "1111:2222:3333:4444:5555:6666:255.255.255.0/120"}, "spec.cidr", "may not be more than 43 bytes"},
		{"host bits", map[string]any{"cidr": "10.0.0.1/16"}, "spec.cidr", "host bits set in 10.0.0.1/16: the address must be the network address"},
		{"v6 host bits", map[string]any{"cidr": "fd42::1/64"}, "spec.cidr", "host bits set in fd42::1/64"},
		{"no cidr", map[string]any{"blockSize": int64(26)}, "spec.cidr", "Required value"},
		{"blockSize below 20", map[string]any{"cidr": "10.0.0.0/8", "blockSize": int64(19)}, "spec.blockSize", "should be greater than or equal to 20"},
		{"blockSize above 128", map[string]any{"cidr": "fd00::/64", "blockSize": int64(129)}, "spec.blockSize", "should be less than or equal to 128"},
		{"IPv6 blockSize for IPv4", map[string]any{"cidr": "10.0.0.0/8", "blockSize": int64(122)}, "spec.blockSize", "blockSize is out of range for cidr 10.0.0.0/8 (IPv4: 20..32, IPv6: 116..128)"},
		{"IPv4 /33 block", map[string]any{"cidr": "10.0.0.0/8", "blockSize": int64(33)}, "spec.blockSize", "blockSize is out of range for cidr 10.0.0.0/8"},
		{"IPv4 blockSize for IPv6", map[string]any{"cidr": "fd00::/64", "blockSize": int64(26)}, "spec.blockSize", "blockSize is out of range for cidr fd00::/64"},
		{"IPv6 /115 block", map[string]any{"cidr": "fd00::/64", "blockSize": int64(115)}, "spec.blockSize", "blockSize is out of range for cidr fd00::/64"},
		{"block larger than the pool", map[string]any{"cidr": "10.0.0.0/24", "blockSize": int64(20)}, "spec.blockSize", "blockSize is smaller than the prefix length of cidr 10.0.0.0/24"},
		{"v6 block larger than the pool", map[string]any{"cidr": "fd00::/120", "blockSize": int64(118)}, "spec.blockSize", "blockSize is smaller than the prefix length of cidr fd00::/120"},
		{"unknown encapsulation", map[string]any{"cidr": "10.0.0.0/16", "encapsulation": "GRE"}, "spec.encapsulation", `Unsupported value: "GRE": supported values: "VXLAN", "VXLANCrossSubnet", "None"`},
		{"selector operator", map[string]any{"cidr": "10.0.0.0/16", "nodeSelector": map[string]any{
			"matchExpressions": []any{map[string]any{"key": "zone", "operator": "Like"}}}}, "spec.nodeSelector", "operator must be In, NotIn, Exists or DoesNotExist"},
		{"selector In without values", map[string]any{"cidr": "10.0.0.0/16", "nodeSelector": map[string]any{
			"matchExpressions": []any{map[string]any{"key": "zone", "operator": "In"}}}}, "spec.nodeSelector", "In and NotIn need values"},
	} {
		t.Run(c.name, func(t *testing.T) {
			u := obj("IPPool", fmt.Sprintf("invalid-%d", i), c.spec)
			_, err := s.dyn.Resource(gvr("ippools")).Create(ctx, u, metav1.CreateOptions{})
			wantInvalid(t, err, c.path, c.want)
			t.Logf("server: %v", err)

			errs := v1alpha1.ValidateIPPool(toPool(t, u))
			found := false
			for _, e := range errs {
				found = found || strings.HasPrefix(e.Field, c.path)
			}
			if !found {
				t.Errorf("ValidateIPPool accepts what the server rejects (got %v)", errs.ToAggregate())
			}
		})
	}
}

// testIPPoolDefaults: the server defaults encapsulation and natOutgoing;
// blockSize, whose default depends on the family, only SetDefaults_IPPool.
func (s *apiServer) testIPPoolDefaults(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		cidr      string
		blockSize int32
	}{{"10.244.0.0/16", 26}, {"fd42:244::/56", 122}} {
		u, err := s.dyn.Resource(gvr("ippools")).Create(ctx, obj("IPPool", "defaults-"+strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(c.cidr), map[string]any{"cidr": c.cidr}), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create minimal IPPool %s: %v", c.cidr, err)
		}
		p := toPool(t, u)
		if p.Spec.Encapsulation != v1alpha1.EncapsulationVXLANCrossSubnet || p.Spec.NATOutgoing == nil || !*p.Spec.NATOutgoing {
			t.Errorf("%s: stored spec %+v; want encapsulation VXLANCrossSubnet, natOutgoing true", c.cidr, p.Spec)
		}
		if p.Spec.BlockSize != 0 {
			t.Errorf("%s: the server set blockSize %d", c.cidr, p.Spec.BlockSize)
		}
		if errs := v1alpha1.ValidateIPPool(p); len(errs) > 0 {
			t.Errorf("%s: ValidateIPPool rejects what the server stored: %v", c.cidr, errs.ToAggregate())
		}
		v1alpha1.SetDefaults_IPPool(p)
		if p.Spec.BlockSize != c.blockSize || p.Spec.EffectiveBlockSize() != c.blockSize {
			t.Errorf("%s: blockSize defaults to %d, want %d", c.cidr, p.Spec.BlockSize, c.blockSize)
		}
	}
	// An explicit false survives.
	u, err := s.dyn.Resource(gvr("ippools")).Create(ctx, obj("IPPool", "no-nat", map[string]any{"cidr": "10.96.0.0/16", "natOutgoing": false, "blockSize": int64(24), "encapsulation": "None"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := toPool(t, u); *p.Spec.NATOutgoing || p.Spec.Encapsulation != v1alpha1.EncapsulationNone || p.Spec.BlockSize != 24 {
		t.Errorf("explicit settings changed: %+v", p.Spec)
	}
}

// testIPPoolUpdates: cidr and the effective blockSize are immutable.
func (s *apiServer) testIPPoolUpdates(t *testing.T) {
	ctx := context.Background()
	res := s.dyn.Resource(gvr("ippools"))
	u, err := res.Create(ctx, obj("IPPool", "immutable", map[string]any{"cidr": "10.50.0.0/16"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	update := func(field string, v any) (*unstructured.Unstructured, error) {
		c := u.DeepCopy()
		if err := unstructured.SetNestedField(c.Object, v, "spec", field); err != nil {
			t.Fatal(err)
		}
		return res.Update(ctx, c, metav1.UpdateOptions{})
	}
	_, err = update("cidr", "10.51.0.0/16")
	wantInvalid(t, err, "spec.cidr", "cidr is immutable")
	_, err = update("blockSize", int64(24))
	wantInvalid(t, err, "spec.blockSize", "blockSize is immutable")
	// Go's update validation agrees.
	old := toPool(t, u)
	changed := old.DeepCopy()
	changed.Spec.CIDR, changed.Spec.BlockSize = "10.51.0.0/16", 24
	if errs := v1alpha1.ValidateIPPoolUpdate(changed, old); len(errs) != 2 {
		t.Errorf("ValidateIPPoolUpdate: %v; want cidr and blockSize errors", errs.ToAggregate())
	}
	// Writing the default block size explicitly is no change, and the other
	// fields are mutable.
	if u, err = update("blockSize", int64(26)); err != nil {
		t.Fatalf("set blockSize to its default: %v", err)
	}
	if u, err = update("disabled", true); err != nil {
		t.Fatalf("disable: %v", err)
	}
	if _, err = update("encapsulation", "VXLAN"); err != nil {
		t.Fatalf("change encapsulation: %v", err)
	}
}

// testIPAMBlock: names are BlockName(cidr), for the CRD as for Go; the
// spec is immutable; status is a subresource.
func (s *apiServer) testIPAMBlock(t *testing.T) {
	ctx := context.Background()
	res := s.dyn.Resource(gvr("ipamblocks"))
	spec := func(cidr string) map[string]any {
		return map[string]any{"cidr": cidr, "pool": "default-ipv4", "node": "node-1"}
	}
	// The CEL name rule computes BlockName: every shape of address.
	for _, cidr := range []string{
		"10.244.1.0/26", "0.0.0.0/32", "fd42:244:0:1::/122", "::/120", "::1:0/116",
		"fd42::1:0/122", "1:2:3:4:5:6:7:0/122", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
	} {
		name := v1alpha1.BlockName(netip.MustParsePrefix(cidr))
		u, err := res.Create(ctx, obj("IPAMBlock", name, spec(cidr)), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create IPAMBlock %s for %s: %v", name, cidr, err)
		}
		if errs := v1alpha1.ValidateIPAMBlock(toBlock(t, u)); len(errs) > 0 {
			t.Errorf("ValidateIPAMBlock rejects stored %s: %v", name, errs.ToAggregate())
		}
	}
	for _, c := range []struct {
		name, cidr, path, want string
	}{
		{"my-block", "10.244.2.0/26", "metadata.name", ""},
		{"10-244-2-0-26", "10.244.2.1/26", "spec.cidr", "host bits set in 10.244.2.1/26"},
		{"fd42-244-0-1--0-122", "fd42:0244:0:1::/122", "spec.cidr", "fd42:0244:0:1::/122 is not in canonical form"},
		{"x", "nope", "spec.cidr", "nope is not a CIDR"},
	} {
		u := obj("IPAMBlock", c.name, spec(c.cidr))
		_, err := res.Create(ctx, u, metav1.CreateOptions{})
		if c.path == "metadata.name" {
			// A rule on the whole object: the server cannot point at
			// metadata.name, so the message does.
			if err == nil || !strings.Contains(err.Error(), "metadata.name must be 10-244-2-0-26, the name of block 10.244.2.0/26") {
				t.Errorf("misnamed block: %v", err)
			}
		} else {
			wantInvalid(t, err, c.path, c.want)
		}
		t.Logf("server: %v", err)
		errs := v1alpha1.ValidateIPAMBlock(toBlock(t, u))
		if len(errs) == 0 || errs[0].Field != c.path {
			t.Errorf("ValidateIPAMBlock(%s, %s) = %v; want an error on %s", c.name, c.cidr, errs.ToAggregate(), c.path)
		}
	}

	u, err := res.Get(ctx, "10-244-1-0-26", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for field, v := range map[string]string{"cidr": "10.244.1.64/26", "pool": "other", "node": "node-2"} {
		c := u.DeepCopy()
		_ = unstructured.SetNestedField(c.Object, v, "spec", field)
		_, err := res.Update(ctx, c, metav1.UpdateOptions{})
		wantInvalid(t, err, "spec."+field, field+" is immutable")
	}
	// Status through its subresource, which ignores spec changes.
	c := u.DeepCopy()
	_ = unstructured.SetNestedField(c.Object, int64(7), "status", "allocations")
	_ = unstructured.SetNestedField(c.Object, "node-9", "spec", "node")
	got, err := res.UpdateStatus(ctx, c, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	if b := toBlock(t, got); b.Status.Allocations != 7 || b.Spec.Node != "node-1" {
		t.Errorf("after a status update: %+v", b)
	}
	_ = unstructured.SetNestedField(c.Object, int64(-1), "status", "allocations")
	c.SetResourceVersion(got.GetResourceVersion())
	_, err = res.UpdateStatus(ctx, c, metav1.UpdateOptions{})
	wantInvalid(t, err, "status.allocations", "should be greater than or equal to 0")
}
