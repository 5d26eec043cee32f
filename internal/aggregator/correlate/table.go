package correlate

import (
	"net/netip"
	"sync"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
)

// conn is one live connection: 232 bytes, no pointers (the GC never scans
// the chunks). Times are Unix milliseconds (IPFIX's resolution).
type conn struct {
	k        key
	start    [2]int64 // per side
	end      int64
	lastSeen int64 // when the last record arrived (record end time)
	lastExp  int64 // Expire's clock at the previous export (0: never)
	prevEnd  int64 // flow end at the previous export (throughput interval)
	side     [2]Counters
	exported Counters // totals at the previous export
	names    [8]uint32
	svc      uint32
	flowType FlowType
	tcpState uint8
	seen     uint8 // bit per side
	ended    uint8 // bit per side
}

// name slots in conn.names.
const (
	nSrcPod = iota
	nSrcNamespace
	nSrcNode
	nSrcLabels
	nDstPod
	nDstNamespace
	nDstNode
	nDstLabels
)

type service struct {
	addr netip.Addr
	port uint16
	name string
}

// Table correlates records into connections. It is safe for concurrent use.
type Table struct {
	cfg Config

	mu      sync.Mutex
	st      *store
	names   *interner[string]
	svcs    *interner[service]
	pending []Flow // connections replaced by a reuse of their 5-tuple
	stats   Stats
}

// New returns an empty table.
func New(cfg Config) *Table {
	cfg.defaults()
	return &Table{cfg: cfg, st: newStore(), names: newInterner[string](), svcs: newInterner[service]()}
}

// Add merges one record into its connection. It returns false when the
// record was refused: bad addresses, or a new connection while the table
// holds MaxConnections (both counted in Stats).
func (t *Table) Add(r *Record) bool {
	k, ok := makeKey(r)
	if !ok || r.Side > DestinationSide {
		t.mu.Lock()
		t.stats.Invalid++
		t.mu.Unlock()
		return false
	}
	start, end := r.Start.UnixMilli(), r.End.UnixMilli()
	if end < start {
		end = start
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Records++
	idx, found := t.st.find(&k)
	if found && t.reused(t.st.at(idx), r.Side, start) {
		t.pending = append(t.pending, t.flow(t.st.at(idx), EndReasonEnd))
		t.stats.Exported++ // counted when queued: Expire hands it out
		t.release(t.st.at(idx))
		t.st.remove(idx)
		found = false
	}
	if !found {
		if t.st.count >= t.cfg.MaxConnections {
			t.stats.Dropped++
			return false
		}
		idx = t.st.insert(&k)
	}
	c := t.st.at(idx)
	bit := uint8(1) << r.Side
	if c.seen&^bit != 0 && c.seen&bit == 0 {
		t.stats.Correlated++
	}
	c.seen |= bit
	c.start[r.Side] = start
	c.end = max(c.end, end)
	c.lastSeen = max(c.lastSeen, end)
	if c.prevEnd == 0 || start < c.prevEnd && c.lastExp == 0 {
		c.prevEnd = start
	}
	if r.Ended {
		c.ended |= bit
	}
	sc := &c.side[r.Side]
	sc.Packets, sc.Bytes = max(sc.Packets, r.Counters.Packets), max(sc.Bytes, r.Counters.Bytes)
	sc.ReversePackets, sc.ReverseBytes = max(sc.ReversePackets, r.Counters.ReversePackets), max(sc.ReverseBytes, r.Counters.ReverseBytes)
	if r.FlowType != flowrec.FlowTypeUnknown && (c.flowType == flowrec.FlowTypeUnknown || r.Side == SourceSide) {
		c.flowType = r.FlowType
	}
	if r.TCPState != 0 {
		c.tcpState = r.TCPState
	}
	// Each side is the authority on its own end's metadata; the other side's
	// view only fills gaps.
	t.merge(c, nSrcPod, r.Side == SourceSide, r.SrcPod, r.SrcNamespace, r.SrcNode, r.SrcLabels)
	t.merge(c, nDstPod, r.Side == DestinationSide, r.DstPod, r.DstNamespace, r.DstNode, r.DstLabels)
	if r.ServiceAddr.IsValid() || r.ServiceName != "" {
		t.svcs.replace(&c.svc, service{r.ServiceAddr.Unmap().WithZone(""), r.ServicePort, r.ServiceName})
	}
	return true
}

// reused says whether a record with start time start from side is a new
// connection on c's 5-tuple: the same node reports another start, or the
// other node's start is further away than the clocks can disagree.
func (t *Table) reused(c *conn, side Side, start int64) bool {
	if c.seen&(1<<side) != 0 {
		return c.start[side] != start
	}
	other := 1 - side
	if c.seen&(1<<other) == 0 {
		return false
	}
	d := start - c.start[other]
	return max(d, -d) > t.cfg.StartTolerance.Milliseconds()
}

func (t *Table) merge(c *conn, first int, authoritative bool, vals ...string) {
	for i, v := range vals {
		slot := &c.names[first+i]
		if v != "" && (authoritative || *slot == 0) {
			t.names.replace(slot, v)
		}
	}
}

func (t *Table) release(c *conn) {
	for _, id := range c.names {
		t.names.release(id)
	}
	t.svcs.release(c.svc)
}

// expected are the sides that report a connection of this type.
func expected(ft FlowType) uint8 {
	switch ft {
	case flowrec.FlowTypeInterNode:
		return 3
	case flowrec.FlowTypeToExternal:
		return 1 << SourceSide
	case flowrec.FlowTypeFromExternal:
		return 1 << DestinationSide
	}
	return 0 // any one side
}

func complete(c *conn) bool {
	want := expected(c.flowType)
	if want == 0 {
		return c.seen != 0
	}
	return c.seen&want == want
}

// Expire hands emit the connections due for export at now, in no particular
// order: ended connections once every expected side reported their end (or
// after the inactive timeout), idle ones after InactiveTimeout (then
// forgotten), live ones every ActiveTimeout while they change (kept). emit must not call back
// into the table. It returns how many flows it emitted.
func (t *Table) Expire(now time.Time, emit func(*Flow)) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.pending)
	for i := range t.pending {
		emit(&t.pending[i])
	}
	t.pending = t.pending[:0]
	ms := now.UnixMilli()
	active, inactive := t.cfg.ActiveTimeout.Milliseconds(), t.cfg.InactiveTimeout.Milliseconds()
	var f Flow
	t.st.each(func(idx uint32) {
		c := t.st.at(idx)
		reason := uint8(0)
		switch {
		case c.ended != 0 && c.ended == c.seen && complete(c):
			reason = EndReasonEnd
		case ms-c.lastSeen >= inactive:
			reason = EndReasonIdle
			if c.ended != 0 {
				reason = EndReasonEnd
			}
		case c.ended == 0 && (c.lastExp == 0 || c.end > c.prevEnd) && ms-max(c.lastExp, c.start[firstSide(c)]) >= active:
			// Live and changed since the previous export (a connection
			// that ended waits for its other side instead).
			f = t.flow(c, EndReasonActive)
			emit(&f)
			n++
			t.stats.Exported++
			c.exported = f.Counters
			c.lastExp, c.prevEnd = ms, c.end
			return
		default:
			return
		}
		f = t.flow(c, reason)
		emit(&f)
		n++
		t.stats.Exported++
		t.release(c)
		t.st.remove(idx)
	})
	return n
}

