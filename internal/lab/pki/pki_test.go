package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func testSpec() ClusterSpec {
	return ClusterSpec{
		APIServerURL: "https://10.100.0.10:6443",
		APIServerIPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.100.0.10"), net.ParseIP("10.96.0.1"), net.ParseIP("fd42:96::1")},
		Nodes: []NodeSpec{
			{Name: "node-1", IPs: []net.IP{net.ParseIP("10.100.1.11"), net.ParseIP("fd42:100:1::11")}},
			{Name: "node-2", IPs: []net.IP{net.ParseIP("10.100.1.12")}},
		},
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// verify checks certFile against the CA for usage and returns it.
func verify(t *testing.T, ca *x509.Certificate, certPEM []byte, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	c, err := ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Fatalf("%s does not verify for usage %v: %v", c.Subject, usage, err)
	}
	if c.IsCA {
		t.Errorf("%s: leaf is a CA", c.Subject)
	}
	return c
}

func matchingKey(t *testing.T, c *x509.Certificate, keyPEM []byte) {
	t.Helper()
	k, err := ParseKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !publicKeysEqual(c.PublicKey, k.Public()) {
		t.Errorf("%s: key does not match the certificate", c.Subject)
	}
}

func TestIssue(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(Spec{CN: "srv", DNS: []string{"a.example"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := verify(t, ca.Cert, certPEM, x509.ExtKeyUsageServerAuth)
	matchingKey(t, c, keyPEM)
	if err := c.VerifyHostname("a.example"); err != nil {
		t.Error(err)
	}
	if err := c.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Error("server-only certificate has client usage")
	}
	if d := c.NotAfter.Sub(time.Now()); d > time.Hour || d < 50*time.Minute {
		t.Errorf("validity: expires in %v, want ~1h", d)
	}
	if _, _, err := ca.Issue(Spec{CN: "x"}); err == nil {
		t.Error("no usage: want an error")
	}
	if _, _, err := ca.Issue(Spec{Client: true}); err == nil {
		t.Error("no CN: want an error")
	}
}

func TestWriteLoadCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := WriteCA(ca, cf, kf); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(kf); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", st.Mode(), err)
	}
	got, err := LoadCA(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(ca.Cert) {
		t.Error("loaded a different certificate")
	}
	certPEM, _, err := got.Issue(Spec{CN: "c", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	verify(t, ca.Cert, certPEM, x509.ExtKeyUsageClientAuth)

	other, err := NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kf, other.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(cf, kf); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: got %v", err)
	}
}

func TestKubeconfigParses(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(Spec{CN: "system:node:n1", Orgs: []string{NodesGroup}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	data := Kubeconfig("https://127.0.0.1:6443", ca.CertPEM, certPEM, keyPEM, "system:node:n1", `we"ird: name`)
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatalf("clientcmd.Load: %v\n%s", err, data)
	}
	if err := clientcmd.ConfirmUsable(*cfg, ""); err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || ctx.Cluster != `we"ird: name` || ctx.AuthInfo != "system:node:n1" {
		t.Fatalf("current context: %+v", ctx)
	}
	cl := cfg.Clusters[ctx.Cluster]
	if cl.Server != "https://127.0.0.1:6443" || !bytes.Equal(cl.CertificateAuthorityData, ca.CertPEM) {
		t.Errorf("cluster: %+v", cl)
	}
	u := cfg.AuthInfos[ctx.AuthInfo]
	if !bytes.Equal(u.ClientCertificateData, certPEM) || !bytes.Equal(u.ClientKeyData, keyPEM) {
		t.Error("user credentials not embedded as given")
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://127.0.0.1:6443" {
		t.Errorf("rest config host %q", rc.Host)
	}
}

// kubeconfigCert loads a kubeconfig, checks it points at the spec's server
// and verifies its client certificate.
func kubeconfigCert(t *testing.T, ca *x509.Certificate, path string) *x509.Certificate {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	if err := clientcmd.ConfirmUsable(*cfg, ""); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if s := cfg.Clusters[ctx.Cluster].Server; s != testSpec().APIServerURL {
		t.Errorf("%s: server %q", path, s)
	}
	u := cfg.AuthInfos[ctx.AuthInfo]
	c := verify(t, ca, u.ClientCertificateData, x509.ExtKeyUsageClientAuth)
	matchingKey(t, c, u.ClientKeyData)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v %v", path, st.Mode(), err)
	}
	return c
}

func wantSubject(t *testing.T, c *x509.Certificate, cn string, orgs ...string) {
	t.Helper()
	if c.Subject.CommonName != cn || !slices.Equal(c.Subject.Organization, orgs) {
		t.Errorf("subject %q %q, want %q %q", c.Subject.CommonName, c.Subject.Organization, cn, orgs)
	}
}

func TestGenerateCluster(t *testing.T) {
	dir := t.TempDir()
	spec := testSpec()
	c, err := GenerateCluster(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Layout(dir, spec)) {
		t.Error("GenerateCluster and Layout disagree")
	}
	ca, err := LoadCA(c.CACert, c.CAKey)
	if err != nil {
		t.Fatal(err)
	}

	for _, pair := range [][2]string{
		{c.APIServerCert, c.APIServerKey},
		{c.ControllerManagerCert, c.ControllerManagerKey},
		{c.SchedulerCert, c.SchedulerKey},
	} {
		srv := verify(t, ca.Cert, mustRead(t, pair[0]), x509.ExtKeyUsageServerAuth)
		matchingKey(t, srv, mustRead(t, pair[1]))
		for _, h := range append(DefaultAPIServerDNSNames(), "127.0.0.1", "10.96.0.1", "10.100.0.10", "fd42:96::1") {
			if err := srv.VerifyHostname(h); err != nil {
				t.Errorf("%s: %v", pair[0], err)
			}
		}
	}

	kc := verify(t, ca.Cert, mustRead(t, c.KubeletClientCert), x509.ExtKeyUsageClientAuth)
	matchingKey(t, kc, mustRead(t, c.KubeletClientKey))
	wantSubject(t, kc, APIServerKubeletUser, MastersGroup)

	wantSubject(t, kubeconfigCert(t, ca.Cert, c.AdminKubeconfig), AdminUser, MastersGroup)
	admin := verify(t, ca.Cert, mustRead(t, c.AdminCert), x509.ExtKeyUsageClientAuth)
	matchingKey(t, admin, mustRead(t, c.AdminKey))
	wantSubject(t, kubeconfigCert(t, ca.Cert, c.ControllerManagerKubeconfig), ControllerManagerUser)
	wantSubject(t, kubeconfigCert(t, ca.Cert, c.SchedulerKubeconfig), SchedulerUser)

	sa, err := ParseKey(mustRead(t, c.ServiceAccountKey))
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := sa.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
		t.Errorf("service-account key: %T", sa)
	}
	pubPEM, err := encodePublicKey(sa.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pubPEM, mustRead(t, c.ServiceAccountPub)) {
		t.Error("sa.pub does not match sa.key")
	}

	if len(c.Nodes) != 2 {
		t.Fatalf("nodes: %+v", c.Nodes)
	}
	for i, n := range spec.Nodes {
		f, ok := c.Node(n.Name)
		if !ok || f != c.Nodes[i] {
			t.Fatalf("Node(%q) = %+v %v", n.Name, f, ok)
		}
		wantSubject(t, kubeconfigCert(t, ca.Cert, f.KubeletKubeconfig), NodeUserPrefix+n.Name, NodesGroup)
		wantSubject(t, kubeconfigCert(t, ca.Cert, f.KubeProxyKubeconfig), KubeProxyUser)
		wantSubject(t, kubeconfigCert(t, ca.Cert, f.AgentKubeconfig), AgentUserPrefix+n.Name, AgentGroup, MastersGroup)
		srv := verify(t, ca.Cert, mustRead(t, f.KubeletCert), x509.ExtKeyUsageServerAuth)
		matchingKey(t, srv, mustRead(t, f.KubeletKey))
		wantSubject(t, srv, NodeUserPrefix+n.Name, NodesGroup)
		if _, ok := srv.PublicKey.(*ecdsa.PublicKey); !ok {
			t.Errorf("kubelet key: %T", srv.PublicKey)
		}
		for _, ip := range n.IPs {
			if err := srv.VerifyHostname(ip.String()); err != nil {
				t.Errorf("kubelet %s: %v", n.Name, err)
			}
		}
		if err := srv.VerifyHostname(n.Name); err != nil {
			t.Errorf("kubelet %s: %v", n.Name, err)
		}
		if err := srv.VerifyHostname("10.100.1.99"); err == nil {
			t.Errorf("kubelet %s: verifies for a foreign IP", n.Name)
		}
	}
}

func TestGenerateClusterIdempotent(t *testing.T) {
	dir := t.TempDir()
	c1, err := GenerateCluster(dir, testSpec())
	if err != nil {
		t.Fatal(err)
	}
	caPEM, saKey := mustRead(t, c1.CACert), mustRead(t, c1.ServiceAccountKey)
	oldAdmin := mustRead(t, c1.AdminCert)
	c2, err := GenerateCluster(dir, testSpec())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(caPEM, mustRead(t, c2.CACert)) || !bytes.Equal(saKey, mustRead(t, c2.ServiceAccountKey)) {
		t.Fatal("second run replaced the CA or the service-account key")
	}
	ca, err := LoadCA(c2.CACert, c2.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	// Credentials from the first run still verify.
	verify(t, ca.Cert, oldAdmin, x509.ExtKeyUsageClientAuth)
	verify(t, ca.Cert, mustRead(t, c2.AdminCert), x509.ExtKeyUsageClientAuth)

	// A CA certificate without its key is an error, not a silent new CA.
	if err := os.Remove(c2.CAKey); err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateCluster(dir, testSpec()); err == nil || !strings.Contains(err.Error(), "both") {
		t.Errorf("CA without key: got %v", err)
	}
}

func TestGenerateClusterValidation(t *testing.T) {
	for name, tc := range map[string]struct {
		mut  func(*ClusterSpec)
		want string
	}{
		"no url":       {func(s *ClusterSpec) { s.APIServerURL = "" }, "APIServerURL"},
		"http url":     {func(s *ClusterSpec) { s.APIServerURL = "http://127.0.0.1:6443" }, "APIServerURL"},
		"no ips":       {func(s *ClusterSpec) { s.APIServerIPs = nil }, "APIServerIPs"},
		"node name":    {func(s *ClusterSpec) { s.Nodes[0].Name = "../x" }, "Nodes[0].Name"},
		"dup node":     {func(s *ClusterSpec) { s.Nodes[1].Name = s.Nodes[0].Name }, "Nodes[1].Name"},
		"node no ips":  {func(s *ClusterSpec) { s.Nodes[1].IPs = nil }, "Nodes[1].IPs"},
		"empty name":   {func(s *ClusterSpec) { s.Nodes[0].Name = "" }, "Nodes[0].Name"},
		"space in url": {func(s *ClusterSpec) { s.APIServerURL = "https://" }, "APIServerURL"},
	} {
		t.Run(name, func(t *testing.T) {
			s := testSpec()
			tc.mut(&s)
			dir := t.TempDir()
			_, err := GenerateCluster(dir, s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("invalid spec wrote %d files", len(entries))
			}
		})
	}
}
