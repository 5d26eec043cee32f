package flowrec

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/flow/ipfix"
)

type collect struct {
	c   *Codec
	got []Fields
	err error
}

func (v *collect) Template(*ipfix.Header, *ipfix.Template) {}
func (v *collect) Withdraw(*ipfix.Header, uint16)          {}
func (v *collect) Record(_ *ipfix.Header, r *ipfix.Record) {
	var f Fields
	if err := v.c.Decode(r, &f); err != nil {
		v.err = err
	}
	v.got = append(v.got, f)
}

func TestRoundTrip(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	start := time.UnixMilli(1_790_000_000_123)
	v4 := Fields{
		Start: start, End: start.Add(5 * time.Second),
		Src: netip.MustParseAddr("10.244.1.5"), Dst: netip.MustParseAddr("10.244.2.7"), SrcPort: 40000, DstPort: 8080, Proto: 6,
		ServiceAddr: netip.MustParseAddr("10.96.0.20"), ServicePort: 80,
		Packets: 1, Bytes: 2, ReversePackets: 3, ReverseBytes: 4,
		TotalPackets: 5, TotalBytes: 6, ReverseTotalPackets: 7, ReverseTotalBytes: 8,
		EndReason: 3, Egress: true, FlowType: FlowTypeInterNode, TCPState: 3,
		SrcPod: "web-1", SrcNamespace: "shop", SrcNode: "n1", SrcLabels: `{"app":"web"}`,
		DstPod: "db-0", DstNamespace: "data", DstNode: "n2", DstLabels: `{"app":"db"}`, Service: "data/db:pg",
	}
	v6 := v4
	v6.Src, v6.Dst, v6.ServiceAddr = netip.MustParseAddr("fd10:244::5"), netip.MustParseAddr("fd10:244:0:1::7"), netip.MustParseAddr("fd10:96::20")
	v6.PostNATSrc, v6.PostNATSrcPort = netip.MustParseAddr("2001:db8:100::2"), 61000
	v6.Egress = false

	var buf bytes.Buffer
	enc := ipfix.NewEncoder(&buf, 1400)
	for _, tm := range c.Templates() {
		if err := enc.AddTemplate(7, tm); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []*Fields{&v4, &v6} {
		if err := c.Encode(enc, 7, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	cache := ipfix.NewTemplateCache(0)
	v := &collect{c: c}
	if _, err := ipfix.NewDecoder(cache, cache.NewSession(false)).Decode(buf.Bytes(), time.Now(), v); err != nil {
		t.Fatal(err)
	}
	if v.err != nil {
		t.Fatal(v.err)
	}
	if len(v.got) != 2 {
		t.Fatalf("%d records", len(v.got))
	}
	for i, want := range []Fields{v4, v6} {
		got := v.got[i]
		if !got.Start.Equal(want.Start) || !got.End.Equal(want.End) {
			t.Errorf("%d: times %v %v", i, got.Start, got.End)
		}
		got.Start, got.End, want.Start, want.End = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if got != want {
			t.Errorf("%d:\n got %+v\nwant %+v", i, got, want)
		}
	}
}
