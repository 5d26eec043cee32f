// Command straitctl inspects the Strait agent of this node through its local
// API: straitctl [--socket PATH] status|routes|ipam [-o table|wide|json|yaml].
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/strait-net/strait/internal/ctl"
)

func main() {
	o, err := ctl.ParseArgs(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "straitctl:", err)
		if errors.Is(err, ctl.ErrUsage) {
			fmt.Fprint(os.Stderr, ctl.Usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := ctl.Run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "straitctl:", err)
		os.Exit(1)
	}
}
