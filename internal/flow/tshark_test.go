package flow

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
	"github.com/strait-net/strait/internal/flow/ipfix"
)

// writePcap wraps each message in Ethernet/IPv4/UDP (127.0.0.1:50000 ->
// 127.0.0.1:4739) and writes a classic pcap file.
func writePcap(t *testing.T, path string, msgs [][]byte) {
	t.Helper()
	var b bytes.Buffer
	le := binary.LittleEndian
	hdr := make([]byte, 24)
	le.PutUint32(hdr[0:], 0xa1b2c3d4)
	le.PutUint16(hdr[4:], 2)
	le.PutUint16(hdr[6:], 4)
	le.PutUint32(hdr[16:], 65535)
	le.PutUint32(hdr[20:], 1) // Ethernet
	b.Write(hdr)
	for i, m := range msgs {
		pkt := make([]byte, 14+20+8, 14+20+8+len(m))
		binary.BigEndian.PutUint16(pkt[12:], 0x0800)
		ip := pkt[14:34]
		ip[0], ip[8], ip[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(m)))
		copy(ip[12:], []byte{127, 0, 0, 1})
		copy(ip[16:], []byte{127, 0, 0, 1})
		var sum uint32
		for j := 0; j < 20; j += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[j:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		udp := pkt[34:42]
		binary.BigEndian.PutUint16(udp[0:], 50000)
		binary.BigEndian.PutUint16(udp[2:], 4739)
		binary.BigEndian.PutUint16(udp[4:], uint16(8+len(m)))
		pkt = append(pkt, m...)
		rec := make([]byte, 16)
		le.PutUint32(rec[0:], uint32(1_790_000_000+i))
		le.PutUint32(rec[8:], uint32(len(pkt)))
		le.PutUint32(rec[12:], uint32(len(pkt)))
		b.Write(rec)
		b.Write(pkt)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

type msgRecorder struct{ msgs [][]byte }

func (m *msgRecorder) Write(b []byte) (int, error) {
	m.msgs = append(m.msgs, bytes.Clone(b))
	return len(b), nil
}

// TestTsharkDecodesRecords: tshark (a decoder that is not ours) reads the
// agent's IPFIX messages, IPv4 and IPv6, without a malformed-packet or error
// report, with the values we put in.
func TestTsharkDecodesRecords(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatalf("tshark not installed (hack/install-deps.sh installs it): %v", err)
	}
	codec, err := flowrec.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	var w msgRecorder
	enc := ipfix.NewEncoder(&w, 1400)
	for _, tm := range codec.Templates() {
		if err := enc.AddTemplate(7, tm); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.UnixMilli(1_790_000_000_000)
	v4 := flowrec.Fields{Start: start, End: start.Add(3 * time.Second),
		Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.244.1.7"), SrcPort: 40000, DstPort: 5432, Proto: 6,
		ServiceAddr: netip.MustParseAddr("10.96.0.10"), ServicePort: 80, Service: "data/db:pg",
		Packets: 11, Bytes: 1234, ReversePackets: 9, ReverseBytes: 4321, TotalPackets: 11, TotalBytes: 1234,
		ReverseTotalPackets: 9, ReverseTotalBytes: 4321, EndReason: 3, Egress: true, FlowType: flowrec.FlowTypeInterNode,
		TCPState: 7, SrcPod: "web-1", SrcNamespace: "shop", SrcNode: "n1", DstPod: "db-0", DstNamespace: "data", DstNode: "n2",
		SrcLabels: `{"app":"web"}`}
	v6 := v4
	v6.Src, v6.Dst, v6.ServiceAddr = netip.MustParseAddr("fd10:244::5"), netip.MustParseAddr("fd10:244:0:1::7"), netip.Addr{}
	v6.PostNATSrc, v6.PostNATSrcPort = netip.MustParseAddr("2001:db8:100::2"), 61000
	for _, f := range []*flowrec.Fields{&v4, &v6} {
		if err := codec.Encode(enc, 7, f); err != nil {
			t.Fatal(err)
		}
		if err := enc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	pcap := filepath.Join(t.TempDir(), "agent.pcap")
	writePcap(t, pcap, w.msgs)

	out, err := exec.Command("tshark", "-r", pcap, "-d", "udp.port==4739,cflow", "-V").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	text := string(out)
	for _, bad := range []string{"Malformed", "[Expert Info (Error", "[Expert Info (Warning"} {
		if strings.Contains(text, bad) {
			t.Errorf("tshark reports %q:\n%s", bad, text)
		}
	}
	for _, want := range []string{
		"SrcAddr: 10.244.0.5", "DstAddr: 10.244.1.7", "SrcPort: 40000", "DstPort: 5432",
		"SrcAddr: fd10:244::5", "DstAddr: fd10:244:0:1::7", "Post NAT Source IPv6 Address: 2001:db8:100::2",
		"Octets: 1234", "Packets: 11", "Flow End Reason: End of Flow detected",
		"Octets: 4321 (Reverse Type 1 BYTES)", "Permanent Octets: 4321 (Reverse Type 85 BYTES_TOTAL)", "PEN: (Unknown) (99999)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("tshark output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("%s", text)
	}
}
