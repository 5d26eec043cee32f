// Package leader runs a function on one of many candidates at a time,
// elected through a coordination.k8s.io Lease.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Config is one candidate's election. Zero durations take the defaults
// (15s, 10s, 2s; LeaseDuration > RenewDeadline > 1.2 * RetryPeriod): a
// crashed leader is replaced after LeaseDuration; one whose ctx ends gives
// the Lease up at once.
type Config struct {
	Kube kubernetes.Interface
	// Namespace (must exist) and Name of the Lease.
	Namespace, Name string
	// Identity of this candidate (the node's name).
	Identity      string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	Log           *slog.Logger
}

// Run campaigns until ctx ends; while this candidate leads, lead runs with
// a context cancelled when the Lease is lost. Two terms never overlap: after
// losing the Lease, Run waits for lead to return before campaigning again.
// It returns nil when ctx ends, an error only for a bad Config.
func Run(ctx context.Context, cfg Config, lead func(ctx context.Context)) error {
	if cfg.Kube == nil || cfg.Namespace == "" || cfg.Name == "" || cfg.Identity == "" {
		return errors.New("leader: Kube, Namespace, Name and Identity are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.LeaseDuration, 15*time.Second)
	def(&cfg.RenewDeadline, 10*time.Second)
	def(&cfg.RetryPeriod, 2*time.Second)
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Name},
		Client:     cfg.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
	}
	for ctx.Err() == nil {
		var mu sync.Mutex
		var term chan struct{}
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, Name: cfg.Name, ReleaseOnCancel: true,
			LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.RenewDeadline, RetryPeriod: cfg.RetryPeriod,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					done := make(chan struct{})
					mu.Lock()
					term = done
					mu.Unlock()
					defer close(done)
					if lctx.Err() == nil {
						lead(lctx)
					}
				},
				OnStoppedLeading: func() {},
				OnNewLeader:      func(id string) { cfg.Log.Info("leader", "lease", cfg.Name, "leader", id) },
			},
		})
		if err != nil {
			return fmt.Errorf("leader %s: %w", cfg.Name, err)
		}
		le.Run(ctx)
		mu.Lock()
		done := term
		mu.Unlock()
		if done != nil {
			<-done
		}
		if ctx.Err() == nil {
			cfg.Log.Warn("lost the Lease; campaigning again", "lease", cfg.Name)
			select {
			case <-ctx.Done():
			case <-time.After(cfg.RetryPeriod):
			}
		}
	}
	return nil
}
