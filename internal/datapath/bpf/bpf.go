// Package bpf holds the source of Strait's eBPF fast path (src/fastpath.c) and
// its compiled object (fastpath.o, rebuilt by "make bpf" and committed, so
// building Strait needs no clang). internal/datapath loads it.
package bpf

import (
	"bytes"
	_ "embed"
	"io"
)

//go:embed fastpath.o
var fastPathObject []byte

// FastPath returns the compiled fast path object (ELF, BTF for CO-RE).
func FastPath() io.ReaderAt { return bytes.NewReader(fastPathObject) }
