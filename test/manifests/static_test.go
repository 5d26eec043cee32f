package manifests

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/agent"
)

// installObjects decodes deploy/strait.yaml strictly (an unknown or
// misspelt field fails) into typed objects, by kind.
type installObjects struct {
	docs         []doc
	crds         []doc
	namespace    corev1.Namespace
	sa           corev1.ServiceAccount
	clusterRole  rbacv1.ClusterRole
	crb          rbacv1.ClusterRoleBinding
	role         rbacv1.Role
	roleBinding  rbacv1.RoleBinding
	configMap    corev1.ConfigMap
	daemonSet    appsv1.DaemonSet
	kindsDecoded map[string]int
}

func readInstall(t *testing.T) *installObjects {
	t.Helper()
	o := &installObjects{docs: readDocs(t, filepath.Join(repoRoot(t), installFile)), kindsDecoded: map[string]int{}}
	for _, d := range o.docs {
		var into any
		switch d.Kind {
		case "CustomResourceDefinition":
			o.crds = append(o.crds, d)
			continue
		case "Namespace":
			into = &o.namespace
		case "ServiceAccount":
			into = &o.sa
		case "ClusterRole":
			into = &o.clusterRole
		case "ClusterRoleBinding":
			into = &o.crb
		case "Role":
			into = &o.role
		case "RoleBinding":
			into = &o.roleBinding
		case "ConfigMap":
			into = &o.configMap
		case "DaemonSet":
			into = &o.daemonSet
		default:
			t.Fatalf("%s: unexpected %s %s", installFile, d.Kind, d.Name)
		}
		if o.kindsDecoded[d.Kind]++; o.kindsDecoded[d.Kind] > 1 {
			t.Fatalf("%s: more than one %s", installFile, d.Kind)
		}
		if err := yaml.UnmarshalStrict(d.Raw, into); err != nil {
			t.Fatalf("%s: %s %s: %v", installFile, d.Kind, d.Name, err)
		}
	}
	return o
}

func TestInstallManifestContents(t *testing.T) {
	o := readInstall(t)
	if len(o.kindsDecoded) != 8 {
		t.Fatalf("%s holds %v; want one of each kind", installFile, o.kindsDecoded)
	}
	// The CRDs come first, exactly as in deploy/crds.
	root := repoRoot(t)
	files, _ := filepath.Glob(filepath.Join(root, crdDir, "*.yaml"))
	if len(files) != 6 || len(o.crds) != len(files) {
		t.Fatalf("%d CRD files, %d CRDs in %s", len(files), len(o.crds), installFile)
	}
	for i, d := range o.docs[:len(o.crds)] {
		if d.Kind != "CustomResourceDefinition" {
			t.Errorf("document %d is a %s; the CRDs must come first", i, d.Kind)
		}
	}
	install, _ := os.ReadFile(filepath.Join(root, installFile))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if !bytes.Contains(install, b) {
			t.Errorf("%s does not hold %s verbatim: run go run ./hack/crdgen", installFile, f)
		}
	}
	if o.docs[len(o.crds)].Kind != "Namespace" {
		t.Errorf("the Namespace must follow the CRDs, before the objects in it")
	}

	const ns, sa = "strait-system", "strait-agent"
	if o.namespace.Name != ns || o.namespace.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace %s labels %v", o.namespace.Name, o.namespace.Labels)
	}
	for _, d := range o.docs {
		cluster := d.Kind == "CustomResourceDefinition" || d.Kind == "Namespace" || strings.HasPrefix(d.Kind, "ClusterRole")
		if cluster != (d.Namespace == "") || (!cluster && d.Namespace != ns) {
			t.Errorf("%s %s is in namespace %q", d.Kind, d.Name, d.Namespace)
		}
	}
	if o.sa.Name != sa {
		t.Errorf("ServiceAccount %s", o.sa.Name)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}
	if !reflect.DeepEqual(o.crb.Subjects, subject) || o.crb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: o.clusterRole.Name}) {
		t.Errorf("ClusterRoleBinding %+v %+v", o.crb.Subjects, o.crb.RoleRef)
	}
	if !reflect.DeepEqual(o.roleBinding.Subjects, subject) || o.roleBinding.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: o.role.Name}) {
		t.Errorf("RoleBinding %+v %+v", o.roleBinding.Subjects, o.roleBinding.RoleRef)
	}
}

// TestClusterRoleIsLeastPrivilege pins every permission the agent has:
// widening one must change this table.
func TestClusterRoleIsLeastPrivilege(t *testing.T) {
	o := readInstall(t)
	type grant struct{ group, resource, verb string }
	flatten := func(rules []rbacv1.PolicyRule) []grant {
		var gs []grant
		for _, r := range rules {
			if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
				t.Errorf("unexpected rule %+v", r)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						if g == "*" || res == "*" || v == "*" {
							t.Errorf("wildcard in %+v", r)
						}
						gs = append(gs, grant{g, res, v})
					}
				}
			}
		}
		slices.SortFunc(gs, func(a, b grant) int {
			return strings.Compare(a.group+"/"+a.resource+"/"+a.verb, b.group+"/"+b.resource+"/"+b.verb)
		})
		return gs
	}
	want := func(s ...string) []grant {
		var gs []grant
		for _, x := range s {
			f := strings.Split(x, " ")
			for _, v := range strings.Split(f[2], ",") {
				gs = append(gs, grant{f[0], f[1], v})
			}
		}
		slices.SortFunc(gs, func(a, b grant) int {
			return strings.Compare(a.group+"/"+a.resource+"/"+a.verb, b.group+"/"+b.resource+"/"+b.verb)
		})
		return gs
	}
	cluster := want(
		" nodes get,list,watch,patch",
		" pods get,list,watch",
		" namespaces get,list,watch",
		" services get,list,watch",
		"discovery.k8s.io endpointslices get,list,watch",
		"strait.dev ippools get,list,watch",
		"strait.dev ippools/status update",
		"strait.dev ipamblocks get,list,watch,create,delete",
		"strait.dev ipamblocks/status update",
		" events create,patch",
		"events.k8s.io events create,patch",
		"strait.dev bgpconfigurations get,list,watch",
		"strait.dev bgppeers get,list,watch",
		"strait.dev bgpnodestatuses get,list,watch,create",
		"strait.dev bgpnodestatuses/status update",
		"strait.dev loadbalancerippools get,list,watch",
		"strait.dev loadbalancerippools/status update",
		" services/status update,patch",
	)
	if got := flatten(o.clusterRole.Rules); !reflect.DeepEqual(got, cluster) {
		t.Errorf("ClusterRole grants\n%v\nwant\n%v", got, cluster)
	}
	if got, w := flatten(o.role.Rules), want("coordination.k8s.io leases get,create,update", " secrets get,list,watch"); !reflect.DeepEqual(got, w) {
		t.Errorf("Role grants %v, want %v", got, w)
	}
}

