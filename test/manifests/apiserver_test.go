package manifests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	v1alpha1 "github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/testutil/kubeapi"
)

// apiServer is a kube-apiserver with deploy/strait.yaml applied.
type apiServer struct {
	*kubeapi.Cluster
	kubectlPath string
	dyn         dynamic.Interface
}

func gvr(resource string) schema.GroupVersionResource {
	return v1alpha1.SchemeGroupVersion.WithResource(resource)
}

func (s *apiServer) kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.kubectlPath, append([]string{"--kubeconfig", s.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestAgainstAPIServer applies deploy/strait.yaml to a real kube-apiserver
// v1.34 and checks the CRDs' validation and defaulting and the agent's
// permissions there. One server for all (it starts in seconds, but not
// free).
func TestAgainstAPIServer(t *testing.T) {
	bin := kubeapi.BinDir(t)
	kubectl := filepath.Join(bin, "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Skipf("no kubectl beside the API server binaries: %v", err)
	}
	c := kubeapi.Start(t, bin)
	dyn, err := dynamic.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	s := &apiServer{Cluster: c, kubectlPath: kubectl, dyn: dyn}
	if !t.Run("apply", s.testApply) {
		t.FailNow() // the rest needs the CRDs and RBAC in place
	}
	t.Run("IPPool validation", s.testIPPoolValidation)
	t.Run("IPPool defaults", s.testIPPoolDefaults)
	t.Run("IPPool updates", s.testIPPoolUpdates)
	t.Run("IPAMBlock", s.testIPAMBlock)
	t.Run("IPAMBlock claim race", s.testClaimRace)
	t.Run("BGPPeer", s.testBGPPeer)
	t.Run("BGPConfiguration", s.testBGPConfiguration)
	t.Run("BGPNodeStatus", s.testBGPNodeStatus)
	t.Run("LoadBalancerIPPool", s.testLoadBalancerIPPool)
	t.Run("RBAC", s.testRBAC)
}

// testApply: the CRDs and the Namespace for real (a dry run cannot create
// objects in a namespace, or of a kind, that does not exist yet), then the
// whole file dry-run with server-side and client-side apply, then for real.
func (s *apiServer) testApply(t *testing.T) {
	root := repoRoot(t)
	install := filepath.Join(root, installFile)
	var first []string
	for _, d := range readDocs(t, install) {
		if d.Kind == "CustomResourceDefinition" || d.Kind == "Namespace" {
			first = append(first, string(d.Raw))
		}
	}
	pre := filepath.Join(t.TempDir(), "crds-and-namespace.yaml")
	if err := os.WriteFile(pre, []byte(strings.Join(first, "\n---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := s.kubectl(t, "apply", "--server-side", "-f", pre); err != nil {
		t.Fatalf("apply the CRDs and the Namespace: %v\n%s", err, out)
	}
	if out, err := s.kubectl(t, "wait", "--for=condition=Established", "--timeout=30s",
		"crd/ippools.strait.dev", "crd/ipamblocks.strait.dev", "crd/bgpconfigurations.strait.dev", "crd/bgppeers.strait.dev",
		"crd/bgpnodestatuses.strait.dev", "crd/loadbalancerippools.strait.dev"); err != nil {
		t.Fatalf("CRDs not established: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"apply", "--server-side", "--dry-run=server", "-f", install},
		{"apply", "--dry-run=server", "-f", install},
	} {
		out, err := s.kubectl(t, args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
	ctx := context.Background()
	if _, err := s.Client.AppsV1().DaemonSets("strait-system").Get(ctx, "strait-agent", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after a dry run, get the DaemonSet: %v; want NotFound", err)
	}
	if out, err := s.kubectl(t, "apply", "--server-side", "-f", install); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if _, err := s.Client.AppsV1().DaemonSets("strait-system").Get(ctx, "strait-agent", metav1.GetOptions{}); err != nil {
		t.Fatalf("get the DaemonSet: %v", err)
	}
	// Applying again (an upgrade) works.
	if out, err := s.kubectl(t, "apply", "--server-side", "-f", install); err != nil {
		t.Fatalf("second apply: %v\n%s", err, out)
	}
}

// obj builds an unstructured strait.dev object.
func obj(kind, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": kind,
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
}

// wantInvalid checks err is the API server's Invalid naming path, with
// want in its message.
func wantInvalid(t *testing.T, err error, path, want string) {
	t.Helper()
	if !apierrors.IsInvalid(err) {
		t.Fatalf("got %v; want Invalid on %s: %s", err, path, want)
	}
	msg := err.Error()
	if !strings.Contains(msg, path+": ") || !strings.Contains(msg, want) {
		t.Fatalf("got %q; want it to name %s and say %q", msg, path, want)
	}
	found := false
	for _, c := range err.(apierrors.APIStatus).Status().Details.Causes {
		found = found || c.Field == path
	}
	if !found {
		t.Fatalf("no cause on field %s in %+v", path, err.(apierrors.APIStatus).Status().Details.Causes)
	}
}
