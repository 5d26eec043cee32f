package v1alpha1

import (
	"net/netip"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestBlockName(t *testing.T) {
	for _, c := range []struct{ prefix, name string }{
		{"10.244.1.0/26", "10-244-1-0-26"},
		{"10.244.1.0/27", "10-244-1-0-27"},
		{"0.0.0.0/20", "0-0-0-0-20"},
		{"255.255.255.255/32", "255-255-255-255-32"},
		{"fd42:244:0:1::/122", "fd42-244-0-1--0-122"},
		{"fd42:244::1:0/122", "fd42-244--1-0-122"},
		{"::/120", "0--0-120"},
		{"::1:0/116", "0--1-0-116"},
		{"1:2:3:4:5:6:7:0/122", "1-2-3-4-5-6-7-0-122"},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "ffff-ffff-ffff-ffff-ffff-ffff-ffff-ffff-128"},
		{"fd00:0:0:1::/116", "fd00-0-0-1--0-116"},
	} {
		p := netip.MustParsePrefix(c.prefix)
		if got := BlockName(p); got != c.name {
			t.Errorf("BlockName(%s) = %q, want %q", c.prefix, got, c.name)
		}
		got, err := ParseBlockName(c.name)
		if err != nil || got != p {
			t.Errorf("ParseBlockName(%q) = %v, %v; want %s", c.name, got, err, p)
		}
	}
	// Host bits are cleared: the name is the block's.
	if got := BlockName(netip.MustParsePrefix("10.244.1.7/26")); got != "10-244-1-0-26" {
		t.Errorf("BlockName of an address in the block: %q", got)
	}
	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("::ffff:10.0.0.0/120")} {
		if got := BlockName(p); got != "" {
			t.Errorf("BlockName(%v) = %q, want \"\"", p, got)
		}
	}
}

func TestParseBlockNameRejects(t *testing.T) {
	for _, name := range []string{
		"", "-", "26", "10-244-1-0", "10-244-1-0-", "10-244-1-0-33", "10-244-1-1-26", // host bits
		"10-244-01-0-26", "010-244-1-0-26", "10-244-1-0-026", "10-244-1-0-+26",
		"FD42-244-0-1--0-122", "fd42-0244-0-1--0-122", "fd42-244-0-1---122", // not canonical
		"--0-120", "0--0-0-0-0-0-0-0-120", "0--ffff-a00-0-120",
		"fd42:244::-122", "10.244.1.0-26", "10-244-1-0-26 ", "10-244-1-0-26.x", "fd42--0-129",
	} {
		if p, err := ParseBlockName(name); err == nil {
			t.Errorf("ParseBlockName(%q) = %v, want an error", name, p)
		}
	}
}

// checkBlockName checks BlockName's promises for prefix p.
func checkBlockName(t *testing.T, p netip.Prefix) {
	name := BlockName(p)
	if !p.IsValid() || p.Addr().Is4In6() {
		if name != "" {
			t.Fatalf("BlockName(%v) = %q, want \"\"", p, name)
		}
		return
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		t.Fatalf("BlockName(%s) = %q: not a DNS-1123 subdomain: %v", p, name, errs)
	}
	got, err := ParseBlockName(name)
	if err != nil || got != p.Masked() {
		t.Fatalf("ParseBlockName(BlockName(%s) = %q) = %v, %v; want %s", p, name, got, err, p.Masked())
	}
}

func FuzzBlockName(f *testing.F) {
	f.Add([]byte{10, 244, 1, 0}, 26)
	f.Add([]byte{0xfd, 0x42, 2, 0x44, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, 122)
	f.Add(make([]byte, 16), 120)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 0}, 120)
	f.Fuzz(func(t *testing.T, b []byte, bits int) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		checkBlockName(t, netip.PrefixFrom(a, bits))
	})
}

func FuzzParseBlockName(f *testing.F) {
	for _, s := range []string{"10-244-1-0-26", "fd42-244-0-1--0-122", "0--0-120", "a--b-c-122", "1-2-3-4-5-6-7-8-128", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, err := ParseBlockName(name)
		if err != nil {
			return
		}
		// Only canonical names parse: the name is the block's.
		if BlockName(p) != name {
			t.Fatalf("ParseBlockName(%q) = %s, whose name is %q", name, p, BlockName(p))
		}
	})
}

func TestBlockCount(t *testing.T) {
	for _, c := range []struct {
		cidr string
		size int32
		want int32
	}{
		{"10.244.0.0/16", 26, 1024}, {"10.0.0.0/26", 26, 1}, {"10.0.0.0/24", 20, 0}, {"10.0.0.0/8", 33, 0},
		{"0.0.0.0/0", 31, 1<<31 - 1}, {"0.0.0.0/0", 30, 1 << 30}, {"fd00::/64", 122, 1<<31 - 1}, {"fd00::/116", 122, 64},
	} {
		if got := BlockCount(netip.MustParsePrefix(c.cidr), c.size); got != c.want {
			t.Errorf("BlockCount(%s, %d) = %d, want %d", c.cidr, c.size, got, c.want)
		}
	}
}
