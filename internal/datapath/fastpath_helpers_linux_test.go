package datapath

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/strait-net/strait/internal/testutil"
	"golang.org/x/sys/unix"
)

func fpConfig(dir string) FastPath {
	ranges := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd42:244::/48")}
	return FastPath{Enabled: true, PinDir: dir, PodRanges: ranges,
		Uplinks: []string{"eth0", VTEPDevice4, VTEPDevice6}}
}

func mustFastPath(t *testing.T, dp *Datapath, fp FastPath) FastPathStatus {
	t.Helper()
	st, err := dp.SetFastPath(fp)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// forwarded reads the node's forwarded datagrams (IPv4 + IPv6) from inside
// its namespace.
func forwarded(t *testing.T, n *testutil.NS) uint64 {
	t.Helper()
	var total uint64
	snmp := strings.Split(n.MustRun(t, "cat", "/proc/net/snmp"), "\n")
	for i := 0; i+1 < len(snmp); i++ {
		if !strings.HasPrefix(snmp[i], "Ip: ") || !strings.HasPrefix(snmp[i+1], "Ip: ") {
			continue
		}
		names, vals := strings.Fields(snmp[i]), strings.Fields(snmp[i+1])
		if j := slices.Index(names, "ForwDatagrams"); j > 0 && j < len(vals) {
			v, _ := strconv.ParseUint(vals[j], 10, 64)
			total += v
		}
		break
	}
	for _, line := range strings.Split(n.MustRun(t, "cat", "/proc/net/snmp6"), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "Ip6OutForwDatagrams" {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			total += v
		}
	}
	return total
}

// bulk sends n bytes from pod ns to addr over TCP and waits for the echo.
func bulk(n ns.NetNS, addr string, size int) error {
	return n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		errc := make(chan error, 1)
		go func() {
			_, err := io.CopyN(io.Discard, c, int64(size))
			errc <- err
		}()
		buf := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf[:min(len(buf), size-sent)]); err != nil {
				return err
			}
		}
		return <-errc
	})
}

func linkIDs(t *testing.T, dir string) map[string]link.ID {
	t.Helper()
	ids := map[string]link.ID{}
	entries, err := os.ReadDir(filepath.Join(dir, fpLinksDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(dir, fpLinksDir, e.Name()), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		_ = l.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids[e.Name()] = info.ID
	}
	return ids
}

// sendUDPFrame sends one IPv4 UDP datagram from src to dst as a raw frame
// to MAC to out of n's eth0, past n's stack and programs.
func sendUDPFrame(t *testing.T, n *ovNode, to net.HardwareAddr, src, dst netip.Addr) {
	t.Helper()
	err := n.ns.Do(func(ns.NetNS) error {
		l, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		f := append(append(slices.Clone([]byte(to)), l.HardwareAddr...), 0x08, 0x00)
		ip := []byte{0x45, 0, 0, 20 + 8 + 4, 0, 0, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0}
		ip = append(append(ip, src.AsSlice()...), dst.AsSlice()...)
		var sum uint32
		for i := 0; i < len(ip); i += 2 {
			sum += uint32(ip[i])<<8 | uint32(ip[i+1])
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		udp := []byte{0x9c, 0x40, 0, 9, 0, 8 + 4, 0, 0, 's', 't', 'r', 't'} // 40000 -> 9, no checksum
		f = append(append(f, ip...), udp...)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: l.Index, Halen: 6}
		copy(sa.Addr[:], to)
		return unix.Sendto(fd, f, 0, sa)
	})
	if err != nil {
		t.Fatalf("send a frame from %s: %v", n.name, err)
	}
}

// managedNeighs lists the addresses of n's managed next hops as
// FastPathNextHops (straitctl routes) reads them from the kernel, in order;
// each must be on eth0 and have a state.
func managedNeighs(t *testing.T, n *ovNode) []string {
	t.Helper()
	hops, err := n.dp.FastPathNextHops()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hops {
		if h.Dev != "eth0" || h.State == "" {
			t.Errorf("%s: next hop %+v, want one on eth0 with a state", n.name, h)
		}
		out = append(out, h.IP.String())
	}
	return out
}

// vxlanFrame captures on n's eth0 the first VXLAN packet from underlay
// address src that send causes.
func vxlanFrame(t *testing.T, n *ovNode, src netip.Addr, send func()) []byte {
	t.Helper()
	p := uint16(unix.ETH_P_IP)
	proto := int(p>>8 | p<<8) // network order for the socket
	var fd int
	err := n.ns.Do(func(ns.NetNS) error {
		l, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: l.Index})
	})
	if err != nil {
		t.Fatalf("packet socket in %s: %v", n.name, err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200_000}); err != nil {
		t.Fatal(err)
	}
	send()
	buf := make([]byte, 1<<16)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		m, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		f := buf[:m]
		if m >= 14+20+8+8+14 && f[14+9] == unix.IPPROTO_UDP && netip.AddrFrom4([4]byte(f[26:30])) == src &&
			binary.BigEndian.Uint16(f[14+20+2:]) == 4789 {
			return slices.Clone(f)
		}
	}
	t.Fatalf("no VXLAN packet from %s reached %s", src, n.name)
	return nil
}