func TestDaemonSet(t *testing.T) {
	o := readInstall(t)
	ds := o.daemonSet
	spec := ds.Spec.Template.Spec
	if ds.Name != "strait-agent" || spec.ServiceAccountName != o.sa.Name {
		t.Errorf("DaemonSet %s runs as %q", ds.Name, spec.ServiceAccountName)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the template's labels %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	if !spec.HostNetwork || spec.HostPID || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v hostPID %v dnsPolicy %s", spec.HostNetwork, spec.HostPID, spec.DNSPolicy)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if !reflect.DeepEqual(spec.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}) {
		t.Errorf("tolerations %+v: want one that tolerates every taint", spec.Tolerations)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 1 {
		t.Fatalf("%d containers, %d init containers", len(spec.Containers), len(spec.InitContainers))
	}
	c, ic := spec.Containers[0], spec.InitContainers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Error("the agent is not privileged")
	}
	if c.Image != ic.Image || !strings.HasPrefix(c.Image, "ghcr.io/strait-net/strait:") {
		t.Errorf("images %s, %s", c.Image, ic.Image)
	}
	for name, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Host != "127.0.0.1" || p.HTTPGet.Port.IntValue() != 9099 || p.HTTPGet.Path != name {
			t.Errorf("probe %s: %+v; want httpGet 127.0.0.1:9099%s", name, p, name)
		}
	}
	if len(c.Env) == 0 || c.Env[0].Name != "NODE_NAME" || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("env %+v: want NODE_NAME from spec.nodeName", c.Env)
	}

	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[hostPaths[m.Name]] = m
	}
	// The bpffs: the eBPF fast path pins there, on the host, so its
	// programs outlive the container.
	for _, path := range []string{"/var/lib/strait", "/run/strait", "/etc/cni/net.d", "/run/netns", "/var/run/netns", "/sys/fs/bpf"} {
		m, ok := mounts[path]
		if !ok || m.MountPath != path || m.ReadOnly {
			t.Errorf("host %s: mounted %+v; want read-write at the same path", path, m)
			continue
		}
		wantProp := strings.HasSuffix(path, "/netns") || path == "/sys/fs/bpf"
		if got := m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationHostToContainer; got != wantProp {
			t.Errorf("host %s: propagation %v", path, m.MountPropagation)
		}
	}
	if _, ok := mounts["/opt/cni/bin"]; ok {
		t.Error("the agent mounts /opt/cni/bin; only the install step needs it")
	}
	if len(ic.VolumeMounts) != 1 || hostPaths[ic.VolumeMounts[0].Name] != "/opt/cni/bin" || !strings.Contains(strings.Join(ic.Command, " "), "mv -f") {
		t.Errorf("install-cni: mounts %+v command %q; want /opt/cni/bin and an atomic rename", ic.VolumeMounts, ic.Command)
	}
	cfg := false
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == o.configMap.Name {
			cfg = true
		}
	}
	if !cfg {
		t.Errorf("the DaemonSet does not mount ConfigMap %s", o.configMap.Name)
	}
}

// TestConfigMapPools checks the example configuration's default pools are
// IPPools the API accepts.
func TestConfigMapPools(t *testing.T) {
	o := readInstall(t)
	if o.configMap.Name != "strait-config" {
		t.Fatalf("ConfigMap %s", o.configMap.Name)
	}
	var cfg struct {
		IPAMMode       string `json:"ipamMode"`
		DefaultIPPools []struct {
			Name string `json:"name"`
			v1alpha1.IPPoolSpec
		} `json:"defaultIPPools"`
	}
	if err := yaml.Unmarshal([]byte(o.configMap.Data["agent.yaml"]), &cfg); err != nil {
		t.Fatalf("agent.yaml: %v", err)
	}
	// The agent's own loader is strict: a misspelt key in the shipped
	// ConfigMap would stop every agent at start.
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(o.configMap.Data["agent.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NODE_NAME", "manifest-check")
	if _, err := agent.LoadConfig(path); err != nil {
		t.Errorf("the agent rejects its ConfigMap: %v", err)
	}
	if cfg.IPAMMode != "blocks" || len(cfg.DefaultIPPools) == 0 {
		t.Fatalf("agent.yaml: ipamMode %q, %d default pools", cfg.IPAMMode, len(cfg.DefaultIPPools))
	}
	for i, dp := range cfg.DefaultIPPools {
		p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: dp.Name}, Spec: dp.IPPoolSpec}
		if errs := v1alpha1.ValidateIPPool(p); len(errs) > 0 {
			t.Errorf("defaultIPPools[%d]: %v", i, errs.ToAggregate())
		}
	}
}
