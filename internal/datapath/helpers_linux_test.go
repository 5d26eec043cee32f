package datapath

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/strait-net/strait/internal/testutil"
)

func TestMain(m *testing.M) {
	if file := os.Getenv(meshNodeEnv); file != "" {
		os.Exit(runMeshNode(file)) // a child of TestNativeRoutingMesh
	}
	testutil.Main(m)
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newNode creates a node namespace and a Datapath programming it (the test
// process itself stays in its own namespace).
func newNode(t testing.TB, verbose bool) (*testutil.NS, *Datapath) {
	t.Helper()
	node := testutil.NewNS(t)
	var log *slog.Logger
	if verbose {
		log = slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	dp, err := New(Options{NodeNetns: node.Path(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	if err := dp.EnsureHost(context.Background()); err != nil {
		t.Fatal(err)
	}
	return node, dp
}

// newPod creates a pod namespace and the desired wiring for it.
func newPod(t testing.TB, addrs ...string) (*testutil.NS, Pod) {
	t.Helper()
	podNS := testutil.NewNS(t)
	p := Pod{Netns: podNS.Path(), IfName: "eth0", HostIface: HostIfaceName("test", podNS.Name, "eth0")}
	for _, a := range addrs {
		p.Addrs = append(p.Addrs, netip.MustParseAddr(a))
	}
	return podNS, p
}

func mustSetup(t testing.TB, dp *Datapath, p Pod) PodLinks {
	t.Helper()
	links, err := dp.SetupPod(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return links
}

// addUplink gives the node 10.90.0.2/24 and fd42:90::2/64 on a veth to a
// third namespace.
func addUplink(t testing.TB, node *testutil.NS) {
	t.Helper()
	peer := testutil.NewNS(t)
	node.MustRun(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", peer.Name)
	node.MustRun(t, "ip", "addr", "add", "10.90.0.2/24", "dev", "up0")
	node.MustRun(t, "ip", "addr", "add", "fd42:90::2/64", "dev", "up0", "nodad")
	node.MustRun(t, "ip", "link", "set", "up0", "up")
	peer.MustRun(t, "ip", "addr", "add", "10.90.0.1/24", "dev", "eth0")
	peer.MustRun(t, "ip", "addr", "add", "fd42:90::1/64", "dev", "eth0", "nodad")
	peer.MustRun(t, "ip", "link", "set", "eth0", "up")
}

// listenEcho opens a TCP echo listener inside n (the socket keeps its
// namespace) and returns its address.
func listenEcho(t testing.TB, n ns.NetNS, ip string) string {
	t.Helper()
	var l net.Listener
	err := n.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(ip, "0"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

// roundTrip dials addr from inside n and checks the data comes back.
func roundTrip(n ns.NetNS, addr string) error { return roundTripTimeout(n, addr, 5*time.Second) }

func roundTripTimeout(n ns.NetNS, addr string, timeout time.Duration) error {
	return n.Do(func(ns.NetNS) error {
		c, err := (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := []byte("strait round trip to " + addr)
		if _, err := c.Write(msg); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("echo from %s: got %q", addr, got)
		}
		return nil
	})
}

func linkExists(n *testutil.NS, name string) bool {
	_, err := n.Run("ip", "link", "show", "dev", name)
	return err == nil
}

func routes(t testing.TB, n *testutil.NS) string {
	t.Helper()
	return n.MustRun(t, "ip", "-4", "route", "show") + n.MustRun(t, "ip", "-6", "route", "show")
}

func driftItems(t testing.TB, err error) []string {
	t.Helper()
	de, ok := err.(*DriftError)
	if !ok {
		t.Fatalf("want *DriftError, got %T: %v", err, err)
	}
	return de.Items
}

func hasItem(items []string, want string) bool {
	for _, it := range items {
		if it == want {
			return true
		}
	}
	return false
}

// rootSysctls snapshots the sysctls of the test process's own namespace
// that the datapath could plausibly touch.
func rootSysctls(t testing.TB) map[string]string {
	t.Helper()
	// Threads outside ns.Do are all in the process's namespace; lock anyway
	// so the snapshot is read from one thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	snap := map[string]string{}
	for _, glob := range []string{
		"/proc/sys/net/ipv4/ip_forward",
		"/proc/sys/net/ipv4/conf/*/*",
		"/proc/sys/net/ipv4/neigh/*/proxy_delay",
		"/proc/sys/net/ipv6/conf/*/*",
	} {
		files, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil {
				snap[f] = string(b)
			}
		}
	}
	return snap
}
