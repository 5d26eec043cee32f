package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/strait-net/strait/internal/lab/controlplane"
	"github.com/strait-net/strait/internal/lab/k8sbin"
	"github.com/strait-net/strait/internal/lab/pki"
)

// UpCluster brings up the Kubernetes lab: the router and segment bridges,
// the control plane in its namespace, an API proxy on the host's loopback,
// and c.Nodes nodes (containerd, strait-agent, kubelet, kube-proxy each).
// On failure or Ctrl-C it removes everything it made.
func UpCluster(ctx context.Context, o Options, c ClusterOptions) (err error) {
	start := time.Now()
	if c.Nodes <= 0 {
		c.Nodes = 3
	}
	if c.Nodes > 40 {
		return fmt.Errorf("--nodes %d: at most 40", c.Nodes)
	}
	if err := checkTools(); err != nil {
		return err
	}
	if err := checkRouter(c.Router); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	if err := o.begin(ctx); err != nil {
		return err
	}
	s := &State{}
	s.Cluster.HostPaths = missingHostPaths()
	if err := o.save(s); err != nil {
		return err
	}
	defer func() { err = o.cleanupOnError(ctx, err) }()
	step := func(name string, f func() error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		t := time.Now()
		o.logf("  %s ...", name)
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		o.logf("  %s: done in %.1f s", name, time.Since(t).Seconds())
		return nil
	}
	nodes := o.nodes(c.Nodes)
	if !c.dual() {
		for i := range nodes {
			nodes[i].PodV6 = "" // the links keep IPv6; pods get none
		}
	}
	s.Cluster.Nodes = nodes
	o.logf("strait-lab: bringing up %d nodes in %s", c.Nodes, o.Dir)

	if c.K8sBinDir == "" {
		if err := step("Kubernetes "+k8sbin.Version+" binaries", func() error {
			var err error
			c.K8sBinDir, err = k8sbin.Ensure(ctx, k8sbin.Options{RepoRoot: o.RepoRoot, Out: o.Out})
			return err
		}); err != nil {
			return err
		}
	}
	s.Cluster.K8sBinDir = c.K8sBinDir
	// kubectl of the same version beside strait-lab, for the user's shell.
	if link := filepath.Join(o.BinDir, "kubectl"); o.BinDir != "" {
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join(c.K8sBinDir, "kubectl"), link); err != nil {
			o.logf("  (could not link kubectl into %s: %v)", o.BinDir, err)
		}
	}
	if len(c.Images) == 0 {
		if err := step("container images", func() error {
			var err error
			c.Images, err = o.buildImages(ctx, c.K8sBinDir)
			return err
		}); err != nil {
			return err
		}
	}
	cp4, cp6 := segCP.host(10)
	apiURL := "https://" + net.JoinHostPort(cp4.String(), fmt.Sprint(apiPort))
	var cl *pki.Cluster
	if err := step("certificates", func() error {
		spec := pki.ClusterSpec{
			APIServerURL: apiURL,
			APIServerIPs: []net.IP{net.ParseIP(cp4.String()), net.ParseIP(cp6.String()), net.ParseIP("127.0.0.1"), net.ParseIP(FirstService)},
			DNSNames:     pki.DefaultAPIServerDNSNames(),
		}
		for _, n := range nodes {
			spec.Nodes = append(spec.Nodes, pki.NodeSpec{Name: n.Name, IPs: []net.IP{net.ParseIP(n.IPv4), net.ParseIP(n.IPv6)}})
		}
		var err error
		cl, err = pki.GenerateCluster(filepath.Join(o.Dir, "pki"), spec)
		return err
	}); err != nil {
		return err
	}
	if err := step("namespaces and links", func() error { return o.buildTopology(s, nodes) }); err != nil {
		return err
	}
	if err := step("control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)", func() error {
		return o.startControlPlane(ctx, s, c, cl, cp4.String())
	}); err != nil {
		return err
	}
	if err := step("API proxy on the host's loopback", func() error {
		port, err := o.startAPIProxy(s, c, net.JoinHostPort(cp4.String(), fmt.Sprint(apiPort)))
		if err != nil {
			return err
		}
		caPEM, certPEM, keyPEM, err := cl.AdminCredentials()
		if err != nil {
			return err
		}
		kc := pki.Kubeconfig(fmt.Sprintf("https://127.0.0.1:%d", port), caPEM, certPEM, keyPEM, pki.AdminUser, "strait-lab")
		if err := os.WriteFile(o.kubeconfigPath(), kc, 0o600); err != nil {
			return err
		}
		s.Cluster.Kubeconfig = o.kubeconfigPath()
		if err := o.save(s); err != nil {
			return err
		}
		return waitFor(ctx, 30*time.Second, func() error { _, err := o.kubectl(ctx, c, "get", "--raw", "/readyz"); return err })
	}); err != nil {
		return err
	}
	if c.Flows {
		if err := step("flow aggregator (aggregate mode)", func() error { return o.startAggregator(ctx, s, c, cp4.String()) }); err != nil {
			return err
		}
	}
	if err := step("Strait CRDs and the strait-system namespace", func() error {
		_, err := o.kubectl(ctx, c, "apply", "--server-side", "-f", filepath.Join(o.RepoRoot, "deploy", "crds"))
		if err != nil {
			return err
		}
		// strait-system holds the agents' leader-election Leases (the
		// LoadBalancer allocator, the block releaser) as in deploy/strait.yaml.
		ns := filepath.Join(o.Dir, "strait-system.yaml")
		if err := writeFiles(map[string]string{ns: systemNamespace}); err != nil {
			return err
		}
		if _, err := o.kubectl(ctx, c, "apply", "-f", ns); err != nil {
			return err
		}
		_, err = o.kubectl(ctx, c, "wait", "--for=condition=Established", "crd/ippools.strait.dev", "crd/ipamblocks.strait.dev", "--timeout=30s")
		return err
	}); err != nil {
		return err
	}
	if c.Router != "" {
		if err := step("BGP router ("+c.Router+", AS "+strconv.Itoa(RouterASN)+") and the BGP objects", func() error {
			if err := o.startRouter(ctx, s, c.Router); err != nil {
				return err
			}
			return o.applyRouterObjects(ctx, c)
		}); err != nil {
			return err
		}
	}
	if c.FastPath {
		if err := step("bpffs for the agents' eBPF fast path ("+o.bpffsDir()+")", o.mountBPFFS); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		nf, ok := cl.Node(n.Name)
		if !ok {
			return fmt.Errorf("no credentials for node %s", n.Name)
		}
		p := nodePKI{CA: cl.CACert, KubeletCert: nf.KubeletCert, KubeletKey: nf.KubeletKey,
			KubeletKubeconfig: nf.KubeletKubeconfig, ProxyKubeconfig: nf.KubeProxyKubeconfig, AgentKubeconfig: nf.AgentKubeconfig}
		if err := step("node "+n.Name+" ("+n.IPv4+", subnet "+n.Subnet+")", func() error {
			return o.bringUpNode(ctx, s, c, n, p)
		}); err != nil {
			return err
		}
	}
	if err := step("nodes Ready", func() error { return o.waitNodesReady(ctx, c, nodes, 120*time.Second) }); err != nil {
		return err
	}
	if c.Router != "" {
		if err := step("BGP sessions from every node to the router", func() error {
			return o.waitRouterSessions(ctx, s.Router, nodes, 60*time.Second)
		}); err != nil {
			return err
		}
	}
	if err := step("default ServiceAccount", func() error {
		return waitFor(ctx, 60*time.Second, func() error {
			_, err := o.kubectl(ctx, c, "get", "serviceaccount", "default", "-n", "default")
			return err
		})
	}); err != nil {
		return err
	}
	s.Complete = true
	if err := o.save(s); err != nil {
		return err
	}
	out, _ := o.kubectl(ctx, c, "get", "nodes", "-o", "wide")
	o.logf("\n%s\nThe lab is up in %.0f s.\n  export KUBECONFIG=%s\n  kubectl run web --image=%s -- sleep 3600\n  strait-lab status | exec n1 -- ip route | logs kubelet n1 | e2e | down",
		strings.TrimSpace(out), time.Since(start).Seconds(), o.kubeconfigPath(), ToolsImage)
	if c.Router != "" {
		o.logf("  strait-lab exec router -- ip route    (routes the %s router learned; `strait-lab status` lists its sessions)", c.Router)
	}
	if c.Flows {
		o.logf("  straitctl flows --aggregator http://127.0.0.1:%d    (IPFIX/UDP to %s; log %s)", s.Flows.APIPort, s.Flows.Downstream, s.Flows.Log)
	}
	return nil
}

