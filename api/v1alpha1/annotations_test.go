package v1alpha1

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestVTEPRoundTrip(t *testing.T) {
	for _, v := range []VTEP{
		{IP: netip.MustParseAddr("192.168.1.10"), MAC: mustMAC("66:2a:01:02:03:04"), TunnelAddr: netip.MustParseAddr("10.244.1.0")},
		{IP: netip.MustParseAddr("192.168.1.10"), MAC: mustMAC("66:2a:01:02:03:04")},
		{IP: netip.MustParseAddr("2001:db8::10"), MAC: mustMAC("66:2a:01:02:03:05"), TunnelAddr: netip.MustParseAddr("fd42:244::")},
	} {
		s, err := MarshalVTEP(v)
		if err != nil {
			t.Fatalf("MarshalVTEP(%+v): %v", v, err)
		}
		key := VTEPAnnotation(v.IP)
		got, err := ParseVTEPAnnotation(key, s)
		if err != nil || got.IP != v.IP || got.MAC.String() != v.MAC.String() || got.TunnelAddr != v.TunnelAddr {
			t.Errorf("round trip of %+v via %s=%s: %+v, %v", v, key, s, got, err)
		}
	}
	want := `{"ip":"192.168.1.10","mac":"66:2a:01:02:03:04","tunnelAddr":"10.244.1.0"}`
	if s, _ := MarshalVTEP(VTEP{IP: netip.MustParseAddr("192.168.1.10"), MAC: mustMAC("66:2A:01:02:03:04"), TunnelAddr: netip.MustParseAddr("10.244.1.0")}); s != want {
		t.Errorf("MarshalVTEP = %s, want %s", s, want)
	}
	// Unknown fields (a newer agent's, or internal/agent's "subnet") are ignored.
	if _, err := ParseVTEP(`{"ip":"10.0.0.1","mac":"02:00:00:00:00:01","tunnelAddr":"","subnet":"10.0.0.0/24","future":[1]}`); err != nil {
		t.Errorf("unknown fields: %v", err)
	}
}

func TestParseVTEPErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{``, "not a JSON object"},
		{`null`, "ip: missing"},
		{`[]`, "not a JSON object"},
		{`"x"`, "not a JSON object"},
		{`{"ip":5,"mac":"02:00:00:00:00:01"}`, "ip"},
		{`{"mac":"02:00:00:00:00:01"}`, "ip: missing"},
		{`{"ip":"10.0.0.300","mac":"02:00:00:00:00:01"}`, "ip: ParseAddr"},
		{`{"ip":"0.0.0.0","mac":"02:00:00:00:00:01"}`, "ip: 0.0.0.0 is not a unicast address"},
		{`{"ip":"224.0.0.1","mac":"02:00:00:00:00:01"}`, "not a unicast address"},
		{`{"ip":"::ffff:10.0.0.1","mac":"02:00:00:00:00:01"}`, "ip: ::ffff:10.0.0.1 is an IPv4-mapped IPv6 address"},
		{`{"ip":"fe80::1%eth0","mac":"02:00:00:00:00:01"}`, "ip: fe80::1%eth0 has a zone"},
		{`{"ip":"10.0.0.1"}`, "mac: missing"},
		{`{"ip":"10.0.0.1","mac":"zz:00:00:00:00:01"}`, "mac: address zz:00:00:00:00:01: invalid MAC address"},
		{`{"ip":"10.0.0.1","mac":"02:00:00:00:00:00:00:01"}`, "mac: \"02:00:00:00:00:00:00:01\" is not a 6-byte Ethernet address"},
		{`{"ip":"10.0.0.1","mac":"01:00:5e:00:00:01"}`, "mac: 01:00:5e:00:00:01 is a multicast address"},
		{`{"ip":"10.0.0.1","mac":"02:00:00:00:00:01","tunnelAddr":"x"}`, "tunnelAddr: ParseAddr"},
		{`{"ip":"10.0.0.1","mac":"02:00:00:00:00:01","tunnelAddr":"fd00::1"}`, "tunnelAddr: fd00::1 is not of the family of ip 10.0.0.1"},
		{`{"ip":"10.0.0.1","mac":"02:00:00:00:00:01"} {}`, "not a JSON object"},
		{`{"ip":"10.0.0.1","mac":"02:00:00:00:00:01"}}`, "not a JSON object"},
		{strings.Repeat(" ", 2000), "more than 1024"},
	} {
		_, err := ParseVTEP(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseVTEP(%.40q) = %v, want an error containing %q", c.in, err, c.want)
		}
	}
	v4 := `{"ip":"10.0.0.1","mac":"02:00:00:00:00:01"}`
	if _, err := ParseVTEPAnnotation(AnnotationVTEPv6, v4); err == nil || !strings.Contains(err.Error(), "strait.dev/vtep-v6: ip: 10.0.0.1 is not of the annotation's family") {
		t.Errorf("v4 VTEP under the v6 key: %v", err)
	}
	if _, err := ParseVTEPAnnotation("strait.dev/vtep", v4); err == nil {
		t.Error("unknown key accepted")
	}
	if _, err := MarshalVTEP(VTEP{IP: netip.MustParseAddr("10.0.0.1")}); err == nil || !strings.Contains(err.Error(), "mac") {
		t.Errorf("MarshalVTEP without a MAC: %v", err)
	}
}

