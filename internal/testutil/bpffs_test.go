package testutil

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
)

func TestMountBPFFS(t *testing.T) {
	RequireRoot(t)
	var dir string
	t.Run("mounted", func(t *testing.T) {
		dir = MountBPFFS(t)
		if !isBPFFS(dir) {
			t.Fatalf("%s is not a bpffs", dir)
		}
		if pid, ok := bpffsOwner(dir); !ok || pid != os.Getpid() {
			t.Errorf("%s: owner %d %v, want this process %d", dir, pid, ok, os.Getpid())
		}
		if err := os.WriteFile(dir+"/x", nil, 0o600); err == nil {
			t.Errorf("a plain file was created on %s: not a bpffs", dir)
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after the test, %s: %v, want it removed", dir, err)
		_ = unmountBPFFS(dir)
	}
}

// TestSweepBPFFS: the mounts of a test process that died are unmounted and
// their folders removed, also when mounted twice or never mounted; a live
// process's are left until it sweeps its own.
func TestSweepBPFFS(t *testing.T) {
	RequireRoot(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := dead.Process.Pid
	if !errors.Is(syscall.Kill(deadPID, 0), syscall.ESRCH) {
		t.Skipf("PID %d was reused already", deadPID)
	}
	folder := func(pid int, mounts int) string {
		t.Helper()
		d, err := os.MkdirTemp("", bpffsPrefix+strconv.Itoa(pid)+"-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unmountBPFFS(d) })
		for range mounts {
			if err := syscall.Mount("bpf", d, "bpf", 0, "mode=0700"); err != nil {
				t.Fatalf("mount %s: %v", d, err)
			}
		}
		return d
	}
	deadOnce, deadTwice, deadBare := folder(deadPID, 1), folder(deadPID, 2), folder(deadPID, 0)
	mine := folder(os.Getpid(), 1)

	sweepBPFFS(false)
	for _, d := range []string{deadOnce, deadTwice, deadBare} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s (of exited PID %d) after the sweep: %v, bpffs %v; want it gone", d, deadPID, err, isBPFFS(d))
		}
	}
	if !isBPFFS(mine) {
		t.Fatalf("the sweep of exited processes unmounted %s, of this live process", mine)
	}
	sweepBPFFS(true)
	if _, err := os.Stat(mine); !os.IsNotExist(err) {
		t.Errorf("%s after sweeping this process's own: %v, want it gone", mine, err)
	}
}
