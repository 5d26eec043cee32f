package flow

import (
	"net/netip"
	"sync"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
)

// Scope decides which connections the exporter keeps and how to classify
// them. PrefixScope is the agent's.
type Scope interface {
	// Relevant says whether a connection is pod-related: an address of the
	// original or reply tuple in this node's pod blocks or the Service CIDR.
	Relevant(orig, reply Tuple) bool
	// Classify returns the flow type of a connection from src to dst (the
	// post-DNAT destination) and whether this node hosts the source.
	Classify(src, dst netip.Addr) (ft FlowType, egress bool)
}

// PrefixScope is a Scope over address prefixes: this node's pod blocks, all
// pod pools of the cluster and the Service CIDRs. It is safe for concurrent
// use; Set replaces the prefixes (blocks come and go).
type PrefixScope struct {
	mu                       sync.RWMutex
	local, cluster, services []netip.Prefix
}

// Set replaces the prefixes.
func (s *PrefixScope) Set(local, cluster, services []netip.Prefix) {
	s.mu.Lock()
	s.local, s.cluster, s.services = local, cluster, services
	s.mu.Unlock()
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Relevant implements Scope.
func (s *PrefixScope) Relevant(orig, reply Tuple) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return inAny(s.local, orig.Src) || inAny(s.local, orig.Dst) || inAny(s.local, reply.Src) ||
		inAny(s.services, orig.Dst)
}

// Classify implements Scope.
func (s *PrefixScope) Classify(src, dst netip.Addr) (FlowType, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	srcLocal, dstLocal := inAny(s.local, src), inAny(s.local, dst)
	srcPod, dstPod := srcLocal || inAny(s.cluster, src), dstLocal || inAny(s.cluster, dst)
	switch {
	case srcLocal && dstLocal:
		return flowrec.FlowTypeIntraNode, true
	case srcLocal && dstPod:
		return flowrec.FlowTypeInterNode, true
	case srcLocal:
		return flowrec.FlowTypeToExternal, true
	case dstLocal && srcPod:
		return flowrec.FlowTypeInterNode, false
	case dstLocal:
		return flowrec.FlowTypeFromExternal, false
	}
	// Neither end is a local pod (a pod elsewhere reached through a Service
	// address from this node's own processes, say).
	if srcPod && dstPod {
		return flowrec.FlowTypeInterNode, true
	}
	return flowrec.FlowTypeUnknown, true
}

// TableConfig configures a Table.
type TableConfig struct {
	Scope Scope
	// Pods resolves pod identities (nil: none).
	Pods PodResolver
	// Services names the Service of a (ClusterIP, port, protocol) as
	// "namespace/name:port" (nil or "": unknown).
	Services func(addr netip.Addr, port uint16, proto uint8) string
	// ActiveTimeout (default 5 s) and IdleTimeout (default 15 s), like
	// Antrea's agent.
	ActiveTimeout, IdleTimeout time.Duration
	// MaxFlows bounds the table (default 1,000,000); connections beyond it
	// are counted in Stats.TableFull.
	MaxFlows int
}

type flowKey struct {
	id   uint32
	orig Tuple
}

type entry struct {
	Flow
	lastChange time.Time // counters last grew
	lastExport time.Time
	// exported totals at the previous export
	expPackets, expBytes, expRevPackets, expRevBytes uint64
	idleExported                                     bool
	gen                                              uint64 // dump generation that last saw it
}

// Table is the exporter's flow table. It is safe for concurrent use.
type Table struct {
	cfg TableConfig

	mu        sync.Mutex
	flows     map[flowKey]*entry
	filtered  uint64
	tableFull uint64
}

// NewTable returns an empty table.
func NewTable(cfg TableConfig) *Table {
	if cfg.ActiveTimeout <= 0 {
		cfg.ActiveTimeout = 5 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 15 * time.Second
	}
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = 1_000_000
	}
	return &Table{cfg: cfg, flows: map[flowKey]*entry{}}
}

// Update merges a conntrack entry seen in a dump of generation gen (0 for an
// event) at now. ended marks a DESTROY event.
func (t *Table) Update(c *Conn, gen uint64, ended bool, now time.Time) {
	k := flowKey{c.ID, c.Orig}
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.flows[k]
	if e == nil {
		if !t.cfg.Scope.Relevant(c.Orig, c.Reply) {
			t.filtered++
			return
		}
		if len(t.flows) >= t.cfg.MaxFlows {
			t.tableFull++
			return
		}
		e = t.newEntry(c, now)
		t.flows[k] = e
	}
	if gen != 0 {
		e.gen = gen
	}
	if c.TCPState != 0 {
		e.TCPState = c.TCPState
	}
	if c.HasCounters && (c.Packets > e.Packets || c.ReversePackets > e.ReversePackets) {
		e.Packets, e.Bytes, e.ReversePackets, e.ReverseBytes = c.Packets, c.Bytes, c.ReversePackets, c.ReverseBytes
		e.HasCounters = true
		e.lastChange, e.End, e.idleExported = now, now, false
	}
	if ended {
		e.Ended = true
		e.End = now
		if !c.Stop.IsZero() {
			e.Stop, e.End = c.Stop, c.Stop
		}
	}
}

