package bgptest

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
)

// WriteMRT writes an MRT TABLE_DUMP_V2 file (RFC 6396) with one IPv4 /32
// per address from first on, next hop nexthop, origin IGP, empty AS path:
// the input of `gobgp mrt inject global FILE`, to feed gobgpd in bulk.
func WriteMRT(path string, first netip.Addr, n int, nexthop netip.Addr) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write MRT: %w", err)
	}
	w := bufio.NewWriter(f)
	record := func(subtype uint16, body []byte) {
		var h [12]byte
		binary.BigEndian.PutUint16(h[4:], 13) // TABLE_DUMP_V2
		binary.BigEndian.PutUint16(h[6:], subtype)
		binary.BigEndian.PutUint32(h[8:], uint32(len(body)))
		_, _ = w.Write(h[:])
		_, _ = w.Write(body)
	}
	// PEER_INDEX_TABLE: collector ID, no view name, one IPv4 peer with a 4-byte AS.
	peer := []byte{0, 0, 0, 1, 0, 0, 0, 1, 0x02, 0, 0, 0, 1}
	peer = append(peer, nexthop.AsSlice()...)
	peer = binary.BigEndian.AppendUint32(peer, 65001)
	record(1, peer)
	nh := nexthop.As4()
	attrs := []byte{0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, nh[0], nh[1], nh[2], nh[3]}
	ip := first
	for i := 0; i < n; i++ {
		b := binary.BigEndian.AppendUint32(nil, uint32(i))
		b = append(b, 32)
		b = append(b, ip.AsSlice()...)
		b = append(b, 0, 1, 0, 0) // one entry, peer index 0
		b = binary.BigEndian.AppendUint32(b, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(len(attrs)))
		b = append(b, attrs...)
		record(2, b) // RIB_IPV4_UNICAST
		ip = ip.Next()
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return fmt.Errorf("write MRT: %w", err)
	}
	return f.Close()
}
