package k8sbin

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRepo creates a repo root with a minimal hack/k8s module.
func fakeRepo(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	mod := filepath.Join(root, "hack", "k8s")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(mod, "go.mod"), "module example.com/k8s\n\ngo 1.26\n")
	write(t, filepath.Join(mod, "go.sum"), "example.com/a v1.0.0 h1:aaaa=\n")
	return root
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeGo writes a go command that logs each call (args, working folder,
// CGO_ENABLED) to the returned log file, answers `env GOVERSION`, and for
// build / test -c creates the output files the real one would (etcd as
// "server"), sleeping delay seconds first. With fail set, builds fail.
func fakeGo(t *testing.T, delay string, fail bool) (goCmd, log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "calls.log")
	failing := ""
	if fail {
		failing = `echo "compile: something went badly wrong" >&2; exit 2`
	}
	script := `#!/bin/sh
echo "$* | pwd=$(pwd) CGO_ENABLED=$CGO_ENABLED" >> ` + log + `
if [ "$1" = env ]; then echo go1.26.8-fake; exit 0; fi
sleep ` + delay + `
` + failing + `
out=; prev=
for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; done
case "$1" in
build) for n in server kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl agnhost; do echo "$n" > "$out$n"; done ;;
test) echo e2e > "$out" ;;
esac
`
	goCmd = filepath.Join(dir, "go")
	if err := os.WriteFile(goCmd, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return goCmd, log
}

// buildCalls returns the logged build and test -c calls.
func buildCalls(t *testing.T, log string) []string {
	t.Helper()
	data, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var calls []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "build ") || strings.HasPrefix(l, "test ") {
			calls = append(calls, l)
		}
	}
	return calls
}

func TestKeyChangesWithGoSum(t *testing.T) {
	root := fakeRepo(t)
	k1, err := Key(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != 16 {
		t.Fatalf("key %q: want 16 hex digits", k1)
	}
	k2, err := Key(root)
	if err != nil || k2 != k1 {
		t.Fatalf("key not stable: %q then %q (%v)", k1, k2, err)
	}
	write(t, filepath.Join(root, "hack", "k8s", "go.sum"), "example.com/a v1.0.1 h1:bbbb=\n")
	k3, err := Key(root)
	if err != nil {
		t.Fatal(err)
	}
	if k3 == k1 {
		t.Fatalf("key %q did not change with go.sum", k1)
	}
	// A different Go version is a different key too.
	goCmd, _ := fakeGo(t, "0", false)
	k4, err := key(context.Background(), root, goCmd)
	if err != nil {
		t.Fatal(err)
	}
	if k4 == k3 {
		t.Fatalf("key %q did not change with the Go version", k3)
	}
}

func TestKeyMissingModule(t *testing.T) {
	if _, err := Key(t.TempDir()); err == nil {
		t.Fatal("Key of a folder without hack/k8s: no error")
	}
}

func TestEnsureReusesCompleteFolder(t *testing.T) {
	root := fakeRepo(t)
	goCmd, log := fakeGo(t, "0", true)
	k, err := key(context.Background(), root, goCmd)
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	dir := filepath.Join(cache, k)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range Binaries() {
		write(t, filepath.Join(dir, b), "fake")
	}
	write(t, filepath.Join(dir, markerName), "done")

	start := time.Now()
	got, err := Ensure(context.Background(), Options{RepoRoot: root, CacheDir: cache, Go: goCmd})
	if err != nil {
		t.Fatal(err)
	}
	if got != dir {
		t.Fatalf("Ensure = %s, want %s", got, dir)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Ensure of a complete folder took %s", d)
	}
	if calls := buildCalls(t, log); len(calls) != 0 {
		t.Fatalf("Ensure built although the folder was complete: %q", calls)
	}
}

func TestEnsureRebuildsPartialFolder(t *testing.T) {
	root := fakeRepo(t)
	goCmd, log := fakeGo(t, "0", false)
	k, err := key(context.Background(), root, goCmd)
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	dir := filepath.Join(cache, k)
	// Every binary but no marker (a build interrupted before the end), and
	// the leftovers of a dead build.
	for _, d := range []string{dir, filepath.Join(cache, k+".tmp-1")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, b := range Binaries() {
			write(t, filepath.Join(d, b), "stale")
		}
	}

	var out bytes.Buffer
	got, err := Ensure(context.Background(), Options{RepoRoot: root, CacheDir: cache, Go: goCmd, Out: &out})
	if err != nil {
		t.Fatalf("Ensure: %v\n%s", err, out.String())
	}
	if got != dir {
		t.Fatalf("Ensure = %s, want %s", got, dir)
	}
	calls := buildCalls(t, log)
	if len(calls) != 2 || !strings.HasPrefix(calls[0], "build ") || !strings.HasPrefix(calls[1], "test -c ") {
		t.Fatalf("want one go build and one go test -c, got %q", calls)
	}
	modDir := filepath.Join(root, "hack", "k8s")
	for _, c := range calls {
		for _, want := range []string{"-trimpath", "version.gitVersion=" + Version, "pwd=" + modDir, "CGO_ENABLED=0"} {
			if !strings.Contains(c, want) {
				t.Errorf("call %q lacks %q", c, want)
			}
		}
	}
	if !strings.Contains(calls[0], "go.etcd.io/etcd/server/v3 ") || !strings.Contains(calls[0], "k8s.io/kubernetes/cmd/kube-apiserver ") {
		t.Errorf("go build %q lacks the server packages", calls[0])
	}
	for _, b := range Binaries() {
		data, err := os.ReadFile(filepath.Join(dir, b))
		if err != nil {
			t.Fatal(err)
		}
		if string(data) == "stale" {
			t.Errorf("%s was not rebuilt", b)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "etcd")); string(data) != "server\n" {
		t.Errorf("etcd = %q, want go build's \"server\" renamed", data)
	}
	if _, err := os.Stat(filepath.Join(dir, markerName)); err != nil {
		t.Errorf("no marker: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(cache, "*.tmp-*")); len(left) != 0 {
		t.Errorf("build folders left: %q", left)
	}
	if !strings.Contains(out.String(), "k8sbin: building etcd, kube-apiserver") {
		t.Errorf("no progress in output:\n%s", out.String())
	}

	// Now complete: reused without building.
	if _, err := Ensure(context.Background(), Options{RepoRoot: root, CacheDir: cache, Go: goCmd}); err != nil {
		t.Fatal(err)
	}
	if n := len(buildCalls(t, log)); n != 2 {
		t.Fatalf("second Ensure built again (%d calls)", n)
	}
}

func TestEnsureConcurrentBuildsOnce(t *testing.T) {
	root := fakeRepo(t)
	goCmd, log := fakeGo(t, "1", false)
	cache := t.TempDir()
	var wg sync.WaitGroup
	dirs := make([]string, 3)
	errs := make([]error, 3)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i], errs[i] = Ensure(context.Background(), Options{RepoRoot: root, CacheDir: cache, Go: goCmd})
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Fatalf("Ensure %d = %s, %v; Ensure 0 = %s", i, dirs[i], errs[i], dirs[0])
		}
	}
	if calls := buildCalls(t, log); len(calls) != 2 {
		t.Fatalf("want one build (2 go calls), got %q", calls)
	}
	if !complete(dirs[0]) {
		t.Fatal("result not complete")
	}
}

