package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

func TestOverlayDriftRepair(t *testing.T) {
	nodes := newOvCluster(t, "n1:1:1", "n3:2:3")
	n1, n3 := nodes[0], nodes[1]
	meshUp(t, nodes, always)
	ctx := context.Background()
	target := listenEcho(t, n3.pod, n3.pod4.String())
	if err := roundTrip(n1.pod, target); err != nil {
		t.Fatal(err)
	}

	mac := VTEPMAC("n3", 4).String()
	n1.ns.MustRun(t, "ip", "route", "del", "10.244.3.0/24")
	n1.ns.MustRun(t, "ip", "neigh", "del", "10.244.3.0", "dev", VTEPDevice4)
	n1.ns.MustRun(t, "bridge", "fdb", "del", mac, "dev", VTEPDevice4, "dst", n3.v4.String(), "self")
	if err := roundTripTimeout(n1.pod, target, 300*time.Millisecond); err == nil {
		t.Fatal("traffic flowed with the overlay entries deleted")
	}

	st, repaired, err := n1.dp.Resync(ctx, peersOf(n1, nodes, always))
	expectOps(t, "resync", st, err, OpStats{RouteAdds: 1, NeighAdds: 1, FDBAdds: 1})
	want := []string{
		fmt.Sprintf("fdb %s dev strait.vxlan4 dst 10.90.2.13 (peer n3): missing, added", mac),
		fmt.Sprintf("neigh 10.244.3.0 lladdr %s dev strait.vxlan4 (peer n3): missing, added", mac),
		"route 10.244.3.0/24 via 10.244.3.0 dev strait.vxlan4 onlink (peer n3): missing, added",
	}
	if strings.Join(repaired, "\n") != strings.Join(want, "\n") {
		t.Errorf("repaired:\n%s\nwant:\n%s", strings.Join(repaired, "\n"), strings.Join(want, "\n"))
	}
	if err := roundTrip(n1.pod, target); err != nil {
		t.Fatalf("after resync: %v", err)
	}
	st, repaired, err = n1.dp.Resync(ctx, peersOf(n1, nodes, always))
	expectOps(t, "resync again", st, err, OpStats{})
	if len(repaired) != 0 {
		t.Errorf("second resync repaired %v", repaired)
	}
}

// TestOverlayRestartNoLoss replaces n1's Datapath (an agent restart) while
// pods ping and stream across the overlay: the new instance adopts the
// kernel's entries with zero operations and nothing is lost.
func TestOverlayRestartNoLoss(t *testing.T) {
	nodes := newOvCluster(t, "n1:1:1", "n3:2:3")
	n1, n3 := nodes[0], nodes[1]
	meshUp(t, nodes, always)
	ctx := context.Background()

	const pings = 300
	pingDone := make(chan string, 1)
	go func() {
		out, _ := n1.pod.Run("ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c", fmt.Sprint(pings), n3.pod4.String())
		pingDone <- out
	}()
	streamDone := make(chan streamResult, 1)
	go func() { streamDone <- stream(n1.pod, listenEcho(t, n3.pod, n3.pod6.String()), 3*time.Second) }()

	time.Sleep(700 * time.Millisecond)
	idx := n1.ns.MustRun(t, "cat", "/sys/class/net/"+VTEPDevice4+"/ifindex")
	n1.dp.Close()
	dp2, err := New(Options{NodeNetns: n1.ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp2.Close)
	if entries, err := dp2.OverlayState(ctx); err != nil || len(entries) != 6 || entries[0].Peer != UnknownPeer {
		t.Errorf("fresh instance OverlayState = %v, %v; want 6 entries of unknown peers", entries, err)
	}
	if err := dp2.EnsureVTEPs(ctx, n1.vteps); err != nil {
		t.Fatal(err)
	}
	if again := n1.ns.MustRun(t, "cat", "/sys/class/net/"+VTEPDevice4+"/ifindex"); again != idx {
		t.Errorf("restart recreated %s", VTEPDevice4)
	}
	peers := peersOf(n1, nodes, always)
	st, repaired, err := dp2.Resync(ctx, peers)
	expectOps(t, "resync after restart", st, err, OpStats{})
	if len(repaired) != 0 {
		t.Errorf("resync after restart repaired %v", repaired)
	}
	st, err = dp2.SetPeer(ctx, peers[0])
	expectOps(t, "set peer after restart", st, err, OpStats{})
	if entries, err := dp2.OverlayState(ctx); err != nil || len(entries) != 6 || entries[0].Peer != "n3" {
		t.Errorf("OverlayState after resync = %v, %v; want 6 entries of n3", entries, err)
	}

	out := <-pingDone
	if m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out); m == nil || m[1] != fmt.Sprint(pings) || m[2] != m[1] {
		t.Errorf("ping across the restart lost packets:\n%s", out)
	} else {
		t.Logf("ping: %s", m[0])
	}
	res := <-streamDone
	t.Logf("TCP stream: %d messages sent, %d echoed", res.sent, res.echoed)
	if res.err != nil || res.sent == 0 || res.echoed != res.sent {
		t.Errorf("stream across the restart: %+v", res)
	}
}

type streamResult struct {
	sent, echoed int
	err          error
}

// stream sends numbered messages to an echo server every 5 ms for d,
// checking each echo.
func stream(n ns.NetNS, addr string, d time.Duration) (res streamResult) {
	res.err = n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return fmt.Errorf("dial %s: %w", addr, err)
		}
		defer c.Close()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			msg := binary.BigEndian.AppendUint64(bytes.Repeat([]byte{'s'}, 56), uint64(res.sent))
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(msg); err != nil {
				return err
			}
			res.sent++
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				return err
			}
			if !bytes.Equal(got, msg) {
				return fmt.Errorf("message %d came back as %q", res.sent, got)
			}
			res.echoed++
		}
		return nil
	})
	return res
}
