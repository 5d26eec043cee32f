// Package k8sbin builds the Kubernetes binaries the Kubernetes lab and the
// upstream e2e tests need (etcd, the control plane, kubelet, kube-proxy,
// kubectl, agnhost and e2e.test) from the pinned module in hack/k8s, once,
// into a cache folder shared by every checkout and test process on the
// machine.
//
// The cache folder is CacheDir/<key>/ where key (see Key) hashes
// hack/k8s/go.mod, go.sum, the Go version and the build recipe. A folder is
// used only when its .complete marker exists; the marker is written after
// every binary is present. Builds are serialised by an flock on
// CacheDir/<key>.lock, go into CacheDir/<key>.tmp-<pid>/ and are renamed
// into place, so concurrent callers and interrupted builds never leave a
// folder that looks complete but is not.
package k8sbin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Version is the Kubernetes version hack/k8s pins and the binaries report.
const Version = "v1.34.4"

// Images the upstream e2e tests of Version use (test/utils/image/manifest.go);
// without a registry they have to be imported into containerd under exactly
// these names. AgnhostImage is what the agnhost binary built here implements.
const (
	AgnhostVersion = "2.56"
	AgnhostImage   = "registry.k8s.io/e2e-test-images/agnhost:" + AgnhostVersion
	BusyboxImage   = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1"
	PauseImage     = "registry.k8s.io/pause:3.10.1"
)

// ldflags stamp the version the servers report (without them they say
// v0.0.0-master) and agnhost's own version (only agnhost's main package
// declares main.Version; the linker ignores -X for a missing symbol).
const ldflags = "-s -w" +
	" -X k8s.io/component-base/version.gitVersion=" + Version +
	" -X k8s.io/component-base/version.gitMajor=1" +
	" -X k8s.io/component-base/version.gitMinor=34" +
	" -X main.Version=" + AgnhostVersion

// markerName marks a cache folder whose binaries are all present.
const markerName = ".complete"

// progressEvery is how often a running build reports that it is still alive.
const progressEvery = 15 * time.Second

// Options configure Ensure.
type Options struct {
	// RepoRoot is the root of the Strait checkout; the build runs in
	// RepoRoot/hack/k8s. Required.
	RepoRoot string
	// CacheDir holds the built folders; default $XDG_CACHE_HOME/strait/k8s,
	// or $HOME/.cache/strait/k8s.
	CacheDir string
	// Out receives progress lines and, on failure, the tail of go's output.
	// Nil discards them.
	Out io.Writer
	// Go is the go command; default "go".
	Go string
}

// server is one binary of the single go build: its package and the name
// go build gives it.
type server struct{ name, pkg, built string }

// servers are built in one go build invocation; e2e.test follows with go test -c.
func servers() []server {
	return []server{
		// go build names a /vN package after the element before it.
		{"etcd", "go.etcd.io/etcd/server/v3", "server"},
		{"kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"},
		{"kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager", "kube-controller-manager"},
		{"kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"},
		{"kubelet", "k8s.io/kubernetes/cmd/kubelet", "kubelet"},
		{"kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy", "kube-proxy"},
		{"kubectl", "k8s.io/kubernetes/cmd/kubectl", "kubectl"},
		{"agnhost", "k8s.io/kubernetes/test/images/agnhost", "agnhost"},
	}
}

const (
	e2eName = "e2e.test"
	e2ePkg  = "k8s.io/kubernetes/test/e2e"
)

// Binaries lists the file names Ensure's folder holds.
func Binaries() []string {
	var names []string
	for _, s := range servers() {
		names = append(names, s.name)
	}
	return append(names, e2eName)
}

func (o *Options) goCmd() string {
	if o.Go == "" {
		return "go"
	}
	return o.Go
}

func (o *Options) out() io.Writer {
	if o.Out == nil {
		return io.Discard
	}
	return o.Out
}

func (o *Options) logf(format string, args ...any) {
	fmt.Fprintf(o.out(), "k8sbin: "+format+"\n", args...)
}

func (o *Options) cacheDir() (string, error) {
	if o.CacheDir != "" {
		return o.CacheDir, nil
	}
	base, err := os.UserCacheDir() // $XDG_CACHE_HOME, else $HOME/.cache
	if err != nil {
		return "", fmt.Errorf("k8sbin: default cache folder: %w", err)
	}
	return filepath.Join(base, "strait", "k8s"), nil
}

// Key is the cache key of the binaries built from repoRoot/hack/k8s: the
// first 16 hex digits of a sha256 over its go.mod, go.sum, `go env
// GOVERSION` (run there, so it names the toolchain that would build) and the
// build recipe (flags and binary list).
func Key(repoRoot string) (string, error) {
	return key(context.Background(), repoRoot, "go")
}

