package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/strait-net/strait/internal/lab/images"
)

// ToolsImage is the small image with a shell and network tools for users.
const ToolsImage = images.ToolsImage

// buildImages writes the lab's images (pause, agnhost, busybox, tools) as
// OCI archives under the lab folder and returns their paths.
func (o *Options) buildImages(ctx context.Context, k8sBinDir string) ([]string, error) {
	dir := filepath.Join(o.Dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	pause := filepath.Join(dir, "pause")
	wget := filepath.Join(dir, "wget")
	err := inRepo(o.RepoRoot, func() error {
		if err := images.BuildPause(ctx, "go", pause); err != nil {
			return err
		}
		return images.BuildWget(ctx, "go", wget)
	})
	if err != nil {
		return nil, fmt.Errorf("lab images: %w", err)
	}
	imgs, err := images.Lab(images.Options{PauseBin: pause, WgetBin: wget, AgnhostBin: filepath.Join(k8sBinDir, "agnhost")})
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, img := range imgs {
		p := filepath.Join(dir, images.TarName(img.Name))
		if err := images.WriteFile(p, img); err != nil {
			return nil, fmt.Errorf("write image %s: %w", img.Name, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// inRepo runs f with the working directory at the Strait checkout, where
// `go build` of the module's own packages works.
func inRepo(root string, f func() error) error {
	if root == "" {
		return f()
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return fmt.Errorf("repo root %s: %w", root, err)
	}
	defer func() { _ = os.Chdir(wd) }()
	return f()
}
