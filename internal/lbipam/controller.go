package lbipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/strait-net/strait/api/v1alpha1"
	"github.com/strait-net/strait/internal/kubeutil"
	"github.com/strait-net/strait/internal/leader"
)

// ConditionAllocated is the Service status condition the allocator owns:
// True with the addresses, or False with why not (Reason* constants).
const ConditionAllocated = "strait.dev/LoadBalancerIPAllocated"

// Pool status conditions.
const (
	ConditionReady     = v1alpha1.ConditionReady
	ConditionExhausted = "Exhausted"
)

// Config configures Run. Zero values take the defaults.
type Config struct {
	Kube    kubernetes.Interface // Services, events, the Lease
	Dynamic dynamic.Interface    // LoadBalancerIPPools
	// Identity of this candidate in the Lease (the node's name).
	Identity string
	// Namespace and LeaseName of the Lease (strait-system, strait-lb-ipam).
	Namespace string
	LeaseName string
	// Resync is how often the leader recomputes everything even without
	// changes (default 1m).
	Resync time.Duration
	// Leader election timing (see package leader).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

var gvrPools = v1alpha1.SchemeGroupVersion.WithResource("loadbalancerippools")

// Run campaigns for the Lease until ctx ends and, while leading, keeps
// every LoadBalancer Service's ingress addresses as Allocate says. It
// returns nil when ctx ends, an error only for a bad Config.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Kube == nil || cfg.Dynamic == nil || cfg.Identity == "" {
		return errors.New("lbipam: Kube, Dynamic and Identity are required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "strait-system"
	}
	if cfg.LeaseName == "" {
		cfg.LeaseName = "strait-lb-ipam"
	}
	if cfg.Resync == 0 {
		cfg.Resync = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	log := cfg.Log.With("component", "lb-ipam", "identity", cfg.Identity)
	return leader.Run(ctx, leader.Config{
		Kube: cfg.Kube, Namespace: cfg.Namespace, Name: cfg.LeaseName, Identity: cfg.Identity,
		LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.RenewDeadline, RetryPeriod: cfg.RetryPeriod, Log: log,
	}, func(lctx context.Context) {
		log.Info("leading the LoadBalancer IP allocator")
		defer log.Info("stopped leading the LoadBalancer IP allocator")
		c := &controller{cfg: cfg, log: log, reported: map[string]string{}, poolReported: map[string]string{}}
		if err := c.lead(lctx); err != nil && lctx.Err() == nil {
			log.Error("LoadBalancer IP allocator stopped", "error", err)
		}
	})
}

type controller struct {
	cfg      Config
	log      *slog.Logger
	recorder record.EventRecorder
	services cache.Indexer
	pools    cache.Indexer
	// reported is the last problem (or address list) reported per Service
	// and pool, so an event is recorded once per change.
	reported     map[string]string
	poolReported map[string]string
}

func (c *controller) lead(ctx context.Context) error {
	kf := informers.NewSharedInformerFactory(c.cfg.Kube, 0)
	df := dynamicinformer.NewDynamicSharedInformerFactory(c.cfg.Dynamic, 0)
	si := kf.Core().V1().Services().Informer()
	pi := df.ForResource(gvrPools).Informer()
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: func(any) { poke() }, UpdateFunc: func(any, any) { poke() }, DeleteFunc: func(any) { poke() }}
	if _, err := si.AddEventHandler(h); err != nil {
		return err
	}
	if _, err := pi.AddEventHandler(h); err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cfg.Kube.CoreV1().Events("")})
	c.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "strait-lb-ipam"})

	kf.Start(ctx.Done())
	df.Start(ctx.Done())
	defer kf.Shutdown()
	defer df.Shutdown()
	if !kubeutil.WaitForSync(ctx, si.HasSynced, pi.HasSynced) {
		return fmt.Errorf("lbipam: informers did not sync: %w", ctx.Err())
	}
	c.services, c.pools = si.GetIndexer(), pi.GetIndexer()
	tick := time.NewTicker(c.cfg.Resync)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		if err := c.reconcile(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("LoadBalancer IP pass incomplete; retrying", "error", err)
			retry.Reset(time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-tick.C:
		case <-retry.C:
		}
	}
}

