package ipfix

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// Encoder builds IPFIX messages into one reused buffer and writes each complete message with one Write call
// to its writer (one datagram on UDP, one write on TCP/TLS). It keeps the per-domain data record sequence
// numbers of one transport session. Not safe for concurrent use.
//
// Typical use: AddTemplate once (again after a reconnect, and periodically on UDP), then Append/AppendRecord
// per record, then Flush. A message holds one observation domain; sets of the same id are merged.
type Encoder struct {
	w      io.Writer
	max    int
	buf    []byte
	domain uint32
	open   bool // a message is being built
	setID  uint16
	setOff int // offset of the open set's header, or -1
	nrec   uint32
	seq    map[uint32]uint32
	// Now returns the export time; tests may replace it. Defaults to time.Now.
	Now func() time.Time
	// Messages, Bytes and Records count what was written; LostRecords counts data records of messages whose
	// Write failed.
	Messages, Bytes, Records, LostRecords uint64
}

// NewEncoder returns an encoder writing messages of at most maxLen bytes (<= 65535; use ~1400 for UDP).
func NewEncoder(w io.Writer, maxLen int) *Encoder {
	if maxLen <= 0 || maxLen > MaxMessageLen {
		maxLen = MaxMessageLen
	}
	if maxLen < HeaderLen+SetHeaderLen+8 {
		maxLen = HeaderLen + SetHeaderLen + 8
	}
	return &Encoder{w: w, max: maxLen, buf: make([]byte, 0, maxLen), setOff: -1, seq: map[uint32]uint32{}, Now: time.Now}
}

// SetWriter replaces the writer (after a reconnect) and drops any unsent message. Sequence numbers restart
// with the new transport session.
func (e *Encoder) SetWriter(w io.Writer) {
	e.w = w
	e.buf = e.buf[:0]
	e.open = false
	e.setOff = -1
	e.nrec = 0
	clear(e.seq)
}

// Pending returns the number of bytes buffered but not yet written.
func (e *Encoder) Pending() int { return len(e.buf) }

// reserve makes room for n bytes of set setID in domain, flushing as needed, and returns the offset.
func (e *Encoder) reserve(domain uint32, setID uint16, n int) (int, error) {
	if HeaderLen+SetHeaderLen+n > e.max {
		return 0, fmt.Errorf("encode: record of %d bytes does not fit in a %d-byte message", n, e.max)
	}
	need := n
	if e.setOff < 0 || e.setID != setID {
		need += SetHeaderLen
	}
	if e.open && (domain != e.domain || len(e.buf)+need > e.max) {
		if err := e.Flush(); err != nil {
			return 0, err
		}
	}
	if !e.open {
		e.buf = e.buf[:HeaderLen]
		e.domain = domain
		e.open = true
		e.setOff = -1
		e.nrec = 0
	}
	if e.setOff < 0 || e.setID != setID {
		e.closeSet()
		e.setOff = len(e.buf)
		e.setID = setID
		e.buf = append(e.buf, 0, 0, 0, 0)
	}
	o := len(e.buf)
	e.buf = e.buf[:o+n]
	return o, nil
}

func (e *Encoder) closeSet() {
	if e.setOff >= 0 {
		binary.BigEndian.PutUint16(e.buf[e.setOff:], e.setID)
		binary.BigEndian.PutUint16(e.buf[e.setOff+2:], uint16(len(e.buf)-e.setOff))
		e.setOff = -1
	}
}

// AddTemplate appends t's template record to the message for domain.
func (e *Encoder) AddTemplate(domain uint32, t *Template) error {
	setID := uint16(TemplateSetID)
	if t.Options() {
		setID = OptionsTemplateSetID
	}
	o, err := e.reserve(domain, setID, t.WireLen())
	if err != nil {
		return fmt.Errorf("template %d: %w", t.ID, err)
	}
	t.AppendRecord(e.buf[:o])
	return nil
}

// Withdraw appends a withdrawal of template id (or of all templates when id is 2 or 3) in domain. Only
// meaningful on TCP/TLS sessions (RFC 7011 8.1).
func (e *Encoder) Withdraw(domain uint32, id uint16, options bool) error {
	setID := uint16(TemplateSetID)
	if options {
		setID = OptionsTemplateSetID
	}
	o, err := e.reserve(domain, setID, 4)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint16(e.buf[o:], id)
	binary.BigEndian.PutUint16(e.buf[o+2:], 0)
	return nil
}

