package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// bpffsPrefix starts the folder of every bpffs a test process mounts; the PID
// after it lets a later run, or this process's signal handler, unmount what a
// test could not (kill -9, a test binary's timeout, Ctrl-C).
const bpffsPrefix = "strait-test-bpffs-"

// MountBPFFS mounts a private bpffs for one test and returns its folder. The
// cleanup unmounts it, which drops every pin in it, and removes the folder;
// when the process dies first, the next test process's Main does.
func MountBPFFS(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", bpffsPrefix, os.Getpid()))
	if err != nil {
		t.Fatalf("bpffs folder: %v", err)
	}
	if err := syscall.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		_ = os.Remove(dir)
		t.Fatalf("mount bpffs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unmountBPFFS(dir); err != nil {
			t.Errorf("bpffs cleanup: %v", err)
		}
	})
	return dir
}

// unmountBPFFS unmounts every bpffs mounted at dir (a folder mounted more
// than once needs as many unmounts) and removes the folder.
func unmountBPFFS(dir string) error {
	for range 8 {
		if !isBPFFS(dir) {
			break
		}
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// isBPFFS says whether a bpffs is mounted at dir.
func isBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// bpffsOwner is the PID in a bpffs folder's name.
func bpffsOwner(dir string) (int, bool) { return pidAfter(bpffsPrefix, filepath.Base(dir)) }

// bpffsFolders lists the test bpffs folders: those mounted (from
// /proc/self/mountinfo, also when stacked or no longer in the temp folder's
// listing) and those left unmounted in the temp folder.
func bpffsFolders() []string {
	seen := map[string]bool{}
	var dirs []string
	add := func(d string) {
		if _, ok := bpffsOwner(d); ok && !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			// ID parent major:minor root mountpoint ...
			if fields := strings.Fields(s.Text()); len(fields) > 4 {
				add(fields[4])
			}
		}
		_ = f.Close()
	}
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), bpffsPrefix+"*"))
	for _, m := range matches {
		add(m)
	}
	return dirs
}

// sweepBPFFS unmounts and removes the test bpffs folders whose owner is dead
// (own: only this process's).
func sweepBPFFS(own bool) {
	me := os.Getpid()
	for _, d := range bpffsFolders() {
		pid, _ := bpffsOwner(d)
		if own {
			if pid != me {
				continue
			}
		} else if pid == me || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		_ = unmountBPFFS(d)
	}
}
