package aggregator

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/flow/ipfix"
)

// TestProxyIPv6ExporterGets404: an exporter with an IPv6 address gets originalExporterIPv6Address (404);
// a record that already carries 403/405 (from another proxy) keeps them and gets nothing appended.
func TestProxyIPv6ExporterGets404(t *testing.T) {
	pool := newBatchPool()
	var got []*batch
	sink := &destination{name: "t", q: make(chan *batch, 8)}
	fan := &fanout{dests: []*destination{sink}}
	s := newProxySession(netip.MustParseAddr("2001:db8:100::7"), newTemplateIDs(), nil, fan, pool)
	plain, _ := ipfix.NewTemplate(300, 0, ipfix.FieldSpec{ID: ipfix.IEProtocolIdentifier, Length: 1})
	chained, _ := ipfix.NewTemplate(301, 0, ipfix.FieldSpec{ID: ipfix.IEProtocolIdentifier, Length: 1},
		ipfix.FieldSpec{ID: ipfix.IEOriginalExporterIPv4Address, Length: 4}, ipfix.FieldSpec{ID: ipfix.IEOriginalObservationDomainID, Length: 4})
	var msg bytes.Buffer
	enc := ipfix.NewEncoder(&msg, 0)
	_ = enc.AddTemplate(9, plain)
	_ = enc.AddTemplate(9, chained)
	_ = enc.AppendRecord(9, 300, []byte{6})
	_ = enc.AppendRecord(9, 301, []byte{17, 198, 51, 100, 9, 0, 0, 0, 5})
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	cache := ipfix.NewTemplateCache(0)
	if _, err := ipfix.NewDecoder(cache, cache.NewSession(false)).Decode(msg.Bytes(), time.Now(), s); err != nil {
		t.Fatal(err)
	}
	s.flush()
	got = append(got, <-sink.q)
	b := got[0]
	if len(b.items) != 2 {
		t.Fatalf("%d items", len(b.items))
	}
	first, second := b.items[0], b.items[1]
	if f := first.t.t.Fields; len(f) != 3 || f[1].ID != ipfix.IEOriginalExporterIPv6Address || f[2].ID != ipfix.IEOriginalObservationDomainID {
		t.Fatalf("derived template %+v", f)
	}
	want := append([]byte{6}, netip.MustParseAddr("2001:db8:100::7").AsSlice()...)
	want = append(want, 0, 0, 0, 9)
	if !bytes.Equal(b.data(first), want) {
		t.Fatalf("record % x, want % x", b.data(first), want)
	}
	if len(second.t.t.Fields) != 3 || !bytes.Equal(b.data(second), []byte{17, 198, 51, 100, 9, 0, 0, 0, 5}) {
		t.Fatalf("chained record changed: %+v % x", second.t.t.Fields, b.data(second))
	}
}

// TestProxyForwardsWithdrawalAndRedefinition: over TCP, an exporter withdraws a template and defines the same
// id with other fields; the collector behind the aggregator receives the withdrawal of the derived template
// and decodes the new records with the new definition.
func TestProxyForwardsWithdrawalAndRedefinition(t *testing.T) {
	col := newTestCollector(t, "tcp", nil)
	a := startAggregator(t, fmt.Sprintf(`
collector: {tcp: {address: "127.0.0.1:0"}}
destinations: [{name: c, type: ipfix, address: %q}]
api: {address: "off"}
`, col.addr), Options{})
	conn, err := net.Dial("tcp", a.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	enc := ipfix.NewEncoder(conn, 0)
	v1, _ := ipfix.NewTemplate(400, 0, ipfix.FieldSpec{ID: ipfix.IESourceTransportPort, Length: 2})
	v2, _ := ipfix.NewTemplate(400, 0, ipfix.FieldSpec{ID: ipfix.IESourcePodName, Length: ipfix.VarLen, PEN: ipfix.StraitPEN})
	_ = enc.AddTemplate(1, v1)
	_ = enc.AppendRecord(1, 400, []byte{0, 80})
	_ = enc.Withdraw(1, 400, false)
	_ = enc.AddTemplate(1, v2)
	_ = enc.AppendRecord(1, 400, append([]byte{3}, "web"...))
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	col.waitCount(t, 2, 5*time.Second)
	r := col.snapshot()
	if r[0]["sourceTransportPort"] != uint64(80) || r[1]["sourcePodName"] != "web" || r[1]["sourceTransportPort"] != nil {
		t.Fatalf("records %v", r)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.withdr != 1 || col.unknown != 0 {
		t.Fatalf("collector saw %d withdrawals, %d unknown sets", col.withdr, col.unknown)
	}
}
