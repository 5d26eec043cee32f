// Command strait-lab runs Strait's lab: a real Kubernetes cluster whose nodes
// are network namespaces on this machine, with Strait as its CNI (see README).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/strait-net/strait/internal/lab"
	"github.com/strait-net/strait/internal/lab/k8sbin"
)

const usage = `usage: strait-lab [flags] COMMAND

  up                 bring the lab up (builds the Kubernetes binaries on first use;
                     --flows: also the Flow Aggregator, every agent exporting to it;
                     --router frr|bird: a BGP router peering with every node;
                     --ip-family ipv4: an IPv4-only cluster, default dual;
                     --fast-path: every agent with the eBPF fast path on)
  down               remove everything the lab made (also after a failed up)
  status             nodes, daemons, what is unhealthy and why
  kubeconfig         print the path of the lab's kubeconfig
  flows-api          print the URL of the aggregator's flows API (up --flows):
                     straitctl flows --aggregator $(strait-lab flows-api)
  exec NODE -- CMD   run CMD in a lab namespace (n1, n2, ..., cp, router, ext)
  logs COMPONENT [NODE]  print a component's log (kubelet n2, kube-apiserver, ...)
  restart COMPONENT [NODE]  kill -9 a lab daemon and start it again (strait-agent n2, ...)
  e2e                run the upstream Kubernetes e2e networking checks against the lab
  cni-lab            the single-node CNI lab without Kubernetes (agent + 2 pods)
  k8s-binaries       build (once) the Kubernetes binaries and print their folder

flags:
`

func main() {
	fs := flag.NewFlagSet("strait-lab", flag.ExitOnError)
	dir := fs.String("dir", envOr("STRAIT_LAB_DIR", ".lab"), "lab folder (state, configs, logs)")
	nodes := fs.Int("nodes", 3, "Kubernetes nodes (up)")
	fastPath := fs.Bool("fast-path", false, "turn on every agent's eBPF fast path, pinned on a bpffs under the lab's directory (up)")
	flows := fs.Bool("flows", false, "run the Flow Aggregator (aggregate mode) and make every agent export flows to it (up)")
	router := fs.String("router", "", "run a BGP router (frr or bird) in the router namespace, peering with every node (up)")
	ipFamily := fs.String("ip-family", lab.IPFamilyDual, "IP families of the cluster: dual (IPv4 and IPv6) or ipv4 (up)")
	encap := fs.String("encap", "VXLANCrossSubnet", "encapsulation of the default IP pools: VXLAN, VXLANCrossSubnet or None (up)")
	pods := fs.Int("pods", 2, "pods (cni-lab)")
	prefix := fs.String("prefix", envOr("STRAIT_LAB_PREFIX", lab.DefaultPrefix), "prefix of the lab's namespace and cgroup names")
	focus := fs.String("focus", lab.DefaultE2EFocus, "ginkgo focus (e2e)")
	skip := fs.String("skip", lab.DefaultE2ESkip, "ginkgo skip (e2e)")
	self, _ := os.Executable()
	binDir := fs.String("bin", filepath.Dir(self), "folder with strait-agent and cni/")
	listen := fs.String("listen", "", "(proxy) loopback address to listen on")
	netns := fs.String("netns", "", "(proxy) namespace of the target")
	target := fs.String("target", "", "(proxy) address to forward to")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }

	args := os.Args[1:]
	// Everything after "--" is a command line for exec, taken verbatim.
	var after []string
	for i, a := range args {
		if a == "--" {
			args, after = args[:i], args[i+1:]
			break
		}
	}
	var cmdArgs []string
	// Flags may come before or after the command; "--" ends them (exec).
	var cmd string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			os.Exit(2)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if cmd == "" {
			cmd, args = args[0], args[1:]
			continue
		}
		cmdArgs, args = append(cmdArgs, args[0]), args[1:]
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		fail(err)
	}
	o := lab.Options{Dir: absDir, BinDir: *binDir, RepoRoot: repoRoot(*binDir), Pods: *pods, Prefix: *prefix, Out: os.Stdout}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	switch cmd {
	case "up":
		err = lab.UpCluster(ctx, o, lab.ClusterOptions{Nodes: *nodes, Self: self, Encapsulation: *encap, Flows: *flows, FastPath: *fastPath, Router: *router, IPFamily: *ipFamily})
	case "cni-lab":
		err = lab.Up(ctx, o)
	case "down":
		err = lab.Down(ctx, o)
	case "status":
		err = lab.Status(ctx, o)
	case "kubeconfig":
		fmt.Println(filepath.Join(absDir, "kubeconfig"))
	case "flows-api":
		var url string
		if url, err = lab.FlowsAPIURL(o); err == nil && url == "" {
			err = fmt.Errorf("the lab runs no aggregator: bring it up with `strait-lab up --flows`")
		}
		if err == nil {
			fmt.Println(url)
		}
	case "exec":
		if len(cmdArgs) < 1 {
			fail(fmt.Errorf("usage: strait-lab exec NODE -- CMD"))
		}
		code, err := lab.Exec(ctx, o, cmdArgs[0], append(cmdArgs[1:], after...))
		if err != nil {
			fail(err)
		}
		os.Exit(code)
	case "logs":
		if len(cmdArgs) < 1 {
			fail(fmt.Errorf("usage: strait-lab logs COMPONENT [NODE]"))
		}
		node := ""
		if len(cmdArgs) > 1 {
			node = cmdArgs[1]
		}
		err = lab.Logs(o, cmdArgs[0], node)
	case "restart":
		if len(cmdArgs) < 1 {
			fail(fmt.Errorf("usage: strait-lab restart COMPONENT [NODE]"))
		}
		node := ""
		if len(cmdArgs) > 1 {
			node = cmdArgs[1]
		}
		err = lab.Restart(ctx, o, cmdArgs[0], node)
	case "e2e":
		err = lab.E2E(ctx, o, lab.E2EOptions{Focus: *focus, Skip: *skip})
	case "k8s-binaries":
		var dir string
		dir, err = k8sbin.Ensure(ctx, k8sbin.Options{RepoRoot: o.RepoRoot, Out: os.Stderr})
		if err == nil {
			fmt.Println(dir)
		}
	case "proxy":
		err = lab.ServeProxy(ctx, *listen, *netns, *target)
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		fail(err)
	}
}

// repoRoot finds the Strait checkout: the parent of bin/ when strait-lab was
// built by `make build`, else the working directory.
func repoRoot(binDir string) string {
	for _, d := range []string{filepath.Dir(binDir), "."} {
		if _, err := os.Stat(filepath.Join(d, "hack", "k8s", "go.mod")); err == nil {
			abs, _ := filepath.Abs(d)
			return abs
		}
	}
	return ""
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "strait-lab:", strings.TrimSpace(err.Error()))
	os.Exit(1)
}
