package check

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// DefaultImage has ping, ip and sleep (the upstream e2e image; the lab
// imports it into every node).
const DefaultImage = "registry.k8s.io/e2e-test-images/agnhost:2.56"

// Usage is the check command's help.
const Usage = `usage: straitctl check connectivity [--kubeconfig PATH] [--external IP,...] [--namespace NS] [--keep]
                                   [--image IMAGE] [--wait DURATION] [-o table|wide|json|yaml]

Deploys a probe pod (pod network) and a host-network probe on every node, pings
pod to pod (every pair of nodes, each family), pod to node and pod to the
--external addresses, and names the broken hop of every failure from the
nodes' kernel routes and the IPAM blocks. Removes its pods (and the namespace
it created) on exit, also on Ctrl-C, unless --keep.
`

// Options is one check run.
type Options struct {
	Kubeconfig string
	// Namespace is used (and created when absent) instead of a generated
	// one; with Keep, a later run reuses its probes.
	Namespace string
	Keep      bool
	External  []netip.Addr
	Image     string
	// Wait bounds how long the probes may take to start.
	Wait time.Duration
	// Log receives progress lines (default: discarded).
	Log io.Writer
}

// ParseFlags parses the arguments after `check connectivity`; output is
// the -o flag's value shared with the other commands.
func ParseFlags(args []string, stderr io.Writer, output *string) (Options, error) {
	o := Options{Kubeconfig: os.Getenv("KUBECONFIG"), Image: DefaultImage, Wait: 2 * time.Minute}
	fs := flag.NewFlagSet("straitctl check connectivity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, Usage) }
	var ext string
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig (default $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&o.Namespace, "namespace", "", "namespace for the probes (default: a new strait-check-XXXXX)")
	fs.BoolVar(&o.Keep, "keep", false, "leave the probes running for another run with the same --namespace")
	fs.StringVar(&ext, "external", "", "comma-separated addresses outside the cluster to reach from every pod")
	fs.StringVar(&o.Image, "image", o.Image, "probe image (needs sleep, ping, sh and ip)")
	fs.DurationVar(&o.Wait, "wait", o.Wait, "how long the probes may take to start")
	fs.StringVar(output, "o", *output, "output format: table, wide, json or yaml")
	fs.StringVar(output, "output", *output, "output format: table, wide, json or yaml")
	if len(args) == 0 || args[0] != "connectivity" {
		return o, errors.New("check: want `check connectivity`")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("check connectivity: unexpected argument %q", fs.Arg(0))
	}
	for _, s := range strings.Split(ext, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return o, fmt.Errorf("check connectivity: --external %q: %w", s, err)
		}
		o.External = append(o.External, a)
	}
	return o, nil
}

// Result is one probed hop.
type Result struct {
	Hop
	OK       bool `json:"ok"`
	Sent     int  `json:"sent"`
	Received int  `json:"received"`
	// Error is set when the probe could not run at all.
	Error string `json:"error,omitempty"`
	// Diagnosis names the broken hop of a failure.
	Diagnosis string `json:"diagnosis,omitempty"`
}

// Report is the check's answer.
type Report struct {
	Namespace string   `json:"namespace"`
	Results   []Result `json:"results"`
	// NotStarted are nodes whose probes did not run, with why.
	NotStarted map[string]string `json:"notStarted,omitempty"`
	Passed     int               `json:"passed"`
	Failed     int               `json:"failed"`
}

// ErrFailed is returned (wrapped) when a hop failed.
var ErrFailed = errors.New("connectivity check failed")

// Err is nil when every hop passed and every probe ran.
func (r *Report) Err() error {
	if r.Failed == 0 && len(r.NotStarted) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d of %d hops failed, %d nodes without probes", ErrFailed, r.Failed, len(r.Results), len(r.NotStarted))
}

// Run deploys the probes, probes every hop and diagnoses the failures. The
// probes are removed before it returns (unless Keep), also when ctx is
// cancelled.
func Run(ctx context.Context, o Options) (*Report, error) {
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.Kubeconfig != "" {
		rules.ExplicitPath = o.Kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("check connectivity: kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("check connectivity: client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("check connectivity: client: %w", err)
	}
	c := &cluster{cfg: cfg, cs: cs, dyn: dyn}
	nodes, err := c.nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("check connectivity: %w", err)
	}
	if len(nodes) == 0 {
		return nil, errors.New("check connectivity: the cluster has no nodes")
	}
	if c.ns, err = c.ensureNamespace(ctx, o.Namespace); err != nil {
		return nil, fmt.Errorf("check connectivity: %w", err)
	}
	if !o.Keep {
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
			defer cancel()
			fmt.Fprintf(logw, "removing the probes (namespace %s)\n", c.ns)
			if err := c.cleanup(cctx); err != nil {
				fmt.Fprintf(logw, "cleanup: %v\n", err)
			}
		}()
	}
	fmt.Fprintf(logw, "deploying %d probe pods in namespace %s\n", 2*len(nodes), c.ns)
	if err := c.deploy(ctx, nodes, o.Image); err != nil {
		return nil, fmt.Errorf("check connectivity: %w", err)
	}
	notStarted, err := c.waitRunning(ctx, nodes, o.Wait)
	if err != nil {
		return nil, fmt.Errorf("check connectivity: %w", err)
	}
	hops := BuildMatrix(nodes, o.External)
	fmt.Fprintf(logw, "probing %d hops\n", len(hops))
	rep := &Report{Namespace: c.ns, Results: probeAll(ctx, c, hops)}
	if len(notStarted) > 0 {
		rep.NotStarted = notStarted
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("check connectivity: %w", ctx.Err())
	}
	var env Env
	for _, r := range rep.Results {
		if !r.OK && r.Error == "" && env.Routes == nil {
			if env.Blocks, err = c.blocks(ctx); err != nil {
				return nil, fmt.Errorf("check connectivity: %w", err)
			}
			env.Routes, env.RouteErrors = c.routes(ctx, nodes, notStarted)
		}
	}
	for i := range rep.Results {
		r := &rep.Results[i]
		switch {
		case r.OK:
			rep.Passed++
		case r.Error != "":
			rep.Failed++
			r.Diagnosis = "the probe could not run: " + r.Error
		default:
			rep.Failed++
			r.Diagnosis = Diagnose(r.Hop, env)
		}
	}
	return rep, nil
}

// parallel probes at once (each is an exec through the API server).
const parallel = 4

func probeAll(ctx context.Context, c *cluster, hops []Hop) []Result {
	results := make([]Result, len(hops))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, h := range hops {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = probe(ctx, c, h)
		}()
	}
	wg.Wait()
	return results
}

func probe(ctx context.Context, c *cluster, h Hop) Result {
	const count = 3
	r := Result{Hop: h, Sent: count}
	// A probe whose output came back incomplete is run again (execComplete);
	// ping's exit status is not used: packet loss is in its statistics.
	out, errOut, _, err := c.execComplete(ctx, probeName(rolePod, h.From), fmt.Sprintf("ping -c %d -i 0.2 -W 2 %s", count, h.Dst))
	if err != nil {
		r.Error = err.Error()
		return r
	}
	sent, recv, ok := ParsePing(out)
	if !ok {
		r.Error = "ping printed no statistics: " + lastLine(out+errOut)
		return r
	}
	r.Sent, r.Received, r.OK = sent, recv, recv > 0
	return r
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

// ParsePing reads the summary line of busybox or iputils ping.
func ParsePing(out string) (sent, received int, ok bool) {
	m := pingStats.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, false
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, true
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
