package manifests

import (
	"context"
	"sync"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const agentUser = "system:serviceaccount:strait-system:strait-agent"

var agentGroups = []string{"system:serviceaccounts", "system:serviceaccounts:strait-system", "system:authenticated"}

// testRBAC asks the API server's authorizer what the agent's
// ServiceAccount may do, then does some of it as the agent.
func (s *apiServer) testRBAC(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		allowed                              bool
		verb, group, resource, sub, ns, name string
	}{
		{true, "create", "strait.dev", "ipamblocks", "", "", ""},
		{true, "delete", "strait.dev", "ipamblocks", "", "", ""},
		{true, "update", "strait.dev", "ipamblocks", "status", "", ""},
		{true, "watch", "strait.dev", "ippools", "", "", ""},
		{true, "update", "strait.dev", "ippools", "status", "", ""},
		{true, "patch", "", "nodes", "", "", "node-1"},
		{true, "list", "", "pods", "", "", ""},
		{true, "watch", "discovery.k8s.io", "endpointslices", "", "", ""},
		{true, "create", "", "events", "", "default", ""},
		{true, "update", "coordination.k8s.io", "leases", "", "strait-system", "strait-agent"},
		{false, "update", "coordination.k8s.io", "leases", "", "kube-system", "kube-controller-manager"},
		{false, "delete", "", "nodes", "", "", "node-1"},
		{false, "update", "", "nodes", "", "", "node-1"},
		{false, "patch", "", "nodes", "status", "", "node-1"},
		{true, "get", "", "secrets", "", "strait-system", "bgp-password"},
		{true, "watch", "", "secrets", "", "strait-system", ""},
		{false, "get", "", "secrets", "", "kube-system", ""},
		{false, "list", "", "secrets", "", "", ""},
		{false, "update", "", "secrets", "", "strait-system", "bgp-password"},
		{true, "watch", "strait.dev", "bgppeers", "", "", ""},
		{true, "watch", "strait.dev", "bgpconfigurations", "", "", ""},
		{false, "create", "strait.dev", "bgppeers", "", "", ""},
		{false, "update", "strait.dev", "bgpconfigurations", "", "", ""},
		{true, "create", "strait.dev", "bgpnodestatuses", "", "", ""},
		{true, "update", "strait.dev", "bgpnodestatuses", "status", "", "node-1"},
		{false, "delete", "strait.dev", "bgpnodestatuses", "", "", "node-1"},
		{true, "watch", "strait.dev", "loadbalancerippools", "", "", ""},
		{true, "update", "strait.dev", "loadbalancerippools", "status", "", "pool"},
		{false, "update", "strait.dev", "loadbalancerippools", "", "", "pool"},
		{true, "update", "", "services", "status", "default", "web"},
		{false, "update", "", "services", "", "default", "web"},
		{false, "delete", "", "services", "", "default", "web"},
		{false, "create", "", "pods", "", "default", ""},
		{false, "delete", "", "pods", "", "default", ""},
		{false, "update", "strait.dev", "ipamblocks", "", "", ""},
		{false, "patch", "strait.dev", "ipamblocks", "", "", ""},
		{false, "create", "strait.dev", "ippools", "", "", ""},
		{false, "update", "strait.dev", "ippools", "", "", ""},
		{false, "delete", "strait.dev", "ippools", "", "", ""},
		{false, "create", "", "serviceaccounts", "token", "strait-system", "strait-agent"},
		{false, "update", "rbac.authorization.k8s.io", "clusterroles", "", "", "strait-agent"},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: agentUser, Groups: agentGroups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: c.verb, Group: c.group, Resource: c.resource, Subresource: c.sub, Namespace: c.ns, Name: c.name,
			},
		}}
		r, err := s.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != c.allowed {
			t.Errorf("%s %s.%s/%s %s/%s: allowed %v, want %v (%s)", c.verb, c.resource, c.group, c.sub, c.ns, c.name, r.Status.Allowed, c.allowed, r.Status.Reason)
		}
	}

	// As the agent, for real.
	if _, err := s.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(s.RESTConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: agentUser, Groups: agentGroups}
	agent := kubernetes.NewForConfigOrDie(cfg)
	agentDyn := dynamic.NewForConfigOrDie(cfg)
	patch := []byte(`{"metadata":{"annotations":{"strait.dev/vtep-v4":"{\"ip\":\"192.168.1.10\",\"mac\":\"02:00:00:00:00:01\"}"}}}`)
	if _, err := agent.CoreV1().Nodes().Patch(ctx, "node-1", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Errorf("agent patches its node: %v", err)
	}
	if err := agent.CoreV1().Nodes().Delete(ctx, "node-1", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent deletes a node: %v; want Forbidden", err)
	}
	if _, err := agent.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent lists secrets: %v; want Forbidden", err)
	}
	block := obj("IPAMBlock", "10-99-0-0-26", map[string]any{"cidr": "10.99.0.0/26", "pool": "p", "node": "node-1"})
	if _, err := agentDyn.Resource(gvr("ipamblocks")).Create(ctx, block, metav1.CreateOptions{}); err != nil {
		t.Errorf("agent claims a block: %v", err)
	}
	if err := agentDyn.Resource(gvr("ipamblocks")).Delete(ctx, "10-99-0-0-26", metav1.DeleteOptions{}); err != nil {
		t.Errorf("agent releases a block: %v", err)
	}
}

// testClaimRace: agents racing to create the same block: exactly one wins,
// the others get AlreadyExists.
func (s *apiServer) testClaimRace(t *testing.T) {
	ctx := context.Background()
	const agents = 8
	var wg sync.WaitGroup
	errs := make([]error, agents)
	for i := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := obj("IPAMBlock", "10-200-0-0-26", map[string]any{"cidr": "10.200.0.0/26", "pool": "p", "node": "node-" + string(rune('a'+i))})
			_, errs[i] = s.dyn.Resource(gvr("ipamblocks")).Create(ctx, b, metav1.CreateOptions{})
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !apierrors.IsAlreadyExists(err):
			t.Errorf("agent %d: %v; want success or AlreadyExists", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d agents claimed the block, want 1", won)
	}
}
