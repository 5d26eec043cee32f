package bgp

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestResolveNextHop(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	v4 := IfAddr{Prefix: p("198.51.100.1/24")}
	v6 := IfAddr{Prefix: p("2001:db8:100::1/64")}
	ll := IfAddr{Prefix: p("fe80::1/64")}
	dep := IfAddr{Prefix: p("2001:db8:100::7/64"), Deprecated: true}
	tmp := IfAddr{Prefix: p("2001:db8:100::8/64"), Temporary: true}
	dyn := IfAddr{Prefix: p("2001:db8:100::9/64"), Dynamic: true}
	other6 := IfAddr{Prefix: p("2001:db8:200::5/64")}
	other4 := IfAddr{Prefix: p("203.0.113.5/24")}
	cases := []struct {
		name string
		in   NextHopInput
		want string // address, or "error: substring"
	}{
		{"auto v4 on v4 session", NextHopInput{Local: a("198.51.100.1"), Family: IPv4Unicast}, "198.51.100.1"},
		{"auto v4 on mapped local", NextHopInput{Local: a("::ffff:198.51.100.1"), Family: IPv4Unicast}, "198.51.100.1"},
		{"auto v6 on v4 session from interface", NextHopInput{Local: a("198.51.100.1"), Family: IPv6Unicast,
			LocalIfAddrs: []IfAddr{v4, ll, dep, tmp, dyn, v6}}, "2001:db8:100::1"},
		{"auto v6 on v4 session without v6 address", NextHopInput{Local: a("198.51.100.1"), Family: IPv6Unicast,
			LocalIfAddrs: []IfAddr{v4, ll, dep}}, "error: no usable ipv6 address"},
		{"auto v6 on v6 session", NextHopInput{Local: a("2001:db8:100::1"), Family: IPv6Unicast}, "2001:db8:100::1"},
		{"auto v4 on v6 session from interface", NextHopInput{Local: a("2001:db8:100::1"), Family: IPv4Unicast,
			LocalIfAddrs: []IfAddr{v6, v4}}, "198.51.100.1"},
		{"auto v4 on v6 session, no v4, extended next hop", NextHopInput{Local: a("2001:db8:100::1"), Family: IPv4Unicast,
			LocalIfAddrs: []IfAddr{v6}, ExtendedNextHop: true}, "2001:db8:100::1"},
		{"auto v4 on v6 session, no v4, no extended next hop", NextHopInput{Local: a("2001:db8:100::1"), Family: IPv4Unicast,
			LocalIfAddrs: []IfAddr{v6}}, "error: did not negotiate extended-nexthop"},
		{"auto unknown local", NextHopInput{Family: IPv4Unicast}, "error: local address is not known"},
		{"fixed both", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFixed, IPv4: a("203.0.113.9"), IPv6: a("2001:db8:200::9")},
			Local: a("198.51.100.1"), Family: IPv6Unicast}, "2001:db8:200::9"},
		{"fixed mapped rejected", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFixed, IPv6: a("::ffff:203.0.113.9")},
			Local: a("198.51.100.1"), Family: IPv6Unicast}, "error: IPv4-mapped"},
		{"fixed link-local rejected", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFixed, IPv6: a("fe80::9")},
			Local: a("198.51.100.1"), Family: IPv6Unicast}, "error: not a global unicast"},
		{"fixed wrong family", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFixed, IPv4: a("2001:db8:200::9")},
			Local: a("198.51.100.1"), Family: IPv4Unicast}, "error: other family"},
		{"fixed missing v6", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFixed, IPv4: a("203.0.113.9")},
			Local: a("198.51.100.1"), Family: IPv6Unicast}, "error: nextHop.ipv6 is not set"},
		{"fixed missing v4 on v6 session with extended next hop", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFixed},
			Local: a("2001:db8:100::1"), Family: IPv4Unicast, ExtendedNextHop: true}, "2001:db8:100::1"},
		{"from interface", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFromInterface, Interface: "eth1"},
			Local: a("198.51.100.1"), Family: IPv4Unicast, PolicyIfAddrs: []IfAddr{other4, other6}}, "203.0.113.5"},
		{"from interface keeps the session address when it is there", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFromInterface, Interface: "eth0"},
			Local: a("198.51.100.1"), Family: IPv4Unicast, PolicyIfAddrs: []IfAddr{other4, v4}}, "198.51.100.1"},
		{"from interface skips dynamic and temporary", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFromInterface, Interface: "eth1"},
			Local: a("198.51.100.1"), Family: IPv6Unicast, PolicyIfAddrs: []IfAddr{dyn, tmp, ll, other6}}, "2001:db8:200::5"},
		{"from interface none", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFromInterface, Interface: "eth1"},
			Local: a("198.51.100.1"), Family: IPv6Unicast, PolicyIfAddrs: []IfAddr{dyn, ll}}, "error: interface eth1 has no usable ipv6"},
		{"from interface without name", NextHopInput{Policy: NextHopPolicy{Mode: NextHopFromInterface},
			Local: a("198.51.100.1"), Family: IPv4Unicast}, "error: needs nextHop.interface"},
		{"unknown mode", NextHopInput{Policy: NextHopPolicy{Mode: "Sometimes"}, Local: a("198.51.100.1"), Family: IPv4Unicast},
			"error: unknown next-hop mode"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ResolveNextHop(c.in)
			if want, ok := strings.CutPrefix(c.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrNoNextHop) {
					t.Fatalf("got %v, %v; want an ErrNoNextHop error containing %q", got, err, want)
				}
				return
			}
			if err != nil || got != a(c.want) {
				t.Fatalf("got %v, %v; want %s", got, err, c.want)
			}
			if got.Is4In6() {
				t.Fatalf("IPv4-mapped next hop %s", got)
			}
		})
	}
}

