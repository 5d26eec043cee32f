package agent

import (
	"context"
	"net/netip"

	"github.com/strait-net/strait/internal/agent/blocks"
)

// reportAllocations writes how many addresses of each of this node's
// blocks are in use into the IPAMBlocks' status (blocks mode only), at
// every resync; only changed counts cost an API write. A failure is
// logged: block status is informational.
func (cc *clusterController) reportAllocations(ctx context.Context) {
	if cc.blocks == nil || cc.alloc == nil {
		return
	}
	if cc.allocReport == nil {
		cc.allocReport = blocks.NewAllocationReporter(cc.blocks)
	}
	inUse := map[netip.Prefix]int{}
	for _, u := range cc.alloc.Usage() {
		inUse[u.Prefix] = u.InUse
	}
	if err := cc.allocReport.Sync(ctx, inUse); err != nil {
		cc.log.Warn("report block allocations", "error", err)
	}
}
