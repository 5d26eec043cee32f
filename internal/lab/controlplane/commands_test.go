package controlplane

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strait-net/strait/internal/lab/pki"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the rendered commands")

func labPKI(url string) *pki.Cluster {
	return pki.Layout("/var/lib/strait-lab/pki", pki.ClusterSpec{
		APIServerURL: url,
		Nodes:        []pki.NodeSpec{{Name: "node-1"}},
	})
}

// apiOnly is the integration tier: etcd and the apiserver on loopback.
func apiOnly() Spec {
	return Spec{
		BinDir:         "/cache/k8s/bin",
		DataDir:        "/tmp/kubeapi/data",
		LogDir:         "/tmp/kubeapi/log",
		PKI:            labPKI("https://127.0.0.1:40003"),
		BindIP:         "127.0.0.1",
		EtcdClientPort: 40001,
		EtcdPeerPort:   40002,
		APIServerPort:  40003,
		ServiceCIDRs:   []string{"10.96.0.0/16"},
		Components:     []string{APIServer, Etcd},
	}
}

// labFull is the lab's dual-stack control plane in its own namespace.
func labFull() Spec {
	return Spec{
		BinDir:            "/cache/k8s/bin",
		DataDir:           "/var/lib/strait-lab/cp",
		LogDir:            "/var/log/strait-lab",
		PKI:               labPKI("https://10.100.0.10:6443"),
		BindIP:            "10.100.0.10",
		EtcdClientPort:    2379,
		EtcdPeerPort:      2380,
		EtcdMetricsPort:   2381,
		APIServerPort:     6443,
		ServiceCIDRs:      []string{"10.96.0.0/16", "fd42:96::/112"},
		ClusterCIDRs:      []string{"10.244.0.0/16", "fd42:244::/56"},
		AllocateNodeCIDRs: true,
		NodeCIDRMaskV4:    24,
		NodeCIDRMaskV6:    64,
	}
}

func render(cmds []Command) string {
	var b strings.Builder
	for _, c := range cmds {
		fmt.Fprintf(&b, "# %s\nlog: %s\nready: %s\n", c.Name, c.LogFile, c.ReadyURL)
		for _, e := range c.Env {
			fmt.Fprintf(&b, "env: %s\n", e)
		}
		b.WriteString(c.Argv[0])
		for _, a := range c.Argv[1:] {
			fmt.Fprintf(&b, " \\\n    %s", a)
		}
		b.WriteString("\n\n")
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	for name, s := range map[string]Spec{"api-only": apiOnly(), "lab-dualstack": labFull()} {
		t.Run(name, func(t *testing.T) {
			cmds, err := Commands(s)
			if err != nil {
				t.Fatal(err)
			}
			got := render(cmds)
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("rendered commands differ from %s (go test -update rewrites it):\n%s", path, got)
			}
		})
	}
}

func names(cmds []Command) []string {
	var n []string
	for _, c := range cmds {
		n = append(n, c.Name)
	}
	return n
}

func TestCommandsShape(t *testing.T) {
	cmds, err := Commands(apiOnly())
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cmds); !slices.Equal(got, []string{Etcd, APIServer}) {
		t.Errorf("start order %v", got)
	}
	api := cmds[1].Argv
	if !slices.Contains(api, "--endpoint-reconciler-type=none") {
		t.Error("loopback advertise address without --endpoint-reconciler-type=none")
	}

	cmds, err = Commands(labFull())
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cmds); !slices.Equal(got, AllComponents()) {
		t.Errorf("start order %v", got)
	}
	for _, c := range cmds {
		if slices.Contains(c.Argv, "--endpoint-reconciler-type=none") {
			t.Errorf("%s: reconciler off with a routable advertise address", c.Name)
		}
		for _, a := range c.Argv {
			if strings.Contains(a, "0.0.0.0") || strings.Contains(a, "[::]") || strings.Contains(a, "127.0.0.1") {
				t.Errorf("%s listens beyond BindIP: %s", c.Name, a)
			}
		}
	}

	// Single stack: the one mask flag kube-controller-manager accepts.
	s := labFull()
	s.ServiceCIDRs, s.ClusterCIDRs, s.NodeCIDRMaskV4 = s.ServiceCIDRs[:1], s.ClusterCIDRs[:1], 25
	cmds, err = Commands(s)
	if err != nil {
		t.Fatal(err)
	}
	kcm := cmds[2].Argv
	if !slices.Contains(kcm, "--node-cidr-mask-size=25") || slices.ContainsFunc(kcm, func(a string) bool {
		return strings.HasPrefix(a, "--node-cidr-mask-size-ipv")
	}) {
		t.Errorf("single-stack mask flags: %v", kcm)
	}

	// IPv6 bind address: bracketed in URLs.
	s = apiOnly()
	s.BindIP = "::1"
	cmds, err = Commands(s)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cmds[0].Argv, "--listen-client-urls=http://[::1]:40001") || cmds[1].ReadyURL != "https://[::1]:40003/readyz" {
		t.Errorf("IPv6 URLs: %v %s", cmds[0].Argv, cmds[1].ReadyURL)
	}
}