// reconcile runs Allocate over the informers' state and writes what
// differs: Service status (ingress, condition), events, pool status.
func (c *controller) reconcile(ctx context.Context) error {
	var pools []Pool
	for _, o := range c.pools.List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		p, err := PoolFromObject(u)
		if err != nil {
			c.log.Warn("ignoring LoadBalancerIPPool", "error", err)
			continue
		}
		pools = append(pools, p)
	}
	var ours []Service
	objs := map[string]*corev1.Service{}
	for _, o := range c.services.List() {
		svc, ok := o.(*corev1.Service)
		if !ok {
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		objs[key] = svc
		if Ours(svc) {
			ours = append(ours, ServiceFromObject(svc))
		}
	}
	res := Allocate(pools, ours)
	var errs []error
	for key, svc := range objs {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		if a, ok := res.Services[key]; ok {
			err = c.applyService(ctx, svc, a)
		} else {
			err = c.releaseService(ctx, svc)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	for k := range c.reported {
		if _, ok := res.Services[k]; !ok {
			delete(c.reported, k)
		}
	}
	for _, o := range c.pools.List() {
		if u, ok := o.(*unstructured.Unstructured); ok {
			if usage, ok := res.Pools[u.GetName()]; ok {
				if err := c.applyPool(ctx, u, usage); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func ingressOf(svc *corev1.Service) []string {
	var out []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

func (c *controller) applyService(ctx context.Context, svc *corev1.Service, a Assignment) error {
	key := svc.Namespace + "/" + svc.Name
	var ips []string
	for _, ip := range a.Addrs {
		ips = append(ips, ip.String())
	}
	cond := metav1.Condition{Type: ConditionAllocated, Status: metav1.ConditionTrue, Reason: "Allocated",
		Message: "LoadBalancer addresses " + strings.Join(ips, ", "), ObservedGeneration: svc.Generation}
	if a.Problem != "" {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, a.Reason, a.Problem
		if len(ips) > 0 {
			cond.Message += " (assigned: " + strings.Join(ips, ", ") + ")"
		}
	}
	report := cond.Reason + ": " + cond.Message
	if c.reported[key] != report {
		if a.Problem != "" {
			c.recorder.Event(svc, corev1.EventTypeWarning, a.Reason, a.Problem)
			c.log.Info("LoadBalancer Service not fully served", "service", key, "reason", a.Reason, "problem", a.Problem, "assigned", ips)
		} else if !slices.Equal(ips, ingressOf(svc)) {
			c.recorder.Eventf(svc, corev1.EventTypeNormal, "IPAllocated", "Assigned LoadBalancer addresses %s", strings.Join(ips, ", "))
			c.log.Info("assigned LoadBalancer addresses", "service", key, "addresses", ips)
		}
	}
	if slices.Equal(ips, ingressOf(svc)) && conditionSame(svc.Status.Conditions, cond) {
		c.reported[key] = report
		return nil
	}
	upd := svc.DeepCopy()
	upd.Status.LoadBalancer.Ingress = nil
	vip := corev1.LoadBalancerIPModeVIP
	for _, ip := range ips {
		upd.Status.LoadBalancer.Ingress = append(upd.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip, IPMode: &vip})
	}
	meta.SetStatusCondition(&upd.Status.Conditions, cond)
	if _, err := c.cfg.Kube.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("update status of Service %s: %w", key, err)
	}
	c.reported[key] = report
	return nil
}

// releaseService clears what the allocator wrote on a Service it no longer
// serves (its type changed): the condition, and the ingress addresses if
// it is no LoadBalancer at all.
func (c *controller) releaseService(ctx context.Context, svc *corev1.Service) error {
	if meta.FindStatusCondition(svc.Status.Conditions, ConditionAllocated) == nil {
		return nil
	}
	upd := svc.DeepCopy()
	meta.RemoveStatusCondition(&upd.Status.Conditions, ConditionAllocated)
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		upd.Status.LoadBalancer = corev1.LoadBalancerStatus{}
	}
	if _, err := c.cfg.Kube.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("release Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	c.log.Info("released LoadBalancer addresses", "service", svc.Namespace+"/"+svc.Name, "addresses", ingressOf(svc))
	return nil
}

func conditionSame(cs []metav1.Condition, want metav1.Condition) bool {
	got := meta.FindStatusCondition(cs, want.Type)
	return got != nil && got.Status == want.Status && got.Reason == want.Reason && got.Message == want.Message && got.ObservedGeneration == want.ObservedGeneration
}

func (c *controller) applyPool(ctx context.Context, u *unstructured.Unstructured, usage PoolUsage) error {
	var p v1alpha1.LoadBalancerIPPool
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		return fmt.Errorf("LoadBalancerIPPool %s: %w", u.GetName(), err)
	}
	st := p.Status.DeepCopy()
	st.AllocatedIPv4, st.AllocatedIPv6, st.AvailableIPv4, st.AvailableIPv6 = usage.AllocatedV4, usage.AllocatedV6, usage.AvailableV4, usage.AvailableV6
	ready := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: "Ready", Message: "every CIDR is in use", ObservedGeneration: p.Generation}
	if len(usage.Problems) > 0 {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "Overlap", strings.Join(usage.Problems, "; ")
	}
	ex := metav1.Condition{Type: ConditionExhausted, Status: metav1.ConditionFalse, Reason: "Available", ObservedGeneration: p.Generation}
	hasV4, hasV6 := false, false
	for _, c := range p.Spec.CIDRs {
		if pr, err := netip.ParsePrefix(c); err == nil {
			hasV4, hasV6 = hasV4 || pr.Addr().Is4(), hasV6 || pr.Addr().Is6()
		}
	}
	var full []string
	if hasV4 && usage.AvailableV4 == 0 {
		full = append(full, "IPv4")
	}
	if hasV6 && usage.AvailableV6 == 0 {
		full = append(full, "IPv6")
	}
	ex.Message = "free addresses left"
	if len(full) > 0 {
		ex.Status, ex.Reason, ex.Message = metav1.ConditionTrue, "Exhausted", "no free "+strings.Join(full, " or ")+" address"
	}
	meta.SetStatusCondition(&st.Conditions, ready)
	meta.SetStatusCondition(&st.Conditions, ex)
	if reflect.DeepEqual(*st, p.Status) {
		return nil
	}
	if report := ready.Message + ex.Message; c.poolReported[p.Name] != report {
		c.poolReported[p.Name] = report
		c.log.Info("LoadBalancerIPPool", "pool", p.Name, "ready", ready.Message, "exhausted", ex.Message,
			"allocatedIPv4", usage.AllocatedV4, "allocatedIPv6", usage.AllocatedV6)
	}
	p.Status = *st
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&p)
	if err != nil {
		return fmt.Errorf("LoadBalancerIPPool %s: %w", p.Name, err)
	}
	if _, err := c.cfg.Dynamic.Resource(gvrPools).UpdateStatus(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update status of LoadBalancerIPPool %s: %w", p.Name, err)
	}
	return nil
}
