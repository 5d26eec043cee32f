package ipfix

import (
	"encoding/binary"
	"time"
)

// Header is an IPFIX message header.
type Header struct {
	Version    uint16
	Length     uint16
	ExportTime uint32
	Sequence   uint32
	DomainID   uint32
}

// ParseHeader reads the message header at the start of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, malformed("message of %d bytes is shorter than the header", len(b))
	}
	h := Header{
		Version:    binary.BigEndian.Uint16(b),
		Length:     binary.BigEndian.Uint16(b[2:]),
		ExportTime: binary.BigEndian.Uint32(b[4:]),
		Sequence:   binary.BigEndian.Uint32(b[8:]),
		DomainID:   binary.BigEndian.Uint32(b[12:]),
	}
	if h.Version != Version {
		return h, malformed("version %d, want %d", h.Version, Version)
	}
	if h.Length < HeaderLen {
		return h, malformed("message length %d < %d", h.Length, HeaderLen)
	}
	return h, nil
}

// Record is one data record during a Visitor call. It and its slices are only valid during the call; Data
// points into the message buffer.
type Record struct {
	Template *Template
	// Data is the record's raw bytes, exactly as received.
	Data []byte
	// SetOffset is the offset of Data within the message.
	SetOffset int
	offs      []uint16
}

// NumFields returns the number of fields.
func (r *Record) NumFields() int { return len(r.Template.Fields) }

// Field returns the value bytes of field i (without the variable-length prefix).
func (r *Record) Field(i int) []byte {
	return r.Data[r.offs[2*i]:r.offs[2*i+1]]
}

// Lookup returns the value of element (pen, id) and whether the template carries it.
func (r *Record) Lookup(pen uint32, id uint16) ([]byte, bool) {
	i := r.Template.Index(pen, id)
	if i < 0 {
		return nil, false
	}
	return r.Field(i), true
}

// Visitor receives what a message carries, in message order.
type Visitor interface {
	// Template is called for every template or options template record, after it was stored in the cache.
	Template(h *Header, t *Template)
	// Withdraw is called for a template withdrawal; id is a template id or 2/3 for "all (options) templates".
	Withdraw(h *Header, id uint16)
	// Record is called for every data record whose template is known.
	Record(h *Header, r *Record)
}

// Stats counts what one Decode call saw.
type Stats struct {
	Records   int
	Templates int
	Withdraws int
	// UnknownSets counts data sets whose template is not (or no longer) known; they are skipped.
	UnknownSets int
	// UnknownRecordBytes is the size of those sets, for accounting.
	UnknownSetBytes int
}

// Decoder decodes messages of one exporter session. It is not safe for concurrent use; use one per session
// (or per goroutine) over a shared TemplateCache.
type Decoder struct {
	Cache   *TemplateCache
	Session SessionID
	offs    []uint16
	rec     Record
	hdr     Header // kept here so passing it to the Visitor does not allocate
}

// NewDecoder returns a decoder for session s.
func NewDecoder(c *TemplateCache, s SessionID) *Decoder {
	return &Decoder{Cache: c, Session: s}
}

// MessageLen returns the length of the message starting at b (for framing a TCP stream), after checking the
// header.
func MessageLen(b []byte) (int, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return 0, err
	}
	return int(h.Length), nil
}

// Decode decodes one message. Records of sets before a malformed set have already been visited when an
// error comes back; the rest of the message is dropped.
func (d *Decoder) Decode(msg []byte, now time.Time, v Visitor) (Stats, error) {
	var st Stats
	var err error
	d.hdr, err = ParseHeader(msg)
	if err != nil {
		return st, err
	}
	h := &d.hdr
	if int(h.Length) > len(msg) {
		return st, malformed("message length %d, only %d bytes", h.Length, len(msg))
	}
	msg = msg[:h.Length]
	off := HeaderLen
	for off < len(msg) {
		if len(msg)-off < SetHeaderLen {
			return st, malformed("set header at %d truncated", off)
		}
		setID := binary.BigEndian.Uint16(msg[off:])
		setLen := int(binary.BigEndian.Uint16(msg[off+2:]))
		if setLen < SetHeaderLen || off+setLen > len(msg) {
			return st, malformed("set %d at %d: length %d, %d bytes left", setID, off, setLen, len(msg)-off)
		}
		body := msg[off+SetHeaderLen : off+setLen]
		bodyOff := off + SetHeaderLen
		switch {
		case setID == TemplateSetID || setID == OptionsTemplateSetID:
			if err := d.templates(h, setID, body, now, v, &st); err != nil {
				return st, err
			}
		case setID >= MinDataSetID:
			t := d.Cache.Get(d.Session, h.DomainID, setID, now)
			if t == nil {
				st.UnknownSets++
				st.UnknownSetBytes += len(body)
				break
			}
			if err := d.data(h, t, body, bodyOff, v, &st); err != nil {
				return st, err
			}
		default:
			return st, malformed("reserved set id %d", setID)
		}
		off += setLen
	}
	return st, nil
}

