package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/strait-net/strait/internal/testutil"
	"github.com/strait-net/strait/internal/testutil/kubeapi"
)

// TestFlowsTLSFromSecret: flows.tls.secretName against a real API server.
// The exporter's TLS configuration comes from the Secret's ca.crt, tls.crt
// and tls.key on every connection attempt: a missing Secret or key is an
// error naming it; a collector requiring client certificates accepts the
// agent; after the Secret is updated (certificate rotation) the next
// connection presents the new certificate.
func TestFlowsTLSFromSecret(t *testing.T) {
	c := kubeapi.Start(t, kubeapi.BinDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kube := c.Client
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flowsSecretNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	cfg := FlowsConfig{Enabled: true, Collector: "127.0.0.1:4739", Transport: "tls",
		TLS: FlowsTLS{SecretName: "flow-exporter", CAFile: "/etc/ca.crt"}}
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "flows.tls.secretName") {
		t.Fatalf("secretName with files: %v, want an error naming flows.tls.secretName", err)
	}
	cfg.TLS.CAFile = ""
	if err := cfg.validate(); err != nil {
		t.Fatalf("secretName alone: %v", err)
	}
	if _, err := cfg.TLS.source(nil); err == nil || !strings.Contains(err.Error(), "needs the Kubernetes API") {
		t.Fatalf("secretName without the API: %v", err)
	}

	// The collector: mutual TLS, reports the common name of each client.
	ca := testutil.NewCA(t)
	srv := ca.Issue("collector", x509.ExtKeyUsageServerAuth)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srv.TLS}, ClientCAs: ca.Pool(),
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan string, 8)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			if err := tc.HandshakeContext(ctx); err != nil {
				seen <- "refused: " + err.Error()
			} else {
				seen <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			}
			_ = conn.Close()
		}
	}()

	src, err := cfg.TLS.source(&clusterController{c: clusterClients{kube: kube}})
	if err != nil {
		t.Fatal(err)
	}
	connect := func() (string, error) {
		t.Helper()
		tc, err := src(ctx)
		if err != nil {
			return "", err
		}
		conn, err := tls.Dial("tcp", ln.Addr().String(), tc)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		select {
		case cn := <-seen:
			return cn, nil
		case <-time.After(10 * time.Second):
			t.Fatal("the collector saw no handshake")
			return "", nil
		}
	}

	if _, err := connect(); err == nil || !strings.Contains(err.Error(), "strait-system/flow-exporter") {
		t.Fatalf("no Secret yet: %v, want an error naming strait-system/flow-exporter", err)
	}
	a := ca.Issue("agent-a", x509.ExtKeyUsageClientAuth)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "flow-exporter", Namespace: flowsSecretNamespace},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": a.CertPEM, "tls.key": a.KeyPEM}}
	if secret, err = kube.CoreV1().Secrets(flowsSecretNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(); err == nil || !strings.Contains(err.Error(), "no key ca.crt") {
		t.Fatalf("Secret without ca.crt: %v, want an error naming ca.crt", err)
	}
	secret.Data["ca.crt"] = ca.PEM
	if secret, err = kube.CoreV1().Secrets(flowsSecretNamespace).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if cn, err := connect(); err != nil || cn != "agent-a" {
		t.Fatalf("with the Secret: collector saw %q (%v), want agent-a", cn, err)
	}
	// Rotation: the Secret's certificate replaced; the next connection uses it.
	b := ca.Issue("agent-b", x509.ExtKeyUsageClientAuth)
	secret.Data["tls.crt"], secret.Data["tls.key"] = b.CertPEM, b.KeyPEM
	if _, err = kube.CoreV1().Secrets(flowsSecretNamespace).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if cn, err := connect(); err != nil || cn != "agent-b" {
		t.Fatalf("after rotation: collector saw %q (%v), want agent-b", cn, err)
	}
}