// vxlanHeaders are the fields of an IPv4 VXLAN frame's outer headers (and
// the inner Ethernet header).
type vxlanHeaders struct {
	tos, ttl           uint8
	id, frag           uint16
	sport, dport       uint16
	udpCheck           uint16
	vxFlags, vni       uint32
	innerDst, innerSrc string
	innerType          uint16
}

func parseVXLAN(t *testing.T, f []byte) vxlanHeaders {
	t.Helper()
	ip, udp := f[14:34], f[34:42]
	vx, in := f[42:50], f[50:64]
	if ip[0] != 0x45 {
		t.Fatalf("outer IPv4 header %x: want version 4 without options", ip[0])
	}
	return vxlanHeaders{
		tos: ip[1], ttl: ip[8], id: binary.BigEndian.Uint16(ip[4:]), frag: binary.BigEndian.Uint16(ip[6:]),
		sport: binary.BigEndian.Uint16(udp), dport: binary.BigEndian.Uint16(udp[2:]), udpCheck: binary.BigEndian.Uint16(udp[6:]),
		vxFlags: binary.BigEndian.Uint32(vx), vni: binary.BigEndian.Uint32(vx[4:]) >> 8,
		innerDst: net.HardwareAddr(in[:6]).String(), innerSrc: net.HardwareAddr(in[6:12]).String(),
		innerType: binary.BigEndian.Uint16(in[12:]),
	}
}

// vtepMap opens the fast path's pinned fp_vteps under dir.
func vtepMap(t *testing.T, dir string) *ebpf.Map {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, fpMapVTEPs), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// vtepOf reads the underlay address fp_vteps under dir holds for mac.
func vtepOf(t *testing.T, dir, mac string) (netip.Addr, bool) {
	t.Helper()
	k, ok := fpVTEPKeyOf(mac)
	if !ok {
		t.Fatalf("%x is no unicast MAC", mac)
	}
	var v [4]byte
	err := vtepMap(t, dir).Lookup(k, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return netip.Addr{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrFrom4(v), true
}

func counterSum(t *testing.T, nodes []*ovNode, dirs map[*ovNode]string) FastPathCounters {
	t.Helper()
	var s FastPathCounters
	for _, n := range nodes {
		c, err := n.dp.FastPathCounters(dirs[n])
		if err != nil {
			t.Fatal(err)
		}
		s.Redirected += c.Redirected
		s.NAT += c.NAT
		s.Spoofed += c.Spoofed
		s.NotPod += c.NotPod
		s.FIB += c.FIB
		s.Other += c.Other
		s.Local += c.Local
		s.Encapsulated += c.Encapsulated
	}
	return s
}

func mapsEqual[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
