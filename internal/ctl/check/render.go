package check

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Render writes the report as a table: one line per hop, then every
// failure with its broken hop; wide adds the source addresses.
func Render(w io.Writer, r *Report, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := []string{"KIND", "FROM", "TO", "FAMILY", "DESTINATION", "RESULT"}
	if wide {
		head = append(head, "SOURCE", "RECEIVED")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, res := range r.Results {
		result := "ok"
		if !res.OK {
			result = "FAIL"
		}
		cells := []string{string(res.Kind), res.From, res.To, fmt.Sprintf("IPv%d", res.Family), res.Dst.String(), result}
		if wide {
			cells = append(cells, res.Src.String(), fmt.Sprintf("%d/%d", res.Received, res.Sent))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var nodes []string
	for n := range r.NotStarted {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, n := range nodes {
		fmt.Fprintf(w, "\nno probe on %s: %s", n, r.NotStarted[n])
	}
	if len(nodes) > 0 {
		fmt.Fprintln(w)
	}
	if r.Failed > 0 {
		fmt.Fprintln(w, "\nFailures:")
		for _, res := range r.Results {
			if !res.OK {
				fmt.Fprintf(w, "  %s %s -> %s %s (IPv%d): %s\n", res.Kind, res.From, res.To, res.Dst, res.Family, res.Diagnosis)
			}
		}
	}
	fmt.Fprintf(w, "\n%d hops: %d ok, %d failed\n", len(r.Results), r.Passed, r.Failed)
	return nil
}
