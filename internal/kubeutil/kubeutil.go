// Package kubeutil holds the small client-go helpers Strait's daemons share.
package kubeutil

import (
	"context"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// syncPoll is how often WaitForSync looks at the informers. client-go's
// cache.WaitForCacheSync looks every 100 ms, which a cold start pays in
// full (the list of 1,000 Nodes arrives in tens of milliseconds); the
// HasSynced checks are cheap.
const syncPoll = 5 * time.Millisecond

// WaitForSync waits until every informer has synced; false when ctx ends
// first.
func WaitForSync(ctx context.Context, synced ...cache.InformerSynced) bool {
	t := time.NewTicker(syncPoll)
	defer t.Stop()
	for {
		done := true
		for _, s := range synced {
			if !s() {
				done = false
				break
			}
		}
		if done {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// Protobuf returns a copy of cfg that talks protobuf, as Kubernetes' own
// components do, for clients of built-in types (typed clientsets): lists
// of a thousand Nodes or Pods decode several times faster than JSON.
// Custom resources have no protobuf encoding; dynamic clients keep cfg.
func Protobuf(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.ContentType = "application/vnd.kubernetes.protobuf"
	c.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return c
}
