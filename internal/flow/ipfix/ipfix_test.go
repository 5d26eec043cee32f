package ipfix

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// collect is a Visitor that copies everything it sees.
type collect struct {
	templates []*Template
	withdraws []uint16
	records   [][][]byte // per record, field values
	tids      []uint16
	domains   []uint32
}

func (c *collect) Template(h *Header, t *Template) { c.templates = append(c.templates, t) }
func (c *collect) Withdraw(h *Header, id uint16)   { c.withdraws = append(c.withdraws, id) }
func (c *collect) Record(h *Header, r *Record) {
	var fs [][]byte
	for i := range r.NumFields() {
		fs = append(fs, append([]byte(nil), r.Field(i)...))
	}
	c.records = append(c.records, fs)
	c.tids = append(c.tids, r.Template.ID)
	c.domains = append(c.domains, h.DomainID)
}

func mustTemplate(t testing.TB, id uint16, scope int, f ...FieldSpec) *Template {
	t.Helper()
	tm, err := NewTemplate(id, scope, f...)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

var t0 = time.Unix(1_700_000_000, 0)

func fixedNow() time.Time { return t0 }

// TestRoundTrip encodes templates (IANA, reverse, Strait enterprise, variable-length) and records in several
// sets of one message and decodes them back field by field.
func TestRoundTrip(t *testing.T) {
	reg := NewRegistry()
	v4 := mustTemplate(t, 256, 0,
		FieldSpec{ID: IESourceIPv4Address, Length: 4}, FieldSpec{ID: IEDestinationIPv4Address, Length: 4},
		FieldSpec{ID: IEOctetDeltaCount, Length: 8}, FieldSpec{ID: IEOctetDeltaCount, Length: 8, PEN: ReversePEN},
		FieldSpec{ID: IEFlowStartMilliseconds, Length: 8})
	named := mustTemplate(t, 300, 0,
		FieldSpec{ID: IESourceIPv6Address, Length: 16},
		FieldSpec{ID: IESourcePodName, Length: VarLen, PEN: StraitPEN},
		FieldSpec{ID: IESourcePodLabels, Length: VarLen, PEN: StraitPEN},
		FieldSpec{ID: IEFlowType, Length: 1, PEN: StraitPEN})
	opts := mustTemplate(t, 400, 1, FieldSpec{ID: IEObservationDomainID, Length: 4},
		FieldSpec{ID: 41, Length: 8})
	var out bytes.Buffer
	enc := NewEncoder(&out, 0)
	enc.Now = fixedNow
	for _, tm := range []*Template{v4, named, opts} {
		if err := enc.AddTemplate(7, tm); err != nil {
			t.Fatal(err)
		}
	}
	var rb RecordBuilder
	long := string(bytes.Repeat([]byte("x"), 300)) // needs the 3-byte length prefix
	for i := range 3 {
		rb.Reset()
		rb.IPv4(netip.MustParseAddr("10.244.1.2"))
		rb.IPv4(netip.MustParseAddr("10.244.2.3"))
		rb.Uint64(uint64(1000 + i))
		rb.Uint64(uint64(2000 + i))
		rb.Milliseconds(t0)
		if err := enc.AppendRecord(7, 256, rb.Bytes()); err != nil {
			t.Fatal(err)
		}
		rb.Reset()
		rb.IPv6(netip.MustParseAddr("fd10:244::5"))
		rb.String("web-0")
		rb.String(long)
		rb.Uint8(FlowTypeInterNode)
		if err := enc.AppendRecord(7, 300, rb.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	rb.Reset()
	rb.Uint32(7)
	rb.Uint64(42)
	if err := enc.AppendRecord(7, 400, rb.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	cache := NewTemplateCache(0)
	s := cache.NewSession(false)
	var c collect
	st, err := NewDecoder(cache, s).Decode(out.Bytes(), t0, &c)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 7 || st.Templates != 3 || len(c.templates) != 3 {
		t.Fatalf("stats %+v, templates %d", st, len(c.templates))
	}
	if !c.templates[2].Options() || c.templates[2].ScopeCount != 1 {
		t.Fatalf("options template lost: %+v", c.templates[2])
	}
	if got := c.templates[1].Fields[1]; got.PEN != StraitPEN || got.Length != VarLen {
		t.Fatalf("enterprise field %+v", got)
	}
	// Records come back in message order: 256, 300, 256, 300, 256, 300, 400 grouped by set: the encoder
	// opens a new set whenever the template changes.
	wantT := []uint16{256, 300, 256, 300, 256, 300, 400}
	for i, id := range wantT {
		if c.tids[i] != id || c.domains[i] != 7 {
			t.Fatalf("record %d: template %d domain %d", i, c.tids[i], c.domains[i])
		}
	}
	r := c.records[4]
	if Value(mustLookup(t, reg, 0, IESourceIPv4Address), r[0]) != "10.244.1.2" ||
		Uint(r[2]) != 1002 || Uint(r[3]) != 2002 || Uint(r[4]) != uint64(t0.UnixMilli()) {
		t.Fatalf("record 4: %x", r)
	}
	r = c.records[5]
	if string(r[1]) != "web-0" || string(r[2]) != long || r[3][0] != FlowTypeInterNode {
		t.Fatalf("record 5: %q", r)
	}
	if Value(mustLookup(t, reg, 0, IESourceIPv6Address), r[0]) != "fd10:244::5" {
		t.Fatalf("ipv6 %x", r[0])
	}
	h, _ := ParseHeader(out.Bytes())
	if h.Sequence != 0 || h.ExportTime != uint32(t0.Unix()) || h.DomainID != 7 {
		t.Fatalf("header %+v", h)
	}
}

func mustLookup(t *testing.T, r *Registry, pen uint32, id uint16) InfoElement {
	t.Helper()
	ie, ok := r.Lookup(pen, id)
	if !ok {
		t.Fatalf("element %d:%d unknown", pen, id)
	}
	return ie
}

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	for _, c := range []struct {
		pen  uint32
		id   uint16
		name string
	}{
		{0, 403, "originalExporterIPv4Address"}, {0, 404, "originalExporterIPv6Address"},
		{0, 405, "originalObservationDomainId"}, {ReversePEN, 1, "reverseOctetDeltaCount"},
		{ReversePEN, 86, "reversePacketTotalCount"}, {0, 151, "flowEndSeconds"}, {0, 61, "flowDirection"},
		{StraitPEN, IESourcePodNamespace, "sourcePodNamespace"}, {StraitPEN, IEFlowType, "flowType"},
	} {
		ie, ok := r.Lookup(c.pen, c.id)
		if !ok || ie.Name != c.name {
			t.Errorf("%d:%d = %q %v, want %q", c.pen, c.id, ie.Name, ok, c.name)
		}
		if by, ok := r.ByName(c.name); !ok || by.ID != c.id || by.PEN != c.pen {
			t.Errorf("ByName(%q) = %+v", c.name, by)
		}
	}
	if ie, ok := r.Lookup(12345, 9); ok || ie.Name != "12345:9" {
		t.Errorf("unknown element: %+v %v", ie, ok)
	}
}

// msg assembles a message from raw sets.
func msg(domain uint32, sets ...[]byte) []byte {
	b := make([]byte, HeaderLen)
	for _, s := range sets {
		b = append(b, s...)
	}
	binary.BigEndian.PutUint16(b, Version)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint32(b[12:], domain)
	return b
}

func set(id uint16, body ...byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)+4))
	return append(b, body...)
}

