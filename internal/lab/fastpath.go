package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The eBPF fast path in the lab (`up --fast-path`): one bpffs mounted at
// <dir>/bpffs, a pin directory per node's agent below it. Down unmounts it
// with every other mount under the lab's directory.

func (o Options) bpffsDir() string { return filepath.Join(o.Dir, "bpffs") }

func (o Options) fastPathPinDir(node string) string { return filepath.Join(o.bpffsDir(), node) }

// mountBPFFS mounts the lab's own bpffs (idempotent).
func (o Options) mountBPFFS() error {
	dir := o.bpffsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("mount bpffs at %s: %w (the fast path needs root)", dir, err)
		}
		return fmt.Errorf("mount bpffs at %s: %w", dir, err)
	}
	return nil
}

// agentFastPathConfig is the agent config's fastPath section, or "".
func agentFastPathConfig(on bool, pinDir string) string {
	if !on {
		return ""
	}
	return fmt.Sprintf("fastPath:\n  enabled: true\n  pinDir: %s\n", pinDir)
}
