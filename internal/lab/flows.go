package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Flow visibility in the lab (`strait-lab up --flows`, docs/flows.md): the
// Flow Aggregator runs in aggregate mode in the control-plane namespace,
// every node's agent exports its conntrack flows to it over TCP, and the
// aggregator sends the correlated records over IPFIX/UDP to the outside host
// (where nfacctd or tshark can listen) and to a JSON-lines file. Its flows
// API is served on the host's loopback through `strait-lab proxy`.
const (
	// FlowsCollectorPort is the aggregator's IPFIX port (TCP and UDP) on the
	// control-plane address 10.100.0.10.
	FlowsCollectorPort = 4739
	// FlowsDownstream is where the aggregator sends its records (IPFIX over
	// UDP): the outside host's address; run a collector there with
	// `strait-lab exec ext -- nfacctd ...`.
	FlowsDownstream = "10.100.9.10:2100"
	// The lab's timeouts: the aggregator exports a live connection every
	// 10 s, so records show up within seconds, and keeps a connection
	// without news (the agents send an idle one once) for 60 s, so
	// `straitctl flows --aggregator` still shows it a while after it ended.
	flowsActiveTimeout   = "10s"
	flowsInactiveTimeout = "60s"
	flowsAPIPort         = 10380
)

// flowsState is the flows part of State.
type flowsState struct {
	// APIPort is the host loopback port of the aggregator's API
	// (`straitctl flows --aggregator http://127.0.0.1:PORT`).
	APIPort int `json:"apiPort,omitempty"`
	// Collector is the aggregator's IPFIX address the agents export to.
	Collector string `json:"collector,omitempty"`
	// Downstream is where the aggregator sends IPFIX over UDP.
	Downstream string `json:"downstream,omitempty"`
	// Log is the aggregator's JSON-lines flow log.
	Log string `json:"log,omitempty"`
}

// aggregatorPath is the aggregator's config file in the lab folder.
func (o *Options) aggregatorPath() string { return filepath.Join(o.Dir, "aggregator.yaml") }

// flowLogPath is the aggregator's JSON-lines flow log (kept by down, like the logs).
func (o *Options) flowLogPath() string { return filepath.Join(o.Dir, "logs", "flows.jsonl") }

// aggregatorConfig renders strait-aggregator's configuration for the lab.
func aggregatorConfig(collectorIP, downstream, flowLog string) string {
	listen := net.JoinHostPort(collectorIP, strconv.Itoa(FlowsCollectorPort))
	return fmt.Sprintf(`# strait-lab up --flows: aggregate mode, written by strait-lab.
mode: aggregate
activeFlowRecordTimeout: %s
inactiveFlowRecordTimeout: %s
collector:
  tcp: {address: %q}
  udp: {address: %q}
destinations:
  - {name: ext, type: ipfix, transport: udp, address: %q, templateRefresh: 5s}
  - {name: log, type: file, path: %q, maxSizeMB: 20, maxBackups: 1}
api:
  address: "127.0.0.1:%d"
`, flowsActiveTimeout, flowsInactiveTimeout, listen, listen, downstream, flowLog, flowsAPIPort)
}

// agentFlowsConfig is the `flows` section of every node's agent config
// when the lab runs the aggregator ("" otherwise).
func agentFlowsConfig(collector string, serviceCIDRs []string) string {
	if collector == "" {
		return ""
	}
	return fmt.Sprintf(`flows:
  enabled: true
  collector: %q
  transport: tcp
  serviceCIDRs: [%s]
`, collector, strings.Join(serviceCIDRs, ", "))
}

// startAggregator writes the aggregator's config, starts it in the
// control-plane namespace, waits for its /readyz and serves its API on the
// host's loopback through `strait-lab proxy`.
func (o *Options) startAggregator(ctx context.Context, s *State, c ClusterOptions, cpIP string) error {
	s.Flows = flowsState{
		Collector:  net.JoinHostPort(cpIP, strconv.Itoa(FlowsCollectorPort)),
		Downstream: FlowsDownstream,
		Log:        o.flowLogPath(),
	}
	if err := writeFiles(map[string]string{o.aggregatorPath(): aggregatorConfig(cpIP, FlowsDownstream, o.flowLogPath())}); err != nil {
		return err
	}
	bin := filepath.Join(o.BinDir, "strait-aggregator")
	if err := o.recordDaemon(s, "aggregator", o.ns("cp"), []string{bin, "-config", o.aggregatorPath()}, nil); err != nil {
		return err
	}
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(flowsAPIPort))
	if err := waitHTTPIn(ctx, o.ns("cp"), "http://"+target+"/readyz", 20*time.Second); err != nil {
		return fmt.Errorf("aggregator not ready (see %s): %w", o.logPath("aggregator"), err)
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	s.Flows.APIPort = port
	if err := o.recordDaemon(s, "aggregator-proxy", "", []string{c.Self, "proxy", "--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--netns", o.ns("cp"), "--target", target}, nil); err != nil {
		return err
	}
	return waitHTTPIn(ctx, "", fmt.Sprintf("http://127.0.0.1:%d/readyz", port), 10*time.Second)
}

// flowsStatus prints where the aggregator listens and returns a problem
// when its API does not answer ("" when fine or without --flows).
func flowsStatus(ctx context.Context, o Options, s *State) string {
	if s.Flows.APIPort == 0 {
		return ""
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", s.Flows.APIPort)
	o.logf("flows:")
	o.logf("  agents export to %s (TCP); aggregate-mode records go to %s (IPFIX/UDP) and %s", s.Flows.Collector, s.Flows.Downstream, s.Flows.Log)
	if err := waitHTTPIn(ctx, "", url+"/readyz", 0); err != nil {
		o.logf("  flows API %s NOT READY: %v", url, err)
		return "the aggregator's flows API does not answer: " + err.Error() + ": see `strait-lab logs aggregator`"
	}
	o.logf("  flows API %s ready (straitctl flows --aggregator %s)", url, url)
	return ""
}

// FlowsAPIURL is the aggregator's flows API on the host's loopback, or ""
// when the lab runs without --flows.
func FlowsAPIURL(o Options) (string, error) {
	s, err := o.load()
	if err != nil {
		return "", err
	}
	if s.Flows.APIPort == 0 {
		return "", nil
	}
	return fmt.Sprintf("http://127.0.0.1:%d", s.Flows.APIPort), nil
}

// waitHTTPIn polls url until it answers 200, dialling from namespace nsName
// ("" for the caller's).
func waitHTTPIn(ctx context.Context, nsName, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			dial := func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			}
			err := dial
			if nsName != "" {
				err = func() error { return inNS(nsName, dial) }
			}
			if err := err(); err != nil {
				return nil, err
			}
			return c, nil
		},
	}}
	defer client.CloseIdleConnections()
	return waitFor(ctx, timeout, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
		}
		return nil
	})
}
