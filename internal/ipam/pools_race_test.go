package ipam

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentBlockGrowShrink runs the agent's block pattern under
// contention: workers allocate and release; on ErrExhausted they "claim" the
// next free block (AddPool) and retry; a shrinker gives blocks back with
// RemovePool whenever it succeeds and reorders the set with SetPools. Pool
// set changes are serialized (as the agent's block manager does) while
// Allocate and Release run concurrently with them. No
// address is handed out twice, RemovePool never removes a block holding an
// allocation (so every live allocation lies in a current pool), and the
// store matches memory.
func TestConcurrentBlockGrowShrink(t *testing.T) {
	var blocks []netip.Prefix // 16 blocks of 14 usable addresses
	for i := range 16 {
		blocks = append(blocks, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(16 * i)}), 28))
	}
	m := NewMemStore()
	a, err := New(m, blocks[:1])
	if err != nil {
		t.Fatal(err)
	}
	// One writer of the pool set at a time, like the agent's block manager:
	// claims and the shrinker take claimMu; Allocate and Release do not.
	var claimMu sync.Mutex
	claim := func() (grew bool, err error) {
		claimMu.Lock()
		defer claimMu.Unlock()
		// Like the agent's claimMore: another worker may have claimed a
		// block since this one saw the pools full.
		for _, u := range a.Usage() {
			if uint64(u.InUse) < u.Capacity {
				return false, nil
			}
		}
		cur := a.Pools()
		for _, b := range blocks {
			if !slices.Contains(cur, b) {
				return true, a.AddPool(b)
			}
		}
		return false, errors.New("all blocks claimed")
	}
	const workers, ops, maxHeld = 16, 300, 8 // at most 128 live < 224 usable
	var grows, removes, refused atomic.Int64
	done := make(chan struct{})
	var shrinker sync.WaitGroup
	shrinker.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			// The whole step holds claimMu: a claim in between could add
			// the removed block back (and a worker allocate from it), or
			// be dropped by the SetPools that writes the permutation.
			claimMu.Lock()
			if cur := a.Pools(); len(cur) > 0 {
				b := cur[rand.IntN(len(cur))]
				switch err := a.RemovePool(b); {
				case err == nil:
					removes.Add(1)
					if n := a.InUse(b); n != 0 {
						// Nothing can allocate from it any more.
						t.Errorf("removed %s but %d addresses are in it", b, n)
					}
				case errors.Is(err, ErrPoolInUse):
					refused.Add(1)
				default:
					t.Errorf("RemovePool(%s): %v", b, err)
				}
				cur = a.Pools()
				rand.Shuffle(len(cur), func(i, j int) { cur[i], cur[j] = cur[j], cur[i] })
				if err := a.SetPools(cur); err != nil {
					t.Errorf("SetPools(permutation): %v", err)
				}
			}
			claimMu.Unlock()
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			var held []Key
			for i := range ops {
				if len(held) >= maxHeld || (len(held) > 0 && rand.IntN(3) == 0) {
					j := rand.IntN(len(held))
					if _, ok, err := a.Release(held[j]); err != nil || !ok {
						errs <- fmt.Errorf("release %s: %v %v", held[j], ok, err)
						return
					}
					held = slices.Delete(held, j, j+1)
					continue
				}
				o := owner(w*ops + i)
				for try := 0; ; try++ {
					_, _, err := a.Allocate(o)
					if err == nil {
						break
					}
					var ex *ExhaustedError
					if !errors.As(err, &ex) || ex.Family == 6 || try > 100 {
						errs <- fmt.Errorf("allocate %s (try %d): %w", o.Key, try, err)
						return
					}
					grew, err := claim()
					if err != nil {
						errs <- fmt.Errorf("claim after %v: %w", ex, err)
						return
					}
					if grew {
						grows.Add(1)
					}
				}
				held = append(held, o.Key)
			}
		})
	}
	wg.Wait()
	close(done)
	shrinker.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	list := a.List()
	checkUnique(t, list)
	pools := a.Pools()
	inPools := 0
	for _, al := range list {
		if !slices.ContainsFunc(pools, func(p netip.Prefix) bool { return p.Contains(al.Addrs[0]) }) {
			t.Fatalf("%s holds %s outside the pools %v", al.Key, al.Addrs[0], pools)
		}
	}
	for _, p := range pools {
		inPools += a.InUse(p)
	}
	if inPools != len(list) {
		t.Fatalf("InUse over pools = %d, want %d", inPools, len(list))
	}
	b, err := New(m, pools)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(b.List(), list, allocEqual) || !slices.Equal(b.Usage(), a.Usage()) {
		t.Fatal("store differs from memory after concurrent pool changes")
	}
	t.Logf("%d live, %d claims, %d removes, %d refused removes, final pools %d", len(list), grows.Load(), removes.Load(), refused.Load(), len(pools))
	if grows.Load() == 0 || refused.Load() == 0 {
		t.Fatal("the test did not exercise growth and refused removal")
	}
	// Drained, every block but the last can be given back.
	for _, al := range list {
		mustRelease(t, a, al.Key)
	}
	for _, p := range pools {
		if err := a.RemovePool(p); err != nil {
			t.Fatalf("RemovePool(%s) of a drained block: %v", p, err)
		}
	}
	if got := a.Pools(); len(got) != 0 {
		t.Fatalf("pools after draining = %v", got)
	}
}
