// Package manifests tests Strait's install manifests and CRDs: that they
// are generated from the API types, that they say what they should (least
// privilege, a sound DaemonSet), and, against a real kube-apiserver
// (internal/testutil/kubeapi), that they apply and validate as the Go API
// does.
package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Paths relative to the repository root.
const (
	installFile = "deploy/strait.yaml"
	crdDir      = "deploy/crds"
)

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// doc is one YAML document of a manifest.
type doc struct {
	Kind, Name, Namespace string
	Raw                   []byte // the YAML
}

// readDocs splits a multi-document YAML file, skipping empty documents.
func readDocs(t testing.TB, path string) []doc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs []doc
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(raw, &meta); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if meta.Kind == "" {
			if len(bytes.TrimSpace(stripComments(raw))) != 0 {
				t.Fatalf("%s: a document without a kind:\n%s", path, raw)
			}
			continue
		}
		docs = append(docs, doc{meta.Kind, meta.Metadata.Name, meta.Metadata.Namespace, raw})
	}
	return docs
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(append(out, l...), '\n')
		}
	}
	return out
}

// TestGeneratedFilesUpToDate regenerates the CRDs, deploy/strait.yaml and
// the deepcopy functions from the API types into a temporary folder and
// fails if the committed files differ: run `go run ./hack/crdgen`.
func TestGeneratedFilesUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds controller-gen")
	}
	root := repoRoot(t)
	out := t.TempDir()
	cmd := exec.Command("go", "run", "./hack/crdgen", "-out", out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./hack/crdgen: %v\n%s", err, b)
	}
	var generated []string
	err := filepath.WalkDir(out, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(out, path)
		generated = append(generated, rel)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(generated) < 4 {
		t.Fatalf("crdgen wrote only %v", generated)
	}
	stale := false
	for _, rel := range generated {
		want, _ := os.ReadFile(filepath.Join(out, rel))
		got, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is not what the API types generate (%v)", rel, err)
			stale = true
		}
	}
	// No CRD of a type that is gone.
	committed, _ := filepath.Glob(filepath.Join(root, crdDir, "*"))
	for _, f := range committed {
		if _, err := os.Stat(filepath.Join(out, crdDir, filepath.Base(f))); err != nil {
			t.Errorf("%s/%s is not generated from any type", crdDir, filepath.Base(f))
			stale = true
		}
	}
	if stale {
		t.Log("run `go run ./hack/crdgen` from the repository root and commit the result")
	}
	t.Logf("checked %s", strings.Join(generated, ", "))
}