func (o *Options) startControlPlane(ctx context.Context, s *State, c ClusterOptions, cl *pki.Cluster, ip string) error {
	spec := controlplane.Spec{
		BinDir: c.K8sBinDir, DataDir: filepath.Join(o.Dir, "cp"), LogDir: filepath.Join(o.Dir, "logs"), PKI: cl,
		BindIP: ip, AdvertiseIP: ip, EtcdClientPort: 2379, EtcdPeerPort: 2380, APIServerPort: apiPort,
		ServiceCIDRs: c.families(ServiceCIDRv4, ServiceCIDRv6), ClusterCIDRs: c.families(ClusterCIDRv4, ClusterCIDRv6),
		AllocateNodeCIDRs: true, NodeCIDRMaskV4: 24, NodeCIDRMaskV6: 64,
		Components: []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"},
	}
	cmds, err := controlplane.Commands(spec)
	if err != nil {
		return err
	}
	caPEM, certPEM, keyPEM, err := cl.AdminCredentials()
	if err != nil {
		return err
	}
	for _, cmd := range cmds {
		if err := o.recordDaemon(s, cmd.Name, o.ns("cp"), cmd.Argv, cmd.Env); err != nil {
			return err
		}
		if err := waitReadyIn(ctx, o.ns("cp"), cmd, caPEM, certPEM, keyPEM); err != nil {
			return fmt.Errorf("%s not ready (see %s): %w", cmd.Name, o.logPath(cmd.Name), err)
		}
	}
	return nil
}

