// Package kubeapi is the Kubernetes API integration tier: a real etcd and
// kube-apiserver (v1.34.4) run as processes on 127.0.0.1, ready in seconds,
// for tests of code that talks to the API (the agent's informers, RBAC,
// CRDs). There is no controller-manager, scheduler or kubelet: objects are
// stored and watched, never acted on (no default ServiceAccount in new
// namespaces, no pods running).
package kubeapi

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
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/strait-net/strait/internal/lab/controlplane"
	"github.com/strait-net/strait/internal/lab/k8sbin"
	"github.com/strait-net/strait/internal/lab/pki"
	"github.com/strait-net/strait/internal/testutil"
)

// EnvBinDir names a folder holding etcd and kube-apiserver to use instead
// of k8sbin's cache (no build).
const EnvBinDir = "STRAIT_K8S_BIN"

// readyTimeout bounds each component's start.
const readyTimeout = 90 * time.Second

// attempts: a free port picked by the kernel can be taken by someone else
// before etcd or the apiserver binds it; Start then tries again.
const attempts = 3

// Cluster is a running etcd + kube-apiserver.
type Cluster struct {
	// Kubeconfig is the path of a cluster-admin (system:masters) kubeconfig.
	Kubeconfig string
	RESTConfig *rest.Config
	Client     kubernetes.Interface
	// PKI are the cluster's credentials.
	PKI *pki.Cluster
	// URL is the apiserver's https://127.0.0.1:PORT.
	URL string
	// StartToReady is from Start's call to the apiserver's /readyz answering 200.
	StartToReady time.Duration
	// EtcdPID and APIServerPID are the processes Start runs (killed by PID
	// when the test ends).
	EtcdPID, APIServerPID int
}

// Start runs etcd and kube-apiserver from binDir on 127.0.0.1 with free
// ports and their data in t.TempDir(), waits until the apiserver is ready,
// and returns an admin client. Both processes are killed by PID when the
// test ends; their output is logged if it failed.
func Start(t testing.TB, binDir string) *Cluster {
	t.Helper()
	began := time.Now()
	var lastErr error
	for i := 0; i < attempts; i++ {
		c, err := start(t, binDir, began)
		if err == nil {
			t.Logf("kubeapi: etcd + kube-apiserver on %s ready %v after Start", c.URL, c.StartToReady.Round(time.Millisecond))
			return c
		}
		lastErr = err
		var taken portTakenError
		if !errors.As(err, &taken) {
			break
		}
		t.Logf("kubeapi: attempt %d: %v; trying other ports", i+1, err)
	}
	t.Fatalf("kubeapi: %v", lastErr)
	return nil
}

// portTakenError: a picked port was taken before the server bound it.
type portTakenError struct{ component string }

func (e portTakenError) Error() string {
	return e.component + ": a picked port was taken before it bound it"
}

