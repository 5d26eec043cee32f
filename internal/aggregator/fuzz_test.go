package aggregator

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/flow/ipfix"
)

// FuzzProxy feeds arbitrary messages through the proxy path (decode, derive templates, append 403/405 and
// labels): it must not panic, and every output record must split cleanly under its output template, which
// carries originalObservationDomainId. Seeds: the codec's real softflowd and pmacctd messages.
func FuzzProxy(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "flow", "ipfix", "testdata", "fuzz", "FuzzDecode", "*"))
	for _, p := range files {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) == 2 {
			if b, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")); err == nil {
				f.Add([]byte(b))
			}
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		dest := &destination{name: "fuzz", q: make(chan *batch, 1)}
		s := newProxySession(netip.MustParseAddr("198.51.100.9"), newTemplateIDs(), labelerFunc(func(netip.Addr) string { return `{"a":"b"}` }),
			&fanout{dests: []*destination{dest}}, newBatchPool())
		cache := ipfix.NewTemplateCache(time.Minute)
		d := ipfix.NewDecoder(cache, cache.NewSession(true))
		for range 2 {
			if _, err := d.Decode(msg, time.Unix(0, 0), s); err != nil && !errors.Is(err, ipfix.ErrMalformed) {
				t.Fatalf("decode error not ErrMalformed: %v", err)
			}
			s.flush()
			select {
			case b := <-dest.q:
				for _, it := range b.items {
					if it.withdraw {
						continue
					}
					rec := b.data(it)
					offs, n, err := it.t.t.Offsets(rec, nil)
					if err != nil || n != len(rec) {
						t.Fatalf("output record does not match its template: %v (%d of %d bytes)", err, n, len(rec))
					}
					if it.t.t.Index(0, ipfix.IEOriginalObservationDomainID) < 0 {
						t.Fatal("output template without originalObservationDomainId")
					}
					_ = offs
				}
			default:
			}
		}
		s.close()
	})
}
