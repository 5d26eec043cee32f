package flow

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/aggregator"
	"github.com/strait-net/strait/internal/flow/flowrec"
)

// TestExportToAggregator: the agent's exporter feeds the real Flow Aggregator
// in aggregate mode; the aggregator's output (decoded by our collector) has
// the connection with both pods and the sender's counts.
func TestExportToAggregator(t *testing.T) {
	l := newLab(t)
	out := startTCP(t, newTestCollector(), nil)
	cfg, err := aggregator.ParseConfig([]byte(fmt.Sprintf(`
mode: aggregate
activeFlowRecordTimeout: 1s
inactiveFlowRecordTimeout: 3s
collector: {tcp: {address: "127.0.0.1:0"}}
destinations: [{name: c, type: ipfix, address: %q}]
api: {address: "off"}
`, out.addr)))
	if err != nil {
		t.Fatal(err)
	}
	agg, err := aggregator.New(cfg, aggregator.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := agg.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); agg.Wait() })
	startExporter(t, l, &testCollector{addr: agg.Addr("tcp")}, nil)

	up := senderCounter(t, l.a, "ip", "daddr", podB4, "tcp", "dport", "7002")
	down := senderCounter(t, l.b, "ip", "saddr", podB4, "tcp", "sport", "7002")
	sport := tcpExchange(t, l.a, l.b, podB4+":7002", "", 30_000, 70_000)
	upP, upB := up()
	downP, downB := down()
	recs := out.wait(t, 30*time.Second, func(got []flowrec.Fields) bool {
		fs := flowOf(got, podA4, sport)
		if len(fs) == 0 {
			return false
		}
		r := fs[len(fs)-1]
		return r.TotalPackets == upP && r.TotalBytes == upB && r.ReverseTotalPackets == downP && r.ReverseTotalBytes == downB
	})
	fs := flowOf(recs, podA4, sport)
	r := fs[len(fs)-1]
	if r.SrcPod != "web-1" || r.SrcNamespace != "shop" || r.DstPod != "db-0" || r.DstNamespace != "data" ||
		r.Dst.String() != podB4 || r.DstPort != 7002 || r.FlowType != flowrec.FlowTypeIntraNode {
		t.Errorf("aggregated record %+v", r)
	}
}
