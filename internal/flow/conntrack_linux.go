package flow

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

var ctGroups = []netfilter.NetlinkGroup{netfilter.GroupCTNew, netfilter.GroupCTUpdate, netfilter.GroupCTDestroy}

func (r *reader) run(ctx context.Context) error {
	dc, err := r.dial()
	if err != nil {
		return fmt.Errorf("conntrack: dial (dump): %w", err)
	}
	// A dump of a large table takes seconds: closing its socket when ctx
	// ends interrupts one in progress, so a stop does not wait for it.
	var closeOnce sync.Once
	closeDump := func() { closeOnce.Do(func() { _ = dc.Close() }) }
	defer closeDump()
	defer context.AfterFunc(ctx, closeDump)()
	events := make(chan conntrack.Event, 4096)
	listen := func() (*conntrack.Conn, chan error, error) {
		lc, err := r.dial()
		if err != nil {
			return nil, nil, fmt.Errorf("conntrack: dial (events): %w", err)
		}
		if err := lc.SetReadBuffer(r.readBuffer); err != nil {
			_ = lc.Close()
			return nil, nil, fmt.Errorf("conntrack: set read buffer %d: %w", r.readBuffer, err)
		}
		errs, err := lc.Listen(events, 1, ctGroups)
		if err != nil {
			_ = lc.Close()
			return nil, nil, fmt.Errorf("conntrack: listen: %w", err)
		}
		return lc, errs, nil
	}
	lc, errs, err := listen()
	if err != nil {
		return err
	}
	// closeEvents closes the event socket while draining both of its
	// channels: the library's worker blocks on a full event channel, or on
	// its unbuffered error channel (an overflow racing the close), and
	// Close waits for the worker.
	closeEvents := func() {
		if lc == nil {
			return
		}
		done := make(chan struct{})
		go func(c *conntrack.Conn) { _ = c.Close(); close(done) }(lc)
		lc = nil
		for {
			select {
			case <-done:
				return
			case <-events:
			case <-errs:
			}
		}
	}
	defer closeEvents()
	// Listening before the first dump: nothing falls between the two.
	if err := r.dump(ctx, dc); err != nil {
		return err
	}
	tick := time.NewTicker(r.poll)
	defer tick.Stop()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			r.event(&ev)
		case err := <-errs:
			if errors.Is(err, unix.ENOBUFS) {
				r.stats.overflows.Add(1)
				r.log.Warn("conntrack event socket overflowed; resyncing with a dump", "error", err)
			} else {
				r.stats.eventErrors.Add(1)
				r.log.Warn("conntrack event socket failed; reopening and resyncing", "error", err)
			}
			// Events still queued are superseded by the resync dump.
			closeEvents()
			errs = nil
			retry = time.After(0)
		case <-retry:
			retry = nil
			if lc, errs, err = listen(); err != nil {
				r.log.Warn("conntrack event socket", "error", err)
				retry = time.After(time.Second)
				continue
			}
			if err := r.dump(ctx, dc); err != nil {
				r.log.Warn("conntrack resync", "error", err)
			}
		case <-tick.C:
			if err := r.dump(ctx, dc); err != nil {
				r.log.Warn("conntrack dump", "error", err)
			}
		}
	}
}

// dial opens a conntrack connection in the node's namespace (the socket
// keeps its namespace; the namespace file is only needed while dialling).
func (r *reader) dial() (*conntrack.Conn, error) {
	fd := 0
	if r.netns != "" {
		f, err := os.Open(r.netns)
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", r.netns, err)
		}
		defer f.Close()
		fd = int(f.Fd())
	}
	return conntrack.Dial(&netlink.Config{NetNS: fd})
}

// dump reads the whole table into r.table. Interrupted by ctx ending (its
// socket closed), it returns nil and changes nothing.
func (r *reader) dump(ctx context.Context, dc *conntrack.Conn) error {
	flows, err := dc.Dump(nil)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		r.stats.dumpErrors.Add(1)
		return fmt.Errorf("conntrack: dump: %w", err)
	}
	r.gen++
	now := r.now()
	var c Conn
	for i := range flows {
		convert(&flows[i], &c)
		r.table.Update(&c, r.gen, false, now)
	}
	r.stats.dumps.Add(1)
	r.stats.missed.Add(uint64(r.table.EndMissing(r.gen, now)))
	return nil
}

func (r *reader) event(ev *conntrack.Event) {
	if ev.Flow == nil {
		return
	}
	r.stats.events.Add(1)
	var c Conn
	convert(ev.Flow, &c)
	r.table.Update(&c, 0, ev.Type == conntrack.EventDestroy, r.now())
}

func convert(f *conntrack.Flow, c *Conn) {
	tuple := func(t *conntrack.Tuple) Tuple {
		return Tuple{Src: t.IP.SourceAddress.Unmap(), Dst: t.IP.DestinationAddress.Unmap(),
			SrcPort: t.Proto.SourcePort, DstPort: t.Proto.DestinationPort, Proto: t.Proto.Protocol}
	}
	*c = Conn{
		ID: f.ID, Orig: tuple(&f.TupleOrig), Reply: tuple(&f.TupleReply),
		Start: f.Timestamp.Start, Stop: f.Timestamp.Stop,
		Packets: f.CountersOrig.Packets, Bytes: f.CountersOrig.Bytes,
		ReversePackets: f.CountersReply.Packets, ReverseBytes: f.CountersReply.Bytes,
	}
	if f.ProtoInfo.TCP != nil {
		c.TCPState = f.ProtoInfo.TCP.State
	}
	c.HasCounters = c.Packets+c.ReversePackets > 0
}
