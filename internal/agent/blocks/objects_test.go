package blocks

import (
	"net/netip"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

func TestNthBlock(t *testing.T) {
	for _, c := range []struct {
		pool string
		bits int
		i    uint64
		want string
	}{
		{"10.244.0.0/16", 26, 0, "10.244.0.0/26"},
		{"10.244.0.0/16", 26, 5, "10.244.1.64/26"},
		{"10.244.0.0/16", 26, 1023, "10.244.255.192/26"},
		{"10.0.0.0/24", 28, 15, "10.0.0.240/28"},
		{"10.0.0.0/24", 24, 0, "10.0.0.0/24"},
		{"10.0.0.0/24", 32, 255, "10.0.0.255/32"},
		{"fd00:1::/120", 124, 15, "fd00:1::f0/124"},
		{"fd42:244::/56", 122, 1, "fd42:244::40/122"},
		{"fd42:244::/56", 122, 1 << 58, "fd42:244:0:1::/122"}, {"fd42:244::/56", 122, 1 << 20, "fd42:244::400:0/122"},
		{"fd00::/8", 122, 1 << 62, "fd00:0:0:10::/122"}, // 2^62 blocks of 2^6: bit 68, a carry into the high word
		{"fd00::/64", 128, 1<<64 - 1, "fd00::ffff:ffff:ffff:ffff/128"},
		{"::/0", 64, 1<<63 + 1, "8000:0:0:1::/64"},
	} {
		got := nthBlock(netip.MustParsePrefix(c.pool), c.bits, c.i)
		if got.String() != c.want {
			t.Errorf("nthBlock(%s, /%d, %d) = %s, want %s", c.pool, c.bits, c.i, got, c.want)
		}
	}
}

func TestBlockCountAndOffset(t *testing.T) {
	if n := blockCount(netip.MustParsePrefix("10.244.0.0/16"), 26); n != 1024 {
		t.Errorf("blockCount /16 by /26 = %d", n)
	}
	if n := blockCount(netip.MustParsePrefix("fd00::/48"), 122); n != 1<<63 {
		t.Errorf("blockCount fd00::/48 by /122 = %d, want saturated 2^63", n)
	}
	// Offsets are deterministic and spread.
	seen := map[uint64]int{}
	for i := range 64 {
		node := "node-" + string(rune('a'+i%26)) + string(rune('0'+i/26))
		o := startOffset(node, 1024)
		if o != startOffset(node, 1024) || o >= 1024 {
			t.Fatalf("startOffset(%s) = %d not stable or out of range", node, o)
		}
		seen[o]++
	}
	if len(seen) < 60 {
		t.Errorf("64 node names hit only %d distinct offsets of 1024", len(seen))
	}
}

func TestPoolFromObject(t *testing.T) {
	obj := func(spec map[string]any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
		u.SetName("p")
		return u
	}
	p, err := poolFromObject(obj(map[string]any{"cidr": "fd42:244::/56"}))
	if err != nil || p.BlockSize != 122 || p.Encapsulation != "VXLANCrossSubnet" || !p.NATOutgoing || p.Disabled ||
		!p.Selector.Matches(labels.Set{"any": "thing"}) || p.family() != 6 {
		t.Fatalf("defaults: %+v, %v", p, err)
	}
	p, err = poolFromObject(obj(map[string]any{"cidr": "10.0.0.0/16", "blockSize": int64(24), "encapsulation": "VXLAN",
		"natOutgoing": false, "disabled": true,
		"nodeSelector": map[string]any{"matchLabels": map[string]any{"zone": "a"}}}))
	if err != nil || p.BlockSize != 24 || p.Encapsulation != "VXLAN" || p.NATOutgoing || !p.Disabled ||
		!p.Selector.Matches(labels.Set{"zone": "a"}) || p.Selector.Matches(labels.Set{"zone": "b"}) {
		t.Fatalf("explicit: %+v, %v", p, err)
	}
	for _, bad := range []map[string]any{
		{"cidr": "10.0.0.1/16"},
		{"cidr": "nope"},
		{"cidr": "10.0.0.0/16", "blockSize": int64(8)},
		{"cidr": "10.0.0.0/16", "blockSize": "26"},
		{"cidr": "10.0.0.0/16", "nodeSelector": map[string]any{"matchExpressions": []any{map[string]any{"key": "a", "operator": "Bogus"}}}},
	} {
		if _, err := poolFromObject(obj(bad)); err == nil {
			t.Errorf("poolFromObject(%v) succeeded", bad)
		}
	}
}

func TestBlockObjectRoundTrip(t *testing.T) {
	for _, c := range []struct{ cidr, name string }{
		{"10.244.1.0/26", "10-244-1-0-26"},
		{"fd00:1::f0/124", "fd00-1--f0-124"},
		{"fd42:244::/122", "fd42-244--0-122"},
	} {
		u := blockObject(netip.MustParsePrefix(c.cidr), "pool-a", "n1")
		if u.GetName() != c.name {
			t.Errorf("name of %s = %s, want %s", c.cidr, u.GetName(), c.name)
		}
		b, err := blockFromObject(u)
		if err != nil || b.CIDR.String() != c.cidr || b.Pool != "pool-a" || b.Node != "n1" || b.Name != c.name {
			t.Errorf("round trip of %s: %+v, %v", c.cidr, b, err)
		}
	}
	u := blockObject(netip.MustParsePrefix("10.0.0.0/28"), "p", "n")
	u.SetName("10-0-0-16-28")
	if _, err := blockFromObject(u); err == nil {
		t.Error("a block named for another CIDR was accepted")
	}
}
