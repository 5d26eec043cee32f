// Package images builds the container images Strait's lab needs without any
// registry: one-layer OCI image-layout tars, written deterministically from
// files on this machine, that `ctr images import` loads into a node's
// containerd (namespace k8s.io, where the CRI plugin and so kubelet see them).
package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Media types and annotations of the OCI image layout.
const (
	MediaTypeIndex     = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest  = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig    = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer     = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"

	// AnnotationRefName is the OCI reference annotation (the tag).
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is containerd's full image name annotation, the one
	// `ctr images import` names the image after.
	AnnotationImageName = "io.containerd.image.name"
)

// File is one entry of an image's layer. Exactly one of Source, Data, Link
// (or a directory Mode) says what it is.
type File struct {
	// Path inside the image, absolute ("/usr/bin/curl").
	Path string
	// Mode: permission bits plus fs.ModeDir, fs.ModeSetuid, fs.ModeSetgid or
	// fs.ModeSticky. Zero means the Source file's permissions, 0644 for Data.
	Mode fs.FileMode
	// Source is a host file whose content is copied (symlinks followed).
	Source string
	// Data is the content when Source is empty.
	Data []byte
	// Link makes the entry a symlink to this target.
	Link string
}

// Image is a one-layer image.
type Image struct {
	// Name is the fully qualified reference the image is tagged as,
	// e.g. "registry.k8s.io/pause:3.10.1".
	Name  string
	Files []File
	// Entrypoint, Cmd, Env, WorkingDir go into the image config.
	Entrypoint, Cmd, Env []string
	WorkingDir           string
	// Gzip compresses the layer (smaller tar, slower to write).
	Gzip bool
}

// epoch is every entry's modification time, so equal inputs give equal bytes.
func epoch() time.Time { return time.Unix(0, 0).UTC() }

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type imageConfig struct {
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Config       containerConfig `json:"config"`
	RootFS       rootFS          `json:"rootfs"`
	History      []history       `json:"history"`
}

