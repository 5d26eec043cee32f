package bpf

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestObjectCurrent rebuilds the object from src/fastpath.c and requires
// the committed fastpath.o to be byte for byte the same: an edit of the C
// source without "make bpf" fails here. hack/install-deps.sh installs the
// compiler, so CI always runs it.
func TestObjectCurrent(t *testing.T) {
	for _, tool := range []string{"clang", "llvm-strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (hack/install-deps.sh installs it): %v", tool, err)
		}
	}
	out := filepath.Join(t.TempDir(), "fastpath.o")
	cmd := exec.Command("../../../hack/bpf-build.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/bpf-build.sh: %v\n%s", err, b)
	}
	built, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := io.ReadAll(io.NewSectionReader(FastPath(), 0, 1<<30))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(built, committed) {
		t.Fatalf("internal/datapath/bpf/fastpath.o (%d bytes) is not what src/fastpath.c builds to (%d bytes): run make bpf",
			len(committed), len(built))
	}
}
