package bgp

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/bgp/bgptest"
	"github.com/strait-net/strait/internal/testutil"
)

// goBGPdHeld is the number of IPv4 paths gobgpd holds once it stops growing.
func goBGPdHeld(b *testing.B, ns string) int {
	prev := -1
	for i := 0; i < 100; i++ {
		rib, err := bgptest.Run(ns, "gobgp", "-p", "50052", "global", "rib", "summary")
		if err != nil {
			b.Fatal(rib, err)
		}
		var n int
		if _, after, ok := strings.Cut(rib, "Destination: "); ok {
			_, _ = fmt.Sscanf(after, "%d", &n)
		}
		if n == prev && n > 0 {
			return n
		}
		prev = n
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatal("gobgpd's RIB did not settle")
	return 0
}

// BenchmarkIdleRSS3Peers: a speaker with three established sessions (FRR
// over IPv4 and IPv6, BIRD) and the test paths, its resident memory once idle.
func BenchmarkIdleRSS3Peers(b *testing.B) {
	testutil.RequireRoot(b)
	lan := bgptest.NewLAN(b)
	spk, fns, bns := testutil.NewNS(b), testutil.NewNS(b), testutil.NewNS(b)
	lan.Attach(b, spk.Name, "eth0", sp4+"/24", sp6+"/64")
	lan.Attach(b, fns.Name, "eth0", frr4+"/24", frr6+"/64")
	lan.Attach(b, bns.Name, "eth0", brd4+"/24", brd6+"/64")
	frr := bgptest.StartFRR(b, fns.Name, bgptest.FRRConfig{ASN: frrAS, RouterID: frr4,
		Neighbors: []bgptest.FRRNeighbor{{Address: sp4, ASN: ourAS}, {Address: sp6, ASN: ourAS}}})
	bird := bgptest.StartBIRD(b, bns.Name, bgptest.BIRDConfig{ASN: birdAS, RouterID: brd4,
		Neighbors: []bgptest.BIRDNeighbor{{Name: "n4", Local: brd4, Address: sp4, ASN: ourAS}}})
	cfg, err := json.Marshal(Config{ASN: ourAS, RouterID: a(sp4), Paths: testPaths, Peers: []Peer{
		{Name: "frr4", Address: a(frr4), ASN: frrAS, Timers: fastTimers()},
		{Name: "frr6", Address: a(frr6), ASN: frrAS, Timers: fastTimers()},
		{Name: "bird", Address: a(brd4), ASN: birdAS, Timers: fastTimers()},
	}})
	if err != nil {
		b.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	b.Setenv(childEnv, string(cfg))
	for i := 0; i < b.N; i++ {
		proc := testutil.StartProcess(b, spk.Name, self, "-test.run=^$", "-test.bench=^$")
		testutil.Eventually(b, 30*time.Second, 100*time.Millisecond, func() error {
			for _, addr := range []string{sp4, sp6} {
				if st, _, _, err := frr.Neighbor(addr); err != nil || st != "Established" {
					return fmt.Errorf("FRR session with %s: %q %v", addr, st, err)
				}
			}
			if up, out, err := bird.Established("n4"); err != nil || !up {
				return fmt.Errorf("BIRD session: %v %s", err, out)
			}
			return nil
		})
		time.Sleep(5 * time.Second)
		rss, err := procRSS(proc.PID(), "VmRSS:")
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(rss, "idle-RSS-MB")
		b.Logf("idle RSS with 3 established peers: %.1f MB", rss)
		proc.Kill()
	}
}

// peakRSS is VmHWM of a process, in MB.
func peakRSS(pid int) (float64, error) { return procRSS(pid, "VmHWM:") }

// procRSS reads a kB field of /proc/PID/status, in MB.
func procRSS(pid int, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024, err
		}
	}
	return 0, fmt.Errorf("no %s for %d", field, pid)
}

// BenchmarkAdvertise: N /32 service routes from a speaker to FRR (zebra
// installing them), Strait's speaker against Debian's gobgpd fed the same
// routes by `gobgp mrt inject`, in one run. Reports the time from the start
// of the announcement (session already up) until FRR's pfxRcd is N, and the
// speaker process's peak RSS. Run: go test -run '^$' -bench Advertise -benchtime 1x
func BenchmarkAdvertise(b *testing.B) {
	testutil.RequireRoot(b)
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("strait-%dk", n/1000), func(b *testing.B) { benchAdvertise(b, n, false) })
		b.Run(fmt.Sprintf("gobgpd-%dk", n/1000), func(b *testing.B) { benchAdvertise(b, n, true) })
	}
}

