// Package bgptest runs real BGP peers for tests: FRR (bgpd, zebra, bfdd)
// and BIRD 2 in network namespaces on a bridge LAN, and reads what they
// learned. Shared by the bgp engine, agent and lab tests.
package bgptest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/strait-net/strait/internal/testutil"
)

// LAN is a bridge living in its own namespace; namespaces join it with veths.
type LAN struct {
	NS    *testutil.NS
	count atomic.Int32
}

// NewLAN creates the bridge namespace (deleted when the test ends).
func NewLAN(t testing.TB) *LAN {
	t.Helper()
	ns := testutil.NewNS(t)
	ns.MustRun(t, "ip", "link", "add", "br0", "type", "bridge")
	ns.MustRun(t, "ip", "link", "set", "br0", "up")
	return &LAN{NS: ns}
}

// Attach connects a namespace (nsName; "" = the test process's own) to the
// LAN through a veth named ifname there, with IPv6 router advertisements off
// and the given addresses (CIDR; IPv6 ones without DAD).
func (l *LAN) Attach(t testing.TB, nsName, ifname string, addrs ...string) {
	t.Helper()
	n := l.count.Add(1)
	peer := fmt.Sprintf("p%d", n)
	tmp := fmt.Sprintf("stv%d-%d", os.Getpid()%100000, n)
	run(t, "", "ip", "link", "add", tmp, "type", "veth", "peer", "name", peer, "netns", l.NS.Name)
	if nsName != "" {
		run(t, "", "ip", "link", "set", tmp, "netns", nsName)
	}
	run(t, nsName, "ip", "link", "set", tmp, "name", ifname)
	if nsName == "" {
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", ifname).Run() })
	}
	for _, k := range []string{"all", "default"} {
		run(t, nsName, "sysctl", "-qw", "net.ipv6.conf."+k+".accept_ra=0")
	}
	run(t, nsName, "sysctl", "-qw", "net.ipv6.conf."+ifname+".accept_ra=0")
	for _, a := range addrs {
		args := []string{"ip", "addr", "add", a, "dev", ifname}
		if strings.Contains(a, ":") {
			args = append(args, "nodad")
		}
		run(t, nsName, args...)
	}
	run(t, nsName, "ip", "link", "set", ifname, "up")
	l.NS.MustRun(t, "ip", "link", "set", peer, "master", "br0")
	l.NS.MustRun(t, "ip", "link", "set", peer, "up")
}

// run runs a command in a namespace ("" = current) and fails the test on error.
func run(t testing.TB, nsName string, args ...string) string {
	t.Helper()
	out, err := Run(nsName, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Run runs a command in a namespace ("" = the current one).
func Run(nsName string, args ...string) (string, error) {
	if nsName != "" {
		args = append([]string{"ip", "netns", "exec", nsName}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// InNamespaceEnv is set in a test binary re-executed by RunInNamespace.
const InNamespaceEnv = "STRAIT_TEST_IN_NS"

// RunInNamespace re-executes the test binary inside a fresh network
// namespace (so daemons embedded in the test process, whose goroutines run on
// any OS thread, open their sockets there) and returns its exit code. The
// namespace is deleted afterwards. Call from TestMain when running as root
// and os.Getenv(InNamespaceEnv) == "".
func RunInNamespace() int {
	name, err := testutil.NewNSName()
	if err == nil {
		var ns *testutil.NS
		if ns, err = testutil.CreateNS(name); err == nil {
			defer func() { _ = ns.Delete() }()
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bgptest:", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bgptest:", err)
		return 1
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", name, self}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), InNamespaceEnv+"="+name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "bgptest: re-exec in namespace:", err)
		return 1
	}
	return 0
}
