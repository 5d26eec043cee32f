package images

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Namespace is the containerd namespace the CRI plugin, and so kubelet, uses.
const Namespace = "k8s.io"

// PausePackage is the Go package of the lab's pause program.
const PausePackage = "github.com/strait-net/strait/internal/lab/images/pause"

// WgetPackage is the Go package of the lab images' wget (busybox's crashes
// when given -T).
const WgetPackage = "github.com/strait-net/strait/internal/lab/images/wget"

// Import loads the image tar at tarPath into the containerd listening on
// socket, in namespace k8s.io, with `ctr images import`, which also unpacks
// it into the default snapshotter (overlayfs) for this machine's platform,
// as the CRI plugin needs to run it. It then checks that every image named in
// the tar's index.json is listed: ctr exits 0 having imported nothing when
// an index carries no usable name.
func Import(ctx context.Context, ctrBin, socket, tarPath string) error {
	names, err := tarImageNames(tarPath)
	if err != nil {
		return fmt.Errorf("import %s: %w", tarPath, err)
	}
	out, err := exec.CommandContext(ctx, ctrBin, "-a", socket, "-n", Namespace,
		"images", "import", tarPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("import %s: ctr images import: %w: %s", tarPath, err, strings.TrimSpace(string(out)))
	}
	listed, err := List(ctx, ctrBin, socket)
	if err != nil {
		return fmt.Errorf("import %s: %w", tarPath, err)
	}
	have := map[string]bool{}
	for _, n := range listed {
		have[n] = true
	}
	for _, n := range names {
		if !have[n] {
			return fmt.Errorf("import %s: %s not listed after import (ctr said: %s)", tarPath, n, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// List returns the image names in namespace k8s.io of the containerd on socket.
func List(ctx context.Context, ctrBin, socket string) ([]string, error) {
	out, err := exec.CommandContext(ctx, ctrBin, "-a", socket, "-n", Namespace, "images", "ls", "-q").Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil, fmt.Errorf("ctr images ls: %w: %s", err, strings.TrimSpace(string(exit.Stderr)))
		}
		return nil, fmt.Errorf("ctr images ls: %w", err)
	}
	return strings.Fields(string(out)), nil
}

// tarImageNames reads index.json from an image-layout tar and returns the
// io.containerd.image.name of each manifest.
func tarImageNames(tarPath string) ([]string, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return nil, fmt.Errorf("open image tar: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("image tar has no index.json")
		}
		if err != nil {
			return nil, fmt.Errorf("read image tar: %w", err)
		}
		if strings.TrimPrefix(hdr.Name, "./") != "index.json" {
			continue
		}
		var idx index
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return nil, fmt.Errorf("decode index.json: %w", err)
		}
		var names []string
		for _, m := range idx.Manifests {
			if n := m.Annotations[AnnotationImageName]; n != "" {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("index.json names no image (%s annotation)", AnnotationImageName)
		}
		return names, nil
	}
}

// WriteAndImport writes each image to dir/NAME.tar and imports it.
func WriteAndImport(ctx context.Context, ctrBin, socket, dir string, imgs []Image) error {
	for _, img := range imgs {
		p := filepath.Join(dir, TarName(img.Name))
		if err := WriteFile(p, img); err != nil {
			return err
		}
		if err := Import(ctx, ctrBin, socket, p); err != nil {
			return err
		}
	}
	return nil
}

// TarName is a file name for an image's tar: its name with / and : replaced.
func TarName(name string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(name) + ".tar"
}

// BuildPause builds the lab's pause program (package PausePackage), static
// (CGO_ENABLED=0), into outPath with the Go toolchain goBin ("go" when empty).
// It must run inside Strait's module (any folder of the work tree).
func BuildPause(ctx context.Context, goBin, outPath string) error {
	return BuildStatic(ctx, goBin, PausePackage, outPath)
}

// BuildWget builds the lab images' wget (package WgetPackage) as
// BuildPause builds pause.
func BuildWget(ctx context.Context, goBin, outPath string) error {
	return BuildStatic(ctx, goBin, WgetPackage, outPath)
}

// BuildStatic builds the Go package pkg of Strait's module as a static
// program (CGO_ENABLED=0) into outPath with the Go toolchain goBin ("go"
// when empty). It must run inside Strait's module.
func BuildStatic(ctx context.Context, goBin, pkg, outPath string) error {
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", outPath, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: go build: %w: %s", pkg, err, strings.TrimSpace(string(out)))
	}
	return nil
}