type fakeAddrs struct {
	ifs map[string][]IfAddr
	src netip.Addr
}

func (f fakeAddrs) InterfaceAddrs(name string) ([]IfAddr, error) {
	if a, ok := f.ifs[name]; ok {
		return a, nil
	}
	return nil, errors.New("no such interface")
}

func (f fakeAddrs) InterfaceOf(addr netip.Addr) (string, error) {
	for n, as := range f.ifs {
		if hasAddr(as, addr) {
			return n, nil
		}
	}
	return "", errors.New("not found")
}

func (f fakeAddrs) SourceFor(netip.Addr) (netip.Addr, error) { return f.src, nil }

func TestPickLocal(t *testing.T) {
	a := netip.MustParseAddr
	src := fakeAddrs{ifs: map[string][]IfAddr{"eth1": {
		{Prefix: netip.MustParsePrefix("fe80::1/64")},
		{Prefix: netip.MustParsePrefix("2001:db8:200::1/64")},
		{Prefix: netip.MustParsePrefix("203.0.113.1/24")},
	}}, src: a("198.51.100.1")}
	cases := []struct {
		peer Peer
		want string
	}{
		{Peer{Address: a("198.51.100.254"), LocalAddress: a("198.51.100.7")}, "198.51.100.7"},
		{Peer{Address: a("198.51.100.254"), LocalAddress: a("2001:db8::1")}, "error: different families"},
		{Peer{Address: a("2001:db8:200::254"), SourceInterface: "eth1"}, "2001:db8:200::1"},
		{Peer{Address: a("203.0.113.254"), SourceInterface: "eth1"}, "203.0.113.1"},
		{Peer{Address: a("203.0.113.254"), SourceInterface: "eth9"}, "error: no such interface"},
		{Peer{Address: a("198.51.100.254")}, "198.51.100.1"},
	}
	for _, c := range cases {
		got, err := pickLocal(c.peer, src)
		if want, ok := strings.CutPrefix(c.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%+v: got %v, %v; want error %q", c.peer, got, err, want)
			}
			continue
		}
		if err != nil || got != a(c.want) {
			t.Errorf("%+v: got %v, %v; want %s", c.peer, got, err, c.want)
		}
	}
}
