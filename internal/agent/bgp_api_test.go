package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/bgp"
	"github.com/strait-net/strait/internal/ctl"
)

// TestBGPCLI runs straitctl bgp against the agent's API handlers over a
// unix socket, with a recording speaker behind them.
func TestBGPCLI(t *testing.T) {
	in := baseInputs()
	in.Secrets = map[string]map[string][]byte{"bgp": {"frr": []byte("s3cret")}}
	cfg, probs := desiredBGP(in)
	now := time.Now()
	fake := &fakeSpeaker{cfg: cfg, learned: make(chan []bgp.Route),
		routes: []bgp.Route{{Prefix: netip.MustParsePrefix("10.244.2.0/26"), NextHop: a("198.51.100.3"), Peer: "mesh-n3", PeerAddress: a("198.51.100.3"),
			ASPath: []uint32{}, Communities: []bgp.Community{65001<<16 | 244}, Best: true, Age: now.Add(-90 * time.Second)}},
		policies: []bgp.PolicyView{{Peer: "frr", Address: a("198.51.100.254"),
			Families: []bgp.FamilyStatus{{Family: bgp.IPv4Unicast, NextHop: a("198.51.100.1"), Reason: "session address"}, {Family: bgp.IPv6Unicast, Reason: "no global IPv6 address on eth0"}},
			Exported: cfg.Paths[:1], Rendered: "neighbor 198.51.100.254\n  next-hop self"}},
	}
	ag := &Agent{log: slog.New(slog.DiscardHandler)}
	mux := http.NewServeMux()
	ag.registerBGPAPI(mux)

	dir, err := os.MkdirTemp("", "bgpcli")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	run := func(args ...string) (string, error) {
		o, err := ctl.ParseArgs(append([]string{"--socket", sock}, args...), &bytes.Buffer{})
		if err != nil {
			return "", err
		}
		var out bytes.Buffer
		err = ctl.Run(context.Background(), o, &out)
		return out.String(), err
	}
	// BGP off: a clear error.
	if _, err := run("bgp", "peers"); err == nil || !strings.Contains(err.Error(), "BGP is not enabled") {
		t.Fatalf("bgp off: %v", err)
	}
	ag.bgp = &bgpController{speaker: fake, applied: cfg, problems: probs}

	out, err := run("bgp", "peers")
	if err != nil || !strings.Contains(out, "frr") || !strings.Contains(out, "mesh-n2") || !strings.Contains(out, "Established") {
		t.Errorf("peers: %v\n%s", err, out)
	}
	out, err = run("bgp", "routes", "--family", "ipv4", "--received", "--peer", "mesh-n3", "-o", "wide")
	if err != nil || !strings.Contains(out, "10.244.2.0/26") || !strings.Contains(out, "65001:244") || !strings.Contains(out, "90s") {
		t.Errorf("routes: %v\n%s", err, out)
	}
	if q := fake.query; q.Family != bgp.IPv4Unicast || q.Direction != bgp.DirectionReceived || q.Peer != "mesh-n3" {
		t.Errorf("query %+v", q)
	}
	out, err = run("bgp", "policies", "-o", "wide")
	if err != nil || !strings.Contains(out, "withheld") || !strings.Contains(out, "no global IPv6 address on eth0") || !strings.Contains(out, "next-hop self") {
		t.Errorf("policies: %v\n%s", err, out)
	}
	out, err = run("bgp", "config")
	if err != nil || !strings.Contains(out, "Router ID:         198.51.100.1") || !strings.Contains(out, "198.18.0.1/32") || strings.Contains(out, "s3cret") {
		t.Errorf("config: %v\n%s", err, out)
	}
	out, err = run("bgp", "config", "-o", "json")
	var js map[string]any
	if err != nil || json.Unmarshal([]byte(out), &js) != nil || js["asn"] != float64(65001) {
		t.Errorf("config json: %v\n%s", err, out)
	}
	if out, err = run("bgp", "peers", "-o", "yaml"); err != nil || !strings.Contains(out, "state: Established") {
		t.Errorf("peers yaml: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"bgp"}, {"bgp", "neighbours"}, {"bgp", "routes", "--advertised", "--received"}, {"bgp", "routes", "--family", "l2vpn"}, {"bgp", "peers", "--family", "ipv4"}} {
		if _, err := run(bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