func TestCommandsValidation(t *testing.T) {
	for name, tc := range map[string]struct {
		mut  func(*Spec)
		want string
	}{
		"relative bin":      {func(s *Spec) { s.BinDir = "bin" }, "Spec.BinDir"},
		"no data dir":       {func(s *Spec) { s.DataDir = "" }, "Spec.DataDir"},
		"no log dir":        {func(s *Spec) { s.LogDir = "" }, "Spec.LogDir"},
		"no pki":            {func(s *Spec) { s.PKI = nil }, "Spec.PKI"},
		"bad bind":          {func(s *Spec) { s.BindIP = "localhost" }, "Spec.BindIP"},
		"wildcard bind":     {func(s *Spec) { s.BindIP = "0.0.0.0" }, "Spec.BindIP"},
		"wildcard v6":       {func(s *Spec) { s.BindIP = "::" }, "Spec.BindIP"},
		"bad advertise":     {func(s *Spec) { s.AdvertiseIP = "10.0.0" }, "Spec.AdvertiseIP"},
		"no api port":       {func(s *Spec) { s.APIServerPort = 0 }, "Spec.APIServerPort"},
		"port clash":        {func(s *Spec) { s.EtcdPeerPort = s.EtcdClientPort }, "Spec.EtcdPeerPort"},
		"kcm port clash":    {func(s *Spec) { s.ControllerManagerPort = 6443 }, "Spec.ControllerManagerPort"},
		"huge port":         {func(s *Spec) { s.SchedulerPort = 70000 }, "Spec.SchedulerPort"},
		"unknown component": {func(s *Spec) { s.Components = []string{"kubelet"} }, "Spec.Components"},
		"dup component":     {func(s *Spec) { s.Components = []string{Etcd, Etcd} }, "Spec.Components"},
		"no services":       {func(s *Spec) { s.ServiceCIDRs = nil }, "Spec.ServiceCIDRs"},
		"bad service":       {func(s *Spec) { s.ServiceCIDRs = []string{"10.96.0.1/16"} }, "Spec.ServiceCIDRs[0]"},
		"two v4 services":   {func(s *Spec) { s.ServiceCIDRs = []string{"10.96.0.0/16", "10.97.0.0/16"} }, "Spec.ServiceCIDRs"},
		"three clusters":    {func(s *Spec) { s.ClusterCIDRs = []string{"10.0.0.0/8", "fd00::/8", "11.0.0.0/8"} }, "Spec.ClusterCIDRs"},
		"no cluster cidr":   {func(s *Spec) { s.ClusterCIDRs = nil }, "Spec.ClusterCIDRs"},
		"v4 mask short":     {func(s *Spec) { s.NodeCIDRMaskV4 = 16 }, "Spec.NodeCIDRMaskV4"},
		"v6 mask too far":   {func(s *Spec) { s.NodeCIDRMaskV6 = 120 }, "Spec.NodeCIDRMaskV6"},
		"url port mismatch": {func(s *Spec) { s.PKI = labPKI("https://10.100.0.10:7443") }, "Spec.PKI.APIServerURL"},
	} {
		t.Run(name, func(t *testing.T) {
			s := labFull()
			tc.mut(&s)
			_, err := Commands(s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
	// etcd alone needs no PKI, no Service CIDRs.
	s := Spec{BinDir: "/b", DataDir: "/d", LogDir: "/l", BindIP: "127.0.0.1", EtcdClientPort: 1, EtcdPeerPort: 2, Components: []string{Etcd}}
	if _, err := Commands(s); err != nil {
		t.Errorf("etcd only: %v", err)
	}
}

func TestWaitReady(t *testing.T) {
	dir := t.TempDir()
	c, err := pki.GenerateCluster(dir, pki.ClusterSpec{
		APIServerURL: "https://127.0.0.1:6443",
		APIServerIPs: []net.IP{net.ParseIP("127.0.0.1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, certPEM, keyPEM, err := c.AdminCredentials()
	if err != nil {
		t.Fatal(err)
	}
	serving, err := tls.LoadX509KeyPair(c.APIServerCert, c.APIServerKey)
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != pki.AdminUser {
			http.Error(w, "no client cert", http.StatusUnauthorized)
			return
		}
		if n < 3 {
			http.Error(w, "[-]poststarthook/rbac/bootstrap-roles failed", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serving}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := Command{Name: APIServer, ReadyURL: srv.URL + "/readyz"}
	if err := WaitReady(ctx, cmd, caPEM, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 3 {
		t.Errorf("%d probes, want 3", n)
	}

	// A certificate from another CA is not trusted: times out naming the cause.
	other, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	err = WaitReady(short, cmd, other.CertPEM, certPEM, keyPEM)
	if err == nil || !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), APIServer) {
		t.Errorf("untrusted server: got %v", err)
	}
	if err := WaitReady(short, Command{Name: "x"}, nil, nil, nil); err != nil {
		t.Errorf("no ReadyURL: %v", err)
	}
}
