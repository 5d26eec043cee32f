package ipfix

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkVisitor checks record invariants on everything the decoder hands out and re-encodes every template.
type checkVisitor struct {
	t       *testing.T
	records int
}

func (c *checkVisitor) Template(h *Header, tm *Template) {
	// A decoded template must survive encode -> decode unchanged.
	setID := uint16(TemplateSetID)
	if tm.Options() {
		setID = OptionsTemplateSetID
	}
	wire := tm.AppendRecord(nil)
	if len(wire) != tm.WireLen() {
		c.t.Fatalf("template %d: WireLen %d, encoded %d", tm.ID, tm.WireLen(), len(wire))
	}
	back, _, n, err := parseTemplateRecord(wire, setID)
	if err != nil || n != len(wire) || back.ScopeCount != tm.ScopeCount || fmt.Sprint(back.Fields) != fmt.Sprint(tm.Fields) {
		c.t.Fatalf("template %d does not round-trip: %v %+v", tm.ID, err, back)
	}
}

func (c *checkVisitor) Withdraw(*Header, uint16) {}

func (c *checkVisitor) Record(h *Header, r *Record) {
	c.records++
	if len(r.Data) < r.Template.MinLen() {
		c.t.Fatalf("record of %d bytes < template minimum %d", len(r.Data), r.Template.MinLen())
	}
	end := 0
	for i := range r.NumFields() {
		f := r.Field(i)
		if l := r.Template.Fields[i].Length; l != VarLen && len(f) != int(l) {
			c.t.Fatalf("field %d: %d bytes, template says %d", i, len(f), l)
		}
		end = int(r.offs[2*i+1])
	}
	if end != len(r.Data) {
		c.t.Fatalf("fields end at %d, record is %d bytes", end, len(r.Data))
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder: it must never panic, must return ErrMalformed-wrapped
// errors, and everything it returns must be self-consistent. A message is decoded twice so its templates
// apply to its own data sets the second time. Seeds: testdata/fuzz/FuzzDecode (real softflowd and pmacctd
// nfprobe messages, see capture_test.go) plus the ones below.
func FuzzDecode(f *testing.F) {
	f.Add(msg(1, set(2, 1, 0, 0, 2, 0, 8, 0, 4, 0, 4, 0, 1, 0, 0, 0, 0), set(256, 10, 0, 0, 1, 6, 0, 0)))
	f.Add(msg(1, set(3, 1, 1, 0, 2, 0, 1, 0, 149, 0, 4, 0, 41, 0, 8), set(257, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9)))
	f.Add(msg(1, set(2, 1, 2, 0, 2, 0x80, 1, 0xff, 0xff, 0, 1, 0x86, 0x9f, 0, 4, 0, 1),
		set(258, 3, 'a', 'b', 'c', 6, 255, 0, 1, 'x', 17)))
	f.Add(msg(1, set(2, 1, 0, 0, 0), set(2, 0, 2, 0, 0)))
	f.Fuzz(func(t *testing.T, data []byte) {
		cache := NewTemplateCache(time.Minute)
		d := NewDecoder(cache, cache.NewSession(true))
		v := &checkVisitor{t: t}
		for range 2 {
			if _, err := d.Decode(data, t0, v); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not wrapping ErrMalformed: %v", err)
			}
		}
	})
}

// FuzzTemplateCache drives the cache with an operation sequence and compares it with a simple model.
// Each 6-byte step: op, session (1-3), domain (0-1), template id low byte, time step.
func FuzzTemplateCache(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 10, 0, 2, 1, 0, 1, 10, 0, 1, 1, 0, 1, 70, 0})
	f.Add([]byte{0, 2, 1, 5, 1, 0, 3, 2, 1, 0, 1, 0, 4, 2, 0, 0, 0, 0, 5, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const timeout = time.Minute
		cache := NewTemplateCache(timeout)
		sessions := []SessionID{cache.NewSession(true), cache.NewSession(false), cache.NewSession(true)}
		udp := map[SessionID]bool{sessions[0]: true, sessions[2]: true}
		type key struct {
			s  SessionID
			d  uint32
			id uint16
		}
		type ent struct {
			t    *Template
			when time.Time
		}
		model := map[key]ent{}
		now := t0
		live := func(e ent, k key) bool { return !udp[k.s] || now.Sub(e.when) <= timeout }
		for len(ops) >= 6 {
			op, s, dom := ops[0]%6, sessions[int(ops[1])%3], uint32(ops[2]%2)
			id := uint16(256 + int(ops[3]%8))
			now = now.Add(time.Duration(ops[4]) * time.Second)
			opts := ops[5]%2 == 1
			ops = ops[6:]
			k := key{s, dom, id}
			switch op {
			case 0: // add
				scope := 0
				if opts {
					scope = 1
				}
				tm := mustTemplate(t, id, scope, FieldSpec{ID: 1, Length: 8})
				cache.Add(s, dom, tm, now)
				model[k] = ent{tm, now}
			case 1: // get
				got := cache.Get(s, dom, id, now)
				e, ok := model[k]
				want := (*Template)(nil)
				if ok && live(e, k) {
					want = e.t
				}
				if got != want {
					t.Fatalf("Get(%v) = %p, want %p", k, got, want)
				}
				if ok && want == nil {
					delete(model, k)
				}
			case 2: // withdraw one
				_, ok := model[k]
				if got := cache.Withdraw(s, dom, id); got != ok {
					t.Fatalf("Withdraw(%v) = %v, want %v", k, got, ok)
				}
				delete(model, k)
			case 3: // withdraw all (options or not)
				cache.WithdrawAll(s, dom, opts)
				for mk, e := range model {
					if mk.s == s && mk.d == dom && e.t.Options() == opts {
						delete(model, mk)
					}
				}
			case 4: // expire
				cache.Expire(now)
				for mk, e := range model {
					if !live(e, mk) {
						delete(model, mk)
					}
				}
			case 5: // session ends
				cache.DropSession(s)
				for mk := range model {
					if mk.s == s {
						delete(model, mk)
					}
				}
				cache.mu.Lock()
				cache.sessions[s] = udp[s] // keep using the id in this model
				cache.mu.Unlock()
			}
			// Expired-but-not-collected entries may linger in both; counts agree after Expire.
			cache.Expire(now)
			for mk, e := range model {
				if !live(e, mk) {
					delete(model, mk)
				}
			}
			if cache.Len() != len(model) {
				t.Fatalf("cache holds %d templates, model %d", cache.Len(), len(model))
			}
		}
	})
}

// TestSeedCorpusPresent makes sure the real-exporter seeds exist and decode cleanly (they are the
// regression inputs the fuzzers start from).
func TestSeedCorpusPresent(t *testing.T) {
	for _, name := range []string{"softflowd", "pmacctd"} {
		msgs := readSeeds(t, name)
		if len(msgs) == 0 {
			t.Fatalf("no %s seeds in testdata/fuzz/FuzzDecode", name)
		}
		cache := NewTemplateCache(0)
		d := NewDecoder(cache, cache.NewSession(true))
		total := 0
		for _, m := range msgs {
			var c countVisitor
			st, err := d.Decode(m, t0, &c)
			if err != nil {
				t.Fatalf("%s seed: %v", name, err)
			}
			total += st.Records
		}
		if total == 0 {
			t.Fatalf("%s seeds decode to no records", name)
		}
		t.Logf("%s: %d messages, %d records", name, len(msgs), total)
	}
}

// readSeeds returns the messages of testdata/fuzz/FuzzDecode/<prefix>-*.
func readSeeds(t *testing.T, prefix string) [][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecode", prefix+"-*"))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" {
			t.Fatalf("%s: not a go fuzz corpus file", f)
		}
		lit := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
		b, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, []byte(b))
	}
	return out
}
