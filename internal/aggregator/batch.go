package aggregator

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/strait-net/strait/internal/flow/ipfix"
)

// outTemplate is a template of the aggregator's IPFIX output. Its pointer identifies one definition; the
// destinations remember which ones they have announced on their current transport session.
type outTemplate struct {
	t *ipfix.Template
}

// item is one output data record (buf[off:off+n] of its batch), or, when withdraw is set, the end of t.
type item struct {
	t        *outTemplate
	off, n   uint32
	withdraw bool
}

// batch is a group of output records handed to every destination at once (one per received message in
// proxy mode). It is read-only once dispatched and returns to its pool when the last destination is done.
type batch struct {
	refs     atomic.Int32
	pool     *batchPool
	exporter netip.Addr
	buf      []byte
	items    []item
	records  int
}

func (b *batch) record(t *outTemplate, off int) {
	b.items = append(b.items, item{t: t, off: uint32(off), n: uint32(len(b.buf) - off)})
	b.records++
}

func (b *batch) data(it item) []byte { return b.buf[it.off : it.off+it.n] }

// release drops one reference.
func (b *batch) release() {
	if b.refs.Add(-1) == 0 {
		b.pool.put(b)
	}
}

type batchPool struct{ p sync.Pool }

func newBatchPool() *batchPool {
	bp := &batchPool{}
	bp.p.New = func() any { return &batch{pool: bp, buf: make([]byte, 0, 4096)} }
	return bp
}

func (bp *batchPool) get() *batch { return bp.p.Get().(*batch) }

func (bp *batchPool) put(b *batch) {
	if cap(b.buf) > 1<<20 {
		return // let oversized ones go
	}
	b.buf = b.buf[:0]
	clear(b.items)
	b.items = b.items[:0]
	b.records = 0
	b.exporter = netip.Addr{}
	bp.p.Put(b)
}

// fanout hands batches to every destination's queue without blocking: a full queue drops the batch for that
// destination only, counted.
type fanout struct {
	dests []*destination
}

func (f *fanout) send(b *batch) {
	if len(b.items) == 0 {
		b.refs.Store(1)
		b.release()
		return
	}
	b.refs.Store(int32(len(f.dests)))
	for _, d := range f.dests {
		select {
		case d.q <- b:
		default:
			d.m.dropped.WithLabelValues(d.name, "queue full").Add(float64(b.records))
			b.release()
		}
	}
}

// templateIDs allocates output template ids 256..65535, cycling so an id is reused as late as possible.
type templateIDs struct {
	mu    sync.Mutex
	next  uint16
	inUse map[uint16]bool
}

func newTemplateIDs() *templateIDs {
	return &templateIDs{next: ipfix.MinDataSetID, inUse: map[uint16]bool{}}
}

func (a *templateIDs) get() (uint16, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for range 65536 - ipfix.MinDataSetID {
		id := a.next
		a.next++
		if a.next == 0 {
			a.next = ipfix.MinDataSetID
		}
		if !a.inUse[id] {
			a.inUse[id] = true
			return id, true
		}
	}
	return 0, false
}

func (a *templateIDs) put(id uint16) {
	a.mu.Lock()
	delete(a.inUse, id)
	a.mu.Unlock()
}
