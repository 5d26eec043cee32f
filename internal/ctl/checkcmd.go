package ctl

import (
	"context"
	"encoding/json"
	"io"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/strait-net/strait/internal/ctl/check"
)

// runCheck runs `check connectivity` (through the Kubernetes API, not the
// agent's socket) and renders its report; it fails when a hop failed.
func runCheck(ctx context.Context, o Options, out io.Writer) error {
	c := o.Check
	if c.Log == nil {
		c.Log = os.Stderr
	}
	rep, err := check.Run(ctx, c)
	if err != nil {
		return err
	}
	switch o.Output {
	case OutputJSON:
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if _, err := out.Write(append(b, '\n')); err != nil {
			return err
		}
	case OutputYAML:
		b, err := yaml.Marshal(rep)
		if err != nil {
			return err
		}
		if _, err := out.Write(b); err != nil {
			return err
		}
	default:
		if err := check.Render(out, rep, o.Output == OutputWide); err != nil {
			return err
		}
	}
	return rep.Err()
}
