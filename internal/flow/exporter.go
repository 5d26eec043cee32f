package flow

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/strait-net/strait/internal/flow/flowrec"
)

// Config configures an Exporter.
type Config struct {
	// NodeNetns is the network namespace whose conntrack table is read
	// (a path like /run/netns/NAME); empty is the calling process's.
	NodeNetns string
	// Node is this node's name.
	Node  string
	Table TableConfig
	// Export says where records go.
	Export ExportConfig
	// ReadBuffer of the conntrack event socket (default 4 MiB).
	ReadBuffer int
	// PollInterval between full conntrack dumps, which refresh the counters
	// of live connections (default: the active timeout).
	PollInterval time.Duration
	// Labels adds pod labels to the records.
	Labels bool
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Stats are the exporter's counters since New, for the agent's metrics.
type Stats struct {
	// Flows in the table; Filtered connections were not pod-related;
	// TableFull were refused at TableConfig.MaxFlows.
	Flows     int
	Filtered  uint64
	TableFull uint64
	// Dumps of conntrack, and events received.
	Dumps, DumpErrors, Events uint64
	// Overflows of the event socket (ENOBUFS), each followed by a resync
	// dump; EventErrors are other event socket failures.
	Overflows, EventErrors uint64
	// MissedDestroys: flows found gone by a dump (their DESTROY was lost).
	MissedDestroys uint64
	// Records: queued for export, dropped at a full queue, sent, lost in a
	// failed write.
	RecordsQueued, RecordsDropped, RecordsSent, RecordsLost uint64
	Reconnects, TemplatesSent, Messages, Bytes              uint64
	Connected                                               bool
}

// Exporter reads conntrack and exports flow records.
type Exporter struct {
	cfg    Config
	table  *Table
	stats  counters
	sender *sender
	reader *reader
	log    *slog.Logger
}

// New validates cfg and returns an exporter to Run.
func New(cfg Config) (*Exporter, error) {
	if cfg.Table.Scope == nil {
		return nil, fmt.Errorf("flow exporter: no scope (which connections are pod-related)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = 4 << 20
	}
	e := &Exporter{cfg: cfg, table: NewTable(cfg.Table), log: cfg.Logger.With("component", "flow-exporter")}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = e.table.cfg.ActiveTimeout
	}
	s, err := newSender(cfg.Export, &e.stats, e.log)
	if err != nil {
		return nil, fmt.Errorf("flow exporter: %w", err)
	}
	e.sender = s
	e.reader = &reader{netns: cfg.NodeNetns, readBuffer: cfg.ReadBuffer, poll: cfg.PollInterval,
		table: e.table, stats: &e.stats, log: e.log, now: cfg.Now}
	return e, nil
}

// Run reads, expires and exports until ctx ends. It fails only when
// conntrack cannot be opened at all.
func (e *Exporter) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); e.sender.run(ctx) }()
	go func() { defer wg.Done(); e.expireLoop(ctx) }()
	err := e.reader.run(ctx)
	cancel()
	wg.Wait()
	return err
}

func (e *Exporter) expireLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.Expire()
		}
	}
}

// Expire queues the records due now (Run calls it every second). When the
// queue is full while the collector is connected, the rest wait in the
// table for the next round (backpressure); while it is not connected, they
// are dropped and counted, so the table keeps following conntrack.
func (e *Exporter) Expire() int {
	var rec flowrec.Fields
	return e.table.Expire(e.cfg.Now(), func(f *Flow) bool {
		e.fields(f, &rec)
		if e.sender.offer(&rec) {
			return true
		}
		if e.stats.connected.Load() {
			return false
		}
		e.stats.dropped.Add(1)
		return true
	})
}

// fields renders a flow as a record.
func (e *Exporter) fields(f *Flow, r *flowrec.Fields) {
	*r = flowrec.Fields{
		Start: f.Start, End: f.End,
		Src: f.Orig.Src, Dst: f.Orig.Dst, SrcPort: f.Orig.SrcPort, DstPort: f.Orig.DstPort, Proto: f.Orig.Proto,
		PostNATSrc: f.PostNATSrc, PostNATSrcPort: f.PostNATSrcPort,
		Packets: f.DeltaPackets, Bytes: f.DeltaBytes, ReversePackets: f.DeltaReversePackets, ReverseBytes: f.DeltaReverseBytes,
		TotalPackets: f.Packets, TotalBytes: f.Bytes, ReverseTotalPackets: f.ReversePackets, ReverseTotalBytes: f.ReverseBytes,
		EndReason: f.EndReason, Egress: f.Egress, FlowType: f.FlowType, TCPState: f.TCPState, Service: f.Service,
		SrcPod: f.SrcPod.Name, SrcNamespace: f.SrcPod.Namespace, SrcNode: f.SrcPod.Node,
		DstPod: f.DstPod.Name, DstNamespace: f.DstPod.Namespace, DstNode: f.DstPod.Node,
	}
	if f.PostNATDst.IsValid() { // DNAT: the destination is the backend, the Service address goes apart
		r.Dst, r.DstPort, r.ServiceAddr, r.ServicePort = f.PostNATDst, f.PostNATDstPort, f.Orig.Dst, f.Orig.DstPort
	}
	if e.cfg.Labels {
		r.SrcLabels, r.DstLabels = labelsJSON(f.SrcPod.Labels), labelsJSON(f.DstPod.Labels)
	}
}

func labelsJSON(l map[string]string) string {
	if len(l) == 0 {
		return ""
	}
	b, err := json.Marshal(l) // sorted keys
	if err != nil {
		return ""
	}
	return string(b)
}

// Flows returns the live table, sorted by total bytes (both directions),
// largest first.
func (e *Exporter) Flows() []Flow {
	fs := e.table.Flows()
	slices.SortFunc(fs, func(a, b Flow) int {
		return cmpDesc(a.Bytes+a.ReverseBytes, b.Bytes+b.ReverseBytes)
	})
	return fs
}

func cmpDesc(a, b uint64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// Stats returns the counters.
func (e *Exporter) Stats() Stats {
	s := &e.stats
	filtered, full, n := e.table.counts()
	return Stats{
		Flows: n, Filtered: filtered, TableFull: full,
		Dumps: s.dumps.Load(), DumpErrors: s.dumpErrors.Load(), Events: s.events.Load(),
		Overflows: s.overflows.Load(), EventErrors: s.eventErrors.Load(), MissedDestroys: s.missed.Load(),
		RecordsQueued: s.queued.Load(), RecordsDropped: s.dropped.Load(), RecordsSent: s.sent.Load(), RecordsLost: s.lost.Load(),
		Reconnects: s.reconnects.Load(), TemplatesSent: s.templates.Load(), Messages: s.messages.Load(), Bytes: s.bytes.Load(),
		Connected: s.connected.Load(),
	}
}
