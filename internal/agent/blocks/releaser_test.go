package blocks

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// releaserRun is one RunReleaser under test.
type releaserRun struct {
	id     string
	logs   *logBuf
	cancel context.CancelFunc
	done   chan error
}

func (e *env) startReleaser(id string, wg *sync.WaitGroup) *releaserRun {
	ctx, cancel := context.WithCancel(e.ctx)
	r := &releaserRun{id: id, logs: &logBuf{}, cancel: cancel, done: make(chan error, 1)}
	cfg := ReleaserConfig{
		Kube: e.kube, Dynamic: e.dyn, Identity: id, Namespace: "strait-system",
		Interval:      200 * time.Millisecond,
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
		Log: testLogger(e.t, r.logs),
	}
	wg.Go(func() { r.done <- RunReleaser(ctx, cfg) })
	return r
}

func (e *env) leaseHolder() string {
	l, err := e.kube.CoordinationV1().Leases("strait-system").Get(e.ctx, DefaultReleaserLease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func (e *env) blockExists(name string) bool {
	e.t.Helper()
	_, err := e.dyn.Resource(gvr(resourceBlocks)).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
	return err == nil
}

// pod creates a pod bound to node and sets its status (no kubelet here).
func (e *env) pod(name, node string, phase corev1.PodPhase, ip string) {
	e.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
	}
	p, err := e.kube.CoreV1().Pods("default").Create(e.ctx, p, metav1.CreateOptions{})
	must(e.t, err, "create pod %s", name)
	p.Status.Phase = phase
	p.Status.PodIP = ip
	p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	_, err = e.kube.CoreV1().Pods("default").UpdateStatus(e.ctx, p, metav1.UpdateOptions{})
	must(e.t, err, "set status of pod %s", name)
}

// TestReleaser: nobody acts while a crashed agent's Lease is valid; then
// one releaser leads; the blocks of a deleted node are deleted once no live
// pod has an IP in them (a Succeeded pod does not count), blocks of
// existing nodes stay, only the Lease holder acts; when the leader stops,
// the other releaser takes over and finishes the job.
func TestReleaser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, err := e.kube.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "strait-system"}}, metav1.CreateOptions{})
	must(t, err, "create namespace")
	// No controller-manager: the ServiceAccount admission needs the default one.
	_, err = e.kube.CoreV1().ServiceAccounts("default").Create(e.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	must(t, err, "create service account")
	e.node("n1", nil)
	e.node("n2", nil)
	e.pool("p", "10.20.0.0/24", 26, nil)
	m1, m2 := e.manager("n1"), e.manager("n2")
	busy, err := m1.Claim(e.ctx, 4)
	must(t, err, "claim")
	idle, err := m1.Claim(e.ctx, 4)
	must(t, err, "claim")
	other, err := m2.Claim(e.ctx, 4)
	must(t, err, "claim")
	e.pod("web", "n1", corev1.PodRunning, busy.CIDR.Addr().Next().String())
	e.pod("job", "n1", corev1.PodSucceeded, idle.CIDR.Addr().Next().String())

	// A crashed agent holds the Lease: nobody acts until it expires.
	must(t, e.kube.CoreV1().Nodes().Delete(e.ctx, "n1", metav1.DeleteOptions{}), "delete node n1")
	crashed, dur, now := "crashed-agent", int32(3), metav1.NewMicroTime(time.Now())
	_, err = e.kube.CoordinationV1().Leases("strait-system").Create(e.ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultReleaserLease, Namespace: "strait-system"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &crashed, LeaseDurationSeconds: &dur, AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{})
	must(t, err, "create lease")

	var wg sync.WaitGroup
	defer wg.Wait()
	ra, rb := e.startReleaser("r-a", &wg), e.startReleaser("r-b", &wg)
	defer ra.cancel()
	defer rb.cancel()
	t0 := time.Now()
	time.Sleep(2 * time.Second)
	if h := e.leaseHolder(); h != crashed || !e.blockExists(idle.Name) {
		t.Fatalf("within the crashed holder's lease: holder %q, idle block exists %v", h, e.blockExists(idle.Name))
	}
	e.eventually(10*time.Second, "a leader", func() error {
		if h := e.leaseHolder(); h == "" || h == crashed {
			return errFalse
		}
		return nil
	})
	leader, follower := ra, rb
	if e.leaseHolder() == rb.id {
		leader, follower = rb, ra
	}
	t.Logf("%s took over from a crashed holder %v after start (lease 3s)", leader.id, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	e.eventually(5*time.Second, "idle block of n1 released", func() error {
		if e.blockExists(idle.Name) {
			return errFalse
		}
		return nil
	})
	t.Logf("idle block released %v after the leader took over", time.Since(t0).Round(time.Millisecond))
	time.Sleep(5 * 200 * time.Millisecond) // five more passes
	if !e.blockExists(busy.Name) || !e.blockExists(other.Name) {
		t.Fatalf("busy block (pod web) or n2's block deleted: busy %v, n2 %v", e.blockExists(busy.Name), e.blockExists(other.Name))
	}
	if !strings.Contains(leader.logs.String(), "keeping block of a deleted node") || !strings.Contains(leader.logs.String(), "default/web") {
		t.Fatal("the leader did not log why it keeps the busy block")
	}
	if strings.Count(leader.logs.String(), "level=INFO msg=\"keeping block") != 1 {
		t.Fatal("the reason for keeping a block is logged at info level more than once")
	}
	if s := follower.logs.String(); strings.Contains(s, "block release pass") || strings.Contains(s, "released block") {
		t.Fatalf("the follower %s acted:\n%s", follower.id, s)
	}

	// Stop the leader: the follower takes over and releases the busy block
	// once its pod is gone.
	leader.cancel()
	t0 = time.Now()
	if err := <-leader.done; err != nil {
		t.Fatalf("RunReleaser of the stopped leader: %v", err)
	}
	e.eventually(10*time.Second, "the follower leads", func() error {
		if e.leaseHolder() != follower.id {
			return errFalse
		}
		return nil
	})
	t.Logf("%s took over %v after %s's ctx was cancelled", follower.id, time.Since(t0).Round(time.Millisecond), leader.id)
	e.eventually(5*time.Second, "the new leader passes", func() error {
		if !strings.Contains(follower.logs.String(), "block release pass") {
			return errFalse
		}
		return nil
	})
	if !e.blockExists(busy.Name) {
		t.Fatal("the new leader released the busy block")
	}
	// A pod bound to a node is only marked for deletion until its kubelet
	// confirms; for a gone node the PodGC controller force-deletes it, as
	// here (grace period 0).
	zero := int64(0)
	must(t, e.kube.CoreV1().Pods("default").Delete(e.ctx, "web", metav1.DeleteOptions{GracePeriodSeconds: &zero}), "delete pod")
	t0 = time.Now()
	e.eventually(5*time.Second, "busy block released", func() error {
		if e.blockExists(busy.Name) {
			return errFalse
		}
		return nil
	})
	t.Logf("busy block released %v after its pod was deleted", time.Since(t0).Round(time.Millisecond))
	if !e.blockExists(other.Name) {
		t.Fatal("n2's block was released")
	}
	if !strings.Contains(follower.logs.String(), "released block of a deleted node") {
		t.Fatal("the new leader did not log the release")
	}
	rb.cancel()
	ra.cancel()
	wg.Wait()
}

type errString string

func (e errString) Error() string { return string(e) }

const errFalse = errString("not yet")
