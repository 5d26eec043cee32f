package blocks

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/strait-net/strait/api/v1alpha1"
)

// AllocationReporter keeps status.allocations of a node's IPAMBlocks in
// step with its local IPAM. It remembers what it wrote, so a periodic Sync
// costs an API write (and read) only for blocks whose count changed.
type AllocationReporter struct {
	m        *Manager
	mu       sync.Mutex
	reported map[netip.Prefix]int
}

// NewAllocationReporter returns a reporter for m's node.
func NewAllocationReporter(m *Manager) *AllocationReporter {
	return &AllocationReporter{m: m, reported: map[netip.Prefix]int{}}
}

// Sync writes inUse (addresses in use per block CIDR, from the node's IPAM)
// into the status of this node's blocks. A prefix with no IPAMBlock (a
// static pool, a block just released) is skipped until its count changes;
// a block of another node is an error. The first call checks every block.
func (r *AllocationReporter) Sync(ctx context.Context, inUse map[netip.Prefix]int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for cidr, n := range inUse {
		if last, ok := r.reported[cidr]; ok && last == n {
			continue
		}
		err := r.m.ReportAllocations(ctx, Block{Name: v1alpha1.BlockName(cidr), CIDR: cidr}, n)
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		r.reported[cidr] = n
	}
	for cidr := range r.reported {
		if _, ok := inUse[cidr]; !ok {
			delete(r.reported, cidr)
		}
	}
	return errors.Join(errs...)
}
