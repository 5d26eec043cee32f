package ipam

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	crashEnvDB    = "STRAIT_IPAM_CRASH_DB"
	crashEnvRound = "STRAIT_IPAM_CRASH_ROUND"
)

func crashPools() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("10.9.0.0/26"), netip.MustParsePrefix("fd09::/122")}
}

// TestCrashChild is the child half of TestCrashSafetyKill9; it does nothing
// unless started by it. Protocol on stdout, one write per line:
//
//	a KEY        before Allocate        A KEY ADDRS  after Allocate returned nil
//	r KEY        before Release         R KEY        after Release returned nil
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnvDB)
	if path == "" {
		t.Skip("child helper of TestCrashSafetyKill9")
	}
	round := os.Getenv(crashEnvRound)
	say := func(format string, args ...any) {
		if _, err := fmt.Fprintf(os.Stdout, format+"\n", args...); err != nil {
			os.Exit(3)
		}
	}
	s, err := OpenBolt(path)
	if err != nil {
		say("ERR open: %v", err)
		os.Exit(2)
	}
	a, err := New(s, crashPools())
	if err != nil {
		say("ERR new: %v", err)
		os.Exit(2)
	}
	var held []Key
	for _, al := range a.List() {
		held = append(held, al.Key)
	}
	say("READY")
	deadline := time.Now().Add(10 * time.Second) // the parent kills us long before
	for n := 0; time.Now().Before(deadline); n++ {
		if len(held) > 0 && (len(held) >= 50 || rand.IntN(100) < 45) {
			i := rand.IntN(len(held))
			k := held[i]
			say("r %s", k)
			if _, _, err := a.Release(k); err != nil {
				say("ERR release: %v", err)
				os.Exit(2)
			}
			say("R %s", k)
			held[i] = held[len(held)-1]
			held = held[:len(held)-1]
			continue
		}
		o := Owner{Key: Key{Network: "crash", ContainerID: fmt.Sprintf("r%s-%d", round, n), IfName: "eth0"}}
		say("a %s", o.Key)
		al, _, err := a.Allocate(o)
		if err != nil {
			say("ERR allocate: %v", err)
			os.Exit(2)
		}
		addrs := make([]string, len(al.Addrs))
		for i, ad := range al.Addrs {
			addrs[i] = ad.String()
		}
		say("A %s %s", o.Key, strings.Join(addrs, ","))
		held = append(held, o.Key)
	}
	os.Exit(4) // never reached in a normal run: the parent SIGKILLs us
}

// crashModel is what the parent learned from the children's reports.
type crashModel struct {
	attempted  map[string]bool   // "a" seen
	committed  map[string]string // "A": key -> addrs
	relStarted map[string]bool   // "r" seen
	released   map[string]bool   // "R" seen
}

func (m *crashModel) apply(t *testing.T, line string) (inFlight bool) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return false
	}
	switch f[0] {
	case "a":
		m.attempted[f[1]] = true
		return true
	case "A":
		m.committed[f[1]] = f[2]
	case "r":
		m.relStarted[f[1]] = true
		return true
	case "R":
		m.released[f[1]] = true
	case "ERR":
		t.Fatalf("child: %s", line)
	}
	return false
}

// TestCrashSafetyKill9 runs the child in a loop of real SIGKILLs at random
// moments and checks after each one that the store opens, holds no duplicate
// address, lost no reported commit (allocation or release) and contains
// nothing that was never attempted.
func TestCrashSafetyKill9(t *testing.T) {
	if os.Getenv(crashEnvDB) != "" {
		t.Skip("in child")
	}
	rounds := 30
	if testing.Short() {
		rounds = 8
	}
	path := filepath.Join(t.TempDir(), "crash", "ipam.db")
	m := &crashModel{attempted: map[string]bool{}, committed: map[string]string{}, relStarted: map[string]bool{}, released: map[string]bool{}}
	start := time.Now()
	killedInFlight, ops := 0, 0
	for round := 0; round < rounds; round++ {
		if time.Since(start) > 20*time.Second {
			t.Logf("stopping after %d rounds to bound runtime", round)
			break
		}
		lines := runAndKill(t, path, round)
		inFlight := false
		for _, l := range lines {
			inFlight = m.apply(t, l)
			if strings.HasPrefix(l, "A ") || strings.HasPrefix(l, "R ") {
				ops++
			}
		}
		if inFlight {
			killedInFlight++
		}
		verifyCrashStore(t, path, m, round)
	}
	t.Logf("%d committed operations, %d kills landed inside an operation, %v", ops, killedInFlight, time.Since(start).Round(time.Millisecond))
	if ops < 30 {
		t.Fatalf("only %d operations committed across all rounds: the test exercised too little", ops)
	}
}

// runAndKill starts the child, waits until it has opened the store, lets it
// work for 5-80 ms, SIGKILLs it and returns every line it wrote.
func runAndKill(t *testing.T, path string, round int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDB+"="+path, fmt.Sprintf("%s=%d", crashEnvRound, round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	linesCh := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			linesCh <- sc.Text()
		}
		close(linesCh)
	}()
	var lines []string
	timeout := time.After(15 * time.Second)
	for ready := false; !ready; {
		select {
		case l, ok := <-linesCh:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("round %d: child exited before READY: %v\nstderr: %s", round, lines, stderr.String())
			}
			lines = append(lines, l)
			ready = l == "READY"
		case <-timeout:
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("round %d: child not ready in time; stderr: %s", round, stderr.String())
		}
	}
	time.Sleep(time.Duration(5+rand.IntN(76)) * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("round %d: kill: %v", round, err)
	}
	for l := range linesCh {
		lines = append(lines, l)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: child did not die by SIGKILL: %v\nlast lines: %v\nstderr: %s", round, err, lines[max(0, len(lines)-5):], stderr.String())
	}
	return lines
}

func verifyCrashStore(t *testing.T, path string, m *crashModel, round int) {
	t.Helper()
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatalf("round %d: reopen after kill: %v", round, err)
	}
	defer s.Close()
	a, err := New(s, crashPools()) // fails on duplicate addresses
	if err != nil {
		t.Fatalf("round %d: New after kill: %v", round, err)
	}
	list := a.List()
	checkUnique(t, list)
	pools := crashPools()
	present := map[string]string{}
	for _, al := range list {
		if len(al.Addrs) != len(pools) {
			t.Fatalf("round %d: %s holds %v, want one address per pool (torn allocation)", round, al.Key, al.Addrs)
		}
		addrs := make([]string, len(al.Addrs))
		for i, ad := range al.Addrs {
			addrs[i] = ad.String()
			if !pools[i].Contains(ad) {
				t.Fatalf("round %d: %s holds %s outside %s", round, al.Key, ad, pools[i])
			}
		}
		present[al.Key.String()] = strings.Join(addrs, ",")
		if !m.attempted[al.Key.String()] {
			t.Fatalf("round %d: %s present but never attempted", round, al.Key)
		}
	}
	for k, addrs := range m.committed {
		if m.relStarted[k] {
			continue // release attempted: may or may not have committed
		}
		if got, ok := present[k]; !ok || got != addrs {
			t.Fatalf("round %d: committed allocation %s (%s) lost or changed: present=%v %q", round, k, addrs, ok, got)
		}
	}
	for k := range m.released {
		if _, ok := present[k]; ok {
			t.Fatalf("round %d: committed release of %s lost", round, k)
		}
	}
}
