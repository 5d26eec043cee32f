// Command strait-aggregator is Strait's Flow Aggregator (see internal/aggregator and docs/flows.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/strait-net/strait/internal/aggregator"
)

func main() {
	configPath := flag.String("config", "/etc/strait/aggregator.yaml", "aggregator configuration file (YAML)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	check := flag.Bool("check", false, "validate the configuration and exit")
	flag.Parse()
	if err := run(*configPath, *logLevel, *check); err != nil {
		fmt.Fprintln(os.Stderr, "strait-aggregator:", err)
		os.Exit(1)
	}
}

func run(configPath, logLevel string, check bool) error {
	cfg, err := aggregator.LoadConfig(configPath)
	if err != nil {
		return err
	}
	if check {
		fmt.Println("configuration is valid")
		return nil
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return aggregator.Run(ctx, cfg, aggregator.Options{Logger: log})
}
