package lab

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/agent"
	"github.com/strait-net/strait/internal/aggregator"
)

// The config `up --flows` writes for the aggregator passes the aggregator's
// own validation: aggregate mode, TCP and UDP listeners on the control-plane
// address, the outside host and the flow log as destinations.
func TestAggregatorConfigValid(t *testing.T) {
	cfg, err := aggregator.ParseConfig([]byte(aggregatorConfig("10.100.0.10", FlowsDownstream, "/lab/logs/flows.jsonl")))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mode != aggregator.ModeAggregate {
		t.Errorf("mode %q, want aggregate", cfg.Mode)
	}
	if cfg.Collector.TCP == nil || cfg.Collector.TCP.Address != "10.100.0.10:4739" || cfg.Collector.UDP == nil {
		t.Errorf("collector %+v, want TCP and UDP on 10.100.0.10:4739", cfg.Collector)
	}
	if cfg.ActiveFlowRecordTimeout.Duration != 10*time.Second || cfg.InactiveFlowRecordTimeout.Duration != 60*time.Second {
		t.Errorf("timeouts %v/%v", cfg.ActiveFlowRecordTimeout, cfg.InactiveFlowRecordTimeout)
	}
	if len(cfg.Destinations) != 2 || cfg.Destinations[0].Address != FlowsDownstream || cfg.Destinations[0].Transport != "udp" ||
		cfg.Destinations[1].Path != "/lab/logs/flows.jsonl" {
		t.Errorf("destinations %+v", cfg.Destinations)
	}
	if cfg.API.Address != "127.0.0.1:10380" {
		t.Errorf("api address %q", cfg.API.Address)
	}
}

// Every node's agent config gets a valid flows section exporting over TCP
// to the aggregator; without --flows it has none.
func TestAgentConfigFlowsSection(t *testing.T) {
	o := Options{Dir: t.TempDir()}
	n := o.nodes(1)[0]
	load := func(collector string) *agent.Config {
		t.Helper()
		p := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(p, []byte(agentConfig(n, o.nodeDirs(n), "/kubeconfig", "VXLAN", true)+agentFlowsConfig(collector, []string{ServiceCIDRv4, ServiceCIDRv6})), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := agent.LoadConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := load("10.100.0.10:4739")
	f := c.Flows
	if !f.Enabled || f.Collector != "10.100.0.10:4739" || f.Transport != "tcp" || len(f.ServiceCIDRs) != 2 || f.ServiceCIDRs[0] != ServiceCIDRv4 {
		t.Fatalf("flows section %+v", f)
	}
	if c := load(""); c.Flows.Enabled {
		t.Fatalf("flows enabled without --flows: %+v", c.Flows)
	}
}
