// Package deps enforces Strait's import rules: deep packages with narrow
// interfaces, each owning one thing.
package deps

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const mod = "github.com/strait-net/strait"

// Forbidden prefixes of (transitive) dependencies, per package prefix.
var rules = []struct {
	pkg       string
	forbidden []string
	why       string
}{
	{mod + "/internal/datapath", []string{"k8s.io/client-go", "github.com/osrg/gobgp", mod + "/internal/agent", mod + "/internal/ipam", mod + "/internal/cni", mod + "/internal/bgp"},
		"the datapath owns the kernel only"},
	{mod + "/internal/ipam", []string{"github.com/vishvananda/netlink", "github.com/mdlayher/netlink", "k8s.io/client-go", "github.com/osrg/gobgp", mod + "/internal/datapath"},
		"IPAM is a pure allocator over a store"},
	{mod + "/internal/cni", []string{"github.com/vishvananda/netlink", "github.com/mdlayher/netlink", "k8s.io/client-go", mod + "/internal/datapath", mod + "/internal/ipam", mod + "/internal/agent"},
		"the CNI contract has no kernel or cluster access"},
	{mod + "/cmd/strait-cni", []string{"github.com/vishvananda/netlink", mod + "/internal/datapath", mod + "/internal/ipam", mod + "/internal/agent", "k8s.io/client-go"},
		"the CNI binary is a thin shim"},
	{mod + "/api/", []string{"k8s.io/client-go", "github.com/vishvananda/netlink", mod + "/internal/"},
		"API types depend on apimachinery only"},
	{mod + "/internal/flow/ipfix", []string{"github.com/", "golang.org/x/", "k8s.io/", mod + "/internal/"},
		"the IPFIX codec depends on the standard library only"},
	{mod + "/internal/aggregator/correlate", []string{"github.com/vishvananda", "github.com/mdlayher", "github.com/ti-mo", "github.com/google/nftables",
		"github.com/prometheus", "golang.org/x/", "k8s.io/", mod + "/internal/agent", mod + "/internal/datapath", mod + "/internal/ipam"},
		"the aggregate-mode core is pure bookkeeping over the record layout"},
	{mod + "/internal/podindex", []string{"github.com/vishvananda", "github.com/mdlayher", "github.com/ti-mo", "github.com/osrg/gobgp",
		mod + "/internal/agent", mod + "/internal/aggregator", mod + "/internal/datapath", mod + "/internal/flow"},
		"pod identities come from the API only, shared by the agent and the aggregator"},
	{mod + "/internal/flow", []string{"k8s.io/", "github.com/vishvananda/netlink", "github.com/google/nftables", mod + "/internal/agent", mod + "/internal/ipam"},
		"the flow exporter reads conntrack only; the datapath writes the kernel, the agent resolves pods"},
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, deps := f[0], f[1:]
		for _, r := range rules {
			if !strings.HasPrefix(pkg, r.pkg) {
				continue
			}
			checked++
			for _, d := range deps {
				for _, bad := range r.forbidden {
					if strings.HasPrefix(d, bad) {
						t.Errorf("%s depends on %s: %s", pkg, d, r.why)
					}
				}
			}
		}
	}
	if checked < 4 {
		t.Fatalf("only %d packages matched a rule: the rules no longer describe the tree", checked)
	}
}

// Only internal/bgp/gobgp.go may import GoBGP: the engine stays behind
// Strait's own Speaker interface.
func TestGoBGPImportedInOneFile(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.Dir}}", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	files := 0
	for _, dir := range strings.Fields(string(out)) {
		matches, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, file := range matches {
			files++
			f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatalf("parse %s: %v", file, err)
			}
			for _, imp := range f.Imports {
				if strings.Contains(imp.Path.Value, "github.com/osrg/gobgp") &&
					!strings.HasSuffix(filepath.ToSlash(file), "internal/bgp/gobgp.go") {
					t.Errorf("%s imports %s; only internal/bgp/gobgp.go may", file, imp.Path.Value)
				}
			}
		}
	}
	if files == 0 {
		t.Fatal("no Go files found")
	}
}

// Only internal/datapath imports cilium/ebpf: the fast path's programs and
// maps are kernel state like routes, owned by the datapath alone.
func TestEBPFInDatapathOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-test", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	importers := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, "github.com/cilium/ebpf") {
				continue
			}
			importers++
			// go list -test names test variants "pkg [pkg.test]".
			if pkg := f[0]; pkg != mod+"/internal/datapath" {
				t.Errorf("%s imports %s: only internal/datapath may", pkg, imp)
			}
			break
		}
	}
	if importers == 0 {
		t.Fatal("no package imports cilium/ebpf: the rule no longer describes the tree")
	}
}
