#!/usr/bin/env bash
# Builds the eBPF fast path's object from internal/datapath/bpf/src/fastpath.c
# into internal/datapath/bpf/fastpath.o (or the path given), reproducibly: no
# build directory is recorded, DWARF is stripped and BTF (for CO-RE) kept.
# Needs clang, llvm (llvm-strip) and libbpf-dev (hack/install-deps.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/internal/datapath/bpf/fastpath.o}")
cd "$root/internal/datapath/bpf/src"
clang -O2 -g -Wall -Werror -target bpf -fdebug-prefix-map="$PWD"=. \
  -I/usr/include/"$(uname -m)"-linux-gnu -c fastpath.c -o "$out"
llvm-strip -g "$out"