func start(t testing.TB, binDir string, began time.Time) (*Cluster, error) {
	t.Helper()
	dir := t.TempDir()
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	url := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	creds, err := pki.GenerateCluster(filepath.Join(dir, "pki"), pki.ClusterSpec{
		APIServerURL: url,
		// 10.96.0.1: the kubernetes Service's ClusterIP, which in-cluster
		// clients dial.
		APIServerIPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
	})
	if err != nil {
		return nil, err
	}
	cmds, err := controlplane.Commands(controlplane.Spec{
		BinDir:         binDir,
		DataDir:        filepath.Join(dir, "data"),
		LogDir:         filepath.Join(dir, "log"),
		PKI:            creds,
		BindIP:         "127.0.0.1",
		EtcdClientPort: ports[0],
		EtcdPeerPort:   ports[1],
		APIServerPort:  ports[2],
		ServiceCIDRs:   []string{"10.96.0.0/16"},
		Components:     []string{controlplane.Etcd, controlplane.APIServer},
	})
	if err != nil {
		return nil, err
	}
	caPEM, certPEM, keyPEM, err := creds.AdminCredentials()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Kubeconfig: creds.AdminKubeconfig, PKI: creds, URL: url}
	var started []*testutil.Process
	for _, cmd := range cmds {
		p, err := run(t, cmd, caPEM, certPEM, keyPEM)
		if err != nil {
			for _, s := range started { // this attempt's, by PID
				s.Kill()
			}
			return nil, err
		}
		started = append(started, p)
		switch cmd.Name {
		case controlplane.Etcd:
			c.EtcdPID = p.PID()
		case controlplane.APIServer:
			c.APIServerPID = p.PID()
		}
	}
	c.StartToReady = time.Since(began)

	data, err := os.ReadFile(creds.AdminKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("read admin kubeconfig: %w", err)
	}
	if c.RESTConfig, err = clientcmd.RESTConfigFromKubeConfig(data); err != nil {
		return nil, fmt.Errorf("admin kubeconfig: %w", err)
	}
	c.RESTConfig.QPS, c.RESTConfig.Burst = 100, 200
	if c.Client, err = kubernetes.NewForConfig(c.RESTConfig); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return c, nil
}

// run starts cmd (killed by PID when the test ends) and waits until it is
// ready, or has exited, or readyTimeout passed.
func run(t testing.TB, cmd controlplane.Command, caPEM, certPEM, keyPEM []byte) (*testutil.Process, error) {
	t.Helper()
	argv := cmd.Argv
	if len(cmd.Env) > 0 {
		argv = append(append([]string{"env"}, cmd.Env...), argv...)
	}
	p := testutil.StartProcess(t, "", argv...)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	go func() { // give up as soon as it dies
		for ctx.Err() == nil && !p.Exited() {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	t0 := time.Now()
	err := controlplane.WaitReady(ctx, cmd, caPEM, certPEM, keyPEM)
	if err == nil {
		t.Logf("kubeapi: %s (pid %d) ready in %v", cmd.Name, p.PID(), time.Since(t0).Round(time.Millisecond))
		return p, nil
	}
	out := p.Output()
	p.Kill()
	if strings.Contains(out, "address already in use") {
		return nil, portTakenError{cmd.Name}
	}
	return nil, fmt.Errorf("%s not ready (exited: %v): %w\n--- output (tail) ---\n%s", cmd.Name, p.Exited(), err, tail(out, 40))
}

// freePorts asks the kernel for n free ports on 127.0.0.1. They stay free
// only until someone else binds them; Start retries on a clash.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// BinDir returns a folder with etcd and kube-apiserver: $STRAIT_K8S_BIN if
// set, else k8sbin's cache, building it first if needed (~11 min cold,
// seconds warm). It skips the test in -short mode, and when the binaries
// cannot be had, saying why.
func BinDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv(EnvBinDir); d != "" {
		for _, b := range []string{controlplane.Etcd, controlplane.APIServer} {
			if _, err := os.Stat(filepath.Join(d, b)); err != nil {
				t.Skipf("kubeapi: %s=%s lacks %s: %v", EnvBinDir, d, b, err)
			}
		}
		return d
	}
	if testing.Short() {
		t.Skip("kubeapi: Kubernetes API tier skipped in -short mode (needs etcd and kube-apiserver built by k8sbin, or " + EnvBinDir + ")")
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		t.Skipf("kubeapi: cannot find the repository root for k8sbin (go env GOMOD: %q, %v); set %s", gomod, err, EnvBinDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir, err := k8sbin.Ensure(ctx, k8sbin.Options{RepoRoot: filepath.Dir(gomod), Out: logWriter{t}})
	if err != nil {
		t.Skipf("kubeapi: no Kubernetes binaries: %v (set %s to a folder with etcd and kube-apiserver)", err, EnvBinDir)
	}
	return dir
}

// logWriter sends k8sbin's progress lines to the test log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