// waitReadyIn polls a control-plane component's health endpoint, dialling
// from inside the control-plane namespace (every connection is opened on a
// thread in that namespace; the socket keeps it).
func waitReadyIn(ctx context.Context, nsName string, cmd controlplane.Command, caPEM, certPEM, keyPEM []byte) error {
	if cmd.ReadyURL == "" {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("admin credentials: %w", err)
	}
	tlsConf := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}
	if cmd.Name != "kube-apiserver" {
		// kube-controller-manager and kube-scheduler serve self-signed
		// certificates; only their liveness is checked here.
		tlsConf.InsecureSkipVerify = true
	}
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlsConf,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := inNS(nsName, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	defer client.CloseIdleConnections()
	return waitFor(ctx, 60*time.Second, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cmd.ReadyURL, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d: %s", cmd.ReadyURL, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return nil
	})
}

// checkTools fails early, naming what to install.
func checkTools() error {
	var missing []string
	for _, t := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "nft"} {
		if _, err := lookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run `make deps` (hack/install-deps.sh)", strings.Join(missing, ", "))
	}
	return nil
}

// begin prepares the lab folder for an up: it refuses a lab that is up and
// clears the leftovers of an up that crashed or was killed.
func (o *Options) begin(ctx context.Context) error {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return fmt.Errorf("create lab dir: %w", err)
	}
	prev, err := o.load()
	if err != nil {
		return err
	}
	if err := refuseRunningLab(prev); err != nil {
		return err
	}
	if err := Down(ctx, Options{Dir: o.Dir, Prefix: o.Prefix}); err != nil {
		return fmt.Errorf("clean up a previous lab: %w", err)
	}
	return nil
}

// cleanupOnError takes down what a failed or interrupted up made.
func (o *Options) cleanupOnError(ctx context.Context, err error) error {
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		o.logf("strait-lab: up failed: %v\nstrait-lab: cleaning up (logs stay in %s)", err, filepath.Join(o.Dir, "logs"))
		if derr := Down(context.Background(), *o); derr != nil {
			o.logf("cleanup: %v", derr)
		}
	}
	return err
}

// refuseRunningLab fails when a completed lab still runs; the daemons of an
// up that never completed are cleared by the caller's Down instead.
func refuseRunningLab(prev *State) error {
	if !prev.Complete {
		return nil
	}
	for _, p := range prev.Processes {
		if alive(p) {
			return fmt.Errorf("the lab is already up (%s pid %d); run `strait-lab down` first", p.Name, p.PID)
		}
	}
	return nil
}
