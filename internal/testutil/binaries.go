package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Binaries locates the built Strait binaries for tests that drive them as a
// runtime would: $STRAIT_BIN (what `make test` sets: bin/ with strait-agent
// and cni/strait, cni/portmap, ...), or else builds them once per test
// process into a temporary folder.
type Binaries struct {
	once sync.Once
	dir  string
	err  error
}

// Dir returns the folder holding strait-agent and the cni/ plugin folder.
func (b *Binaries) Dir() (string, error) {
	b.once.Do(func() {
		if d := os.Getenv("STRAIT_BIN"); d != "" {
			b.dir = d
			b.err = checkBinaries(d)
			return
		}
		b.dir, b.err = buildBinaries()
	})
	return b.dir, b.err
}

// Cleanup removes a folder Dir built (not $STRAIT_BIN).
func (b *Binaries) Cleanup() {
	if b.dir != "" && os.Getenv("STRAIT_BIN") == "" {
		_ = os.RemoveAll(b.dir)
	}
}

func checkBinaries(d string) error {
	for _, f := range []string{"strait-agent", "cni/strait", "cni/portmap"} {
		if _, err := os.Stat(filepath.Join(d, f)); err != nil {
			return fmt.Errorf("STRAIT_BIN=%s lacks %s (run `make build tools`): %w", d, f, err)
		}
	}
	return nil
}

func buildBinaries() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	dir, err := os.MkdirTemp("", "strait-bin-")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	cniDir := filepath.Join(dir, "cni")
	steps := []struct {
		wd   string
		args []string
	}{
		{root, []string{"build", "-o", dir + "/", "./cmd/..."}},
		{root, []string{"build", "-o", filepath.Join(cniDir, "strait"), "./cmd/strait-cni"}},
		{filepath.Join(root, "hack/tools"), []string{"build", "-o", cniDir + "/",
			"github.com/containernetworking/plugins/plugins/meta/portmap",
			"github.com/containernetworking/plugins/plugins/main/loopback",
			"github.com/containernetworking/plugins/plugins/meta/bandwidth",
			"github.com/containernetworking/plugins/plugins/main/bridge",
			"github.com/containernetworking/plugins/plugins/ipam/host-local"}},
	}
	for _, s := range steps {
		cmd := exec.Command("go", s.args...)
		cmd.Dir = s.wd
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("go %s: %w: %s", strings.Join(s.args, " "), err, out)
		}
	}
	return dir, nil
}