func TestEnsureBuildFailure(t *testing.T) {
	root := fakeRepo(t)
	goCmd, _ := fakeGo(t, "0", true)
	cache := t.TempDir()
	var out bytes.Buffer
	_, err := Ensure(context.Background(), Options{RepoRoot: root, CacheDir: cache, Go: goCmd, Out: &out})
	if err == nil || !strings.Contains(err.Error(), "go build") {
		t.Fatalf("Ensure = %v, want a go build error", err)
	}
	if !strings.Contains(out.String(), "something went badly wrong") {
		t.Errorf("go's output not shown on failure:\n%s", out.String())
	}
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".lock") {
			t.Errorf("left in the cache after a failed build: %s", e.Name())
		}
	}
}

func TestEnsureCancelled(t *testing.T) {
	root := fakeRepo(t)
	goCmd, _ := fakeGo(t, "30", false)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Ensure(ctx, Options{RepoRoot: root, CacheDir: t.TempDir(), Go: goCmd})
	if err == nil {
		t.Fatal("cancelled Ensure succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancelled Ensure returned after %s", d)
	}
}

// TestEnsureRealBuild builds the real binaries into the default cache (about
// 11 minutes cold, seconds when cached): STRAIT_K8S_BUILD=1 go test -run
// TestEnsureRealBuild -timeout 30m -v ./internal/lab/k8sbin/
func TestEnsureRealBuild(t *testing.T) {
	if os.Getenv("STRAIT_K8S_BUILD") != "1" {
		t.Skip("set STRAIT_K8S_BUILD=1 to build Kubernetes (~11 min cold)")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	dir, err := Ensure(context.Background(), Options{RepoRoot: root, Out: t.Output()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("binaries in %s (%s)", dir, time.Since(start).Round(time.Second))

	kube := "Kubernetes " + Version
	checks := []struct {
		bin  string
		args []string
		want string
	}{
		{"etcd", []string{"--version"}, "etcd Version: 3.6.4"},
		{"kube-apiserver", []string{"--version"}, kube},
		{"kube-controller-manager", []string{"--version"}, kube},
		{"kube-scheduler", []string{"--version"}, kube},
		{"kubelet", []string{"--version"}, kube},
		{"kube-proxy", []string{"--version"}, kube},
		{"kubectl", []string{"version", "--client"}, "Client Version: " + Version},
		{"agnhost", []string{"--version"}, AgnhostVersion},
		{"e2e.test", []string{"-version"}, Version},
		{"e2e.test", []string{"--list-images"}, AgnhostImage},
	}
	for _, c := range checks {
		path := filepath.Join(dir, c.bin)
		out, err := exec.Command(path, c.args...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %s: %v\n%s", c.bin, strings.Join(c.args, " "), err, out)
			continue
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("%s %s = %q, want it to contain %q", c.bin, strings.Join(c.args, " "), out, c.want)
		}
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", c.bin)
			}
		}
		f.Close()
		fi, _ := os.Stat(path)
		t.Logf("%-24s %4d MB  %s", c.bin, fi.Size()>>20, firstLine(out))
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