func firstSide(c *conn) Side {
	if c.seen&(1<<SourceSide) != 0 {
		return SourceSide
	}
	return DestinationSide
}

// flow materializes c.
func (t *Table) flow(c *conn, reason uint8) Flow {
	src, dst := c.k.addrs()
	svc := t.svcs.get(c.svc)
	f := Flow{
		Conn: Conn{Src: src, Dst: dst, SrcPort: c.k.sport, DstPort: c.k.dport, Proto: c.k.proto,
			ServiceAddr: svc.addr, ServicePort: svc.port, ServiceName: svc.name},
		FlowType: c.flowType, End: time.UnixMilli(c.end), TCPState: c.tcpState, EndReason: reason,
		Correlated: complete(c), Side: c.side,
	}
	var start int64
	for s := SourceSide; s <= DestinationSide; s++ {
		if f.Seen[s] = c.seen&(1<<s) != 0; f.Seen[s] && (start == 0 || c.start[s] < start) {
			start = c.start[s]
		}
	}
	f.Start = time.UnixMilli(start)
	f.Counters = c.side[firstSide(c)]
	f.Delta = Counters{
		Packets: f.Counters.Packets - min(c.exported.Packets, f.Counters.Packets), Bytes: f.Counters.Bytes - min(c.exported.Bytes, f.Counters.Bytes),
		ReversePackets: f.Counters.ReversePackets - min(c.exported.ReversePackets, f.Counters.ReversePackets),
		ReverseBytes:   f.Counters.ReverseBytes - min(c.exported.ReverseBytes, f.Counters.ReverseBytes),
	}
	if ivl := c.end - c.prevEnd; ivl > 0 {
		f.Throughput = f.Delta.Bytes * 8 * 1000 / uint64(ivl)
		f.ReverseThroughput = f.Delta.ReverseBytes * 8 * 1000 / uint64(ivl)
	}
	n := &c.names
	f.SrcPod, f.SrcNamespace, f.SrcNode, f.SrcLabels = t.names.get(n[nSrcPod]), t.names.get(n[nSrcNamespace]), t.names.get(n[nSrcNode]), t.names.get(n[nSrcLabels])
	f.DstPod, f.DstNamespace, f.DstNode, f.DstLabels = t.names.get(n[nDstPod]), t.names.get(n[nDstNamespace]), t.names.get(n[nDstNode]), t.names.get(n[nDstLabels])
	return f
}

// Each calls f with a copy of every live connection (for an API listing)
// until f returns false. It holds the table's lock meanwhile.
func (t *Table) Each(f func(*Flow) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	stop := false
	t.st.each(func(idx uint32) {
		if stop {
			return
		}
		fl := t.flow(t.st.at(idx), 0)
		stop = !f(&fl)
	})
}

// Len is the number of live connections.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st.count
}

// Stats returns the counters.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.Active, s.Strings = t.st.count, t.names.live()
	return s
}