func (t *Table) newEntry(c *Conn, now time.Time) *entry {
	e := &entry{Flow: Flow{Conn: Conn{ID: c.ID, Orig: c.Orig, Reply: c.Reply, Start: c.Start}}, lastChange: now}
	if e.Start.IsZero() {
		e.Start = now
	}
	e.End, e.lastExport = now, e.Start
	if c.Reply.Src != c.Orig.Dst || c.Reply.SrcPort != c.Orig.DstPort {
		e.PostNATDst, e.PostNATDstPort = c.Reply.Src, c.Reply.SrcPort
	}
	if c.Reply.Dst != c.Orig.Src || c.Reply.DstPort != c.Orig.SrcPort {
		e.PostNATSrc, e.PostNATSrcPort = c.Reply.Dst, c.Reply.DstPort
	}
	dst := c.Orig.Dst
	if e.PostNATDst.IsValid() {
		dst = e.PostNATDst
		if t.cfg.Services != nil {
			e.Service = t.cfg.Services(c.Orig.Dst, c.Orig.DstPort, c.Orig.Proto)
		}
	}
	e.FlowType, e.Egress = t.cfg.Scope.Classify(c.Orig.Src, dst)
	t.resolve(e)
	return e
}

// resolve fills in the pods it does not know yet (a pod informer may learn
// of a pod after its first packets).
func (t *Table) resolve(e *entry) {
	if t.cfg.Pods == nil {
		return
	}
	if e.SrcPod.Name == "" {
		e.SrcPod, _ = t.cfg.Pods.ResolvePod(e.Orig.Src)
	}
	if e.DstPod.Name == "" {
		dst := e.Orig.Dst
		if e.PostNATDst.IsValid() {
			dst = e.PostNATDst
		}
		e.DstPod, _ = t.cfg.Pods.ResolvePod(dst)
	}
}

// EndMissing marks as ended the live flows that the dump of generation gen
// did not contain (their DESTROY event was lost) and returns how many.
func (t *Table) EndMissing(gen uint64, now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, e := range t.flows {
		if !e.Ended && e.gen < gen {
			e.Ended, e.End = true, now
			n++
		}
	}
	return n
}

// Expire hands emit the flows due at now: ended ones (then forgotten), idle
// ones once (kept until conntrack forgets them or they change), and active
// ones every ActiveTimeout while their counters grow. emit must not call
// back into the table; it returns false to stop early (the rest wait for
// the next call).
func (t *Table) Expire(now time.Time, emit func(*Flow) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, e := range t.flows {
		var reason uint8
		switch {
		case e.Ended:
			reason = EndReasonEnd
		case !e.idleExported && now.Sub(e.lastChange) >= t.cfg.IdleTimeout:
			reason = EndReasonIdle
		case !e.idleExported && now.Sub(e.lastExport) >= t.cfg.ActiveTimeout && e.changed():
			reason = EndReasonActive
		default:
			continue
		}
		t.resolve(e)
		f := e.Flow
		f.EndReason = reason
		f.DeltaPackets, f.DeltaBytes = e.Packets-e.expPackets, e.Bytes-e.expBytes
		f.DeltaReversePackets, f.DeltaReverseBytes = e.ReversePackets-e.expRevPackets, e.ReverseBytes-e.expRevBytes
		if !emit(&f) {
			break
		}
		n++
		if e.Ended {
			delete(t.flows, k)
			continue
		}
		e.expPackets, e.expBytes, e.expRevPackets, e.expRevBytes = e.Packets, e.Bytes, e.ReversePackets, e.ReverseBytes
		e.lastExport = now
		e.idleExported = reason == EndReasonIdle
	}
	return n
}

func (e *entry) changed() bool {
	return e.Packets != e.expPackets || e.ReversePackets != e.expRevPackets
}

// Flows returns a copy of every flow in the table.
func (t *Table) Flows() []Flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Flow, 0, len(t.flows))
	for _, e := range t.flows {
		out = append(out, e.Flow)
	}
	return out
}

// Len is the number of flows held.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.flows)
}

func (t *Table) counts() (filtered, full uint64, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.filtered, t.tableFull, len(t.flows)
}