func FuzzParseVTEP(f *testing.F) {
	for _, s := range []string{
		`{"ip":"192.168.1.10","mac":"66:2a:01:02:03:04","tunnelAddr":"10.244.1.0"}`,
		`{"ip":"2001:db8::10","mac":"66:2a:01:02:03:05"}`, `{}`, `null`, `{"ip":"10.0.0.1","mac":"0200.0000.0001"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVTEP(s)
		if err != nil {
			return
		}
		// What parses is valid and survives a round trip.
		out, err := MarshalVTEP(v)
		if err != nil {
			t.Fatalf("ParseVTEP(%q) = %+v, which MarshalVTEP rejects: %v", s, v, err)
		}
		w, err := ParseVTEP(out)
		if err != nil || w.IP != v.IP || w.MAC.String() != v.MAC.String() || w.TunnelAddr != v.TunnelAddr {
			t.Fatalf("round trip of %q via %s: %+v, %v", s, out, w, err)
		}
	})
}

func TestNodeSubnet(t *testing.T) {
	for _, c := range []struct{ in, want string }{{"192.168.1.0/24", "192.168.1.0/24"}, {"2001:db8:1::/64", "2001:db8:1::/64"}} {
		p, err := ParseNodeSubnet(c.in)
		if err != nil || p.String() != c.want {
			t.Errorf("ParseNodeSubnet(%s) = %v, %v", c.in, p, err)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"192.168.1.10/24", "host bits set in 192.168.1.10/24 (the network is 192.168.1.0/24)"},
		{"192.168.1.0", "node subnet: netip.ParsePrefix"},
		{"::ffff:192.168.1.0/120", "IPv4-mapped"},
		{"", "node subnet"},
	} {
		if _, err := ParseNodeSubnet(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseNodeSubnet(%q) = %v, want an error containing %q", c.in, err, c.want)
		}
	}
	s, err := FormatNodeSubnet(netip.MustParsePrefix("192.168.1.10/24"))
	if err != nil || s != "192.168.1.0/24" {
		t.Errorf("FormatNodeSubnet: %q, %v", s, err)
	}
	if NodeSubnetAnnotation(netip.MustParsePrefix("fd00::/64")) != AnnotationNodeSubnetV6 || NodeSubnetAnnotation(netip.MustParsePrefix("10.0.0.0/8")) != AnnotationNodeSubnetV4 {
		t.Error("NodeSubnetAnnotation picks the wrong key")
	}
	if _, err := FormatNodeSubnet(netip.Prefix{}); err == nil {
		t.Error("FormatNodeSubnet of the zero prefix succeeded")
	}
}