// Append reserves n bytes for one data record of template id in domain and returns them to be filled by the
// caller before the next Encoder call. The caller is responsible for n matching the template.
func (e *Encoder) Append(domain uint32, templateID uint16, n int) ([]byte, error) {
	if templateID < MinDataSetID {
		return nil, fmt.Errorf("encode: data set id %d < 256", templateID)
	}
	o, err := e.reserve(domain, templateID, n)
	if err != nil {
		return nil, err
	}
	e.nrec++
	return e.buf[o : o+n : o+n], nil
}

// AppendRecord copies one encoded data record (see RecordBuilder).
func (e *Encoder) AppendRecord(domain uint32, templateID uint16, rec []byte) error {
	b, err := e.Append(domain, templateID, len(rec))
	if err != nil {
		return err
	}
	copy(b, rec)
	return nil
}

// Flush writes the message being built, if any.
func (e *Encoder) Flush() error {
	if !e.open {
		return nil
	}
	e.closeSet()
	b := e.buf
	binary.BigEndian.PutUint16(b[0:], Version)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint32(b[4:], uint32(e.Now().Unix()))
	binary.BigEndian.PutUint32(b[8:], e.seq[e.domain])
	binary.BigEndian.PutUint32(b[12:], e.domain)
	e.seq[e.domain] += e.nrec
	n := e.nrec
	e.open = false
	e.buf = e.buf[:0]
	e.nrec = 0
	if _, err := e.w.Write(b); err != nil {
		e.LostRecords += uint64(n)
		return fmt.Errorf("write IPFIX message: %w", err)
	}
	e.Messages++
	e.Bytes += uint64(len(b))
	e.Records += uint64(n)
	return nil
}

// RecordBuilder encodes one data record field by field, in template order. Reset and reuse it to avoid
// allocations.
type RecordBuilder struct{ b []byte }

// Reset empties the builder.
func (r *RecordBuilder) Reset() { r.b = r.b[:0] }

// Bytes returns the encoded record.
func (r *RecordBuilder) Bytes() []byte { return r.b }

// Uint8 appends a 1-byte unsigned value.
func (r *RecordBuilder) Uint8(v uint8) { r.b = append(r.b, v) }

// Uint16 appends a 2-byte unsigned value.
func (r *RecordBuilder) Uint16(v uint16) { r.b = binary.BigEndian.AppendUint16(r.b, v) }

// Uint32 appends a 4-byte unsigned value.
func (r *RecordBuilder) Uint32(v uint32) { r.b = binary.BigEndian.AppendUint32(r.b, v) }

// Uint64 appends an 8-byte unsigned value.
func (r *RecordBuilder) Uint64(v uint64) { r.b = binary.BigEndian.AppendUint64(r.b, v) }

// Milliseconds appends a dateTimeMilliseconds value.
func (r *RecordBuilder) Milliseconds(t time.Time) { r.Uint64(uint64(t.UnixMilli())) }

// Seconds appends a dateTimeSeconds value.
func (r *RecordBuilder) Seconds(t time.Time) { r.Uint32(uint32(t.Unix())) }

// IPv4 appends a 4-byte address (zero if a is not IPv4).
func (r *RecordBuilder) IPv4(a netip.Addr) {
	if a.Is4() || a.Is4In6() {
		b := a.Unmap().As4()
		r.b = append(r.b, b[:]...)
		return
	}
	r.b = append(r.b, 0, 0, 0, 0)
}

// IPv6 appends a 16-byte address (IPv4 addresses are written IPv4-mapped).
func (r *RecordBuilder) IPv6(a netip.Addr) {
	if !a.IsValid() {
		r.b = append(r.b, make([]byte, 16)...)
		return
	}
	b := a.As16()
	r.b = append(r.b, b[:]...)
}

// Raw appends bytes as they are (fixed-length octetArray).
func (r *RecordBuilder) Raw(b []byte) { r.b = append(r.b, b...) }

// String appends a variable-length string (truncated to 65535 bytes).
func (r *RecordBuilder) String(s string) {
	if len(s) > 0xFFFF {
		s = s[:0xFFFF]
	}
	r.b = AppendVarLen(r.b, len(s))
	r.b = append(r.b, s...)
}

// VarBytes appends a variable-length octet array (truncated to 65535 bytes).
func (r *RecordBuilder) VarBytes(b []byte) {
	if len(b) > 0xFFFF {
		b = b[:0xFFFF]
	}
	r.b = AppendVarLen(r.b, len(b))
	r.b = append(r.b, b...)
}

// AppendVarLen appends the variable-length prefix for n bytes (RFC 7011 7).
func AppendVarLen(b []byte, n int) []byte {
	if n < 255 {
		return append(b, byte(n))
	}
	return append(b, 255, byte(n>>8), byte(n))
}
