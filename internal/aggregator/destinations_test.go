package aggregator

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStdoutDestination: records come out as one JSON object per line with every element by name.
func TestStdoutDestination(t *testing.T) {
	var out lockedBuf
	a := startAggregator(t, `
collector: {tcp: {address: "127.0.0.1:0"}}
destinations: [{type: stdout}]
api: {address: "off"}
`, Options{Stdout: &out})
	e := newTestExporter(t, "tcp", a.Addr("tcp"), 4)
	if err := e.connect(); err != nil {
		t.Fatal(err)
	}
	if err := e.send(0, 3); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if n := strings.Count(out.String(), "\n"); n != 3 {
			return fmt.Errorf("%d lines", n)
		}
		return nil
	})
	var rec map[string]any
	if err := json.Unmarshal([]byte(strings.Split(out.String(), "\n")[2]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["sourcePodName"] != "pod-2" || rec["originalObservationDomainId"] != float64(4) || rec["protocolIdentifier"] != float64(6) ||
		rec["flowStartMilliseconds"] != "2023-11-14T22:13:20Z" {
		t.Fatalf("line %v", rec)
	}
}

// TestUDPDestinationRefreshesTemplates: on a UDP destination the templates are announced again every
// templateRefresh, so a collector that starts late (or lost a datagram) learns them.
func TestUDPDestinationRefreshesTemplates(t *testing.T) {
	col := newTestCollector(t, "udp", nil)
	a := startAggregator(t, fmt.Sprintf(`
collector: {tcp: {address: "127.0.0.1:0"}}
destinations: [{name: u, type: ipfix, transport: udp, address: %q, templateRefresh: 1s}]
api: {address: "off"}
`, col.addr), Options{})
	e := newTestExporter(t, "tcp", a.Addr("tcp"), 4)
	if err := e.connect(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if err := e.send(i, 1); err != nil {
			t.Fatal(err)
		}
		col.mu.Lock()
		n := col.tmpl
		col.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d template announcements in 10 s with a 1 s refresh", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
