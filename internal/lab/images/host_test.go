package images

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseLdd(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007ffd1c9f3000)
	libcurl.so.4 => /lib/x86_64-linux-gnu/libcurl.so.4 (0x00007f7b7c6d5000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f7b7c4f4000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f7b7c7b6000)
`
	got, err := parseLdd(out)
	want := []string{"/lib/x86_64-linux-gnu/libcurl.so.4", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("parseLdd = %v, %v; want %v", got, err, want)
	}
	if got, err := parseLdd("\tstatically linked\n"); err != nil || len(got) != 0 {
		t.Fatalf("static: %v, %v", got, err)
	}
	if _, err := parseLdd("\tlibnope.so.1 => not found\n"); err == nil || !strings.Contains(err.Error(), "libnope.so.1") {
		t.Fatalf("missing library: err = %v", err)
	}
}

// TestHostPath builds /…/root/lib -> usr/lib, usr/lib/libx.so.1 -> libx.so.1.2
// and checks that each symlink on the way is kept and the real file copied.
func TestHostPath(t *testing.T) {
	root := t.TempDir()
	mustDo(t, os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755))
	mustDo(t, os.WriteFile(filepath.Join(root, "usr/lib/libx.so.1.2"), []byte("x"), 0o644))
	mustDo(t, os.Symlink("libx.so.1.2", filepath.Join(root, "usr/lib/libx.so.1")))
	mustDo(t, os.Symlink("usr/lib", filepath.Join(root, "lib")))
	mustDo(t, os.Symlink(filepath.Join(root, "lib/libx.so.1"), filepath.Join(root, "abs")))

	got, err := hostPath(filepath.Join(root, "abs"))
	if err != nil {
		t.Fatal(err)
	}
	want := []File{
		{Path: filepath.Join(root, "abs"), Link: filepath.Join(root, "lib/libx.so.1")},
		{Path: filepath.Join(root, "lib"), Link: "usr/lib"},
		{Path: filepath.Join(root, "usr/lib/libx.so.1"), Link: "libx.so.1.2"},
		{Path: filepath.Join(root, "usr/lib/libx.so.1.2"), Source: filepath.Join(root, "usr/lib/libx.so.1.2")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("hostPath =\n%v\nwant\n%v", got, want)
	}
	mustDo(t, os.Symlink("loop", filepath.Join(root, "loop")))
	if _, err := hostPath(filepath.Join(root, "loop")); err == nil {
		t.Fatal("symlink loop accepted")
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func needHost(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (hack/install-deps.sh installs it): %v", p, err)
		}
	}
}

func TestHostBinaryCurl(t *testing.T) {
	needHost(t, "curl", "ldd")
	curl, _ := exec.LookPath("curl")
	files, err := HostBinary(curl, "/usr/bin/curl")
	if err != nil {
		t.Fatal(err)
	}
	var sawLoader, sawLibc, sawCurl bool
	for _, f := range files {
		base := filepath.Base(f.Path)
		sawLoader = sawLoader || strings.HasPrefix(base, "ld-linux")
		sawLibc = sawLibc || (base == "libc.so.6" && f.Source != "")
		sawCurl = sawCurl || (f.Path == "/usr/bin/curl" && f.Source == curl)
	}
	if !sawLoader || !sawLibc || !sawCurl {
		t.Fatalf("loader %v, libc %v, curl %v in %v", sawLoader, sawLibc, sawCurl, files)
	}
	// The whole set must make a valid layer.
	if _, _, err := buildLayer(files, false); err != nil {
		t.Fatalf("layer of curl's closure: %v", err)
	}
}

func TestLabImages(t *testing.T) {
	needHost(t, "busybox", "curl", "nc.openbsd", "dash", "ldd")
	dir := t.TempDir()
	pause, agnhost := filepath.Join(dir, "pause"), filepath.Join(dir, "agnhost")
	mustDo(t, os.WriteFile(pause, []byte("pause"), 0o755))
	mustDo(t, os.WriteFile(agnhost, []byte("agnhost"), 0o755))
	imgs, err := Lab(Options{PauseBin: pause, AgnhostBin: agnhost})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Image{}
	for _, img := range imgs {
		byName[img.Name] = img
	}
	for _, n := range []string{PauseImage, ToolsImage, BusyBoxImage, AgnhostImage} {
		if _, ok := byName[n]; !ok {
			t.Fatalf("Lab lacks %s", n)
		}
	}
	has := func(img string, paths ...string) {
		t.Helper()
		files := map[string]File{}
		for _, f := range byName[img].Files {
			files[f.Path] = f
		}
		for _, p := range paths {
			if _, ok := files[p]; !ok {
				t.Errorf("%s lacks %s", img, p)
			}
		}
		if img != BusyBoxImage && img != PauseImage {
			if f := files["/bin/nc"]; f.Link != "" {
				t.Errorf("%s: /bin/nc is busybox's, not OpenBSD's", img)
			}
			if f := files["/bin/sh"]; f.Source == "" {
				t.Errorf("%s: /bin/sh is %+v, not dash (busybox sh prefers its nc applet)", img, f)
			}
		}
	}
	userland := []string{"/bin/busybox", "/bin/sh", "/bin/grep", "/bin/sleep", "/bin/wget", "/usr/bin/curl", "/usr/bin/nc", "/etc/passwd", "/tmp"}
	has(ToolsImage, userland...)
	has(AgnhostImage, append(userland, "/agnhost", "/agnhost-2", "/uploads")...)
	has(BusyBoxImage, "/bin/busybox", "/bin/sh", "/etc/passwd")
	has(PauseImage, "/pause")
	if e := byName[AgnhostImage].Entrypoint; len(e) != 1 || e[0] != "/agnhost" {
		t.Errorf("agnhost entrypoint %v", e)
	}
	if e := byName[ToolsImage].Entrypoint; len(e) != 0 {
		t.Errorf("tools entrypoint %v: `kubectl run -- sleep 3600` would not run sleep", e)
	}
	for _, img := range imgs {
		var buf bytes.Buffer
		if err := Write(&buf, img); err != nil {
			t.Errorf("Write(%s): %v", img.Name, err)
		}
	}
}