// TestPaddingAndMultipleSets: a template set and two padded data sets in one message (as pmacctd sends).
func TestPaddingAndMultipleSets(t *testing.T) {
	tmpl := set(2, 1, 0, 0, 2, 0, 8, 0, 4, 0, 4, 0, 1, 0, 0, 0, 0) // id 256: srcaddr/4, proto/1; padded by 4 zero bytes
	data1 := set(256, 10, 0, 0, 1, 6, 10, 0, 0, 2, 17, 0, 0)       // 2 records + 2 bytes padding
	data2 := set(256, 10, 0, 0, 3, 1, 0, 0, 0)                     // 1 record + 3 bytes padding
	cache := NewTemplateCache(0)
	var c collect
	st, err := NewDecoder(cache, cache.NewSession(true)).Decode(msg(1, tmpl, data1, data2), t0, &c)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 3 || st.Templates != 1 {
		t.Fatalf("stats %+v", st)
	}
	if c.records[2][1][0] != 1 || c.records[1][1][0] != 17 {
		t.Fatalf("records %v", c.records)
	}
}

func TestWithdrawalAndUnknown(t *testing.T) {
	cache := NewTemplateCache(0)
	s := cache.NewSession(false)
	d := NewDecoder(cache, s)
	var c collect
	tm := set(2, 1, 0, 0, 1, 0, 4, 0, 1, 1, 1, 0, 1, 0, 4, 0, 1) // templates 256 and 257
	if _, err := d.Decode(msg(1, tm), t0, &c); err != nil {
		t.Fatal(err)
	}
	// Withdraw 256, then data for 256 is unknown and 257 still decodes.
	st, err := d.Decode(msg(1, set(2, 1, 0, 0, 0), set(256, 9), set(257, 8)), t0, &c)
	if err != nil {
		t.Fatal(err)
	}
	if st.Withdraws != 1 || st.UnknownSets != 1 || st.Records != 1 || c.withdraws[0] != 256 {
		t.Fatalf("stats %+v withdraws %v", st, c.withdraws)
	}
	// Domain 2 has no templates.
	if st, _ := d.Decode(msg(2, set(257, 8)), t0, &c); st.UnknownSets != 1 {
		t.Fatalf("domain scope: %+v", st)
	}
	// Withdraw all data templates (id 2).
	if _, err := d.Decode(msg(1, set(2, 0, 2, 0, 0)), t0, &c); err != nil {
		t.Fatal(err)
	}
	if cache.Len() != 0 {
		t.Fatalf("%d templates left after withdraw-all", cache.Len())
	}
}

