package aggregator

import (
	"encoding/binary"
	"net/netip"

	"github.com/strait-net/strait/internal/flow/ipfix"
)

// PodLabeler returns the labels of the pod with address ip as a JSON object ("" if unknown). It is the hook
// for recordContents.podLabels in proxy mode; it must be fast and safe for concurrent use.
type PodLabeler interface {
	PodLabels(ip netip.Addr) string
}

// derived is the output template made from one exporter template.
type derived struct {
	in         *ipfix.Template
	out        *outTemplate
	add403     bool // append originalExporterIPv4Address
	add404     bool // append originalExporterIPv6Address
	add405     bool // append originalObservationDomainId
	addLabels  bool // append sourcePodLabels/destinationPodLabels
	srcv4      int  // field index of the source/destination address, for labels
	dstv4      int
	srcv6      int
	dstv6      int
	extraBytes int
}

type inKey struct {
	domain uint32
	id     uint16
}

// proxySession forwards one exporter session's records: raw record bytes with 403/404 and 405 appended, under
// a derived template per (session, domain, template). It keeps no connection state.
type proxySession struct {
	exporter netip.Addr
	exp4     [4]byte
	exp16    [16]byte
	ids      *templateIDs
	labeler  PodLabeler
	out      *fanout
	pool     *batchPool
	derived  map[inKey]*derived
	last     *derived
	cur      *batch
	// exhausted counts records dropped because no output template id was free.
	exhausted int
}

func newProxySession(exporter netip.Addr, ids *templateIDs, labeler PodLabeler, out *fanout, pool *batchPool) *proxySession {
	exporter = exporter.Unmap()
	s := &proxySession{exporter: exporter, ids: ids, labeler: labeler, out: out, pool: pool, derived: map[inKey]*derived{}}
	if exporter.Is4() {
		s.exp4 = exporter.As4()
	} else {
		s.exp16 = exporter.As16()
	}
	return s
}

func (s *proxySession) batch() *batch {
	if s.cur == nil {
		s.cur = s.pool.get()
		s.cur.exporter = s.exporter
	}
	return s.cur
}

// Template is called for new and refreshed templates: a changed definition ends the old derived template.
func (s *proxySession) Template(h *ipfix.Header, t *ipfix.Template) {
	k := inKey{h.DomainID, t.ID}
	if d, ok := s.derived[k]; ok && !sameFields(d.in, t) {
		s.end(k, d)
	} else if ok {
		d.in = t // same definition, new pointer (refresh)
	}
}

// Withdraw ends the derived templates of the withdrawn ones.
func (s *proxySession) Withdraw(h *ipfix.Header, id uint16) {
	for k, d := range s.derived {
		if k.domain != h.DomainID {
			continue
		}
		if k.id == id || (id == ipfix.TemplateSetID && !d.in.Options()) || (id == ipfix.OptionsTemplateSetID && d.in.Options()) {
			s.end(k, d)
		}
	}
}

func (s *proxySession) end(k inKey, d *derived) {
	delete(s.derived, k)
	if s.last == d {
		s.last = nil
	}
	b := s.batch()
	b.items = append(b.items, item{t: d.out, withdraw: true})
	s.ids.put(d.out.t.ID)
}

// Record appends the record with the exporter's address and domain to the current batch.
func (s *proxySession) Record(h *ipfix.Header, r *ipfix.Record) {
	d := s.last
	if d == nil || d.in != r.Template {
		d = s.derive(h.DomainID, r.Template)
		if d == nil {
			s.exhausted++
			return
		}
		s.last = d
	}
	b := s.batch()
	off := len(b.buf)
	b.buf = append(b.buf, r.Data...)
	switch {
	case d.add403:
		b.buf = append(b.buf, s.exp4[:]...)
	case d.add404:
		b.buf = append(b.buf, s.exp16[:]...)
	}
	if d.add405 {
		b.buf = binary.BigEndian.AppendUint32(b.buf, h.DomainID)
	}
	if d.addLabels {
		b.buf = appendLabels(b.buf, s.labeler, r, d.srcv4, d.srcv6)
		b.buf = appendLabels(b.buf, s.labeler, r, d.dstv4, d.dstv6)
	}
	b.record(d.out, off)
}

