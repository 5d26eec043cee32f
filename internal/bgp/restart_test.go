package bgp

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/bgp/bgptest"
	"github.com/strait-net/strait/internal/testutil"
)

// frrPathStale reports whether FRR has prefix and whether its path is stale.
func frrPathStale(f *bgptest.FRR, prefix string) (present, stale bool, err error) {
	paths, err := f.Prefix(prefix)
	if err != nil || len(paths) == 0 {
		return false, false, err
	}
	for _, pa := range paths {
		if pa.Stale {
			return true, true, nil
		}
	}
	return true, false, nil
}

func frrBFDStatus(f *bgptest.FRR, peer string) (string, error) {
	var peers []struct {
		Peer   string `json:"peer"`
		Status string `json:"status"`
	}
	if err := f.JSON("show bfd peers json", &peers); err != nil {
		return "", err
	}
	for _, p := range peers {
		if p.Peer == peer {
			return p.Status, nil
		}
	}
	return "", fmt.Errorf("no BFD peer %s in %+v", peer, peers)
}

// TestGracefulRestartAndBFD runs the speaker as a child process in its own
// namespace. SIGKILL: FRR keeps the routes as stale (graceful restart) and
// its kernel keeps forwarding; the restarted speaker clears the stale flag.
// SIGSTOP: FRR's bfdd declares the session down in under a second.
func TestGracefulRestartAndBFD(t *testing.T) {
	testutil.RequireRoot(t)
	lan := bgptest.NewLAN(t)
	spk, fns := testutil.NewNS(t), testutil.NewNS(t)
	lan.Attach(t, spk.Name, "eth0", sp4+"/24", sp6+"/64")
	lan.Attach(t, fns.Name, "eth0", frr4+"/24", frr6+"/64")
	// BFD at 100 ms x 3 on both sides: FRR declares the speaker down 300 ms
	// after its last packet, well inside the 1 s the test wants even on a
	// loaded machine (FRR's default 300 ms x 3 measured 0.8-1.04 s here).
	frr := bgptest.StartFRR(t, fns.Name, bgptest.FRRConfig{ASN: frrAS, RouterID: frr4, GracefulRestart: true, BFD: true,
		BFDIntervalMS: 100, Neighbors: []bgptest.FRRNeighbor{{Address: sp4, ASN: ourAS, BFD: true}}})
	cfg, err := json.Marshal(Config{ASN: ourAS, RouterID: a(sp4), Paths: testPaths, Peers: []Peer{{
		Name: "frr", Address: a(frr4), ASN: frrAS, Timers: fastTimers(),
		GracefulRestart: &GracefulRestart{RestartTime: 20 * time.Second},
		BFD:             &BFD{MinTx: 100 * time.Millisecond, MinRx: 100 * time.Millisecond, Multiplier: 3},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(childEnv, string(cfg))
	child := testutil.StartProcess(t, spk.Name, self, "-test.run=^$")
	frrHas(t, frr, pod4, sp4, "65001:100")
	frrHas(t, frr, pod6, sp6, "65001:100")
	testutil.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		st, err := frrBFDStatus(frr, sp4)
		if err == nil && st != "up" {
			err = fmt.Errorf("BFD session %s", st)
		}
		return err
	})

	// Close (SIGTERM: the agent stopping, as in a rolling update) ends the
	// session without a NOTIFICATION, so FRR keeps the routes as stale just
	// as after a crash; SIGKILL likewise.
	for _, stop := range []struct {
		name string
		do   func()
	}{
		{"graceful-stop", func() { child.Signal(syscall.SIGTERM); waitExited(t, child) }},
		{"graceful-restart", child.Kill},
	} {
		t.Run(stop.name, func(t *testing.T) { keptStaleAcrossRestart(t, frr, child, stop.do) })
	}
	// BFD needs the session up again (the last subtest restarted the speaker).
	testutil.Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		present, stale, err := frrPathStale(frr, pod4)
		if err == nil && (!present || stale) {
			err = fmt.Errorf("%s at FRR: present %t stale %t", pod4, present, stale)
		}
		return err
	})

	t.Run("bfd", func(t *testing.T) {
		testutil.Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
			st, err := frrBFDStatus(frr, sp4)
			if err == nil && st != "up" {
				err = fmt.Errorf("BFD session %s", st)
			}
			return err
		})
		child.Signal(syscall.SIGSTOP)
		t.Cleanup(func() { child.Signal(syscall.SIGCONT) })
		start := time.Now()
		testutil.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
			st, err := frrBFDStatus(frr, sp4)
			if err == nil && st != "down" {
				err = fmt.Errorf("BFD session %s", st)
			}
			return err
		})
		took := time.Since(start)
		t.Logf("FRR's bfdd declared the frozen speaker down after %v", took.Round(10*time.Millisecond))
		if took >= time.Second {
			t.Fatalf("BFD detection took %v, want < 1s", took)
		}
	})
}

