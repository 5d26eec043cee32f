package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/strait-net/strait/internal/lab/images"
)

// ClusterOptions configure the Kubernetes lab.
type ClusterOptions struct {
	// Nodes is the number of Kubernetes nodes (default 3), spread over the
	// two node subnets.
	Nodes int
	// K8sBinDir holds etcd, kube-apiserver, ..., kubelet, kube-proxy,
	// kubectl, agnhost and e2e.test (see internal/lab/k8sbin).
	K8sBinDir string
	// Images are OCI archives imported into every node's containerd.
	Images []string
	// Self is the strait-lab binary (it serves the API proxy).
	Self string
	// Encapsulation of the default IP pools (default VXLANCrossSubnet).
	Encapsulation string
	// Flows runs the Flow Aggregator and makes every agent export to it
	// (flows.go).
	Flows bool
	// Router runs a BGP router ("frr" or "bird") in the router namespace
	// peering with every node (router.go); "" for none.
	Router string
	// IPFamily is the cluster's IP families: IPFamilyDual (default: pods,
	// Services and node addresses in IPv4 and IPv6) or IPFamilyIPv4 (an
	// IPv4-only cluster: Kubernetes and Strait's pools single-stack; the
	// lab's links keep their IPv6 addresses, unused by the cluster).
	IPFamily string
	// FastPath turns on every agent's eBPF fast path (fastpath.go), its
	// pins on a bpffs the lab mounts under its directory.
	FastPath bool
}

// The lab's IP family choices (ClusterOptions.IPFamily).
const (
	IPFamilyDual = "dual"
	IPFamilyIPv4 = "ipv4"
)

// dual reports whether the cluster is dual-stack.
func (c ClusterOptions) dual() bool { return c.IPFamily != IPFamilyIPv4 }

// families returns the v4 value, and the v6 one too on a dual-stack
// cluster.
func (c ClusterOptions) families(v4, v6 string) []string {
	if c.dual() {
		return []string{v4, v6}
	}
	return []string{v4}
}

func (c ClusterOptions) validate() error {
	switch c.IPFamily {
	case "", IPFamilyDual, IPFamilyIPv4:
	default:
		return fmt.Errorf("IP family %q: want %s or %s", c.IPFamily, IPFamilyDual, IPFamilyIPv4)
	}
	if c.FastPath && c.Flows {
		return errors.New("--fast-path and --flows exclude each other: fast-pathed connections never enter conntrack, so flow export would miss them")
	}
	return nil
}

func (c ClusterOptions) encap() string {
	if c.Encapsulation == "" {
		return "VXLANCrossSubnet"
	}
	return c.Encapsulation
}

// clusterState is the cluster part of State.
type clusterState struct {
	Nodes      []labNode `json:"nodes"`
	Cgroups    []string  `json:"cgroups"`
	Sockets    []string  `json:"containerdSockets"`
	HostPaths  []string  `json:"createdHostPaths"`
	ProxyPort  int       `json:"apiProxyPort"`
	Kubeconfig string    `json:"kubeconfig"`
	K8sBinDir  string    `json:"k8sBinDir"`
}

