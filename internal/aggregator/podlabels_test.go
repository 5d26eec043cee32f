package aggregator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/strait-net/strait/internal/testutil/kubeapi"
)

// TestPodLabelsFromAPIServer: proxy mode with recordContents.podLabels reads
// pods from a real API server: forwarded records carry both pods' labels as
// JSON objects; a label change shows in later records, a deleted pod's
// address gets none. The config refuses podLabels in aggregate mode and a
// kubeconfig that does not exist, naming the field.
func TestPodLabelsFromAPIServer(t *testing.T) {
	for yaml, want := range map[string]string{
		"mode: aggregate\nrecordContents: {podLabels: true}\n": "recordContents.podLabels: proxy mode only",
		"kubernetes: {kubeconfig: /nonexistent/kubeconfig}\n":  "kubernetes.kubeconfig",
	} {
		_, err := ParseConfig([]byte(yaml + "collector: {tcp: {address: \"127.0.0.1:0\"}}\ndestinations: [{name: s, type: stdout}]\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: %v, want an error with %q", yaml, err, want)
		}
	}

	c := kubeapi.Start(t, kubeapi.BinDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// No controller manager runs: the ServiceAccount admission needs the
	// default ServiceAccount made by hand.
	if _, err := c.Client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := c.Client.CoreV1().Pods("default")
	mkPod := func(name, ip string, labels map[string]string) {
		t.Helper()
		p, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The test exporter's records go from 10.244.1.10 to 10.244.2.20.
	mkPod("client", "10.244.1.10", map[string]string{"tier": "web", "app": "client"})
	mkPod("server", "10.244.2.20", map[string]string{"app": "server"})

	col := newTestCollector(t, "tcp", nil)
	a := startAggregator(t, fmt.Sprintf(`
collector: {tcp: {address: "127.0.0.1:0"}}
destinations: [{name: c, type: ipfix, address: %q}]
recordContents: {podLabels: true}
kubernetes: {kubeconfig: %q}
api: {address: off}
`, col.addr, c.Kubeconfig), Options{})
	e := newTestExporter(t, "tcp", a.Addr("tcp"), 5)
	if err := e.connect(); err != nil {
		t.Fatal(err)
	}
	sent := 0
	// labelsOf sends one record and returns the labels the collector got.
	labelsOf := func() (src, dst any) {
		t.Helper()
		if err := e.send(sent, 1); err != nil {
			t.Fatal(err)
		}
		sent++
		col.waitCount(t, sent, 5*time.Second)
		r := col.snapshot()[sent-1]
		return r["sourcePodLabels"], r["destinationPodLabels"]
	}
	if src, dst := labelsOf(); src != `{"app":"client","tier":"web"}` || dst != `{"app":"server"}` {
		t.Fatalf("labels %v -> %v, want the client's and the server's", src, dst)
	}

	p, err := pods.Get(ctx, "client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels["tier"] = "api"
	if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "server", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		src, dst := labelsOf()
		if src == `{"app":"client","tier":"api"}` && dst == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the label change and the server's deletion: %v -> %v", src, dst)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
