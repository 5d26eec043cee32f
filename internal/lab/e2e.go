package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Upstream e2e focus and skip that Strait's lab is accepted against.
const (
	DefaultE2EFocus = `\[sig-network\] Networking Granular Checks: Pods`
	DefaultE2ESkip  = `SCTP|sctp|\[Feature:|\[Disruptive\]|\[Serial\]`
	// ServicesE2EFocus are the upstream '[sig-network] Services' specs
	// that need no cloud provider (LoadBalancer) and no cluster DNS (the
	// lab runs none) and pass with kube-proxy in nftables mode; see
	// docs/cluster-networking.md for the specs left out and why.
	ServicesE2EFocus = `\[sig-network\] Services should (` +
		`preserve source pod IP for traffic thru service cluster IP|be able to up and down services|` +
		`work after the service has been recreated|implement service.kubernetes.io/service-proxy-name|` +
		`implement service.kubernetes.io/headless|serve endpoints on same port and different protocols|` +
		`respect internalTrafficPolicy=Local Pod to Pod|prevent NodePort collisions|check NodePort out-of-range|` +
		`complete a service status lifecycle|find a service from listing all namespaces|` +
		`delete a collection of services|test the lifecycle of an Endpoint)`
)

// E2EOptions select the upstream specs.
type E2EOptions struct {
	Focus, Skip string
	// Out receives e2e.test's output (default: the lab's Out).
	Extra []string
}

// E2E runs the upstream e2e.test against the lab and returns an error when
// any spec fails. Its report also goes to logs/e2e.log.
func E2E(ctx context.Context, o Options, e E2EOptions) error {
	s, err := o.load()
	if err != nil {
		return err
	}
	if s.Cluster.K8sBinDir == "" || s.Cluster.Kubeconfig == "" {
		return errors.New("the lab is not up (strait-lab up)")
	}
	report := filepath.Join(o.Dir, "logs", "e2e")
	if err := os.MkdirAll(report, 0o755); err != nil {
		return err
	}
	args := append([]string{
		"--kubeconfig=" + s.Cluster.Kubeconfig, "--provider=skeleton",
		"--ginkgo.focus=" + e.Focus, "--ginkgo.skip=" + e.Skip,
		"--ginkgo.no-color", "--ginkgo.timeout=1h", "--report-dir=" + report,
		// No registry is reachable: every image was imported into the nodes.
		"--prepull-images=false",
	}, e.Extra...)
	cmd := exec.CommandContext(ctx, filepath.Join(s.Cluster.K8sBinDir, "e2e.test"), args...)
	logf, err := os.Create(filepath.Join(o.Dir, "logs", "e2e.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	out := o.Out
	if out == nil {
		out = logf
	}
	cmd.Stdout = multiWriter(out, logf)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("e2e failed (full log: %s): %w", filepath.Join(o.Dir, "logs", "e2e.log"), err)
	}
	return nil
}
