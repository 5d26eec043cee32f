package ipfix

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire constants (RFC 7011).
const (
	Version              = 10
	HeaderLen            = 16
	SetHeaderLen         = 4
	TemplateSetID        = 2
	OptionsTemplateSetID = 3
	MinDataSetID         = 256
	// VarLen is the field length that marks a variable-length field.
	VarLen = 0xFFFF
	// MaxMessageLen is the largest message the 16-bit length field allows.
	MaxMessageLen = 0xFFFF
	enterpriseBit = 0x8000
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed IPFIX")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// FieldSpec is a field specifier: element id (15 bits), length (VarLen for variable) and, for
// enterprise-specific elements, the Private Enterprise Number (0 for IANA elements).
type FieldSpec struct {
	ID     uint16
	Length uint16
	PEN    uint32
}

// wireLen is the specifier's size in a template record.
func (f FieldSpec) wireLen() int {
	if f.PEN != 0 {
		return 8
	}
	return 4
}

// Template is a decoded (or locally built) template or options template. It is immutable once built;
// a replaced template is a new *Template, so its pointer identifies one template definition.
type Template struct {
	ID uint16
	// ScopeCount is the number of scope fields of an options template; 0 for a data template.
	ScopeCount uint16
	Fields     []FieldSpec
	// minLen is the smallest possible record (variable-length fields count 1 byte).
	minLen int
	// fixedLen is the record length when no field is variable-length, else 0.
	fixedLen int
	// offs holds start and end of every field for fixed-length templates (2 entries per field).
	offs []uint16
}

// NewTemplate builds and validates a template. scope > 0 makes an options template.
func NewTemplate(id uint16, scope int, fields ...FieldSpec) (*Template, error) {
	if id < MinDataSetID {
		return nil, fmt.Errorf("template id %d: must be >= 256", id)
	}
	t := &Template{ID: id, ScopeCount: uint16(scope), Fields: append([]FieldSpec(nil), fields...)}
	if err := t.init(); err != nil {
		return nil, fmt.Errorf("template %d: %w", id, err)
	}
	return t, nil
}

func (t *Template) init() error {
	if len(t.Fields) == 0 {
		return malformed("no fields")
	}
	if int(t.ScopeCount) > len(t.Fields) {
		return malformed("scope field count %d > field count %d", t.ScopeCount, len(t.Fields))
	}
	fixed := true
	n := 0
	for _, f := range t.Fields {
		if f.ID&enterpriseBit != 0 {
			return malformed("element id %d has the enterprise bit set", f.ID)
		}
		if f.Length == VarLen {
			fixed = false
			n++
			continue
		}
		n += int(f.Length)
	}
	if n == 0 {
		return malformed("records of template %d would be empty", t.ID)
	}
	if n > MaxMessageLen-HeaderLen-SetHeaderLen {
		return malformed("record length %d does not fit in a message", n)
	}
	t.minLen = n
	if fixed {
		t.fixedLen = n
		t.offs = make([]uint16, 2*len(t.Fields))
		o := 0
		for i, f := range t.Fields {
			t.offs[2*i] = uint16(o)
			o += int(f.Length)
			t.offs[2*i+1] = uint16(o)
		}
	}
	return nil
}

// Options reports whether t is an options template.
func (t *Template) Options() bool { return t.ScopeCount > 0 }

// FixedLen returns the record length and true when no field is variable-length.
func (t *Template) FixedLen() (int, bool) { return t.fixedLen, t.fixedLen > 0 }

// MinLen returns the smallest possible record length.
func (t *Template) MinLen() int { return t.minLen }

// Index returns the position of element (pen, id) in t, or -1.
func (t *Template) Index(pen uint32, id uint16) int {
	for i, f := range t.Fields {
		if f.ID == id && f.PEN == pen {
			return i
		}
	}
	return -1
}

// WireLen is the size of t's template record (without set header).
func (t *Template) WireLen() int {
	n := 4
	if t.ScopeCount > 0 {
		n = 6
	}
	for _, f := range t.Fields {
		n += f.wireLen()
	}
	return n
}

// AppendRecord appends t's template record (as in a template set of id 2, or 3 for options templates).
func (t *Template) AppendRecord(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, t.ID)
	b = binary.BigEndian.AppendUint16(b, uint16(len(t.Fields)))
	if t.ScopeCount > 0 {
		b = binary.BigEndian.AppendUint16(b, t.ScopeCount)
	}
	for _, f := range t.Fields {
		if f.PEN != 0 {
			b = binary.BigEndian.AppendUint16(b, f.ID|enterpriseBit)
			b = binary.BigEndian.AppendUint16(b, f.Length)
			b = binary.BigEndian.AppendUint32(b, f.PEN)
			continue
		}
		b = binary.BigEndian.AppendUint16(b, f.ID)
		b = binary.BigEndian.AppendUint16(b, f.Length)
	}
	return b
}

// parseTemplateRecord reads one template record from b (set id 2 or 3). It returns the template (nil for a
// withdrawal, with the withdrawn id) and the bytes consumed.
func parseTemplateRecord(b []byte, setID uint16) (t *Template, id uint16, n int, err error) {
	if len(b) < 4 {
		return nil, 0, 0, malformed("template record header: %d bytes left", len(b))
	}
	id = binary.BigEndian.Uint16(b)
	count := int(binary.BigEndian.Uint16(b[2:]))
	n = 4
	if count == 0 {
		// Withdrawal (RFC 7011 8.1): id is a template id, or the set id to withdraw all of that set type.
		if id != setID && id < MinDataSetID {
			return nil, 0, 0, malformed("withdrawal of template id %d", id)
		}
		return nil, id, n, nil
	}
	if id < MinDataSetID {
		return nil, 0, 0, malformed("template id %d < 256", id)
	}
	var scope uint16
	if setID == OptionsTemplateSetID {
		if len(b) < 6 {
			return nil, 0, 0, malformed("options template %d: no scope field count", id)
		}
		scope = binary.BigEndian.Uint16(b[4:])
		n = 6
		if scope == 0 {
			return nil, 0, 0, malformed("options template %d: scope field count 0", id)
		}
	}
	// Each specifier is at least 4 bytes: bound the allocation by the bytes present.
	if count > (len(b)-n)/4 {
		return nil, 0, 0, malformed("template %d: %d fields but %d bytes", id, count, len(b)-n)
	}
	t = &Template{ID: id, ScopeCount: scope, Fields: make([]FieldSpec, count)}
	for i := range count {
		if len(b)-n < 4 {
			return nil, 0, 0, malformed("template %d: field %d truncated", id, i)
		}
		f := FieldSpec{ID: binary.BigEndian.Uint16(b[n:]), Length: binary.BigEndian.Uint16(b[n+2:])}
		n += 4
		if f.ID&enterpriseBit != 0 {
			if len(b)-n < 4 {
				return nil, 0, 0, malformed("template %d: field %d enterprise number truncated", id, i)
			}
			f.ID &^= enterpriseBit
			f.PEN = binary.BigEndian.Uint32(b[n:])
			n += 4
			if f.PEN == 0 {
				return nil, 0, 0, malformed("template %d: field %d has enterprise bit with enterprise number 0", id, i)
			}
		}
		t.Fields[i] = f
	}
	if err := t.init(); err != nil {
		return nil, 0, 0, fmt.Errorf("template %d: %w", id, err)
	}
	return t, id, n, nil
}
