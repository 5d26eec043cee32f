package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"
)

// Labels on everything the check creates.
const (
	labelKey  = "strait.dev/check"
	labelVal  = "connectivity"
	roleKey   = "strait.dev/check-role"
	rolePod   = "pod"
	roleHost  = "host"
	container = "probe"
)

var gvrBlocks = schema.GroupVersionResource{Group: "strait.dev", Version: "v1alpha1", Resource: "ipamblocks"}

// cluster is the check's view of the API server.
type cluster struct {
	cfg *rest.Config
	cs  kubernetes.Interface
	dyn dynamic.Interface
	ns  string
}

// probeName is the name of node's probe pod of role.
func probeName(role, node string) string { return "probe-" + role + "-" + node }

func (c *cluster) nodes(ctx context.Context) ([]Node, error) {
	list, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var nodes []Node
	for _, n := range list.Items {
		nd := Node{Name: n.Name}
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				nd.Addrs = append(nd.Addrs, ip)
			}
		}
		nodes = append(nodes, nd)
	}
	return nodes, nil
}

// ensureNamespace creates the check's namespace (named, or generated when
// name is empty) unless it exists, and returns its name.
func (c *cluster) ensureNamespace(ctx context.Context, name string) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{labelKey: labelVal}}}
	if name == "" {
		ns.GenerateName = "strait-check-"
	}
	got, err := c.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return name, nil
	}
	if err != nil {
		return "", fmt.Errorf("create namespace: %w", err)
	}
	return got.Name, nil
}

func (c *cluster) probePod(role, node, image string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:   probeName(role, node),
			Labels: map[string]string{labelKey: labelVal, roleKey: role},
		},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			HostNetwork:                   role == roleHost,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			AutomountServiceAccountToken:  ptr.To(false),
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name:            container,
				Image:           image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{"sleep", "3600"},
			}},
		},
	}
}

// deploy creates a pod-network and a host-network probe on every node
// (keeping those that exist).
func (c *cluster) deploy(ctx context.Context, nodes []Node, image string) error {
	for _, n := range nodes {
		for _, role := range []string{rolePod, roleHost} {
			_, err := c.cs.CoreV1().Pods(c.ns).Create(ctx, c.probePod(role, n.Name, image), metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create probe pod on %s: %w", n.Name, err)
			}
		}
	}
	return nil
}

// waitRunning waits until every probe runs, fills in the pod probes'
// addresses, and returns the nodes whose probes did not start, with why.
func (c *cluster) waitRunning(ctx context.Context, nodes []Node, timeout time.Duration) (map[string]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		list, err := c.cs.CoreV1().Pods(c.ns).List(ctx, metav1.ListOptions{LabelSelector: labelKey + "=" + labelVal})
		if err != nil {
			return nil, fmt.Errorf("list probe pods: %w", err)
		}
		byName := map[string]*corev1.Pod{}
		for i := range list.Items {
			byName[list.Items[i].Name] = &list.Items[i]
		}
		pending := map[string]string{}
		for i, n := range nodes {
			nodes[i].PodIPs = nil
			for _, role := range []string{rolePod, roleHost} {
				p := byName[probeName(role, n.Name)]
				if why := notRunning(p); why != "" {
					pending[n.Name] = fmt.Sprintf("%s probe: %s", role, why)
					continue
				}
				if role == rolePod {
					for _, ip := range p.Status.PodIPs {
						if a, err := netip.ParseAddr(ip.IP); err == nil {
							nodes[i].PodIPs = append(nodes[i].PodIPs, a)
						}
					}
				}
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			for i, n := range nodes {
				if _, bad := pending[n.Name]; bad {
					nodes[i].PodIPs = nil
				}
			}
			return pending, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// notRunning says why p is not a running probe ("" when it is).
func notRunning(p *corev1.Pod) string {
	switch {
	case p == nil:
		return "missing"
	case p.Status.Phase != corev1.PodRunning:
		why := string(p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil {
				why += ": " + w.Reason + " " + w.Message
			}
		}
		for _, cond := range p.Status.Conditions {
			if cond.Status != corev1.ConditionTrue && cond.Message != "" {
				why += ": " + cond.Message
			}
		}
		return strings.TrimSpace(why)
	case !p.Spec.HostNetwork && len(p.Status.PodIPs) == 0:
		return "running without an address"
	}
	return ""
}

// exec runs argv in the probe container of pod and returns its standard
// output and standard error, each whole (two streams, two buffers: the
// executor copies them concurrently).
func (c *cluster) exec(ctx context.Context, pod string, argv []string) (stdout, stderr string, err error) {
	req := c.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(c.ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: argv, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.cfg, "POST", req.URL())
	if err != nil {
		return "", "", fmt.Errorf("exec in %s: %w", pod, err)
	}
	var out, errOut bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	if err != nil {
		err = fmt.Errorf("exec in %s: %w", pod, err)
	}
	return out.String(), errOut.String(), err
}

// execAttempts bounds the runs of a command whose output came back
// incomplete: an exec through the API server, kubelet and the container
// runtime now and then ends with part or all of a short-lived command's
// output missing (seen on the lab under load).
const execAttempts = 5

const endMarker = "===strait-exec-end "

// MarkScript appends to a shell script a last line that prints an end
// marker with the script's exit status, so that a reader can tell output
// that came back whole from output whose end was lost (SplitMarked).
func MarkScript(script string) string { return script + "\necho \"" + endMarker + "$?\"" }

// SplitMarked splits the output of a MarkScript script into what the
// script printed and its exit status; ok is false when the marker did not
// come back, i.e. the output is incomplete.
func SplitMarked(out string) (body, status string, ok bool) {
	i := strings.LastIndex(out, endMarker)
	if i < 0 {
		return out, "", false
	}
	return out[:i], strings.TrimSpace(out[i+len(endMarker):]), true
}

// execComplete runs a shell script in pod and returns its standard output,
// standard error and exit status once the output is known to be whole
// (MarkScript), running it again (up to execAttempts, with backoff) when
// the end came back missing. The script must be safe to run again.
func (c *cluster) execComplete(ctx context.Context, pod, script string) (stdout, stderr, status string, err error) {
	for attempt := 0; attempt < execAttempts && ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt) * 300 * time.Millisecond):
			}
		}
		out, errOut, xerr := c.exec(ctx, pod, []string{"sh", "-c", MarkScript(script)})
		body, st, ok := SplitMarked(out)
		if ok {
			return body, errOut, st, nil
		}
		err = fmt.Errorf("exec in %s: output incomplete (%v): %s", pod, xerr, lastLine(out+errOut))
	}
	if err == nil {
		err = ctx.Err()
	}
	return "", "", "", err
}

