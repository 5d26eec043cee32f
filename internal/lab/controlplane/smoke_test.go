package controlplane_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/strait-net/strait/internal/lab/controlplane"
	"github.com/strait-net/strait/internal/lab/pki"
	"github.com/strait-net/strait/internal/testutil"
	"github.com/strait-net/strait/internal/testutil/kubeapi"
)

// freePorts picks n free ports on 127.0.0.1 (free until someone binds them).
func freePorts(t *testing.T, n int) []int {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = l.Close() }()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// TestFullControlPlane runs the four rendered components dual-stack on
// 127.0.0.1 (the lab runs them on its own address inside a namespace) and
// checks what only the controller-manager does: node CIDRs of both
// families, and the default ServiceAccount of a new namespace.
func TestFullControlPlane(t *testing.T) {
	bin := kubeapi.BinDir(t)
	for _, b := range controlplane.AllComponents() {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Skipf("no %s in %s: %v", b, bin, err)
		}
	}
	dir := t.TempDir()
	ports := freePorts(t, 5)
	url := fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	creds, err := pki.GenerateCluster(filepath.Join(dir, "pki"), pki.ClusterSpec{
		APIServerURL: url,
		APIServerIPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1), net.ParseIP("fd42:96::1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := controlplane.Commands(controlplane.Spec{
		BinDir: bin, DataDir: filepath.Join(dir, "data"), LogDir: filepath.Join(dir, "log"),
		PKI: creds, BindIP: "127.0.0.1",
		EtcdClientPort: ports[0], EtcdPeerPort: ports[1], APIServerPort: ports[2],
		ControllerManagerPort: ports[3], SchedulerPort: ports[4],
		ServiceCIDRs:      []string{"10.96.0.0/16", "fd42:96::/112"},
		ClusterCIDRs:      []string{"10.244.0.0/16", "fd42:244::/56"},
		AllocateNodeCIDRs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, certPEM, keyPEM, err := creds.AdminCredentials()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	for _, c := range cmds {
		p := testutil.StartProcess(t, "", c.Argv...)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		err := controlplane.WaitReady(ctx, c, caPEM, certPEM, keyPEM)
		cancel()
		if err != nil {
			t.Fatalf("%v (exited: %v)", err, p.Exited())
		}
		t.Logf("%s ready at +%v", c.Name, time.Since(began).Round(time.Millisecond))
	}

	rc, err := clientcmd.BuildConfigFromFlags("", creds.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "smoke"}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		n, err := client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(n.Spec.PodCIDRs) != 2 {
			return fmt.Errorf("node podCIDRs %v", n.Spec.PodCIDRs)
		}
		return nil
	})
	n, _ := client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	t.Logf("node-1 podCIDRs %v at +%v", n.Spec.PodCIDRs, time.Since(began).Round(time.Millisecond))
	if !slices.Equal(n.Spec.PodCIDRs, []string{"10.244.0.0/24", "fd42:244::/64"}) {
		t.Errorf("podCIDRs %v", n.Spec.PodCIDRs)
	}
	testutil.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		_, err := client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	svc, err := client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("kubernetes Service ClusterIP %s", svc.Spec.ClusterIP)
	}
}
