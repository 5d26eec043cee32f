package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// containerd is a private containerd for one test: every path (root, state,
// sockets, opt) under its folder, no CRI plugin, no TCP listener, in its own
// mount namespace so that nothing it or its shims mount shows on the host.
type containerd struct {
	dir, sock string
	cmd       *exec.Cmd
}

func startContainerd(t *testing.T) *containerd {
	t.Helper()
	dir := t.TempDir()
	c := &containerd{dir: dir, sock: filepath.Join(dir, "c.sock")}
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = %[5]q
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[6]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc",
		filepath.Join(dir, "debug.sock"), filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	mustDo(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	mustDo(t, err)
	c.cmd = exec.Command("containerd", "--config", cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Go makes the new mount namespace's mounts private (MS_REC|MS_PRIVATE).
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	mustDo(t, c.cmd.Start())
	t.Cleanup(func() {
		c.stop(t)
		_ = logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("containerd log (tail):\n%s", tail(string(b), 40))
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := exec.Command("ctr", "-a", c.sock, "version").Run(); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd not serving %s after 30 s", c.sock)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop kills and deletes the tasks still running, then the shims this
// containerd started (found by its socket path, unique to this test, in
// their command line), then containerd itself.
func (c *containerd) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ids, err := c.ctr(ctx, "tasks", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(ids) {
			t.Logf("removing leftover task %s", id)
			_, _ = c.ctr(ctx, "tasks", "kill", "-s", "SIGKILL", id)
			_, _ = c.ctr(ctx, "tasks", "delete", "-f", id)
			_, _ = c.ctr(ctx, "containers", "delete", id)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) || !bytes.Contains(b, []byte(c.sock)) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			t.Logf("killing leftover shim %d", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

func (c *containerd) ctr(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"-a", c.sock, "-n", Namespace}, args...)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ctr", full...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), err
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cgroupParent is the cgroup (v1, every hierarchy) the test's containers run
// under; removed when empty at the end.
func cgroupParent(t *testing.T) string {
	parent := fmt.Sprintf("strait-images-test-%d", os.Getpid())
	t.Cleanup(func() {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
		dirs2, _ := filepath.Glob("/sys/fs/cgroup/" + parent)
		for _, d := range append(dirs, dirs2...) {
			subs, _ := filepath.Glob(d + "/*/")
			for _, s := range subs {
				if fi, err := os.Stat(s); err == nil && fi.IsDir() {
					_ = os.Remove(s)
				}
			}
			_ = os.Remove(d)
		}
	})
	return "/" + parent
}

// TestContainerd imports the lab's images into a real containerd (the one
// Debian ships, as the lab's nodes use) and runs them with runc: the tools
// image's userland (busybox sh, curl and nc with their libraries) works in
// the container's own network namespace, and pause exits 0 on SIGTERM.
func TestContainerd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts containerd and runs containers with runc")
	}
	needHost(t, "containerd", "ctr", "runc", "containerd-shim-runc-v2", "busybox", "curl", "nc.openbsd", "dash", "ldd", "go")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	work := t.TempDir()
	pauseBin := filepath.Join(work, "pause")
	if err := BuildPause(ctx, "go", pauseBin); err != nil {
		t.Fatal(err)
	}
	wgetBin := filepath.Join(work, "wget")
	if err := BuildWget(ctx, "go", wgetBin); err != nil {
		t.Fatal(err)
	}
	imgs, err := Lab(Options{PauseBin: pauseBin, WgetBin: wgetBin, Gzip: true})
	if err != nil {
		t.Fatal(err)
	}
	c := startContainerd(t)
	if err := WriteAndImport(ctx, "ctr", c.sock, work, imgs); err != nil {
		t.Fatal(err)
	}
	listed, err := c.ctr(ctx, "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		if !strings.Contains(listed, img.Name) {
			t.Fatalf("ctr images ls lacks %s:\n%s", img.Name, listed)
		}
		out, err := c.ctr(ctx, "images", "check", "name=="+img.Name)
		if err != nil || !strings.Contains(out, "complete") {
			t.Fatalf("ctr images check %s: %v\n%s", img.Name, err, out)
		}
	}
	// Unpacked into overlayfs: the snapshot of the layer exists.
	if out, err := c.ctr(ctx, "snapshots", "--snapshotter", "overlayfs", "ls"); err != nil || !strings.Contains(out, "Committed") {
		t.Fatalf("no committed overlayfs snapshot after import (not unpacked?): %v\n%s", err, out)
	}

	cg := cgroupParent(t)
	runc := filepath.Join(c.dir, "runc")
	// Without --net-host ctr gives the container a new network namespace
	// holding only lo (down); CAP_NET_ADMIN lets the script raise it there.
	script := `set -e
echo ok
curl --version | head -n 1
nc -h 2>&1 | head -n 1 || true
ip -o link | sed 's/^[0-9]*: //' | cut -d: -f1 | tr '\n' ' '; echo
ip link set lo up
mkdir -p /tmp/www && echo served-by-busybox > /tmp/www/index.html
httpd -p 127.0.0.1:8080 -h /tmp/www
curl -sS --max-time 5 http://127.0.0.1:8080/index.html
wget -q -T 1 -O - http://127.0.0.1:8080/index.html | sed 's/^/wget: /'
nc -u -l -p 9999 -w 3 > /tmp/udp & sleep 0.5
echo hostName | nc -u -w 1 127.0.0.1 9999 || true
wait
cat /tmp/udp
ls -ld /tmp | cut -c1-10
id -un`
	out, err := c.ctr(ctx, "run", "--rm", "--cgroup", cg+"/tools", "--runc-root", runc,
		"--cap-add", "CAP_NET_ADMIN", ToolsImage, "strait-tools", "/bin/sh", "-c", script)
	t.Logf("tools container:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ok\n", "curl 7.", "OpenBSD netcat", "lo \n", "served-by-busybox", "wget: served-by-busybox", "\nhostName\n", "drwxrwxrwt", "root"} {
		if !strings.Contains(out, want) {
			t.Errorf("tools container output lacks %q", want)
		}
	}

	if agnhost := os.Getenv("STRAIT_AGNHOST"); agnhost != "" {
		testAgnhost(ctx, t, c, work, agnhost, cg, runc)
	} else {
		t.Log("STRAIT_AGNHOST (a built agnhost) unset: agnhost image not run")
	}

	// pause: runs until SIGTERM, then exits 0 (ctr run returns its status).
	run := exec.CommandContext(ctx, "ctr", "-a", c.sock, "-n", Namespace, "run", "--rm",
		"--cgroup", cg+"/pause", "--runc-root", runc, PauseImage, "strait-pause")
	var pauseOut bytes.Buffer
	run.Stdout, run.Stderr = &pauseOut, &pauseOut
	mustDo(t, run.Start())
	waitErr := make(chan error, 1)
	go func() { waitErr <- run.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if out, _ := c.ctr(ctx, "tasks", "ls"); strings.Contains(out, "RUNNING") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pause task never RUNNING: %s", pauseOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-waitErr:
		t.Fatalf("pause exited before SIGTERM: %v: %s", err, pauseOut.String())
	case <-time.After(time.Second):
	}
	if _, err := c.ctr(ctx, "tasks", "kill", "-s", "SIGTERM", "strait-pause"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waitErr:
		var exit *exec.ExitError
		if errors.As(err, &exit) || err != nil {
			t.Fatalf("pause after SIGTERM: %v: %s", err, pauseOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("pause still running 20 s after SIGTERM: %s", pauseOut.String())
	}
	if !strings.Contains(pauseOut.String(), "Shutting down, got signal") {
		t.Errorf("pause output %q", pauseOut.String())
	}
}

// testAgnhost runs the agnhost image as e2e does (entrypoint /agnhost, args
// netexec) and dials it from an exec'd shell the way the e2e framework does:
// curl to /hostname over TCP and `nc -u` over UDP.
func testAgnhost(ctx context.Context, t *testing.T, c *containerd, work, bin, cg, runc string) {
	imgs, err := Lab(Options{AgnhostBin: bin})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		if img.Name == AgnhostImage {
			if err := WriteAndImport(ctx, "ctr", c.sock, work, []Image{img}); err != nil {
				t.Fatal(err)
			}
		}
	}
	const id = "strait-agnhost"
	if _, err := c.ctr(ctx, "run", "-d", "--cgroup", cg+"/agnhost", "--runc-root", runc,
		"--cap-add", "CAP_NET_ADMIN", AgnhostImage, id,
		// ctr's args replace entrypoint and cmd both (the CRI replaces only cmd).
		"/agnhost", "netexec", "--http-port=8080", "--udp-port=8081"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_, _ = c.ctr(ctx, "tasks", "kill", "-s", "SIGKILL", id)
		_, _ = c.ctr(ctx, "tasks", "delete", "-f", id)
		_, _ = c.ctr(ctx, "containers", "delete", id)
	}()
	probe := `ip link set lo up
for i in $(seq 1 50); do curl -g -q -s --max-time 1 http://127.0.0.1:8080/hostname && break; sleep 0.1; done; echo
echo hostName | nc -w 1 -u 127.0.0.1 8081; echo
grep -c user-defined-in-image /etc/passwd`
	out, err := c.ctr(ctx, "tasks", "exec", "--exec-id", "probe", id, "/bin/sh", "-c", probe)
	t.Logf("agnhost probe:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	// netexec answers /hostname and the UDP "hostName" with os.Hostname().
	answers := strings.Fields(out)
	if len(answers) != 3 || answers[0] != answers[1] || answers[2] != "1" {
		t.Fatalf("agnhost answers %q: want the same hostname over HTTP and UDP, then 1", answers)
	}
}
