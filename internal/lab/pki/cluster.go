package pki

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Identities of the cluster's clients. Kubernetes maps a client
// certificate's CN to the user name and its Os to the groups.
const (
	AdminUser             = "strait-admin"
	ControllerManagerUser = "system:kube-controller-manager"
	SchedulerUser         = "system:kube-scheduler"
	KubeProxyUser         = "system:kube-proxy"
	APIServerKubeletUser  = "kube-apiserver-kubelet-client"
	NodeUserPrefix        = "system:node:"
	NodesGroup            = "system:nodes"
	MastersGroup          = "system:masters"
	// AgentUserPrefix + node name is the strait agent's user on that node and
	// AgentGroup its group, for RBAC to bind. For now agents are also in
	// system:masters (cluster-admin); least-privilege RBAC is to come.
	AgentUserPrefix = "strait-agent:"
	AgentGroup      = "strait:agents"
)

// DefaultClusterName names the cluster in the kubeconfigs.
const DefaultClusterName = "strait"

// DefaultAPIServerDNSNames are the apiserver's DNS SANs when
// ClusterSpec.DNSNames is empty: the in-cluster names of the kubernetes
// Service, and localhost.
func DefaultAPIServerDNSNames() []string {
	return []string{
		"kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local", "localhost",
	}
}

// ClusterSpec describes the cluster GenerateCluster issues credentials for.
type ClusterSpec struct {
	// APIServerURL is the server every kubeconfig points at, e.g.
	// https://10.100.0.10:6443. Required.
	APIServerURL string
	// APIServerIPs are the apiserver certificate's IP SANs: the addresses
	// clients dial (127.0.0.1, the advertise address) and the first IP of
	// each Service CIDR (10.96.0.1), which pods use. Required.
	APIServerIPs []net.IP
	// DNSNames are the apiserver certificate's DNS SANs;
	// DefaultAPIServerDNSNames when empty.
	DNSNames []string
	// ClusterName names the cluster in the kubeconfigs; DefaultClusterName when empty.
	ClusterName string
	// Nodes get kubelet, kube-proxy and strait-agent credentials each.
	Nodes []NodeSpec
}

// NodeSpec is one node.
type NodeSpec struct {
	// Name is the Kubernetes node name (kubelet --hostname-override).
	Name string
	// IPs are the node's addresses (kubelet --node-ip): the IP SANs of its
	// serving certificate, which the apiserver verifies when it dials it.
	IPs []net.IP
}

// Cluster is where GenerateCluster wrote every file; all paths are absolute
// when Dir is.
type Cluster struct {
	Dir          string
	APIServerURL string
	CACert       string // ca.crt
	CAKey        string // ca.key
	// APIServerCert/Key is kube-apiserver's serving certificate.
	APIServerCert string
	APIServerKey  string
	// KubeletClientCert/Key is what kube-apiserver presents to kubelets
	// (--kubelet-client-certificate); in system:masters.
	KubeletClientCert string
	KubeletClientKey  string
	// ServiceAccountKey (RSA private) signs service-account tokens;
	// ServiceAccountPub verifies them.
	ServiceAccountKey string
	ServiceAccountPub string
	// AdminCert/Key/Kubeconfig are a cluster-admin (system:masters) client.
	AdminCert                   string
	AdminKey                    string
	AdminKubeconfig             string
	ControllerManagerKubeconfig string
	SchedulerKubeconfig         string
	// ControllerManagerCert/Key and SchedulerCert/Key are the serving
	// certificates of their secure ports (--tls-cert-file), with the
	// apiserver's SANs, so that health checks verify them against the CA.
	ControllerManagerCert string
	ControllerManagerKey  string
	SchedulerCert         string
	SchedulerKey          string
	Nodes                 []NodeFiles
}

// NodeFiles are one node's credentials, in Dir/nodes/<name>/.
type NodeFiles struct {
	Name string
	Dir  string
	// KubeletKubeconfig authenticates as system:node:<name> (group system:nodes).
	KubeletKubeconfig string
	// KubeletCert/Key is the kubelet's serving certificate
	// (--tls-cert-file/--tls-private-key-file), SANs = node IPs and name.
	KubeletCert string
	KubeletKey  string
	// KubeProxyKubeconfig authenticates as system:kube-proxy.
	KubeProxyKubeconfig string
	// AgentKubeconfig authenticates as AgentUserPrefix+<name> (groups
	// AgentGroup and, for now, system:masters).
	AgentKubeconfig string
}

// Node returns the files of the named node.
func (c *Cluster) Node(name string) (NodeFiles, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeFiles{}, false
}

