package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/strait-net/strait/internal/testutil"
)

// churnCycles is 500 by default; STRAIT_CHURN_CYCLES overrides it.
func churnCycles() int {
	if v, err := strconv.Atoi(os.Getenv("STRAIT_CHURN_CYCLES")); err == nil && v > 0 {
		return v
	}
	return 500
}

// 500 ADD/DEL cycles while the agent is SIGKILLed at random moments and
// restarted. The runtime behaves as kubelet does: a failed ADD is followed by
// DEL and a new sandbox; a failed DEL is retried. Afterwards: no leaked
// allocation, no duplicate address among live pods at any time, no stray
// host veth, before and after GC.
func TestChurnWithAgentKills(t *testing.T) {
	n := newNode(t, nodeOpts{podCIDRs: []string{"10.244.9.0/26", "fd42:244:9::/120"}})
	const slots = 6 // pods alive at once
	pods := make([]*testutil.NS, slots)
	for i := range pods {
		pods[i] = testutil.NewNS(t)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	kills := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			// Every other kill lets the agent answer STATUS first, so the
			// runtime's calls get through however slow a start is on a
			// loaded machine (the kills otherwise outpaced the starts for
			// a minute once); the others land anywhere, start-up included.
			for ready := kills%2 == 0; !ready; ready = n.status() == nil {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(20+rand.IntN(250)) * time.Millisecond):
			}
			if err := n.agent.Restart(); err != nil {
				t.Error(err)
				return
			}
			kills++
		}
	}()

	retry := func(what string, f func() error) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			err := f()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: still failing after 60 s: %v", what, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	live := map[int]*libcni.RuntimeConf{}
	liveAddrs := map[int][]string{}
	owner := map[string]int{}
	failedAdds := 0
	cycles := churnCycles()
	for i := 0; i < cycles && !t.Failed(); i++ {
		slot := i % slots
		if rt := live[slot]; rt != nil {
			retry("DEL "+rt.ContainerID, func() error { return n.del(rt) })
			for _, a := range liveAddrs[slot] {
				delete(owner, a)
			}
			delete(live, slot)
		}
		var rt *libcni.RuntimeConf
		for attempt := 0; ; attempt++ {
			rt = n.rt(fmt.Sprintf("churn-%d-%d", i, attempt), pods[slot].Path())
			res, err := n.add(rt)
			if err == nil {
				var addrs []string
				for _, ip := range res.IPs {
					a := ip.Address.IP.String()
					if other, dup := owner[a]; dup {
						t.Fatalf("cycle %d: address %s handed to slot %d while slot %d holds it", i, a, slot, other)
					}
					owner[a] = slot
					addrs = append(addrs, a)
				}
				if len(addrs) != 2 {
					t.Fatalf("cycle %d: %d addresses, want 2", i, len(addrs))
				}
				live[slot], liveAddrs[slot] = rt, addrs
				break
			}
			failedAdds++
			// kubelet: tear the failed sandbox down, then try a new one.
			retry("DEL after failed ADD "+rt.ContainerID, func() error { return n.del(rt) })
			if attempt > 200 {
				t.Fatalf("cycle %d: ADD keeps failing: %v", i, err)
			}
		}
	}
	for slot, rt := range live {
		retry("final DEL "+rt.ContainerID, func() error { return n.del(rt) })
		delete(live, slot)
	}
	close(stop)
	wg.Wait()
	n.waitReady()
	t.Logf("%d cycles, %d agent kills, %d failed ADDs retried", cycles, kills, failedAdds)

	if links := n.hostLinks(); len(links) != 0 {
		t.Errorf("stray host veths after all DELs: %v", links)
	}
	// GC with an empty attachment list must find nothing more to do.
	gc := libcni.NewCNIConfigWithCacheDir(n.cni.Path, t.TempDir(), nil)
	if err := n.inNode(func() error {
		return gc.GCNetworkList(t.Context(), n.list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if links := n.hostLinks(); len(links) != 0 {
		t.Errorf("stray host veths after GC: %v", links)
	}
	if al := n.allocations(); len(al) != 0 {
		t.Errorf("leaked allocations: %+v", al)
	}
	for _, p := range pods {
		out := p.MustRun(t, "ip", "-o", "link", "show")
		if containsEth0(out) {
			t.Errorf("pod %s still has eth0 after DEL:\n%s", p.Name, out)
		}
	}
}

func containsEth0(ipLinkOutput string) bool {
	for _, f := range strings.Fields(ipLinkOutput) {
		if f == "eth0:" || strings.HasPrefix(f, "eth0@") {
			return true
		}
	}
	return false
}