// bringUpNode starts one node: cgroups, CNI binaries, containerd with the
// lab's images, strait-agent, kubelet and kube-proxy, all in the node's
// network namespace.
func (o *Options) bringUpNode(ctx context.Context, s *State, c ClusterOptions, n labNode, p nodePKI) error {
	d := o.nodeDirs(n)
	for _, dir := range []string{d.containerd, d.kubelet, d.cniBin, d.cniConf, d.state, d.podLogs} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	// Cgroups: kubelet needs its root in every v1 hierarchy.
	hier, err := cgroupControllers()
	if err != nil {
		return err
	}
	s.Cluster.Cgroups = append(s.Cluster.Cgroups, n.cgroupRoot(o.prefix()))
	s.Cluster.Sockets = append(s.Cluster.Sockets, d.containerdSock())
	if err := o.save(s); err != nil {
		return err
	}
	for _, h := range hier {
		if err := os.MkdirAll(filepath.Join(h, n.cgroupRoot(o.prefix())), 0o755); err != nil {
			return fmt.Errorf("create cgroup: %w", err)
		}
	}
	// The CNI install step a DaemonSet would do: Strait's plugin plus the
	// chained and loopback plugins into the node's CNI bin dir.
	for _, b := range []string{"strait", "portmap", "bandwidth", "loopback"} {
		if err := copyFile(filepath.Join(o.BinDir, "cni", b), filepath.Join(d.cniBin, b), 0o755); err != nil {
			return fmt.Errorf("install CNI plugin: %w", err)
		}
	}
	files := map[string]string{
		filepath.Join(d.containerd, "config.toml"): containerdConfig(d),
		filepath.Join(d.root, "kubelet.yaml"):      kubeletConfig(n, d, p.CA, p.KubeletCert, p.KubeletKey, o.prefix()),
		filepath.Join(d.root, "agent.yaml"):        agentConfig(n, d, p.AgentKubeconfig, c.encap(), c.dual()) + agentFlowsConfig(s.Flows.Collector, c.families(ServiceCIDRv4, ServiceCIDRv6)) + agentBGPConfig(c.Router) + agentFastPathConfig(c.FastPath, o.fastPathPinDir(n.Name)),
		filepath.Join(d.root, "resolv.conf"):       "",
	}
	if err := writeFiles(files); err != nil {
		return err
	}
	if err := o.recordDaemon(s, "containerd-"+n.Name, n.NS, []string{"containerd", "--config", filepath.Join(d.containerd, "config.toml")}, nil); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() error { _, err := os.Stat(d.containerdSock()); return err }); err != nil {
		return fmt.Errorf("containerd on %s did not start (see %s): %w", n.Name, o.logPath("containerd-"+n.Name), err)
	}
	for _, img := range c.Images {
		if err := images.Import(ctx, "ctr", d.containerdSock(), img); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	if err := o.recordDaemon(s, "strait-agent-"+n.Name, n.NS, []string{filepath.Join(o.BinDir, "strait-agent"), "--config", filepath.Join(d.root, "agent.yaml")}, nil); err != nil {
		return err
	}
	if err := o.recordDaemon(s, "kubelet-"+n.Name, n.NS, append([]string{filepath.Join(c.K8sBinDir, "kubelet"),
		"--config=" + filepath.Join(d.root, "kubelet.yaml"), "--kubeconfig=" + p.KubeletKubeconfig,
		"--root-dir=" + d.kubelet, "--cert-dir=" + filepath.Join(d.kubelet, "pki"),
		"--node-ip=" + joinCSV(c.families(n.IPv4, n.IPv6)...), "--hostname-override=" + n.Name, "--v=2"}, kubeletRouterArgs(c.Router, n)...), nil); err != nil {
		return err
	}
	return o.recordDaemon(s, "kube-proxy-"+n.Name, n.NS, []string{filepath.Join(c.K8sBinDir, "kube-proxy"),
		"--kubeconfig=" + p.ProxyKubeconfig, "--hostname-override=" + n.Name, "--proxy-mode=nftables",
		"--cluster-cidr=" + joinCSV(c.families(ClusterCIDRv4, ClusterCIDRv6)...), "--conntrack-max-per-core=0",
		"--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=" + n.IPv4 + ":10256", "--v=2"}, nil)
}

// nodePKI are the credential files one node's daemons use.
type nodePKI struct {
	CA, KubeletCert, KubeletKey, KubeletKubeconfig, ProxyKubeconfig, AgentKubeconfig string
}

// startAPIProxy serves the API server on 127.0.0.1 of the host through
// `strait-lab proxy`, and writes the host kubeconfig pointing at it.
func (o *Options) startAPIProxy(s *State, c ClusterOptions, target string) (int, error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return 0, err
	}
	s.Cluster.ProxyPort = port
	err = o.recordDaemon(s, "apiserver-proxy", "", []string{c.Self, "proxy", "--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--netns", o.ns("cp"), "--target", target}, nil)
	return port, err
}

func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitFor(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// kubectl runs the lab's kubectl against the host kubeconfig.
func (o *Options) kubectl(ctx context.Context, c ClusterOptions, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.K8sBinDir, "kubectl"), append([]string{"--kubeconfig", o.kubeconfigPath()}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// waitNodesReady waits until every lab node reports Ready.
func (o *Options) waitNodesReady(ctx context.Context, c ClusterOptions, nodes []labNode, timeout time.Duration) error {
	return waitFor(ctx, timeout, func() error {
		out, err := o.kubectl(ctx, c, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return err
		}
		ready := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if name, st, ok := strings.Cut(line, "="); ok && st == "True" {
				ready[name] = true
			}
		}
		var missing []string
		for _, n := range nodes {
			if !ready[n.Name] {
				missing = append(missing, n.Name)
			}
		}
		if len(missing) > 0 {
			return errors.New("nodes not Ready: " + strings.Join(missing, ", "))
		}
		return nil
	})
}

func lookPath(name string) (string, error) { return exec.LookPath(name) }
