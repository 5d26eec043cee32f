//go:build tools

package tools

// controller-gen (sigs.k8s.io/controller-tools, pinned in go.mod) generates
// the CRDs in deploy/crds and the deepcopy functions of api/ from the Go
// types: `go run ./hack/crdgen` from the repository root builds and runs it.
import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
