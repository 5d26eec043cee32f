// Package testutil is the privileged test harness: root checks, fresh network
// namespaces deleted on every exit path, processes started inside them and
// killed by PID, and polling helpers.
package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// netnsDir is where iproute2 keeps named namespaces.
const netnsDir = "/run/netns"

// nsPrefix starts every namespace a test process creates; the PID after it
// lets a later run find namespaces of a test process that died without
// cleaning up (kill -9), and the signal handler find its own.
const nsPrefix = "strait-t"

// RequireRoot skips the test when not running as root, saying why.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged test: needs root (network namespaces, veth, netlink); run `make test` as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("privileged test: needs iproute2's `ip` on PATH")
	}
}

// Main wraps testing.M for packages with privileged tests: it removes the
// namespaces and bpffs mounts left by earlier test processes that no longer
// run, and removes this process's when it is interrupted (Ctrl-C, SIGTERM),
// where t.Cleanup would not run.
func Main(m *testing.M) {
	SweepStale()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "testutil: %v: deleting this test process's namespaces\n", s)
		deleteOwnNamespaces(os.Getpid())
		sweepBPFFS(true)
		os.Exit(130)
	}()
	code := m.Run()
	deleteOwnNamespaces(os.Getpid())
	sweepBPFFS(true)
	os.Exit(code)
}

// SweepStale deletes namespaces, and unmounts bpffs mounts, created by test
// processes that have exited.
func SweepStale() {
	sweepBPFFS(false)
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, ok := ownerPID(e.Name())
		if !ok || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = exec.Command("ip", "netns", "del", e.Name()).Run()
		}
	}
}

func ownerPID(name string) (int, bool) { return pidAfter(nsPrefix, name) }

// pidAfter reads the owner's PID in a name made of prefix, PID, "-" and more.
func pidAfter(prefix, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	pidStr, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	return pid, err == nil
}

func deleteOwnNamespaces(pid int) {
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if p, ok := ownerPID(e.Name()); ok && p == pid {
			_ = exec.Command("ip", "netns", "del", e.Name()).Run()
		}
	}
}

// NS is a named network namespace created for one test.
type NS struct {
	ns.NetNS
	Name string
}

// NewNS creates a fresh named network namespace (visible to `ip netns`) with
// its loopback up, and deletes it when the test ends, whatever the outcome.
func NewNS(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	name, err := NewNSName()
	if err != nil {
		t.Fatal(err)
	}
	n, err := CreateNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Delete() })
	return n
}

// OwnedPrefix is a namespace name prefix owned by this test process: names
// starting with it are swept on Ctrl-C and by later runs once it has exited.
func OwnedPrefix() string { return fmt.Sprintf("%s%d-", nsPrefix, os.Getpid()) }

// NewNSName returns a fresh namespace name owned by this process.
func NewNSName() (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("namespace name: %w", err)
	}
	return fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), hex.EncodeToString(b)), nil
}

// CreateNS creates the named namespace with loopback up. The caller deletes it.
func CreateNS(name string) (*NS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		return nil, fmt.Errorf("lo up in %s: %w: %s", name, err, out)
	}
	h, err := ns.GetNS(filepath.Join(netnsDir, name))
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	return &NS{NetNS: h, Name: name}, nil
}

// Delete closes and removes the namespace; deleting twice is harmless.
func (n *NS) Delete() error {
	_ = n.NetNS.Close()
	if _, err := os.Stat(filepath.Join(netnsDir, n.Name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", n.Name, err, out)
	}
	return nil
}

// Run runs a command inside the namespace and returns its combined output.
func (n *NS) Run(args ...string) (string, error) {
	full := append([]string{"netns", "exec", n.Name}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Eventually polls f until it returns nil or the timeout passes, then fails
// the test with f's last error.
func Eventually(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not true within %v: %v", timeout, err)
		case <-time.After(interval):
		}
	}
}