// Layout returns the paths GenerateCluster(dir, spec) writes, without
// writing anything.
func Layout(dir string, spec ClusterSpec) *Cluster {
	p := func(name string) string { return filepath.Join(dir, name) }
	c := &Cluster{
		Dir:                         dir,
		APIServerURL:                spec.APIServerURL,
		CACert:                      p("ca.crt"),
		CAKey:                       p("ca.key"),
		APIServerCert:               p("apiserver.crt"),
		APIServerKey:                p("apiserver.key"),
		KubeletClientCert:           p("apiserver-kubelet-client.crt"),
		KubeletClientKey:            p("apiserver-kubelet-client.key"),
		ServiceAccountKey:           p("sa.key"),
		ServiceAccountPub:           p("sa.pub"),
		AdminCert:                   p("admin.crt"),
		AdminKey:                    p("admin.key"),
		AdminKubeconfig:             p("admin.kubeconfig"),
		ControllerManagerKubeconfig: p("controller-manager.kubeconfig"),
		SchedulerKubeconfig:         p("scheduler.kubeconfig"),
		ControllerManagerCert:       p("controller-manager.crt"),
		ControllerManagerKey:        p("controller-manager.key"),
		SchedulerCert:               p("scheduler.crt"),
		SchedulerKey:                p("scheduler.key"),
	}
	for _, n := range spec.Nodes {
		nd := filepath.Join(dir, "nodes", n.Name)
		c.Nodes = append(c.Nodes, NodeFiles{
			Name:                n.Name,
			Dir:                 nd,
			KubeletKubeconfig:   filepath.Join(nd, "kubelet.kubeconfig"),
			KubeletCert:         filepath.Join(nd, "kubelet.crt"),
			KubeletKey:          filepath.Join(nd, "kubelet.key"),
			KubeProxyKubeconfig: filepath.Join(nd, "kube-proxy.kubeconfig"),
			AgentKubeconfig:     filepath.Join(nd, "strait-agent.kubeconfig"),
		})
	}
	return c
}

func (s *ClusterSpec) validate() error {
	u, err := url.Parse(s.APIServerURL)
	if err != nil {
		return fmt.Errorf("ClusterSpec.APIServerURL: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("ClusterSpec.APIServerURL %q: want https://HOST:PORT", s.APIServerURL)
	}
	if len(s.APIServerIPs) == 0 {
		return errors.New("ClusterSpec.APIServerIPs: empty (want at least the address clients dial and the first Service IP)")
	}
	seen := map[string]bool{}
	for i, n := range s.Nodes {
		if n.Name == "" || strings.ContainsAny(n.Name, "/\\ \t\n") || n.Name == "." || n.Name == ".." {
			return fmt.Errorf("ClusterSpec.Nodes[%d].Name %q: not a node name", i, n.Name)
		}
		if seen[n.Name] {
			return fmt.Errorf("ClusterSpec.Nodes[%d].Name %q: duplicate", i, n.Name)
		}
		seen[n.Name] = true
		if len(n.IPs) == 0 {
			return fmt.Errorf("ClusterSpec.Nodes[%d].IPs: empty (the apiserver dials the node's InternalIP and verifies it)", i)
		}
	}
	return nil
}

// GenerateCluster writes the cluster's CA, serving and client certificates,
// service-account key pair and kubeconfigs into dir (see Cluster and
// NodeFiles for the files). It is idempotent: an existing CA (ca.crt and
// ca.key) and service-account key (sa.key) are reused, so credentials issued
// earlier stay valid; every leaf certificate and kubeconfig is issued anew.
func GenerateCluster(dir string, spec ClusterSpec) (*Cluster, error) {
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("generate cluster PKI: %w", err)
	}
	if spec.ClusterName == "" {
		spec.ClusterName = DefaultClusterName
	}
	if len(spec.DNSNames) == 0 {
		spec.DNSNames = DefaultAPIServerDNSNames()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("generate cluster PKI: %w", err)
	}
	c := Layout(dir, spec)
	ca, err := loadOrCreateCA(c.CACert, c.CAKey)
	if err != nil {
		return nil, fmt.Errorf("generate cluster PKI in %s: %w", dir, err)
	}
	if err := ensureServiceAccountKey(c.ServiceAccountKey, c.ServiceAccountPub); err != nil {
		return nil, fmt.Errorf("generate cluster PKI in %s: %w", dir, err)
	}
	w := &writer{ca: ca, server: spec.APIServerURL, cluster: spec.ClusterName}
	w.pair(c.APIServerCert, c.APIServerKey, Spec{
		CN: "kube-apiserver", DNS: spec.DNSNames, IPs: spec.APIServerIPs, Server: true,
	})
	w.pair(c.KubeletClientCert, c.KubeletClientKey, Spec{
		CN: APIServerKubeletUser, Orgs: []string{MastersGroup}, Client: true,
	})
	w.pairAndKubeconfig(c.AdminCert, c.AdminKey, c.AdminKubeconfig, Spec{
		CN: AdminUser, Orgs: []string{MastersGroup}, Client: true,
	})
	w.kubeconfig(c.ControllerManagerKubeconfig, Spec{CN: ControllerManagerUser, Client: true})
	w.kubeconfig(c.SchedulerKubeconfig, Spec{CN: SchedulerUser, Client: true})
	w.pair(c.ControllerManagerCert, c.ControllerManagerKey, Spec{
		CN: "kube-controller-manager", DNS: spec.DNSNames, IPs: spec.APIServerIPs, Server: true,
	})
	w.pair(c.SchedulerCert, c.SchedulerKey, Spec{
		CN: "kube-scheduler", DNS: spec.DNSNames, IPs: spec.APIServerIPs, Server: true,
	})
	for i, n := range spec.Nodes {
		f := c.Nodes[i]
		w.kubeconfig(f.KubeletKubeconfig, Spec{
			CN: NodeUserPrefix + n.Name, Orgs: []string{NodesGroup}, Client: true,
		})
		w.pair(f.KubeletCert, f.KubeletKey, Spec{
			CN: NodeUserPrefix + n.Name, Orgs: []string{NodesGroup},
			DNS: []string{n.Name}, IPs: n.IPs, Server: true,
		})
		w.kubeconfig(f.KubeProxyKubeconfig, Spec{CN: KubeProxyUser, Client: true})
		w.kubeconfig(f.AgentKubeconfig, Spec{
			CN: AgentUserPrefix + n.Name, Orgs: []string{AgentGroup, MastersGroup}, Client: true,
		})
	}
	if w.err != nil {
		return nil, fmt.Errorf("generate cluster PKI in %s: %w", dir, w.err)
	}
	return c, nil
}

