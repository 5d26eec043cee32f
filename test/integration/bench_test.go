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
	run("del")
	return out
}

// BenchmarkCNIAddDel compares strait with the reference bridge + host-local
// plugins: 100 pods sequentially and 100 pods 10 at a time, ADD and DEL
// latency p50/p99, rounds interleaved. Run with `make bench`.
func BenchmarkCNIAddDel(b *testing.B) {
	testutil.RequireRoot(b)
	if _, err := os.Stat(filepath.Join(refPluginDir, "bridge")); err != nil {
		b.Skipf("reference plugins not installed in %s (apt-get install containernetworking-plugins)", refPluginDir)
	}
	n := newNode(b, nodeOpts{podCIDRs: []string{"10.244.0.0/16", "fd42:244::/64"}})
	refNS := testutil.NewNS(b)
	refList, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"ref","plugins":[{"type":"bridge","bridge":"cni0",
	  "isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","dataDir":"` + filepath.Join(b.TempDir(), "hl") + `",
	  "ranges":[[{"subnet":"10.245.0.0/16"}],[{"subnet":"fd42:245::/64"}]]}}]}`))
	if err != nil {
		b.Fatal(err)
	}
	refCNI := libcni.NewCNIConfigWithCacheDir([]string{refPluginDir}, b.TempDir(), nil)
	ourList, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"strait","plugins":[{"type":"strait","socketPath":%q}]}`, n.socket)))
	if err != nil {
		b.Fatal(err)
	}

	const pods = 100
	podNS := make([]*testutil.NS, pods)
	for i := range podNS {
		podNS[i] = testutil.NewNS(b)
	}
	rounds := 3
	res := map[string]*latencies{}
	acc := func(key string, l latencies) {
		if res[key] == nil {
			res[key] = &latencies{}
		}
		res[key].add = append(res[key].add, l.add...)
		res[key].del = append(res[key].del, l.del...)
	}
	for r := 0; r < rounds; r++ {
		for _, par := range []int{1, 10} {
			tag := fmt.Sprintf("r%dp%d", r, par)
			acc(fmt.Sprintf("strait/parallel=%d", par), churnPods(b, n.ns, n.cni, ourList, podNS, par, "s"+tag))
			acc(fmt.Sprintf("reference/parallel=%d", par), churnPods(b, refNS, refCNI, refList, podNS, par, "r"+tag))
		}
	}
	fmt.Printf("\n| mode | plugin | ADD p50 ms | ADD p99 ms | DEL p50 ms | DEL p99 ms |\n|---|---|---|---|---|---|\n")
	for _, par := range []int{1, 10} {
		for _, who := range []string{"strait", "reference"} {
			l := res[fmt.Sprintf("%s/parallel=%d", who, par)]
			fmt.Printf("| %s | %s | %.1f | %.1f | %.1f | %.1f |\n", map[int]string{1: "100 sequential", 10: "10 concurrent"}[par], who,
				ms(pct(l.add, .5)), ms(pct(l.add, .99)), ms(pct(l.del, .5)), ms(pct(l.del, .99)))
		}
		s, r := res[fmt.Sprintf("strait/parallel=%d", par)], res[fmt.Sprintf("reference/parallel=%d", par)]
		fmt.Printf("| %s | ratio strait/ref | %.2f | %.2f | %.2f | %.2f |\n", map[int]string{1: "100 sequential", 10: "10 concurrent"}[par],
			ms(pct(s.add, .5))/ms(pct(r.add, .5)), ms(pct(s.add, .99))/ms(pct(r.add, .99)),
			ms(pct(s.del, .5))/ms(pct(r.del, .5)), ms(pct(s.del, .99))/ms(pct(r.del, .99)))
		b.ReportMetric(ms(pct(s.add, .5)), fmt.Sprintf("strait-add-p50-ms/par%d", par))
		b.ReportMetric(ms(pct(r.add, .5)), fmt.Sprintf("ref-add-p50-ms/par%d", par))
	}
}
