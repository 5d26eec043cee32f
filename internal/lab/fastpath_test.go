package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strait-net/strait/internal/agent"
)

// `up --fast-path` gives every node's agent a valid fastPath section with
// its own pin directory on the lab's bpffs; without it the agents have
// none. It is refused together with --flows.
func TestAgentConfigFastPathSection(t *testing.T) {
	o := Options{Dir: t.TempDir()}
	n := o.nodes(1)[0]
	load := func(on bool) *agent.Config {
		t.Helper()
		p := filepath.Join(t.TempDir(), "agent.yaml")
		cfg := agentConfig(n, o.nodeDirs(n), "/kubeconfig", "VXLAN", true) + agentFastPathConfig(on, o.fastPathPinDir(n.Name))
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := agent.LoadConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := load(true); !c.FastPath.Enabled || c.FastPath.PinDir != filepath.Join(o.Dir, "bpffs", n.Name) {
		t.Fatalf("fastPath section %+v, want enabled with pins in %s", c.FastPath, filepath.Join(o.Dir, "bpffs", n.Name))
	}
	if c := load(false); c.FastPath.Enabled {
		t.Fatalf("fast path enabled without --fast-path: %+v", c.FastPath)
	}
	if err := (ClusterOptions{FastPath: true, Flows: true}).validate(); err == nil || !strings.Contains(err.Error(), "--flows") {
		t.Fatalf("--fast-path with --flows: %v, want a refusal naming --flows", err)
	}
	if err := (ClusterOptions{FastPath: true}).validate(); err != nil {
		t.Fatalf("--fast-path alone: %v", err)
	}
}
