package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/strait-net/strait/internal/ctl/api"
	"github.com/strait-net/strait/internal/ctl/check"
)

// DefaultSocket is where the agent serves (agent.DefaultSocketPath).
const DefaultSocket = "/run/strait/cni.sock"

// Output formats.
const (
	OutputTable = "table"
	OutputWide  = "wide"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// Usage is the command line summary.
const Usage = `usage: straitctl [--socket PATH] COMMAND [-o table|wide|json|yaml]

Commands:
  status   node readiness, IPAM mode, pools, VTEPs, peers, routes not installed
  routes   overlay routes/neighbours/FDB entries, pod host routes, and why
           desired routes are not installed
  ipam     pools and blocks with use, and every pod's addresses
  bgp peers|routes|policies|config
           BGP sessions, RIB routes ([--family ipv4|ipv6] [--advertised|--received]
           [--peer NAME|ADDR]), what is exported to whom with which next hop, and
           this node's effective BGP configuration
  flows [--pod NAMESPACE/NAME] [--top N] [--aggregator URL]
           live flows of this node's exporter, or of the Flow Aggregator
  check connectivity [--kubeconfig PATH] [--external IP,...]
           probe pods on every node (through the Kubernetes API): pod to pod,
           pod to node, pod to external, with the broken hop of each failure
`

// Options is one straitctl invocation.
type Options struct {
	Socket  string
	Command string
	Output  string
	Timeout time.Duration
	// Now is the clock for ages (default time.Now).
	Now func() time.Time
	// Check configures `check connectivity`.
	Check check.Options
	// BGP configures `bgp ...` (bgp.go).
	BGP BGPOptions
	// Flows configures `flows` (flows.go).
	Flows FlowsOptions
}

// ErrUsage is returned (wrapped) for a bad command line.
var ErrUsage = errors.New("usage")

// ParseArgs parses straitctl's arguments (without the program name).
func ParseArgs(args []string, stderr io.Writer) (Options, error) {
	o := Options{Timeout: 30 * time.Second}
	global := flag.NewFlagSet("straitctl", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, Usage) }
	global.StringVar(&o.Socket, "socket", DefaultSocket, "the agent's unix socket")
	global.DurationVar(&o.Timeout, "timeout", o.Timeout, "how long to wait for the agent")
	global.StringVar(&o.Output, "o", OutputTable, "output format: table, wide, json or yaml")
	if err := global.Parse(args); err != nil {
		return o, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	rest := global.Args()
	if len(rest) == 0 {
		return o, fmt.Errorf("%w: missing command (status, routes or ipam)", ErrUsage)
	}
	o.Command = rest[0]
	if o.Command == "check" {
		c, err := check.ParseFlags(rest[1:], stderr, &o.Output)
		if err != nil {
			return o, fmt.Errorf("%w: %w", ErrUsage, err)
		}
		o.Check = c
		return o, o.validate()
	}
	if o.Command == "flows" {
		if err := parseFlows(rest[1:], stderr, &o); err != nil {
			return o, err
		}
		return o, o.validate()
	}
	if o.Command == "bgp" {
		if err := parseBGP(rest[1:], stderr, &o); err != nil {
			return o, err
		}
		return o, o.validate()
	}
	sub := flag.NewFlagSet("straitctl "+o.Command, flag.ContinueOnError)
	sub.SetOutput(stderr)
	sub.Usage = global.Usage
	sub.StringVar(&o.Output, "o", o.Output, "output format: table, wide, json or yaml")
	sub.StringVar(&o.Output, "output", o.Output, "output format: table, wide, json or yaml")
	if err := sub.Parse(rest[1:]); err != nil {
		return o, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if sub.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q", ErrUsage, sub.Arg(0))
	}
	return o, o.validate()
}

func (o Options) validate() error {
	switch o.Command {
	case "status", "routes", "ipam", "check", "bgp", "flows":
	default:
		return fmt.Errorf("%w: unknown command %q (want status, routes or ipam)", ErrUsage, o.Command)
	}
	switch o.Output {
	case OutputTable, OutputWide, OutputJSON, OutputYAML:
	default:
		return fmt.Errorf("%w: unknown output format %q (want table, wide, json or yaml)", ErrUsage, o.Output)
	}
	return nil
}

// Run executes one command against the agent and writes the result to out.
func Run(ctx context.Context, o Options, out io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	if o.Socket == "" {
		o.Socket = DefaultSocket
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Command == "check" {
		return runCheck(ctx, o, out)
	}
	if o.Command == "flows" {
		return runFlows(ctx, o, out)
	}
	c := NewClient(o.Socket, o.Timeout)
	var (
		v      any
		path   string
		render func(w io.Writer, wide bool) error
	)
	switch o.Command {
	case "status":
		s := &api.Status{}
		v, path, render = s, api.PathStatus, func(w io.Writer, wide bool) error { return renderStatus(w, s, wide) }
	case "routes":
		r := &api.Routes{}
		v, path, render = r, api.PathRoutes, func(w io.Writer, wide bool) error { return renderRoutes(w, r, wide) }
	case "ipam":
		m := &api.IPAM{}
		v, path, render = m, api.PathIPAM, func(w io.Writer, wide bool) error { return renderIPAM(w, m, wide, o.Now()) }
	case "bgp":
		v, path, render = bgpRequest(o.BGP, o.Now())
	}
	if err := c.Get(ctx, path, v); err != nil {
		return err
	}
	if o.Output == OutputJSON || o.Output == OutputYAML {
		return writeStructured(out, o.Output, v)
	}
	return render(out, o.Output == OutputWide)
}
