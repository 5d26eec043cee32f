package ctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	aggapi "github.com/strait-net/strait/internal/aggregator/api"
)

// FlowsOptions is `straitctl flows [--pod NS/NAME] [--top N] [--aggregator URL]`.
type FlowsOptions struct {
	// Pod keeps the flows with this pod (NAMESPACE/NAME) at either end.
	Pod string
	// Top keeps the N flows with the most bytes (0: all).
	Top int
	// Aggregator is the Flow Aggregator's API base URL; empty asks this
	// node's agent (its exporter's live table).
	Aggregator string
}

const flowsUsage = `usage: straitctl flows [--pod NAMESPACE/NAME] [--top N] [--aggregator URL] [-o table|wide|json|yaml]
`

// parseFlows parses what follows "flows".
func parseFlows(args []string, stderr io.Writer, o *Options) error {
	fs := flag.NewFlagSet("straitctl flows", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, flowsUsage) }
	fs.StringVar(&o.Output, "o", o.Output, "output format: table, wide, json or yaml")
	fs.StringVar(&o.Output, "output", o.Output, "output format: table, wide, json or yaml")
	fs.StringVar(&o.Flows.Pod, "pod", "", "only flows of this pod (NAMESPACE/NAME)")
	fs.IntVar(&o.Flows.Top, "top", 0, "only the N flows with the most bytes")
	fs.StringVar(&o.Flows.Aggregator, "aggregator", "", "the Flow Aggregator's API (http://HOST:PORT) instead of this node's agent")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	if p := o.Flows.Pod; p != "" {
		if ns, name, ok := strings.Cut(p, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("%w: --pod wants NAMESPACE/NAME, got %q", ErrUsage, p)
		}
	}
	if o.Flows.Top < 0 {
		return fmt.Errorf("%w: --top must be >= 0", ErrUsage)
	}
	if a := o.Flows.Aggregator; a != "" {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: --aggregator wants http://HOST:PORT, got %q", ErrUsage, a)
		}
	}
	return nil
}

// flowsPath is the API path with the filters.
func (f FlowsOptions) path() string {
	q := url.Values{}
	if f.Pod != "" {
		q.Set("pod", f.Pod)
	}
	if f.Top > 0 {
		q.Set("top", strconv.Itoa(f.Top))
	}
	if len(q) == 0 {
		return aggapi.FlowsPath
	}
	return aggapi.FlowsPath + "?" + q.Encode()
}

// runFlows fetches the flows from the agent or the aggregator and renders
// them.
func runFlows(ctx context.Context, o Options, out io.Writer) error {
	var resp aggapi.FlowsResponse
	if o.Flows.Aggregator != "" {
		if err := getAggregator(ctx, o, &resp); err != nil {
			return err
		}
	} else if err := NewClient(o.Socket, o.Timeout).Get(ctx, o.Flows.path(), &resp); err != nil {
		return err
	}
	if o.Output == OutputJSON || o.Output == OutputYAML {
		return writeStructured(out, o.Output, &resp)
	}
	return renderFlows(out, &resp, o.Output == OutputWide)
}

func getAggregator(ctx context.Context, o Options, v *aggapi.FlowsResponse) error {
	u := strings.TrimSuffix(o.Flows.Aggregator, "/") + o.Flows.path()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: o.Timeout}).Do(req)
	if err != nil {
		return fmt.Errorf("flow aggregator: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("flow aggregator %s: read answer: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("flow aggregator: GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("flow aggregator: GET %s: bad answer: %w", u, err)
	}
	return nil
}

// writeStructured writes v as JSON or YAML.
func writeStructured(out io.Writer, format string, v any) error {
	var b []byte
	var err error
	if format == OutputYAML {
		b, err = yaml.Marshal(v)
	} else {
		b, err = json.MarshalIndent(v, "", "  ")
		b = append(b, '\n')
	}
	if err != nil {
		return err
	}
	_, err = out.Write(b)
	return err
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 1:
		return "ICMP"
	case 58:
		return "ICMPv6"
	case 132:
		return "SCTP"
	}
	return strconv.Itoa(int(p))
}

func podOrDash(ns, name string) string {
	if name == "" {
		return "-"
	}
	return ns + "/" + name
}

func endpoint(ip string, port uint16) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + strconv.Itoa(int(port))
	}
	return ip + ":" + strconv.Itoa(int(port))
}

// renderFlows writes the flows as a table (wide adds nodes, Service,
// throughput and times).
func renderFlows(w io.Writer, r *aggapi.FlowsResponse, wide bool) error {
	tw := newTab(w)
	hdr := "SOURCE POD\tDESTINATION POD\tSOURCE\tDESTINATION\tPROTO\tTYPE\tPACKETS\tBYTES\tREV PACKETS\tREV BYTES"
	if wide {
		hdr += "\tSRC NODE\tDST NODE\tSERVICE\tTHROUGHPUT\tREV THROUGHPUT\tSTART\tEND"
	}
	fmt.Fprintln(tw, hdr)
	for _, f := range r.Flows {
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d",
			podOrDash(f.SourceNamespace, f.SourcePod), podOrDash(f.DestinationNamespace, f.DestinationPod),
			endpoint(f.SourceIP, f.SourcePort), endpoint(f.DestinationIP, f.DestinationPort), protoName(f.Protocol),
			dashIfEmpty(f.FlowType), f.Packets, f.Bytes, f.ReversePackets, f.ReverseBytes)
		if wide {
			line += fmt.Sprintf("\t%s\t%s\t%s\t%d\t%d\t%s\t%s", dashIfEmpty(f.SourceNode), dashIfEmpty(f.DestinationNode),
				dashIfEmpty(f.DestinationService), f.Throughput, f.ReverseThroughput,
				f.Start.UTC().Format("15:04:05"), f.End.UTC().Format("15:04:05"))
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	src := r.Mode
	if src == "" {
		src = "agent"
	}
	_, err := fmt.Fprintf(w, "%d of %d flows (%s)\n", len(r.Flows), r.Total, src)
	return err
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
