package aggregator

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/strait-net/strait/internal/flow/ipfix"
)

// jsonOut writes one JSON object per record (JSON lines): "exporter" plus every field by element name.
// Lines are written in whole-line chunks of up to 64 KiB, so a rotating file never splits a line.
type jsonOut struct {
	w       io.Writer
	buf     []byte
	lines   int // lines in buf
	reg     *ipfix.Registry
	names   map[*outTemplate][]ipfix.InfoElement
	offs    []uint16
	closeFn func()
}

func newJSONOut(w io.Writer, reg *ipfix.Registry, closeFn func()) *jsonOut {
	return &jsonOut{w: w, reg: reg,
		names: map[*outTemplate][]ipfix.InfoElement{}, closeFn: closeFn}
}

func (j *jsonOut) elements(t *outTemplate) []ipfix.InfoElement {
	if ies, ok := j.names[t]; ok {
		return ies
	}
	ies := make([]ipfix.InfoElement, len(t.t.Fields))
	for i, f := range t.t.Fields {
		ies[i], _ = j.reg.Lookup(f.PEN, f.ID)
	}
	j.names[t] = ies
	return ies
}

func (j *jsonOut) write(b *batch, _ time.Time) (int, int, string) {
	written, bad := 0, 0
	lost := 0
	for _, it := range b.items {
		if it.withdraw {
			delete(j.names, it.t)
			continue
		}
		ies := j.elements(it.t)
		rec := b.data(it)
		offs, _, err := it.t.t.Offsets(rec, j.offs)
		j.offs = offs
		if err != nil {
			bad++
			continue
		}
		l := append(j.buf, `{"exporter":"`...)
		l = b.exporter.AppendTo(l)
		l = append(l, '"')
		for i, ie := range ies {
			l = append(l, ',')
			l = strconv.AppendQuote(l, ie.Name)
			l = append(l, ':')
			l = appendJSONValue(l, ipfix.Value(ie, rec[offs[2*i]:offs[2*i+1]]))
		}
		j.buf = append(l, "}\n"...)
		j.lines++
		if len(j.buf) >= 64<<10 {
			w, l := j.flush()
			written += w
			lost += l
		}
	}
	if lost > 0 {
		return written, lost + bad, "write failed"
	}
	return written, bad, "undecodable"
}

func appendJSONValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case uint64:
		return strconv.AppendUint(b, x, 10)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case bool:
		return strconv.AppendBool(b, x)
	}
	out, err := json.Marshal(v)
	if err != nil {
		return append(b, "null"...)
	}
	return append(b, out...)
}

// flush writes the buffered lines and returns how many were written and lost.
func (j *jsonOut) flush() (int, int) {
	n := j.lines
	j.lines = 0
	if len(j.buf) == 0 {
		return 0, 0
	}
	_, err := j.w.Write(j.buf)
	j.buf = j.buf[:0]
	if err != nil {
		return 0, n
	}
	return n, 0
}

func (j *jsonOut) idle(time.Time) (int, int, string) {
	w, lost := j.flush()
	return w, lost, "write failed"
}

func (j *jsonOut) tick(time.Time) {}

func (j *jsonOut) close() {
	_, _ = j.flush()
	if j.closeFn != nil {
		j.closeFn()
	}
}

// rotatingFile is a file that is renamed to PATH.1 (PATH.1 to PATH.2, ...) when it would exceed max bytes.
type rotatingFile struct {
	path    string
	max     int64
	backups int
	f       *os.File
	size    int64
}

func openRotating(path string, max int64, backups int) (*rotatingFile, error) {
	r := &rotatingFile{path: path, max: max, backups: backups}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open flow log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("stat flow log: %w", err)
	}
	r.f, r.size = f, st.Size()
	return nil
}

func (r *rotatingFile) rotate() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("close flow log: %w", err)
	}
	if r.backups == 0 {
		_ = os.Remove(r.path)
	}
	for i := r.backups; i >= 1; i-- {
		from := r.path
		if i > 1 {
			from = r.path + "." + strconv.Itoa(i-1)
		}
		_ = os.Rename(from, r.path+"."+strconv.Itoa(i))
	}
	return r.open()
}

// Write rotates before a write that would cross the limit (so lines are never split across files).
func (r *rotatingFile) Write(p []byte) (int, error) {
	if r.size > 0 && r.size+int64(len(p)) > r.max {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

func (r *rotatingFile) Close() error { return r.f.Close() }
