package controlplane

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

// Command is one control-plane process to start.
type Command struct {
	// Name is the component.
	Name string
	// Argv is the full command line, Argv[0] the binary in BinDir.
	Argv []string
	// Env are extra KEY=VALUE variables on top of the caller's environment.
	Env []string
	// LogFile is where the caller should send stdout and stderr.
	LogFile string
	// ReadyURL answers 200 once the component serves (see WaitReady):
	// etcd's /readyz (plain http on BindIP), the apiserver's /readyz and
	// the controller-manager's and scheduler's /healthz over https.
	ReadyURL string
}

// Commands validates s and renders its components' command lines in start
// order (etcd, kube-apiserver, kube-controller-manager, kube-scheduler).
// Validation errors name the Spec field at fault.
func Commands(s Spec) ([]Command, error) {
	n, err := s.normalize()
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	var out []Command
	for _, c := range AllComponents() {
		if !n.components[c] {
			continue
		}
		var cmd Command
		switch c {
		case Etcd:
			cmd = n.etcd()
		case APIServer:
			cmd = n.apiserver()
		case ControllerManager:
			cmd = n.controllerManager()
		case Scheduler:
			cmd = n.scheduler()
		}
		cmd.Name = c
		cmd.Argv = append([]string{filepath.Join(n.BinDir, c)}, cmd.Argv...)
		cmd.LogFile = filepath.Join(n.LogDir, c+".log")
		out = append(out, cmd)
	}
	return out, nil
}

func opt(name string, value any) string { return fmt.Sprintf("--%s=%v", name, value) }

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// etcd is a single member listening on BindIP only, in plain http: it is
// reachable only from the control plane's own network namespace (the lab)
// or loopback (the integration tier).
func (n *normalized) etcd() Command {
	client := n.etcdURL
	peer := "http://" + hostPort(n.bind, n.EtcdPeerPort)
	argv := []string{
		opt("name", "default"),
		opt("data-dir", filepath.Join(n.DataDir, "etcd")),
		opt("listen-client-urls", client),
		opt("advertise-client-urls", client),
		opt("listen-peer-urls", peer),
		opt("initial-advertise-peer-urls", peer),
		opt("initial-cluster", "default="+peer),
		opt("initial-cluster-state", "new"),
	}
	if n.EtcdMetricsPort != 0 {
		argv = append(argv, opt("listen-metrics-urls", "http://"+hostPort(n.bind, n.EtcdMetricsPort)))
	}
	return Command{Argv: argv, ReadyURL: client + "/readyz"}
}

func (n *normalized) apiserver() Command {
	p := n.PKI
	argv := []string{
		opt("etcd-servers", n.etcdURL),
		opt("bind-address", n.bind),
		opt("advertise-address", n.advertise),
		opt("secure-port", n.APIServerPort),
		opt("tls-cert-file", p.APIServerCert),
		opt("tls-private-key-file", p.APIServerKey),
		opt("client-ca-file", p.CACert),
		opt("authorization-mode", "Node,RBAC"),
		opt("enable-admission-plugins", "NodeRestriction"),
		opt("allow-privileged", true),
		opt("service-cluster-ip-range", joinPrefixes(n.serviceCIDRs)),
		opt("service-account-issuer", ServiceAccountIssuer),
		opt("service-account-key-file", p.ServiceAccountPub),
		opt("service-account-signing-key-file", p.ServiceAccountKey),
		opt("kubelet-client-certificate", p.KubeletClientCert),
		opt("kubelet-client-key", p.KubeletClientKey),
		opt("kubelet-certificate-authority", p.CACert),
		// Node names do not resolve: dial kubelets (exec, logs) by IP.
		opt("kubelet-preferred-address-types", "InternalIP"),
	}
	if n.advertise.IsLoopback() {
		// The kubernetes Service cannot point at loopback.
		argv = append(argv, opt("endpoint-reconciler-type", "none"))
	}
	return Command{Argv: argv, ReadyURL: n.apiURL + "/readyz"}
}

func (n *normalized) controllerManager() Command {
	p := n.PKI
	argv := []string{
		opt("kubeconfig", p.ControllerManagerKubeconfig),
		opt("authentication-kubeconfig", p.ControllerManagerKubeconfig),
		opt("authorization-kubeconfig", p.ControllerManagerKubeconfig),
		opt("bind-address", n.bind),
		opt("secure-port", n.kcmPort),
		opt("tls-cert-file", p.ControllerManagerCert),
		opt("tls-private-key-file", p.ControllerManagerKey),
		opt("leader-elect", false),
		opt("use-service-account-credentials", true),
		opt("service-account-private-key-file", p.ServiceAccountKey),
		opt("root-ca-file", p.CACert),
		opt("cluster-signing-cert-file", p.CACert),
		opt("cluster-signing-key-file", p.CAKey),
		opt("service-cluster-ip-range", joinPrefixes(n.serviceCIDRs)),
		// No cloud: nothing to sync nodes, load balancers or routes with
		// (Strait programs pod routes; tests set LoadBalancer status).
		opt("controllers", "*,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller"),
		opt("allocate-node-cidrs", n.AllocateNodeCIDRs),
	}
	if len(n.clusterCIDRs) > 0 {
		argv = append(argv, opt("cluster-cidr", joinPrefixes(n.clusterCIDRs)))
	}
	if n.AllocateNodeCIDRs {
		if len(n.clusterCIDRs) == 1 {
			// The per-family flags are rejected on single-stack clusters.
			argv = append(argv, opt("node-cidr-mask-size", n.maskFor(n.clusterCIDRs[0])))
		} else {
			argv = append(argv,
				opt("node-cidr-mask-size-ipv4", n.nodeMaskV4),
				opt("node-cidr-mask-size-ipv6", n.nodeMaskV6))
		}
	}
	return Command{Argv: argv, ReadyURL: "https://" + hostPort(n.bind, n.kcmPort) + "/healthz"}
}

func (n *normalized) scheduler() Command {
	p := n.PKI
	argv := []string{
		opt("kubeconfig", p.SchedulerKubeconfig),
		opt("authentication-kubeconfig", p.SchedulerKubeconfig),
		opt("authorization-kubeconfig", p.SchedulerKubeconfig),
		opt("bind-address", n.bind),
		opt("secure-port", n.schedPort),
		opt("tls-cert-file", p.SchedulerCert),
		opt("tls-private-key-file", p.SchedulerKey),
		opt("leader-elect", false),
	}
	return Command{Argv: argv, ReadyURL: "https://" + hostPort(n.bind, n.schedPort) + "/healthz"}
}