// AdminCredentials reads the CA certificate and the admin client
// certificate and key, e.g. for controlplane.WaitReady.
func (c *Cluster) AdminCredentials() (caPEM, certPEM, keyPEM []byte, err error) {
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{c.CACert, &caPEM}, {c.AdminCert, &certPEM}, {c.AdminKey, &keyPEM}} {
		if *f.dst, err = os.ReadFile(f.path); err != nil {
			return nil, nil, nil, fmt.Errorf("read admin credentials: %w", err)
		}
	}
	return caPEM, certPEM, keyPEM, nil
}

func loadOrCreateCA(certFile, keyFile string) (*CA, error) {
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	switch {
	case certErr == nil && keyErr == nil:
		return LoadCA(certFile, keyFile)
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		ca, err := NewCA("strait-ca")
		if err != nil {
			return nil, err
		}
		// Key first: a crash in between leaves a key without a certificate,
		// which the next run reports instead of silently replacing the CA.
		if err := writeFile(keyFile, ca.KeyPEM, 0o600); err != nil {
			return nil, fmt.Errorf("write CA: %w", err)
		}
		if err := writeFile(certFile, ca.CertPEM, 0o644); err != nil {
			return nil, fmt.Errorf("write CA: %w", err)
		}
		return ca, nil
	default:
		return nil, fmt.Errorf("CA: need both %s and %s or neither (cert: %v, key: %v); remove the leftover to start over",
			certFile, keyFile, certErr, keyErr)
	}
}

func ensureServiceAccountKey(keyFile, pubFile string) error {
	keyPEM, err := os.ReadFile(keyFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		keyPEM, pubPEM, err := newServiceAccountKey()
		if err != nil {
			return err
		}
		if err := writeFile(keyFile, keyPEM, 0o600); err != nil {
			return fmt.Errorf("service-account key: %w", err)
		}
		if err := writeFile(pubFile, pubPEM, 0o644); err != nil {
			return fmt.Errorf("service-account key: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("service-account key: %w", err)
	}
	// Reuse it; rewrite the public key from it so the two always match.
	key, err := ParseKey(keyPEM)
	if err != nil {
		return fmt.Errorf("service-account key %s: %w", keyFile, err)
	}
	pub, err := encodePublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("service-account key %s: %w", keyFile, err)
	}
	if err := writeFile(pubFile, pub, 0o644); err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}
	return nil
}

// writer issues certificates and kubeconfigs, keeping the first error.
type writer struct {
	ca      *CA
	server  string
	cluster string
	err     error
}

func (w *writer) issue(s Spec) (certPEM, keyPEM []byte) {
	if w.err != nil {
		return nil, nil
	}
	certPEM, keyPEM, w.err = w.ca.Issue(s)
	return certPEM, keyPEM
}

func (w *writer) write(path string, data []byte, perm os.FileMode) {
	if w.err == nil {
		w.err = writeFile(path, data, perm)
	}
}

func (w *writer) pair(certFile, keyFile string, s Spec) {
	certPEM, keyPEM := w.issue(s)
	w.write(keyFile, keyPEM, 0o600)
	w.write(certFile, certPEM, 0o644)
}

func (w *writer) pairAndKubeconfig(certFile, keyFile, kubeconfig string, s Spec) {
	certPEM, keyPEM := w.issue(s)
	w.write(keyFile, keyPEM, 0o600)
	w.write(certFile, certPEM, 0o644)
	w.write(kubeconfig, Kubeconfig(w.server, w.ca.CertPEM, certPEM, keyPEM, s.CN, w.cluster), 0o600)
}

func (w *writer) kubeconfig(path string, s Spec) {
	certPEM, keyPEM := w.issue(s)
	w.write(path, Kubeconfig(w.server, w.ca.CertPEM, certPEM, keyPEM, s.CN, w.cluster), 0o600)
}
