package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// readTar returns a tar's entries by name, in order.
func readTar(t *testing.T, r io.Reader) ([]*tar.Header, map[string][]byte) {
	t.Helper()
	tr := tar.NewReader(r)
	var hdrs []*tar.Header
	data := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs, data
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		if _, dup := data[hdr.Name]; dup {
			t.Fatalf("tar entry %s twice", hdr.Name)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s: %v", hdr.Name, err)
		}
		hdrs = append(hdrs, hdr)
		data[hdr.Name] = b
	}
}

// checkedLayout parses an image-layout tar, verifies every blob's digest and
// every descriptor's size, and returns the index, manifest, config and the
// uncompressed layer.
func checkedLayout(t *testing.T, b []byte) (index, manifest, imageConfig, []byte) {
	t.Helper()
	_, files := readTar(t, bytes.NewReader(b))
	if got := string(files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout = %q", got)
	}
	for name, data := range files {
		hexDigest, ok := strings.CutPrefix(name, "blobs/sha256/")
		if !ok || hexDigest == "" {
			continue
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != hexDigest {
			t.Fatalf("blob %s has digest %x", name, sum)
		}
	}
	blob := func(d descriptor) []byte {
		t.Helper()
		data, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok {
			t.Fatalf("blob %s (%s) missing", d.Digest, d.MediaType)
		}
		if int64(len(data)) != d.Size {
			t.Fatalf("blob %s: size %d, descriptor says %d", d.Digest, len(data), d.Size)
		}
		return data
	}
	var idx index
	var man manifest
	var cfg imageConfig
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != MediaTypeIndex || len(idx.Manifests) != 1 {
		t.Fatalf("index = %+v", idx)
	}
	if idx.Manifests[0].MediaType != MediaTypeManifest {
		t.Fatalf("index references a %s", idx.Manifests[0].MediaType)
	}
	if err := json.Unmarshal(blob(idx.Manifests[0]), &man); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if man.SchemaVersion != 2 || man.MediaType != MediaTypeManifest || man.Config.MediaType != MediaTypeConfig || len(man.Layers) != 1 {
		t.Fatalf("manifest = %+v", man)
	}
	if err := json.Unmarshal(blob(man.Config), &cfg); err != nil {
		t.Fatalf("config: %v", err)
	}
	layer := blob(man.Layers[0])
	switch man.Layers[0].MediaType {
	case MediaTypeLayerGzip:
		zr, err := gzip.NewReader(bytes.NewReader(layer))
		if err != nil {
			t.Fatalf("gunzip layer: %v", err)
		}
		if layer, err = io.ReadAll(zr); err != nil {
			t.Fatalf("gunzip layer: %v", err)
		}
	case MediaTypeLayer:
	default:
		t.Fatalf("layer media type %s", man.Layers[0].MediaType)
	}
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != digestOf(layer) {
		t.Fatalf("diff_ids %v, layer tar digest %s", cfg.RootFS.DiffIDs, digestOf(layer))
	}
	return idx, man, cfg, layer
}

func testImage(t *testing.T, compress bool) Image {
	t.Helper()
	src := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho hi\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	return Image{
		Name: "registry.example/team/app:1.2",
		Files: []File{
			{Path: "/usr/local/bin/prog", Source: src},
			{Path: "/etc/motd", Data: []byte("hello\n")},
			{Path: "/etc/secret", Data: []byte("s"), Mode: 0o600},
			{Path: "/bin/sh", Link: "busybox"},
			{Path: "/bin/busybox", Data: []byte("not really"), Mode: 0o755},
			{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
			{Path: "/lib", Link: "usr/lib"},
			{Path: "/usr/lib/x/libc.so.6", Data: []byte("libc")},
			{Path: "/etc/motd", Data: []byte("hello\n")}, // identical duplicate: fine
		},
		Entrypoint: []string{"/usr/local/bin/prog"},
		Cmd:        []string{"a", "b"},
		Env:        []string{DefaultPath},
		WorkingDir: "/tmp",
		Gzip:       compress,
	}
}

func TestWriteLayout(t *testing.T) {
	for _, compress := range []bool{false, true} {
		img := testImage(t, compress)
		var a, b bytes.Buffer
		if err := Write(&a, img); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if err := Write(&b, img); err != nil {
			t.Fatalf("Write again: %v", err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Fatalf("gzip=%v: two writes differ", compress)
		}
		idx, _, cfg, layer := checkedLayout(t, a.Bytes())
		ann := idx.Manifests[0].Annotations
		if ann[AnnotationImageName] != img.Name || ann[AnnotationRefName] != "1.2" {
			t.Fatalf("annotations %v", ann)
		}
		if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
			t.Fatalf("platform %s/%s", cfg.OS, cfg.Architecture)
		}
		c := cfg.Config
		if strings.Join(c.Entrypoint, " ") != "/usr/local/bin/prog" || strings.Join(c.Cmd, " ") != "a b" ||
			len(c.Env) != 1 || c.WorkingDir != "/tmp" {
			t.Fatalf("container config %+v", c)
		}

		hdrs, data := readTar(t, bytes.NewReader(layer))
		seen := map[string]*tar.Header{}
		for _, h := range hdrs {
			if !h.ModTime.Equal(epoch()) || h.Uid != 0 || h.Gid != 0 {
				t.Errorf("%s: mtime %v uid %d gid %d", h.Name, h.ModTime, h.Uid, h.Gid)
			}
			name := strings.TrimSuffix(h.Name, "/")
			if dir := filepath.Dir(name); dir != "." && seen[dir] == nil {
				t.Errorf("%s comes before its parent %s", h.Name, dir)
			}
			seen[name] = h
		}
		want := []struct {
			name string
			typ  byte
			mode int64
			link string
			data string
		}{
			{"usr", tar.TypeDir, 0o755, "", ""},
			{"usr/local/bin", tar.TypeDir, 0o755, "", ""},
			{"usr/local/bin/prog", tar.TypeReg, 0o750, "", "#!/bin/sh\necho hi\n"},
			{"etc/motd", tar.TypeReg, 0o644, "", "hello\n"},
			{"etc/secret", tar.TypeReg, 0o600, "", "s"},
			{"bin/sh", tar.TypeSymlink, 0o777, "busybox", ""},
			{"bin/busybox", tar.TypeReg, 0o755, "", "not really"},
			{"tmp", tar.TypeDir, 0o1777, "", ""},
			{"lib", tar.TypeSymlink, 0o777, "usr/lib", ""},
			{"usr/lib/x/libc.so.6", tar.TypeReg, 0o644, "", "libc"},
		}
		for _, w := range want {
			h := seen[w.name]
			if h == nil {
				t.Errorf("layer lacks %s", w.name)
				continue
			}
			if h.Typeflag != w.typ || h.Mode != w.mode || h.Linkname != w.link {
				t.Errorf("%s: type %c mode %o link %q; want %c %o %q", w.name, h.Typeflag, h.Mode, h.Linkname, w.typ, w.mode, w.link)
			}
			if w.typ == tar.TypeReg && string(data[h.Name]) != w.data {
				t.Errorf("%s: content %q, want %q", w.name, data[h.Name], w.data)
			}
		}
		if len(hdrs) != 15 { // 8 given + 7 implicit parents (bin etc usr usr/lib usr/lib/x usr/local usr/local/bin)
			var names []string
			for _, h := range hdrs {
				names = append(names, h.Name)
			}
			t.Errorf("layer has %d entries: %v", len(hdrs), names)
		}
	}
}

func TestWriteRejects(t *testing.T) {
	cases := map[string]Image{
		"unqualified name": {Name: "pause:3.10"},
		"no tag":           {Name: "registry.k8s.io/pause"},
		"docker hub short": {Name: "strait/tools:v1"},
		"digest":           {Name: "registry.k8s.io/pause@sha256:abc"},
		"conflict": {Name: "a.io/b:c", Files: []File{
			{Path: "/x", Data: []byte("1")}, {Path: "/x", Data: []byte("2")}}},
		"under symlink": {Name: "a.io/b:c", Files: []File{
			{Path: "/lib", Link: "usr/lib"}, {Path: "/lib/libc.so", Data: []byte("1")}}},
		"relative":       {Name: "a.io/b:c", Files: []File{{Path: "x", Data: []byte("1")}}},
		"two kinds":      {Name: "a.io/b:c", Files: []File{{Path: "/x", Data: []byte("1"), Link: "y"}}},
		"missing source": {Name: "a.io/b:c", Files: []File{{Path: "/x", Source: "/nonexistent/strait"}}},
	}
	for name, img := range cases {
		if err := Write(io.Discard, img); err == nil {
			t.Errorf("%s: Write accepted %+v", name, img)
		}
	}
	for _, ok := range []string{"localhost/x:1", "127.0.0.1:5000/x:y", "strait.local/lab/tools:v1"} {
		if err := Write(io.Discard, Image{Name: ok}); err != nil {
			t.Errorf("Write(%s): %v", ok, err)
		}
	}
}

func TestTarImageNames(t *testing.T) {
	p := filepath.Join(t.TempDir(), TarName(PauseImage))
	if err := WriteFile(p, Image{Name: PauseImage, Files: []File{{Path: "/pause", Data: []byte{}}}}); err != nil {
		t.Fatal(err)
	}
	names, err := tarImageNames(p)
	if err != nil || len(names) != 1 || names[0] != PauseImage {
		t.Fatalf("tarImageNames = %v, %v", names, err)
	}
	if !strings.HasSuffix(p, "registry.k8s.io_pause_3.10.1.tar") {
		t.Fatalf("TarName gave %s", p)
	}
}
