package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Exec runs argv inside a lab namespace ("n2", "cp", "router", "ext") with
// the caller's terminal, like `ip netns exec` but keeping the mount
// namespace. It returns the command's exit code.
func Exec(ctx context.Context, o Options, where string, argv []string) (int, error) {
	if len(argv) == 0 {
		return 2, fmt.Errorf("exec: no command")
	}
	nsName := o.ns(where)
	if _, err := os.Stat(filepath.Join("/run/netns", nsName)); err != nil {
		return 2, fmt.Errorf("exec: no lab namespace %q (is the lab up?)", where)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG="+o.kubeconfigPath())
	err := inNS(nsName, cmd.Start)
	if err != nil {
		return 127, fmt.Errorf("exec %s: %w", argv[0], err)
	}
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), nil
		}
		return 1, err
	}
	return 0, nil
}

// Logs prints a component's log: "kubelet n2", "containerd n1",
// "strait-agent n3", "kube-apiserver", ...
func Logs(o Options, component, node string) error {
	name := component
	if node != "" {
		name = component + "-" + node
	}
	data, err := os.ReadFile(o.logPath(name))
	if err != nil {
		entries, _ := os.ReadDir(filepath.Join(o.Dir, "logs"))
		var have []string
		for _, e := range entries {
			have = append(have, strings.TrimSuffix(e.Name(), ".log"))
		}
		return fmt.Errorf("no log for %s (have: %s)", name, strings.Join(have, ", "))
	}
	_, err = os.Stdout.Write(data)
	return err
}

func (o *Options) kubeconfigPath() string { return filepath.Join(o.Dir, "kubeconfig") }

func multiWriter(ws ...io.Writer) io.Writer { return io.MultiWriter(ws...) }