func appendLabels(b []byte, l PodLabeler, r *ipfix.Record, v4, v6 int) []byte {
	var ip netip.Addr
	switch {
	case v4 >= 0:
		ip = netip.AddrFrom4([4]byte(r.Field(v4)))
	case v6 >= 0:
		ip = netip.AddrFrom16([16]byte(r.Field(v6))).Unmap()
	}
	s := ""
	if ip.IsValid() {
		s = l.PodLabels(ip)
	}
	if len(s) > 0xFFFF {
		s = ""
	}
	b = ipfix.AppendVarLen(b, len(s))
	return append(b, s...)
}

// flush hands the current batch to the destinations.
func (s *proxySession) flush() {
	if s.cur != nil {
		s.out.send(s.cur)
		s.cur = nil
	}
}

// close ends all derived templates (the exporter session ended).
func (s *proxySession) close() {
	for k, d := range s.derived {
		s.end(k, d)
	}
	s.flush()
}

func (s *proxySession) derive(domain uint32, in *ipfix.Template) *derived {
	k := inKey{domain, in.ID}
	if d, ok := s.derived[k]; ok {
		if d.in == in || sameFields(d.in, in) {
			d.in = in
			return d
		}
		s.end(k, d)
	}
	d := &derived{in: in, srcv4: -1, dstv4: -1, srcv6: -1, dstv6: -1}
	fields := append([]ipfix.FieldSpec(nil), in.Fields...)
	has := func(id uint16) bool { return in.Index(0, id) >= 0 }
	if !has(ipfix.IEOriginalExporterIPv4Address) && !has(ipfix.IEOriginalExporterIPv6Address) {
		if s.exporter.Is4() {
			d.add403 = true
			fields = append(fields, ipfix.FieldSpec{ID: ipfix.IEOriginalExporterIPv4Address, Length: 4})
		} else {
			d.add404 = true
			fields = append(fields, ipfix.FieldSpec{ID: ipfix.IEOriginalExporterIPv6Address, Length: 16})
		}
	}
	if !has(ipfix.IEOriginalObservationDomainID) {
		d.add405 = true
		fields = append(fields, ipfix.FieldSpec{ID: ipfix.IEOriginalObservationDomainID, Length: 4})
	}
	if s.labeler != nil && !in.Options() && in.Index(ipfix.StraitPEN, ipfix.IESourcePodLabels) < 0 {
		d.srcv4, d.dstv4 = indexLen(in, ipfix.IESourceIPv4Address, 4), indexLen(in, ipfix.IEDestinationIPv4Address, 4)
		d.srcv6, d.dstv6 = indexLen(in, ipfix.IESourceIPv6Address, 16), indexLen(in, ipfix.IEDestinationIPv6Address, 16)
		d.addLabels = true
		fields = append(fields,
			ipfix.FieldSpec{ID: ipfix.IESourcePodLabels, Length: ipfix.VarLen, PEN: ipfix.StraitPEN},
			ipfix.FieldSpec{ID: ipfix.IEDestinationPodLabels, Length: ipfix.VarLen, PEN: ipfix.StraitPEN})
	}
	id, ok := s.ids.get()
	if !ok {
		return nil
	}
	t, err := ipfix.NewTemplate(id, int(in.ScopeCount), fields...)
	if err != nil {
		// The input template was valid; only a record growing past the message size can fail here.
		s.ids.put(id)
		return nil
	}
	d.out = &outTemplate{t: t}
	s.derived[k] = d
	return d
}

// indexLen returns the index of IANA element id if it has length l, else -1.
func indexLen(t *ipfix.Template, id uint16, l uint16) int {
	i := t.Index(0, id)
	if i >= 0 && t.Fields[i].Length != l {
		return -1
	}
	return i
}

func sameFields(a, b *ipfix.Template) bool {
	if a.ScopeCount != b.ScopeCount || len(a.Fields) != len(b.Fields) {
		return false
	}
	for i := range a.Fields {
		if a.Fields[i] != b.Fields[i] {
			return false
		}
	}
	return true
}

func (s *proxySession) takeDropped() int {
	n := s.exhausted
	s.exhausted = 0
	return n
}
