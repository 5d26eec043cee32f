// Package ipam allocates pod addresses from a node's pools: its pod CIDRs or
// the IPAM blocks it holds, a set that may change at run time.
//
// The Allocator is pure bookkeeping over a Store: every change is one atomic
// Store.Commit, and the in-memory index is updated only after the commit
// succeeded, so a crash (kill -9) at any instruction leaves the store either
// before or after a whole change, never in between. It imports no netlink.
//
// Crash safety of BoltStore rests on bbolt: a transaction writes modified
// pages copy-on-write to free space, fsyncs them, then writes one of two
// alternating checksummed meta pages and fsyncs again (NoSync stays false).
// A kill -9 before the meta write leaves the previous meta page pointing at
// the untouched old tree; a torn meta page fails its checksum and the other
// one is used. Since each Allocate/Release/Update is exactly one Commit
// (allocation and cursors together), no partial change is ever visible.
// Pool changes (SetPools, AddPool, RemovePool) write nothing: the pool set
// is configuration the caller gives again after a restart (New), e.g. the
// IPAM blocks the node holds; cursors are stored per prefix, so a pool that
// comes back continues where it stopped.
package ipam

import (
	"errors"
	"net/netip"
	"time"
)

// ErrExhausted is returned (wrapped, see ExhaustedError) when all pools of
// an address family have no free address.
// The CNI layer maps it to error code 11 (try again later).
var ErrExhausted = errors.New("ipam: pool exhausted")

// ErrPoolInUse is returned (wrapped) by RemovePool while an allocation holds
// an address inside the pool.
var ErrPoolInUse = errors.New("ipam: pool in use")

// Key identifies one attachment: the CNI network, the container and the
// interface inside it. Allocation is idempotent per Key.
type Key struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

func (k Key) String() string { return k.Network + "/" + k.ContainerID + "/" + k.IfName }

// Owner is what is recorded with each allocation: the attachment key, the pod
// identity (read later by flow visibility and the CLI) and the host-side
// interface, so a restarted agent can find orphaned links.
type Owner struct {
	Key
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	PodUID       string `json:"podUID,omitempty"`
	Netns        string `json:"netns,omitempty"`
	HostIface    string `json:"hostIface,omitempty"`
}

// Allocation is the set of addresses (one per configured address family) held
// by one Owner. Addresses are host addresses (/32 or /128 prefixes are built
// by the caller).
type Allocation struct {
	Owner
	Addrs   []netip.Addr `json:"addrs"`
	Created time.Time    `json:"created"`
}

// Snapshot is the whole persisted state.
type Snapshot struct {
	Allocations []Allocation
	// Cursors holds, per pool (keyed by the pool prefix string), the last
	// address handed out, so allocation continues round-robin after it.
	Cursors map[string]netip.Addr
}

// Change is one atomic update to the store.
type Change struct {
	Put     []Allocation
	Delete  []Key
	Cursors map[string]netip.Addr
}

// Store persists allocations. Commit must be atomic and durable: when it
// returns nil the change survives a crash; when the process dies inside it,
// a later Load sees either all of the change or none of it.
type Store interface {
	Load() (Snapshot, error)
	Commit(Change) error
	Close() error
}
