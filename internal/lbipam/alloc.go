// Package lbipam assigns LoadBalancer ingress addresses to Services from
// LoadBalancerIPPools (strait.dev/v1alpha1). Allocate is the whole policy,
// a pure function of the pools and the Services (including the addresses
// their status already holds, so a restarted allocator rebuilds its state
// from the API); Run is the leader-elected client-go loop around it.
package lbipam

import (
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

// Pool is a LoadBalancerIPPool as the allocator needs it.
type Pool struct {
	Name  string
	CIDRs []netip.Prefix
	// Selector picks the Services that may use the pool; nil: all.
	Selector labels.Selector
	// AutoAssign: hand addresses to any selected Service, not only to
	// Services that name the pool or ask for an address in it.
	AutoAssign bool
}

// Service is a Service of type LoadBalancer of Strait's class.
type Service struct {
	// Key is namespace/name.
	Key     string
	Created time.Time
	Labels  map[string]string
	// Families the Service needs addresses of (spec.ipFamilies): 4 and/or 6.
	Families []int
	// Requested are fixed addresses (the strait.dev/loadBalancerIPs
	// annotation or spec.loadBalancerIP); RequestError says why the request
	// could not be read (then nothing is assigned).
	Requested    []netip.Addr
	RequestError string
	// Pools restricts the Service to the named pools (annotation); empty:
	// any.
	Pools []string
	// Current are the addresses in the Service's status now.
	Current []netip.Addr
}

// Reasons of an Assignment's problem.
const (
	ReasonConflict  = "AddressConflict"
	ReasonExhausted = "PoolExhausted"
	ReasonNoPool    = "NoPool"
	ReasonInvalid   = "InvalidRequest"
)

// Assignment is what a Service gets.
type Assignment struct {
	// Addrs, at most one per family, in the order of the Service's
	// families.
	Addrs []netip.Addr
	// Reason and Problem say why the Service did not get every address it
	// needs (empty: it did).
	Reason  string
	Problem string
}

// PoolUsage is a pool's status.
type PoolUsage struct {
	AllocatedV4, AllocatedV6 int64
	AvailableV4, AvailableV6 int64 // saturated at math.MaxInt64
	// Problems: CIDRs of the pool not used (overlap with another pool).
	Problems []string
}

// Result is the allocation of every Service and the use of every pool.
type Result struct {
	Services map[string]Assignment
	Pools    map[string]PoolUsage
}

// poolCIDR is one usable CIDR of a pool.
type poolCIDR struct {
	pool   *Pool
	prefix netip.Prefix
}

type state struct {
	pools []*Pool
	cidrs []poolCIDR // pools in name order, their CIDRs in order
	owner map[netip.Addr]string
	held  map[string]map[int]netip.Addr // service -> family -> address
	probs map[string][]string           // pool -> problems
}

// Allocate assigns addresses. Services are served oldest first (then by
// key); an address a Service holds in its status stays with it as long as
// it is in a pool the Service may use and no older Service holds it, so
// allocation is stable across restarts and never steals. Then fixed
// requests are honoured if the address is free, then missing families are
// filled with the lowest free address of the first pool (by name) with one.
func Allocate(pools []Pool, svcs []Service) Result {
	st := newState(pools)
	order := make([]*Service, len(svcs))
	for i := range svcs {
		order[i] = &svcs[i]
	}
	sort.SliceStable(order, func(i, j int) bool {
		a, b := order[i], order[j]
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.Key < b.Key
	})
	res := Result{Services: map[string]Assignment{}, Pools: map[string]PoolUsage{}}
	problem := map[string]Assignment{}
	fail := func(s *Service, reason, msg string) {
		if _, ok := problem[s.Key]; !ok {
			problem[s.Key] = Assignment{Reason: reason, Problem: msg}
		}
	}

	// 1. Keep what each Service holds.
	for _, s := range order {
		st.held[s.Key] = map[int]netip.Addr{}
		if s.RequestError != "" {
			continue
		}
		for _, a := range s.Current {
			fam := family(a)
			if _, dup := st.held[s.Key][fam]; dup || !slices.Contains(s.Families, fam) {
				continue
			}
			if len(s.Requested) > 0 && !slices.Contains(s.Requested, a) {
				continue
			}
			if st.owner[a] != "" || st.poolFor(s, a) == nil {
				continue
			}
			st.take(s.Key, a)
		}
	}
	// 2. Fixed requests.
	for _, s := range order {
		if s.RequestError != "" {
			fail(s, ReasonInvalid, s.RequestError)
			continue
		}
		for _, a := range s.Requested {
			fam := family(a)
			if st.held[s.Key][fam] == a {
				continue
			}
			switch {
			case !slices.Contains(s.Families, fam):
				fail(s, ReasonInvalid, fmt.Sprintf("requested address %s is IPv%d, but the Service's ipFamilies are %s", a, fam, famList(s.Families)))
			case st.held[s.Key][fam].IsValid():
				fail(s, ReasonInvalid, fmt.Sprintf("more than one IPv%d address requested", fam))
			case st.poolFor(s, a) == nil:
				fail(s, ReasonNoPool, fmt.Sprintf("requested address %s is in no LoadBalancerIPPool this Service may use", a))
			case st.owner[a] != "":
				fail(s, ReasonConflict, fmt.Sprintf("requested address %s is already used by Service %s", a, st.owner[a]))
			default:
				st.take(s.Key, a)
			}
		}
	}
	// 3. Fill missing families.
	for _, s := range order {
		if s.RequestError != "" || len(s.Requested) > 0 {
			continue
		}
		for _, fam := range s.Families {
			if st.held[s.Key][fam].IsValid() {
				continue
			}
			a, reason, msg := st.next(s, fam)
			if !a.IsValid() {
				fail(s, reason, msg)
				continue
			}
			st.take(s.Key, a)
		}
	}

	for _, s := range order {
		as := problem[s.Key]
		for _, fam := range s.Families {
			if a, ok := st.held[s.Key][fam]; ok {
				as.Addrs = append(as.Addrs, a)
			}
		}
		res.Services[s.Key] = as
	}
	for _, p := range st.pools {
		res.Pools[p.Name] = st.usage(p)
	}
	return res
}

func newState(pools []Pool) *state {
	st := &state{owner: map[netip.Addr]string{}, held: map[string]map[int]netip.Addr{}, probs: map[string][]string{}}
	for i := range pools {
		st.pools = append(st.pools, &pools[i])
	}
	sort.SliceStable(st.pools, func(i, j int) bool { return st.pools[i].Name < st.pools[j].Name })
	for _, p := range st.pools {
		for _, c := range p.CIDRs {
			c = c.Masked()
			if other := st.overlapping(c); other != nil {
				st.probs[p.Name] = append(st.probs[p.Name], fmt.Sprintf("%s overlaps %s of pool %s: not used", c, other.prefix, other.pool.Name))
				continue
			}
			st.cidrs = append(st.cidrs, poolCIDR{pool: p, prefix: c})
		}
	}
	return st
}

func (st *state) overlapping(c netip.Prefix) *poolCIDR {
	for i := range st.cidrs {
		if st.cidrs[i].prefix.Overlaps(c) {
			return &st.cidrs[i]
		}
	}
	return nil
}

func (st *state) take(key string, a netip.Addr) {
	st.owner[a] = key
	st.held[key][family(a)] = a
}

// usable says whether s may take addresses of p (auto: without asking for
// an address in it).
func usable(p *Pool, s *Service, auto bool) bool {
	if p.Selector != nil && !p.Selector.Matches(labels.Set(s.Labels)) {
		return false
	}
	named := slices.Contains(s.Pools, p.Name)
	if len(s.Pools) > 0 && !named {
		return false
	}
	return !auto || p.AutoAssign || named
}

// poolFor is the pool holding a that s may use, or nil.
func (st *state) poolFor(s *Service, a netip.Addr) *Pool {
	for _, c := range st.cidrs {
		if c.prefix.Contains(a) && usable(c.pool, s, false) {
			return c.pool
		}
	}
	return nil
}

// next is the lowest free address of family fam in the first pool s may
// auto-assign from, or why there is none.
func (st *state) next(s *Service, fam int) (netip.Addr, string, string) {
	candidates := 0
	for _, c := range st.cidrs {
		if family(c.prefix.Addr()) != fam || !usable(c.pool, s, true) {
			continue
		}
		candidates++
		// At most len(owner)+1 steps: every address skipped is owned.
		for a := c.prefix.Addr(); c.prefix.Contains(a); a = a.Next() {
			if st.owner[a] == "" {
				return a, "", ""
			}
			if !a.Next().IsValid() {
				break
			}
		}
	}
	if candidates == 0 {
		return netip.Addr{}, ReasonNoPool, fmt.Sprintf("no LoadBalancerIPPool with IPv%d addresses assigns automatically to this Service", fam)
	}
	return netip.Addr{}, ReasonExhausted, fmt.Sprintf("every IPv%d address of the LoadBalancerIPPools this Service may use is taken", fam)
}

func (st *state) usage(p *Pool) PoolUsage {
	u := PoolUsage{Problems: st.probs[p.Name]}
	size := map[int]*big.Int{4: new(big.Int), 6: new(big.Int)}
	for _, c := range st.cidrs {
		if c.pool != p {
			continue
		}
		fam := family(c.prefix.Addr())
		size[fam].Add(size[fam], new(big.Int).Lsh(big.NewInt(1), uint(c.prefix.Addr().BitLen()-c.prefix.Bits())))
	}
	for a := range st.owner {
		if st.poolIndex(a) == p {
			if a.Is4() {
				u.AllocatedV4++
			} else {
				u.AllocatedV6++
			}
		}
	}
	avail := func(fam int, used int64) int64 {
		n := new(big.Int).Sub(size[fam], big.NewInt(used))
		if !n.IsInt64() {
			return math.MaxInt64
		}
		return n.Int64()
	}
	u.AvailableV4, u.AvailableV6 = avail(4, u.AllocatedV4), avail(6, u.AllocatedV6)
	return u
}

func (st *state) poolIndex(a netip.Addr) *Pool {
	for _, c := range st.cidrs {
		if c.prefix.Contains(a) {
			return c.pool
		}
	}
	return nil
}

func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

func famList(fs []int) string {
	var s []string
	for _, f := range fs {
		s = append(s, fmt.Sprintf("IPv%d", f))
	}
	return strings.Join(s, ",")
}
