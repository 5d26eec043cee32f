package blocks

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/strait-net/strait/internal/testutil/kubeapi"
)

// env is a running API server with the strait.dev CRDs installed.
type env struct {
	t    *testing.T
	ctx  context.Context
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

// crdDir holds the generated CRDs, when they exist.
const crdDir = "../../../deploy/crds"

func newEnv(t *testing.T) *env {
	t.Helper()
	t0 := time.Now()
	c := kubeapi.Start(t, kubeapi.BinDir(t))
	dyn, err := dynamic.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, kube: c.Client, dyn: dyn}
	e.installCRDs()
	t.Logf("API server with CRDs ready in %v", time.Since(t0).Round(time.Millisecond))
	return e
}

func crdGVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
}

// installCRDs creates deploy/crds/*.yaml or, while they do not exist, a
// minimal schema-less equivalent, and waits until both resources serve.
func (e *env) installCRDs() {
	e.t.Helper()
	files, _ := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	var objs []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, doc := range strings.Split(string(data), "\n---") {
			var m map[string]any
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
				e.t.Fatalf("%s: %v", f, err)
			}
			if m != nil && m["kind"] == "CustomResourceDefinition" {
				objs = append(objs, &unstructured.Unstructured{Object: m})
			}
		}
	}
	if len(objs) == 0 {
		e.t.Logf("no CRDs in %s: installing minimal ones", crdDir)
		objs = []*unstructured.Unstructured{minimalCRD("IPPool", "ippools"), minimalCRD("IPAMBlock", "ipamblocks")}
	} else {
		e.t.Logf("installing %d CRDs from %s", len(objs), crdDir)
	}
	for _, o := range objs {
		if _, err := e.dyn.Resource(crdGVR()).Create(e.ctx, o, metav1.CreateOptions{}); err != nil {
			e.t.Fatalf("create CRD %s: %v", o.GetName(), err)
		}
	}
	for _, r := range []string{resourcePools, resourceBlocks} {
		e.eventually(10*time.Second, "CRD "+r+" serving", func() error {
			_, err := e.dyn.Resource(gvr(r)).List(e.ctx, metav1.ListOptions{})
			return err
		})
	}
}

// minimalCRD is a cluster-scoped CRD of strait.dev/v1alpha1 that keeps
// any spec and status, with the status subresource.
func minimalCRD(kind, plural string) *unstructured.Unstructured {
	open := map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": plural + ".strait.dev"},
		"spec": map[string]any{
			"group": "strait.dev",
			"scope": "Cluster",
			"names": map[string]any{"kind": kind, "listKind": kind + "List", "plural": plural, "singular": strings.ToLower(kind)},
			"versions": []any{map[string]any{
				"name": "v1alpha1", "served": true, "storage": true,
				"subresources": map[string]any{"status": map[string]any{}},
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type":       "object",
					"properties": map[string]any{"spec": open, "status": open},
				}},
			}},
		},
	}}
}

func (e *env) eventually(d time.Duration, what string, f func() error) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pool creates an IPPool; spec holds extra spec fields.
func (e *env) pool(name, cidr string, blockSize int64, spec map[string]any) {
	e.t.Helper()
	s := map[string]any{"cidr": cidr}
	if blockSize != 0 {
		s["blockSize"] = blockSize
	}
	for k, v := range spec {
		s[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": s}}
	u.SetAPIVersion("strait.dev/v1alpha1")
	u.SetKind("IPPool")
	u.SetName(name)
	if _, err := e.dyn.Resource(gvr(resourcePools)).Create(e.ctx, u, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create IPPool %s: %v", name, err)
	}
}

func (e *env) node(name string, labels map[string]string) {
	e.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := e.kube.CoreV1().Nodes().Create(e.ctx, n, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create Node %s: %v", name, err)
	}
}

func (e *env) manager(node string) *Manager {
	return NewManager(Config{Client: e.dyn, Kube: e.kube, NodeName: node, Log: testLogger(e.t, nil)})
}

// blockObjects returns all IPAMBlocks by name.
func (e *env) blockObjects() map[string]*unstructured.Unstructured {
	e.t.Helper()
	l, err := e.dyn.Resource(gvr(resourceBlocks)).List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]*unstructured.Unstructured{}
	for i := range l.Items {
		out[l.Items[i].GetName()] = &l.Items[i]
	}
	return out
}

// logBuf collects a logger's output; safe for concurrent use.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger logs at debug level to buf (if not nil) and, on failure or
// with -v, to the test log.
func testLogger(t *testing.T, buf *logBuf) *slog.Logger {
	w := &testWriter{t: t, also: buf}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    *testing.T
	also *logBuf
}

func (w *testWriter) Write(p []byte) (int, error) {
	if w.also != nil {
		_, _ = w.also.Write(p)
	}
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func must(t *testing.T, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}