type containerConfig struct {
	Env        []string `json:"Env,omitempty"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type history struct {
	CreatedBy string `json:"created_by"`
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Write writes img as an OCI image layout in a tar stream: oci-layout,
// index.json (one manifest annotated with the image's name) and
// blobs/sha256/{manifest,config,layer}. The same inputs give the same bytes.
func Write(w io.Writer, img Image) error {
	tag, err := splitName(img.Name)
	if err != nil {
		return fmt.Errorf("write image %q: %w", img.Name, err)
	}
	layer, diffID, err := buildLayer(img.Files, img.Gzip)
	if err != nil {
		return fmt.Errorf("write image %s: layer: %w", img.Name, err)
	}
	cfg, err := json.Marshal(imageConfig{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Config: containerConfig{
			Env: img.Env, Entrypoint: img.Entrypoint, Cmd: img.Cmd, WorkingDir: img.WorkingDir,
		},
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{diffID}},
		History: []history{{CreatedBy: "strait internal/lab/images"}},
	})
	if err != nil {
		return fmt.Errorf("write image %s: config: %w", img.Name, err)
	}
	layerType := MediaTypeLayer
	if img.Gzip {
		layerType = MediaTypeLayerGzip
	}
	man, err := json.Marshal(manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		Config:        descriptor{MediaType: MediaTypeConfig, Digest: digestOf(cfg), Size: int64(len(cfg))},
		Layers:        []descriptor{{MediaType: layerType, Digest: digestOf(layer), Size: int64(len(layer))}},
	})
	if err != nil {
		return fmt.Errorf("write image %s: manifest: %w", img.Name, err)
	}
	idx, err := json.Marshal(index{
		SchemaVersion: 2,
		MediaType:     MediaTypeIndex,
		Manifests: []descriptor{{
			MediaType: MediaTypeManifest, Digest: digestOf(man), Size: int64(len(man)),
			Annotations: map[string]string{AnnotationImageName: img.Name, AnnotationRefName: tag},
			Platform:    &platform{Architecture: runtime.GOARCH, OS: "linux"},
		}},
	})
	if err != nil {
		return fmt.Errorf("write image %s: index: %w", img.Name, err)
	}

	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch()}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	mkdir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch()})
	}
	blob := func(data []byte) error {
		return put("blobs/sha256/"+strings.TrimPrefix(digestOf(data), "sha256:"), data)
	}
	steps := []func() error{
		func() error { return put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)) },
		func() error { return put("index.json", idx) },
		func() error { return mkdir("blobs/") },
		func() error { return mkdir("blobs/sha256/") },
		func() error { return blob(man) },
		func() error { return blob(cfg) },
		func() error { return blob(layer) },
		tw.Close,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("write image %s: %w", img.Name, err)
		}
	}
	return nil
}

// WriteFile writes img to a new file at path (see Write).
func WriteFile(path string, img Image) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write image file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("write image file: %w", cerr)
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	return Write(f, img)
}

// splitName checks that name is fully qualified (a registry host, a path,
// a tag) and returns the tag: without a registry host the CRI would look the
// image up as docker.io/..., and without a tag as :latest.
func splitName(name string) (string, error) {
	slash := strings.Index(name, "/")
	if slash <= 0 {
		return "", errors.New("image name needs a registry host, e.g. registry.k8s.io/pause:3.10.1")
	}
	host := name[:slash]
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		return "", fmt.Errorf("image name's first component %q is no registry host", host)
	}
	if strings.Contains(name, "@") {
		return "", errors.New("image name must be a tag, not a digest")
	}
	colon := strings.LastIndex(name, ":")
	if colon < slash || colon == len(name)-1 {
		return "", errors.New("image name needs a tag")
	}
	return name[colon+1:], nil
}

// entry is one normalized layer entry; implicit marks a parent directory
// nobody asked for.
type entry struct {
	name     string // relative, cleaned: "usr/bin/curl"
	file     File
	implicit bool
}

// layerEntries validates and normalizes files, adds missing parent
// directories and returns the entries sorted so parents precede children.
func layerEntries(files []File) ([]entry, error) {
	byName := map[string]entry{}
	for _, f := range files {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("path %q is not absolute", f.Path)
		}
		name := strings.TrimPrefix(path.Clean(f.Path), "/")
		if name == "" {
			return nil, errors.New("path / cannot be an entry")
		}
		kinds := 0
		for _, set := range []bool{f.Source != "", f.Data != nil, f.Link != "", f.Mode.IsDir()} {
			if set {
				kinds++
			}
		}
		if kinds > 1 {
			return nil, fmt.Errorf("%s: set only one of Source, Data, Link or a directory mode", f.Path)
		}
		if old, ok := byName[name]; ok {
			if !sameFile(old.file, f) {
				return nil, fmt.Errorf("%s: given twice, differently", f.Path)
			}
			continue
		}
		byName[name] = entry{name: name, file: f}
	}
	for name := range byName {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			e, ok := byName[dir]
			if !ok {
				byName[dir] = entry{name: dir, file: File{Path: "/" + dir, Mode: fs.ModeDir | 0o755}, implicit: true}
				continue
			}
			if !e.file.Mode.IsDir() {
				return nil, fmt.Errorf("/%s: parent /%s is not a directory", name, dir)
			}
		}
	}
	out := make([]entry, 0, len(byName))
	for _, e := range byName {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

func sameFile(a, b File) bool {
	return a.Path == b.Path && a.Mode == b.Mode && a.Source == b.Source && a.Link == b.Link && bytes.Equal(a.Data, b.Data)
}

// tarMode turns a FileMode's permission and special bits into tar's.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// buildLayer returns the layer blob and its diff ID (the digest of the
// uncompressed tar).
func buildLayer(files []File, compress bool) ([]byte, string, error) {
	entries, err := layerEntries(files)
	if err != nil {
		return nil, "", err
	}
	var blob bytes.Buffer
	diff := sha256.New()
	var gz *gzip.Writer
	var sink io.Writer = &blob
	if compress {
		gz = gzip.NewWriter(&blob) // header has no name and a zero mtime
		sink = gz
	}
	tw := tar.NewWriter(io.MultiWriter(sink, diff))
	for _, e := range entries {
		if err := writeEntry(tw, e); err != nil {
			return nil, "", fmt.Errorf("%s: %w", e.file.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", fmt.Errorf("close layer tar: %w", err)
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			return nil, "", fmt.Errorf("close layer gzip: %w", err)
		}
	}
	return blob.Bytes(), "sha256:" + hex.EncodeToString(diff.Sum(nil)), nil
}

func writeEntry(tw *tar.Writer, e entry) error {
	f := e.file
	hdr := &tar.Header{Name: e.name, ModTime: epoch(), Mode: tarMode(f.Mode)}
	switch {
	case f.Mode.IsDir():
		hdr.Typeflag, hdr.Name = tar.TypeDir, e.name+"/"
		return tw.WriteHeader(hdr)
	case f.Link != "":
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
		return tw.WriteHeader(hdr)
	case f.Source != "":
		src, err := os.Open(f.Source)
		if err != nil {
			return fmt.Errorf("open source: %w", err)
		}
		defer src.Close()
		st, err := src.Stat()
		if err != nil {
			return fmt.Errorf("stat source: %w", err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("source %s is not a regular file", f.Source)
		}
		if f.Mode.Perm() == 0 {
			hdr.Mode |= tarMode(st.Mode())
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.CopyN(tw, src, st.Size()); err != nil {
			return fmt.Errorf("copy %s: %w", f.Source, err)
		}
		return nil
	default:
		if f.Mode.Perm() == 0 {
			hdr.Mode |= 0o644
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(f.Data)
		return err
	}
}
