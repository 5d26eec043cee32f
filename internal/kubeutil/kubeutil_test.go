package kubeutil

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

func TestWaitForSync(t *testing.T) {
	var a, b atomic.Bool
	go func() {
		time.Sleep(20 * time.Millisecond)
		a.Store(true)
		time.Sleep(20 * time.Millisecond)
		b.Store(true)
	}()
	start := time.Now()
	if !WaitForSync(context.Background(), a.Load, b.Load) {
		t.Fatal("WaitForSync returned false without a cancelled context")
	}
	if !a.Load() || !b.Load() {
		t.Fatal("WaitForSync returned before both informers synced")
	}
	// client-go's WaitForCacheSync would take 100 ms here.
	t.Logf("returned %v after start", time.Since(start))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if WaitForSync(ctx, func() bool { return false }) {
		t.Fatal("WaitForSync reported a sync that never happened")
	}
}

func TestProtobufCopies(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:6443"}
	pb := Protobuf(cfg)
	if pb.ContentType != "application/vnd.kubernetes.protobuf" || pb.Host != cfg.Host {
		t.Fatalf("Protobuf: %+v", pb)
	}
	if cfg.ContentType != "" || cfg.AcceptContentTypes != "" {
		t.Fatalf("Protobuf changed the original: %+v", cfg)
	}
}
