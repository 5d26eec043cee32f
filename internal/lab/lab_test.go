package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/testutil"
)

var bins testutil.Binaries

func TestMain(m *testing.M) {
	defer bins.Cleanup()
	testutil.Main(m)
}

func labOptions(t *testing.T) (Options, *bytes.Buffer) {
	t.Helper()
	testutil.RequireRoot(t)
	dir, err := bins.Dir()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	o := Options{Dir: t.TempDir(), BinDir: dir, Pods: 2, Out: &out, Prefix: testutil.OwnedPrefix() + "lab-"}
	t.Cleanup(func() { _ = Down(context.Background(), o) })
	return o, &out
}

func labNamespaces(prefix string) []string {
	var out []string
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// up, status, down, down again: the lab works and leaves nothing behind.
func TestUpStatusDown(t *testing.T) {
	o, out := labOptions(t)
	if err := Up(context.Background(), o); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	if strings.Count(out.String(), " ok") != 4 || strings.Contains(out.String(), "FAIL") {
		t.Fatalf("connectivity report:\n%s", out)
	}
	s, err := o.load()
	if err != nil || len(s.Processes) != 1 || !alive(s.Processes[0]) || len(s.Pods) != 2 {
		t.Fatalf("state after up: %+v %v", s, err)
	}
	if got := labNamespaces(o.prefix()); len(got) != 4 {
		t.Fatalf("namespaces after up: %v", got)
	}
	if err := Status(context.Background(), o); err != nil {
		t.Fatalf("status of a healthy lab: %v\n%s", err, out)
	}
	if err := Up(context.Background(), o); err == nil || !strings.Contains(err.Error(), "already up") {
		t.Fatalf("second up: %v", err)
	}
	if err := Down(context.Background(), o); err != nil {
		t.Fatalf("down: %v", err)
	}
	if alive(s.Processes[0]) {
		t.Fatalf("agent pid %d still runs after down", s.Processes[0].PID)
	}
	if got := labNamespaces(o.prefix()); len(got) != 0 {
		t.Fatalf("namespaces after down: %v", got)
	}
	if _, err := os.Stat(filepath.Join(o.Dir, "state.json")); !os.IsNotExist(err) {
		t.Fatalf("state file after down: %v", err)
	}
	if err := Down(context.Background(), o); err != nil {
		t.Fatalf("second down: %v", err)
	}
}

// An interrupted up (Ctrl-C at some point) removes what it made, and a later
// up over the leftovers of a crashed one works.
func TestInterruptedAndCrashedUp(t *testing.T) {
	o, out := labOptions(t)
	interrupted := 0
	for _, after := range []time.Duration{5 * time.Millisecond, 40 * time.Millisecond, 120 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), after)
		err := Up(ctx, o)
		cancel()
		if err == nil {
			// Finished before the interruption: take it down for the next round.
			if err := Down(context.Background(), o); err != nil {
				t.Fatal(err)
			}
			continue
		}
		interrupted++
		if got := labNamespaces(o.prefix()); len(got) != 0 {
			t.Fatalf("interrupted after %v: namespaces left: %v\n%s", after, got, out)
		}
		s, _ := o.load()
		for _, p := range s.Processes {
			if alive(p) {
				t.Fatalf("interrupted after %v: %s still runs", after, p.Name)
			}
		}
	}
	if interrupted == 0 {
		t.Fatal("no round was interrupted: the test proved nothing")
	}
	// A crashed up: a namespace and a state file naming a dead process.
	if _, err := run("ip", "netns", "add", o.ns("node1")); err != nil {
		t.Fatal(err)
	}
	stale, _ := json.Marshal(State{Namespaces: []string{o.ns("node1")}, Processes: []Process{{Name: "strait-agent node1", PID: 1 << 22, Exe: "/nonexistent"}}})
	if err := os.WriteFile(filepath.Join(o.Dir, "state.json"), stale, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Up(context.Background(), o); err != nil {
		t.Fatalf("up after a crashed up: %v\n%s", err, out)
	}
}