func benchAdvertise(b *testing.B, n int, gobgpd bool) {
	lan := bgptest.NewLAN(b)
	spk, fns := testutil.NewNS(b), testutil.NewNS(b)
	lan.Attach(b, spk.Name, "eth0", sp4+"/24")
	lan.Attach(b, fns.Name, "eth0", frr4+"/24")
	frr := bgptest.StartFRR(b, fns.Name, bgptest.FRRConfig{ASN: frrAS, RouterID: frr4,
		Neighbors: []bgptest.FRRNeighbor{{Address: sp4, ASN: ourAS}}})
	dir := b.TempDir()
	first := a("10.96.0.0")
	var proc *testutil.Process
	var start time.Time
	spkNS := spk.Name
	for i := 0; i < b.N; i++ {
		if gobgpd {
			proc, start = startGoBGPd(b, spk.Name, dir, first, n)
		} else {
			proc, start = startChildBench(b, spk.Name, dir, first, n)
		}
		var last int
		want := n
		if gobgpd {
			want = goBGPdHeld(b, spk.Name)
			b.ReportMetric(float64(want), "paths-held")
		}
		testutil.Eventually(b, 120*time.Second, 20*time.Millisecond, func() error {
			_, pfx4, _, err := frr.Neighbor(sp4)
			last = pfx4
			if err == nil && pfx4 < want {
				out, _ := frr.Vtysh("show bgp neighbors " + sp4)
				reset := ""
				for _, l := range strings.Split(out, "\n") {
					if strings.Contains(l, "reset") || strings.Contains(l, "state =") {
						reset += strings.TrimSpace(l) + "; "
					}
				}
				rib, _ := bgptest.Run(spkNS, "gobgp", "-p", "50052", "global", "rib", "summary")
				err = fmt.Errorf("FRR has %d of %d prefixes (%s); gobgpd: %s", pfx4, n, reset, rib)
			}
			return err
		})
		took := time.Since(start)
		rss, err := peakRSS(proc.PID())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(took.Seconds(), "s-until-FRR-has-all")
		b.ReportMetric(rss, "peak-RSS-MB")
		b.Logf("%d routes: FRR had %d after %v; speaker peak RSS %.0f MB", n, last, took.Round(time.Millisecond), rss)
		proc.Kill()
	}
}

func startChildBench(b *testing.B, ns, dir string, first netip.Addr, n int) (*testutil.Process, time.Time) {
	cfg := Config{ASN: ourAS, RouterID: a(sp4), Peers: []Peer{{Name: "frr", Address: a(frr4), ASN: frrAS, Families: []Family{IPv4Unicast}, Timers: fastTimers()}}}
	ip := first
	for i := 0; i < n; i++ {
		cfg.Paths = append(cfg.Paths, Path{Prefix: netip.PrefixFrom(ip, 32), Origin: "service-lb"})
		ip = ip.Next()
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(dir, "child.json")
	if err := os.WriteFile(file, js, 0o644); err != nil {
		b.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	b.Setenv(childEnv, "@"+file)
	b.Setenv(childPhasedEnv, "1")
	proc := testutil.StartProcess(b, ns, self, "-test.run=^$", "-test.bench=^$")
	var start time.Time
	testutil.Eventually(b, 30*time.Second, 10*time.Millisecond, func() error {
		for _, line := range strings.Split(proc.Output(), "\n") {
			if rest, ok := strings.CutPrefix(line, "adding "); ok {
				ns, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
				start = time.Unix(0, ns)
				return err
			}
		}
		return fmt.Errorf("child speaker has not started announcing: %s", proc.Output())
	})
	return proc, start
}

func startGoBGPd(b *testing.B, ns, dir string, first netip.Addr, n int) (*testutil.Process, time.Time) {
	toml := fmt.Sprintf(`[global.config]
  as = %d
  router-id = %q
[[neighbors]]
  [neighbors.config]
    neighbor-address = %q
    peer-as = %d
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
`, ourAS, sp4, frr4, frrAS)
	conf, mrt := filepath.Join(dir, "gobgpd.toml"), filepath.Join(dir, "routes.mrt")
	if err := os.WriteFile(conf, []byte(toml), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := bgptest.WriteMRT(mrt, first, n, a(sp4)); err != nil {
		b.Fatal(err)
	}
	proc := testutil.StartProcess(b, ns, "gobgpd", "-f", conf, "-p", "--api-hosts", "127.0.0.1:50052", "--pprof-disable")
	testutil.Eventually(b, 30*time.Second, 50*time.Millisecond, func() error {
		out, err := bgptest.Run(ns, "gobgp", "-p", "50052", "neighbor")
		if err == nil && !strings.Contains(out, "Establ") {
			err = fmt.Errorf("gobgpd session not up: %s", out)
		}
		return err
	})
	// Debian's gobgp 3.10 `mrt inject` of this file leaves gobgpd with ~94%
	// of the paths (re-injecting adds none of the missing ones); FRR is then
	// waited for until it has every path gobgpd holds, reported as paths-held.
	start := time.Now()
	if out, err := bgptest.Run(ns, "gobgp", "-p", "50052", "mrt", "inject", "global", mrt); err != nil || strings.TrimSpace(out) != "" {
		b.Fatal(out, err)
	}
	return proc, start
}