// blocks lists the IPAM blocks (IPAMBlock objects, or Node podCIDRs when
// Strait runs in node-cidr mode or the CRD is absent).
func (c *cluster) blocks(ctx context.Context) ([]Block, error) {
	var out []Block
	list, err := c.dyn.Resource(gvrBlocks).List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("list IPAM blocks: %w", err)
	}
	if err == nil {
		for _, u := range list.Items {
			spec, _ := u.Object["spec"].(map[string]any)
			cidr, _ := spec["cidr"].(string)
			node, _ := spec["node"].(string)
			if p, err := netip.ParsePrefix(cidr); err == nil && node != "" {
				out = append(out, Block{CIDR: p.Masked(), Node: node})
			}
		}
	}
	nodes, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	for _, n := range nodes.Items {
		for _, cidr := range n.Spec.PodCIDRs {
			if p, err := netip.ParsePrefix(cidr); err == nil {
				out = append(out, Block{CIDR: p.Masked(), Node: n.Name})
			}
		}
	}
	return out, nil
}

const routeSep = "===strait-check==="

// routes reads every node's kernel routes through its host probe.
func (c *cluster) routes(ctx context.Context, nodes []Node, bad map[string]string) (map[string][]Route, map[string]string) {
	routes, errs := map[string][]Route{}, map[string]string{}
	for _, n := range nodes {
		if why, ok := bad[n.Name]; ok {
			errs[n.Name] = why
			continue
		}
		out, errOut, status, err := c.execComplete(ctx, probeName(roleHost, n.Name), "ip -4 route show && echo "+routeSep+" && ip -6 route show")
		if err == nil && status != "0" {
			err = fmt.Errorf("reading the routes of %s exited %s: %s", n.Name, status, strings.TrimSpace(errOut))
		}
		if err != nil {
			errs[n.Name] = err.Error()
			continue
		}
		if !strings.Contains(out, routeSep) {
			errs[n.Name] = fmt.Sprintf("route listing of %s lacks its separator: %q", n.Name, lastLine(out))
			continue
		}
		routes[n.Name] = ParseRoutes(strings.ReplaceAll(out, routeSep, ""))
	}
	return routes, errs
}

// cleanup deletes the probe pods and, when the check made it, the
// namespace, and waits (bounded) until the pods are gone.
func (c *cluster) cleanup(ctx context.Context) error {
	sel := metav1.ListOptions{LabelSelector: labelKey + "=" + labelVal}
	err := c.cs.CoreV1().Pods(c.ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, sel)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete probe pods: %w", err)
	}
	ns, err := c.cs.CoreV1().Namespaces().Get(ctx, c.ns, metav1.GetOptions{})
	if err == nil && ns.Labels[labelKey] == labelVal {
		if err := c.cs.CoreV1().Namespaces().Delete(ctx, c.ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete namespace %s: %w", c.ns, err)
		}
	}
	for {
		list, err := c.cs.CoreV1().Pods(c.ns).List(ctx, sel)
		if err != nil || len(list.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("probe pods in %s still terminating: %w", c.ns, errors.Join(ctx.Err()))
		case <-time.After(300 * time.Millisecond):
		}
	}
}