func key(ctx context.Context, repoRoot, goCmd string) (string, error) {
	mod := filepath.Join(repoRoot, "hack", "k8s")
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(mod, f))
		if err != nil {
			return "", fmt.Errorf("k8sbin: cache key: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	cmd := exec.CommandContext(ctx, goCmd, "env", "GOVERSION")
	cmd.Dir = mod
	cmd.Env = goEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	v, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("k8sbin: cache key: %s env GOVERSION: %w: %s", goCmd, err, strings.TrimSpace(stderr.String()))
	}
	fmt.Fprintf(h, "goversion %s\n", strings.TrimSpace(string(v)))
	fmt.Fprintf(h, "recipe CGO_ENABLED=0 -trimpath -ldflags %q %v\n", ldflags, servers())
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// goEnv is the environment of every go command: static binaries, and no
// go.work from a parent folder changing what hack/k8s resolves to.
func goEnv() []string {
	return append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
}

// complete reports whether dir holds a finished build.
func complete(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, markerName)); err != nil {
		return false
	}
	for _, b := range Binaries() {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// Ensure returns a folder holding etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl,
// agnhost and e2e.test of Version, building them first if the cache does not
// hold them yet (~11 minutes cold on 2 cores, ~20 s with a warm Go build
// cache). Safe to call from concurrent processes: one builds, the others
// wait for it and reuse its result.
func Ensure(ctx context.Context, o Options) (string, error) {
	if o.RepoRoot == "" {
		return "", errors.New("k8sbin: Options.RepoRoot is required")
	}
	cache, err := o.cacheDir()
	if err != nil {
		return "", err
	}
	k, err := key(ctx, o.RepoRoot, o.goCmd())
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, k)
	if complete(dir) {
		return dir, nil
	}

	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("k8sbin: create cache folder: %w", err)
	}
	unlock, err := o.lock(ctx, filepath.Join(cache, k+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if complete(dir) { // another process built it while we waited
		return dir, nil
	}

	// Holding the lock, every other <key>.tmp-* is left over from a build
	// that died; a <key>/ without its marker is an interrupted rename or a
	// damaged folder.
	stale, _ := filepath.Glob(filepath.Join(cache, k+".tmp-*"))
	for _, s := range append(stale, dir) {
		if err := os.RemoveAll(s); err != nil {
			return "", fmt.Errorf("k8sbin: remove stale %s: %w", s, err)
		}
	}
	tmp := filepath.Join(cache, fmt.Sprintf("%s.tmp-%d", k, os.Getpid()))
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", fmt.Errorf("k8sbin: create build folder: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp)
		}
	}()

	if err := o.build(ctx, tmp); err != nil {
		return "", err
	}
	for _, b := range Binaries() {
		if _, err := os.Stat(filepath.Join(tmp, b)); err != nil {
			return "", fmt.Errorf("k8sbin: check build: %w", err)
		}
	}
	marker := fmt.Sprintf("kubernetes %s\nkey %s\nbuilt %s\n", Version, k, time.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(tmp, markerName), []byte(marker), 0o644); err != nil {
		return "", fmt.Errorf("k8sbin: write marker: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("k8sbin: move build into place: %w", err)
	}
	ok = true
	return dir, nil
}

// lock takes an exclusive flock on path, polling so that ctx is honoured
// and a waiting caller says what it is waiting for.
func (o *Options) lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("k8sbin: open lock: %w", err)
	}
	start := time.Now()
	next := start
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("k8sbin: lock %s: %w", path, err)
		}
		if now := time.Now(); !now.Before(next) {
			o.logf("waiting for another process building into the cache (lock %s) (%s elapsed)", path, elapsed(start))
			next = now.Add(progressEvery)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("k8sbin: wait for lock %s: %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// build runs the two go commands into dir.
func (o *Options) build(ctx context.Context, dir string) error {
	start := time.Now()
	var names, pkgs []string
	for _, s := range servers() {
		names = append(names, s.name)
		pkgs = append(pkgs, s.pkg)
	}
	o.logf("building Kubernetes %s binaries into %s (cold: ~11 min on 2 cores; warm Go cache: ~20 s)", Version, dir)

	args := append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", dir + string(filepath.Separator)}, pkgs...)
	if err := o.run(ctx, "go build", strings.Join(names, ", "), args); err != nil {
		return err
	}
	for _, s := range servers() {
		if s.built == s.name {
			continue
		}
		if err := os.Rename(filepath.Join(dir, s.built), filepath.Join(dir, s.name)); err != nil {
			return fmt.Errorf("k8sbin: go build: name %s: %w", s.name, err)
		}
	}

	args = []string{"test", "-c", "-trimpath", "-ldflags", ldflags, "-o", filepath.Join(dir, e2eName), e2ePkg}
	if err := o.run(ctx, "go test -c", e2eName, args); err != nil {
		return err
	}
	o.logf("built %s in %s", strings.Join(Binaries(), ", "), elapsed(start))
	return nil
}

// run runs one go command in hack/k8s, printing a progress line every
// progressEvery and, on failure, the tail of its output.
func (o *Options) run(ctx context.Context, step, what string, args []string) error {
	cmd := exec.CommandContext(ctx, o.goCmd(), args...)
	cmd.Dir = filepath.Join(o.RepoRoot, "hack", "k8s")
	cmd.Env = goEnv()
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	// Its own process group, so cancelling also stops the compilers and
	// linkers go started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second

	start := time.Now()
	o.logf("building %s", what)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("k8sbin: %s: %w", step, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-tick.C:
			o.logf("building %s (%s elapsed)", what, elapsed(start))
		}
	}
	if err != nil {
		fmt.Fprintf(o.out(), "k8sbin: %s failed after %s; end of its output:\n%s\n", step, elapsed(start), tail(output.Bytes(), 60))
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("k8sbin: %s %s: %w", step, what, err)
	}
	peak := ""
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > 0 {
		peak = fmt.Sprintf("; largest process %d MB", ru.Maxrss/1024) // Linux: KiB, over go and its children
	}
	o.logf("built %s in %s%s", what, elapsed(start), peak)
	return nil
}

func elapsed(since time.Time) time.Duration {
	return time.Since(since).Round(time.Second)
}

// tail returns at most the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"[...]"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
