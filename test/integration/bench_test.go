package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/strait-net/strait/internal/testutil"
)

// Debian's reference plugins (containernetworking-plugins), the peer measured
// in the same run.
const refPluginDir = "/usr/lib/cni"

type latencies struct{ add, del []time.Duration }

func pct(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// settle is the pause between the ADD and the DEL phase (see docs/benchmarks.md).
var settle = func() time.Duration {
	d, err := time.ParseDuration(os.Getenv("STRAIT_BENCH_SETTLE"))
	if err != nil {
		return 0
	}
	return d
}()

// churnPods ADDs then DELs len(pods) pods through libcni in the node
// namespace, `parallel` at a time, and returns each call's latency.
func churnPods(b *testing.B, nodeNS *testutil.NS, c *libcni.CNIConfig, list *libcni.NetworkConfigList, pods []*testutil.NS, parallel int, tag string) latencies {
	b.Helper()
	var mu sync.Mutex
	var out latencies
	run := func(op string) {
		sem := make(chan struct{}, parallel)
		var wg sync.WaitGroup
		for i, p := range pods {
			wg.Add(1)
			sem <- struct{}{}
			go func(i int, p *testutil.NS) {
				defer wg.Done()
				defer func() { <-sem }()
				rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("%s-%d", tag, i), NetNS: p.Path(), IfName: "eth0"}
				start := time.Now()
				err := nodeNS.Do(func(ns.NetNS) error {
					if op == "add" {
						_, err := c.AddNetworkList(context.Background(), list, rt)
						return err
					}
					return c.DelNetworkList(context.Background(), list, rt)
				})
				d := time.Since(start)
				if err != nil {
					b.Errorf("%s %s: %v", op, rt.ContainerID, err)
					return
				}
				mu.Lock()
				if op == "add" {
					out.add = append(out.add, d)
				} else {
					out.del = append(out.del, d)
				}
				mu.Unlock()
			}(i, p)
		}
		wg.Wait()
	}
	run("add")
	time.Sleep(settle)
	run("del")
	return out
}

// BenchmarkCNIAddDel compares strait with the reference bridge + host-local
// plugins: 100 pods sequentially and 100 pods 10 at a time, ADD and DEL
// latency p50/p99, dual-stack and IPv4-only, rounds interleaved. Run with
// `make bench`.
func BenchmarkCNIAddDel(b *testing.B) {
	testutil.RequireRoot(b)
	if _, err := os.Stat(filepath.Join(refPluginDir, "bridge")); err != nil {
		b.Skipf("reference plugins not installed in %s (apt-get install containernetworking-plugins)", refPluginDir)
	}
	type setup struct {
		nodeNS *testutil.NS
		cni    *libcni.CNIConfig
		list   *libcni.NetworkConfigList
	}
	confList := func(s string) *libcni.NetworkConfigList {
		l, err := libcni.ConfListFromBytes([]byte(s))
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	setups := map[string]setup{}
	for _, stack := range []string{"dual-stack", "ipv4"} {
		cidrs := []string{"10.244.0.0/16", "fd42:244::/64"}
		ranges := `[[{"subnet":"10.245.0.0/16"}],[{"subnet":"fd42:245::/64"}]]`
		if stack == "ipv4" {
			cidrs, ranges = cidrs[:1], `[[{"subnet":"10.245.0.0/16"}]]`
		}
		n := newNode(b, nodeOpts{podCIDRs: cidrs})
		setups["strait/"+stack] = setup{n.ns, n.cni, confList(fmt.Sprintf(
			`{"cniVersion":"1.0.0","name":"strait","plugins":[{"type":"strait","socketPath":%q}]}`, n.socket))}
		setups["reference/"+stack] = setup{testutil.NewNS(b), libcni.NewCNIConfigWithCacheDir([]string{refPluginDir}, b.TempDir(), nil),
			confList(`{"cniVersion":"1.0.0","name":"ref","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,
			"ipam":{"type":"host-local","dataDir":"` + filepath.Join(b.TempDir(), "hl") + `","ranges":` + ranges + `}}]}`)}
	}

	const pods = 100
	podNS := make([]*testutil.NS, pods)
	for i := range podNS {
		podNS[i] = testutil.NewNS(b)
	}
	const rounds = 4
	res := map[string]*latencies{}
	for r := 0; r < rounds; r++ {
		for _, stack := range []string{"dual-stack", "ipv4"} {
			for _, par := range []int{1, 10} {
				// Who goes first alternates from round to round: a run
				// inherits the kernel's leftover work (RCU callbacks, link
				// cleanup) from the one before it.
				order := []string{"strait", "reference"}
				if r%2 == 1 {
					order = []string{"reference", "strait"}
				}
				for _, who := range order {
					s := setups[who+"/"+stack]
					l := churnPods(b, s.nodeNS, s.cni, s.list, podNS, par, fmt.Sprintf("%s-%s-r%dp%d", who, stack, r, par))
					key := fmt.Sprintf("%s/%s/%d", who, stack, par)
					if res[key] == nil {
						res[key] = &latencies{}
					}
					res[key].add = append(res[key].add, l.add...)
					res[key].del = append(res[key].del, l.del...)
				}
			}
		}
	}
	mode := map[int]string{1: "100 sequential", 10: "10 concurrent"}
	fmt.Printf("\n| stack | mode | plugin | ADD p50 ms | ADD p99 ms | DEL p50 ms | DEL p99 ms |\n|---|---|---|---|---|---|---|\n")
	for _, stack := range []string{"dual-stack", "ipv4"} {
		for _, par := range []int{1, 10} {
			s, r := res[fmt.Sprintf("strait/%s/%d", stack, par)], res[fmt.Sprintf("reference/%s/%d", stack, par)]
			for _, row := range []struct {
				who string
				l   *latencies
			}{{"strait", s}, {"bridge+host-local", r}} {
				fmt.Printf("| %s | %s | %s | %.1f | %.1f | %.1f | %.1f |\n", stack, mode[par], row.who,
					ms(pct(row.l.add, .5)), ms(pct(row.l.add, .99)), ms(pct(row.l.del, .5)), ms(pct(row.l.del, .99)))
			}
			fmt.Printf("| %s | %s | **ratio** | **%.2f** | **%.2f** | **%.2f** | **%.2f** |\n", stack, mode[par],
				ms(pct(s.add, .5))/ms(pct(r.add, .5)), ms(pct(s.add, .99))/ms(pct(r.add, .99)),
				ms(pct(s.del, .5))/ms(pct(r.del, .5)), ms(pct(s.del, .99))/ms(pct(r.del, .99)))
			b.ReportMetric(ms(pct(s.add, .5))/ms(pct(r.add, .5)), fmt.Sprintf("add-p50-ratio/%s/par%d", stack, par))
		}
	}
}
