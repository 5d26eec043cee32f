package flow

import (
	"log/slog"
	"time"
)

// reader feeds a Table from conntrack: a dump at start, every poll interval
// (NEW and UPDATE events carry no counters) and after every event socket
// error; NEW/UPDATE/DESTROY events in between (DESTROY carries the final
// counters of connections shorter than the poll interval).
type reader struct {
	netns      string
	readBuffer int
	poll       time.Duration
	table      *Table
	stats      *counters
	log        *slog.Logger
	now        func() time.Time
	gen        uint64
}