func TestUDPTemplateExpiry(t *testing.T) {
	cache := NewTemplateCache(time.Minute)
	udp, tcp := cache.NewSession(true), cache.NewSession(false)
	tm := mustTemplate(t, 256, 0, FieldSpec{ID: 4, Length: 1})
	cache.Add(udp, 1, tm, t0)
	cache.Add(tcp, 1, tm, t0)
	if cache.Get(udp, 1, 256, t0.Add(59*time.Second)) == nil {
		t.Fatal("udp template expired early")
	}
	cache.Add(udp, 1, tm, t0.Add(30*time.Second)) // refresh
	if cache.Get(udp, 1, 256, t0.Add(80*time.Second)) == nil {
		t.Fatal("refreshed udp template expired")
	}
	if cache.Get(udp, 1, 256, t0.Add(91*time.Second)) != nil {
		t.Fatal("udp template did not expire")
	}
	if cache.Get(tcp, 1, 256, t0.Add(time.Hour)) == nil {
		t.Fatal("tcp template expired")
	}
	if n := cache.DropSession(tcp); n != 1 || cache.Len() != 0 {
		t.Fatalf("DropSession %d, left %d", n, cache.Len())
	}
}

func TestMalformed(t *testing.T) {
	good := set(2, 1, 0, 0, 1, 0, 4, 0, 1)
	cases := map[string][]byte{
		"short":             {0, 10, 0},
		"version 9":         func() []byte { b := msg(1, good); b[1] = 9; return b }(),
		"length > buffer":   func() []byte { b := msg(1, good); b[3] += 4; return b }(),
		"set length 2":      msg(1, []byte{1, 0, 0, 2}),
		"set overruns":      msg(1, []byte{1, 0, 0, 40, 1}),
		"reserved set id":   msg(1, set(5, 1, 2, 3, 4)),
		"template id 255":   msg(1, set(2, 0, 255, 0, 1, 0, 4, 0, 1)),
		"fields > bytes":    msg(1, set(2, 1, 0, 0, 9, 0, 4, 0, 1)),
		"pen truncated":     msg(1, set(2, 1, 0, 0, 1, 0x80, 1, 0, 4, 0, 0)),
		"empty record":      msg(1, set(2, 1, 0, 0, 1, 0, 4, 0, 0)),
		"options scope 0":   msg(1, set(3, 1, 0, 0, 1, 0, 0, 0, 4, 0, 1)),
		"options scope > n": msg(1, set(3, 1, 0, 0, 1, 0, 2, 0, 4, 0, 1)),
		"varlen overrun": msg(1, set(2, 1, 0, 0, 1, 0, 82, 0xff, 0xff),
			set(256, 200, 1, 2)),
	}
	for name, b := range cases {
		cache := NewTemplateCache(0)
		_, err := NewDecoder(cache, cache.NewSession(false)).Decode(b, t0, &collect{})
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

// TestEncoderSplitsMessages: records beyond the size limit go to new messages with correct sequence numbers.
func TestEncoderSplitsMessages(t *testing.T) {
	var msgs [][]byte
	w := writerFunc(func(b []byte) (int, error) { msgs = append(msgs, append([]byte(nil), b...)); return len(b), nil })
	enc := NewEncoder(w, 100)
	tm := mustTemplate(t, 256, 0, FieldSpec{ID: 1, Length: 8})
	if err := enc.AddTemplate(3, tm); err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		b, err := enc.Append(3, 256, 8)
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint64(b, uint64(i))
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	cache := NewTemplateCache(0)
	d := NewDecoder(cache, cache.NewSession(false))
	var c collect
	seq := uint32(0)
	for _, m := range msgs {
		if len(m) > 100 {
			t.Fatalf("message of %d bytes", len(m))
		}
		h, _ := ParseHeader(m)
		if h.Sequence != seq {
			t.Fatalf("sequence %d, want %d", h.Sequence, seq)
		}
		st, err := d.Decode(m, t0, &c)
		if err != nil {
			t.Fatal(err)
		}
		seq += uint32(st.Records)
	}
	if len(c.records) != 25 || Uint(c.records[24][0]) != 24 {
		t.Fatalf("%d records", len(c.records))
	}
	if _, err := enc.Append(3, 256, 200); err == nil {
		t.Fatal("oversized record accepted")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestDecodeNoAllocs: decoding fixed-length records allocates nothing per record.
func TestDecodeNoAllocs(t *testing.T) {
	m, cache, s := benchMessage(t, 40)
	d := NewDecoder(cache, s)
	var v countVisitor
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := d.Decode(m, t0, &v); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per 40-record message", allocs)
	}
}

type countVisitor struct{ n, bytes int }

func (c *countVisitor) Template(*Header, *Template) {}
func (c *countVisitor) Withdraw(*Header, uint16)    {}
func (c *countVisitor) Record(_ *Header, r *Record) { c.n++; c.bytes += len(r.Field(0)) }

// benchMessage builds a message with a Strait-like fixed template and n records, and a cache that knows it.
func benchMessage(t testing.TB, n int) ([]byte, *TemplateCache, SessionID) {
	tm := mustTemplate(t, 256, 0,
		FieldSpec{ID: 8, Length: 4}, FieldSpec{ID: 12, Length: 4}, FieldSpec{ID: 7, Length: 2},
		FieldSpec{ID: 11, Length: 2}, FieldSpec{ID: 4, Length: 1}, FieldSpec{ID: 152, Length: 8},
		FieldSpec{ID: 153, Length: 8}, FieldSpec{ID: 1, Length: 8}, FieldSpec{ID: 2, Length: 8},
		FieldSpec{ID: 1, Length: 8, PEN: ReversePEN}, FieldSpec{ID: 2, Length: 8, PEN: ReversePEN})
	var out bytes.Buffer
	enc := NewEncoder(&out, MaxMessageLen)
	cache := NewTemplateCache(0)
	s := cache.NewSession(false)
	cache.Add(s, 1, tm, t0)
	for i := range n {
		b, err := enc.Append(1, 256, tm.fixedLen)
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint32(b, uint32(i))
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), cache, s
}

func BenchmarkDecode(b *testing.B) {
	m, cache, s := benchMessage(b, 600)
	d := NewDecoder(cache, s)
	var v countVisitor
	b.ReportAllocs()
	b.SetBytes(int64(len(m)))
	for b.Loop() {
		if _, err := d.Decode(m, t0, &v); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*600)/b.Elapsed().Seconds(), "records/s")
}