func (d *Decoder) templates(h *Header, setID uint16, b []byte, now time.Time, v Visitor, st *Stats) error {
	for len(b) > 0 {
		// Padding: fewer bytes than the smallest template record, or all zero (RFC 7011 3.3.1).
		if len(b) < 4 || allZero(b) {
			return nil
		}
		t, id, n, err := parseTemplateRecord(b, setID)
		if err != nil {
			return err
		}
		b = b[n:]
		if t == nil {
			st.Withdraws++
			if id == TemplateSetID || id == OptionsTemplateSetID {
				d.Cache.WithdrawAll(d.Session, h.DomainID, id == OptionsTemplateSetID)
			} else {
				d.Cache.Withdraw(d.Session, h.DomainID, id)
			}
			v.Withdraw(h, id)
			continue
		}
		st.Templates++
		d.Cache.Add(d.Session, h.DomainID, t, now)
		v.Template(h, t)
	}
	return nil
}

func (d *Decoder) data(h *Header, t *Template, b []byte, base int, v Visitor, st *Stats) error {
	r := &d.rec
	r.Template = t
	if t.fixedLen > 0 {
		r.offs = t.offs
		n := t.fixedLen
		o := 0
		for len(b)-o >= n {
			r.Data = b[o : o+n : o+n]
			r.SetOffset = base + o
			st.Records++
			v.Record(h, r)
			o += n
		}
		return nil // the rest (< one record) is padding
	}
	o := 0
	for len(b)-o >= t.minLen {
		offs, n, err := t.Offsets(b[o:], d.offs)
		d.offs = offs
		if err != nil {
			if allZero(b[o:]) {
				return nil // padding
			}
			return err
		}
		r.offs = offs
		r.Data = b[o : o+n : o+n]
		r.SetOffset = base + o
		st.Records++
		v.Record(h, r)
		o += n
	}
	return nil
}

// Offsets splits the record at the start of b into fields: it returns the start and end of every field's value
// (2 entries per field, relative to b, reusing offs) and the record's length.
func (t *Template) Offsets(b []byte, offs []uint16) ([]uint16, int, error) {
	if cap(offs) < 2*len(t.Fields) {
		offs = make([]uint16, 2*len(t.Fields))
	}
	offs = offs[:2*len(t.Fields)]
	if t.fixedLen > 0 {
		if len(b) < t.fixedLen {
			return offs, 0, malformed("template %d: record of %d bytes needs %d", t.ID, len(b), t.fixedLen)
		}
		copy(offs, t.offs)
		return offs, t.fixedLen, nil
	}
	p := 0
	for i, f := range t.Fields {
		l := int(f.Length)
		if l == VarLen {
			if p >= len(b) {
				return offs, 0, malformed("template %d field %d: variable length truncated", t.ID, i)
			}
			l = int(b[p])
			p++
			if l == 255 {
				if len(b)-p < 2 {
					return offs, 0, malformed("template %d field %d: long variable length truncated", t.ID, i)
				}
				l = int(binary.BigEndian.Uint16(b[p:]))
				p += 2
			}
		}
		if len(b)-p < l {
			return offs, 0, malformed("template %d field %d: %d bytes, %d left", t.ID, i, l, len(b)-p)
		}
		offs[2*i] = uint16(p)
		p += l
		offs[2*i+1] = uint16(p)
	}
	return offs, p, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