// keptStaleAcrossRestart stops the child speaker with stop, checks that FRR
// keeps its routes as stale and in its kernel, restarts the child and waits
// until the stale flag is cleared.
func keptStaleAcrossRestart(t *testing.T, frr *bgptest.FRR, child *testutil.Process, stop func()) {
	stop()
	testutil.Eventually(t, 5*time.Second, 100*time.Millisecond, func() error {
		present, stale, err := frrPathStale(frr, pod4)
		if err == nil && (!present || !stale) {
			err = fmt.Errorf("%s at FRR after the stop: present %t stale %t", pod4, present, stale)
		}
		return err
	})
	time.Sleep(2 * time.Second)
	for _, pfx := range []string{pod4, pod6} {
		if kr, err := frr.KernelRoute(pfx); err != nil || kr == "" {
			t.Fatalf("FRR dropped %s from its kernel during graceful restart: %q %v", pfx, kr, err)
		}
	}
	// FRR's kernel, watched across the restart: the routes must never leave
	// it. A restarted speaker that does not claim its forwarding state was
	// kept (the F bit of RFC 4724) makes FRR drop the stale routes the moment
	// the new session opens, and add them back when the UPDATE follows.
	mon := testutil.StartProcess(t, frr.NS, "ip", "monitor", "route")
	time.Sleep(200 * time.Millisecond) // the monitor subscribed
	start := time.Now()
	if err := child.Restart(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		present, stale, err := frrPathStale(frr, pod4)
		if err == nil && (!present || stale) {
			err = fmt.Errorf("%s at FRR after restart: present %t stale %t", pod4, present, stale)
		}
		return err
	})
	t.Logf("stale flag cleared %v after the restart", time.Since(start).Round(10*time.Millisecond))
	gr := frrPeerRestart(t, frr, sp4)
	time.Sleep(500 * time.Millisecond) // zebra's kernel updates, if any, reach the monitor
	mon.Kill()
	for _, line := range strings.Split(mon.Output(), "\n") {
		if strings.HasPrefix(line, "Deleted") && (strings.Contains(line, pod4) || strings.Contains(line, pod6)) {
			t.Errorf("FRR removed a route from its kernel across the restart (peer's restart flags %s): %s\nmonitor:\n%s", gr, line, mon.Output())
		}
	}
}

// frrRestartFlags is FRR's view of the graceful restart capability in the
// speaker's last OPEN: the R bit and each family's F bit.
type frrRestartFlags struct{ R, F4, F6 bool }

func (f frrRestartFlags) String() string {
	return fmt.Sprintf("R %t, F %t (IPv4) %t (IPv6)", f.R, f.F4, f.F6)
}

func frrPeerRestartFlags(frr *bgptest.FRR, peer string) (frrRestartFlags, error) {
	type fam struct {
		FBit bool `json:"fBit"`
	}
	var out map[string]struct {
		State string `json:"bgpState"`
		GR    struct {
			RBit bool `json:"rBit"`
			V4   fam  `json:"ipv4Unicast"`
			V6   fam  `json:"ipv6Unicast"`
		} `json:"gracefulRestartInfo"`
	}
	if err := frr.JSON("show bgp neighbors "+peer+" json", &out); err != nil {
		return frrRestartFlags{}, err
	}
	n, ok := out[peer]
	if !ok {
		return frrRestartFlags{}, fmt.Errorf("FRR has no neighbour %s", peer)
	}
	if n.State != "Established" {
		return frrRestartFlags{}, fmt.Errorf("FRR's session with %s is %s", peer, n.State)
	}
	return frrRestartFlags{R: n.GR.RBit, F4: n.GR.V4.FBit, F6: n.GR.V6.FBit}, nil
}

// frrPeerRestart checks that the restarted speaker's OPEN claimed a restart
// that kept forwarding in both families.
func frrPeerRestart(t *testing.T, frr *bgptest.FRR, peer string) string {
	t.Helper()
	f, err := frrPeerRestartFlags(frr, peer)
	if err != nil {
		t.Fatal(err)
	}
	if !f.R || !f.F4 || !f.F6 {
		t.Errorf("the restarted speaker's OPEN: %s; want all set (it restarted and its routes stayed in the kernel)", f)
	}
	return f.String()
}

// TestRestartClaim: a speaker's first start in a process tells its peers it
// restarted with forwarding kept (R and F bits), and its routes still reach
// them (the selection deferral ends with the peer's End-of-RIB); a speaker
// restarted for a new router ID ends its sessions with a NOTIFICATION first,
// so its next OPEN claims nothing.
func TestRestartClaim(t *testing.T) {
	l := newLab(t, bgptest.FRRConfig{GracefulRestart: true,
		Neighbors: []bgptest.FRRNeighbor{{Address: sp4, ASN: ourAS}}}, false)
	s := newSpeaker(t, Options{})
	ctx := context.Background()
	cfg := func(routerID string) Config {
		return Config{ASN: ourAS, RouterID: a(routerID), ListenPort: -1, Paths: testPaths, Peers: []Peer{{
			Name: "frr", Address: a(frr4), ASN: frrAS, Timers: fastTimers(),
			GracefulRestart: &GracefulRestart{RestartTime: 20 * time.Second}}}}
	}
	start := time.Now()
	if err := s.Set(ctx, cfg(sp4)); err != nil {
		t.Fatal(err)
	}
	frrHas(t, l.frr, pod4, sp4, "65001:100")
	frrHas(t, l.frr, pod6, sp6, "65001:100")
	t.Logf("first start: FRR routes both blocks %v after Set (%s)", time.Since(start).Round(10*time.Millisecond), frrPeerRestart(t, l.frr, sp4))

	if err := s.Set(ctx, cfg("198.51.100.77")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, 200*time.Millisecond, func() error {
		f, err := frrPeerRestartFlags(l.frr, sp4)
		if err == nil && (f.R || f.F4 || f.F6) {
			err = fmt.Errorf("after a new router ID: %s, want nothing claimed", f)
		}
		return err
	})
	frrHas(t, l.frr, pod4, sp4, "65001:100")
}

// waitExited waits until the child process has exited.
func waitExited(t *testing.T, p *testutil.Process) {
	testutil.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if !p.Exited() {
			return fmt.Errorf("speaker %d still running", p.PID())
		}
		return nil
	})
}
