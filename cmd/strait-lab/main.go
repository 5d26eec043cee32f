// Command strait-lab brings Strait's lab up and down (see README).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/strait-net/strait/internal/lab"
)

func main() {
	fs := flag.NewFlagSet("strait-lab", flag.ExitOnError)
	dir := fs.String("dir", ".lab", "lab folder (state, configs, logs)")
	pods := fs.Int("pods", 2, "pods to create on the node")
	self, _ := os.Executable()
	binDir := fs.String("bin", filepath.Dir(self), "folder with strait-agent and cni/")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: strait-lab [flags] up|down|status")
		fs.PrintDefaults()
	}
	if len(os.Args) < 2 {
		fs.Usage()
		os.Exit(2)
	}
	cmd := os.Args[1]
	_ = fs.Parse(os.Args[2:])
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "strait-lab:", err)
		os.Exit(1)
	}
	o := lab.Options{Dir: absDir, BinDir: *binDir, Pods: *pods, Out: os.Stdout}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "up":
		err = lab.Up(ctx, o)
	case "down":
		err = lab.Down(ctx, o)
	case "status":
		err = lab.Status(ctx, o)
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "strait-lab:", err)
		os.Exit(1)
	}
}
