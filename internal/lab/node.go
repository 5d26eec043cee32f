package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/strait-net/strait/internal/lab/images"
)

// nodeDirs are one node's folders under the lab dir.
type nodeDirs struct {
	root, containerd, kubelet, cniBin, cniConf, state, podLogs string
}

func (o *Options) nodeDirs(n labNode) nodeDirs {
	root := filepath.Join(o.Dir, "nodes", n.Name)
	return nodeDirs{
		root:       root,
		containerd: filepath.Join(root, "containerd"),
		kubelet:    filepath.Join(root, "kubelet"),
		cniBin:     filepath.Join(root, "cni", "bin"),
		cniConf:    filepath.Join(root, "cni", "net.d"),
		state:      filepath.Join(root, "strait"),
		podLogs:    filepath.Join(root, "pod-logs"),
	}
}

func (d nodeDirs) containerdSock() string { return filepath.Join(d.containerd, "c.sock") }

// cgroupRoot is the node's own cgroup parent: every kubelet needs its own.
func (n labNode) cgroupRoot(prefix string) string { return "/" + prefix + n.Name }

// pauseImage is the sandbox image every node imports (no registry here).
const pauseImage = images.PauseImage

// containerdConfig renders containerd 1.6's config (version 2): every path
// under the node's folder, the CRI stream server on loopback, pod network
// namespaces under the state dir, Strait's CNI folders.
func containerdConfig(d nodeDirs) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[6]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
    max_conf_num = 1
`, filepath.Join(d.containerd, "root"), filepath.Join(d.containerd, "state"), d.containerdSock(), d.containerdSock()+".ttrpc",
		pauseImage, filepath.Join(d.containerd, "runc"), d.cniBin, d.cniConf)
}

// kubeletConfig renders the KubeletConfiguration for one node.
func kubeletConfig(n labNode, d nodeDirs, caFile, certFile, keyFile, prefix string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
cgroupRoot: %[2]s
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[3]s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[4]s}
authorization: {mode: AlwaysAllow}
tlsCertFile: %[5]s
tlsPrivateKeyFile: %[6]s
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
enforceNodeAllocatable: []
podLogsDir: %[7]s
resolvConf: %[8]s
clusterDomain: cluster.local
serializeImagePulls: false
localStorageCapacityIsolation: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
`, n.IPv4, n.cgroupRoot(prefix), d.containerdSock(), caFile, certFile, keyFile, d.podLogs, filepath.Join(d.root, "resolv.conf"))
}

// agentConfig renders strait-agent's configuration for one node: blocks
// from the cluster's IPPools (the first agent creates the default pair, or
// only the IPv4 pool when the cluster is not dual-stack).
func agentConfig(n labNode, d nodeDirs, kubeconfig, encap string, dual bool) string {
	v6Pool := ""
	if dual {
		v6Pool = fmt.Sprintf("- {name: default-ipv6, cidr: %s, blockSize: 122, encapsulation: %s}\n", ClusterCIDRv6, encap)
	}
	return fmt.Sprintf(`nodeName: %s
ipamMode: blocks
kubeconfig: %s
socketPath: %s
stateDir: %s
resyncPeriod: 5s
defaultIPPools:
- {name: default-ipv4, cidr: %s, blockSize: 26, encapsulation: %s}
%scni:
  confDir: %s
  cniVersion: "1.0.0"
  logFile: %s
`, n.Name, kubeconfig, filepath.Join(d.state, "cni.sock"), d.state, ClusterCIDRv4, encap, v6Pool,
		d.cniConf, filepath.Join(d.root, "cni.log"))
}

// cgroupControllers lists the mounted cgroup v1 hierarchies (including
// name=systemd): kubelet needs its cgroup root in every one of them.
func cgroupControllers() ([]string, error) {
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, fmt.Errorf("list cgroup hierarchies: %w", err)
	}
	var out []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() { // skip the cpu,cpuacct style symlinks
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

func writeFiles(files map[string]string) error {
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

func joinCSV(xs ...string) string { return strings.Join(xs, ",") }
