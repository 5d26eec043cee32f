package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/strait-net/strait/internal/ctl/api"
	"github.com/strait-net/strait/internal/datapath"
	"github.com/strait-net/strait/internal/ipam"
)

// registerAPI adds the local CLI API (straitctl) to the agent's unix socket,
// next to the CNI endpoint. The socket is root-only (mode 0600). Every answer
// is JSON; lists are sorted so that output is stable.
func (a *Agent) registerAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.apiStatus())
	})
	mux.HandleFunc("GET "+api.PathRoutes, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		writeJSON(w, http.StatusOK, a.apiRoutes(ctx))
	})
	mux.HandleFunc("GET "+api.PathIPAM, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.apiIPAM())
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no such API endpoint: " + r.Method + " " + r.URL.Path})
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// overlayStater is the optional part of the datapath that lists the overlay
// entries in the kernel (the Linux datapath has it).
type overlayStater interface {
	OverlayState(ctx context.Context) ([]datapath.ManagedEntry, error)
}

// apiState is what the handlers read, taken under a.mu.
type apiState struct {
	alloc   *ipam.Allocator
	cluster *clusterController
	dp      PodDatapath
}

func (a *Agent) apiState() apiState {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return apiState{alloc: a.ipamAlloc, cluster: a.cluster, dp: a.dp}
}

// clusterView is a consistent copy of the cluster controller's topology.
type clusterView struct {
	self      nodeInfo
	uplink    string
	ownBlocks map[netip.Prefix]string // this node's block -> IPPool name
	peers     map[string]datapath.Peer
	skipped   []api.Skipped
}

func (cc *clusterController) view() clusterView {
	peers, skips := cc.desired()
	t := cc.topo
	t.mu.Lock()
	v := clusterView{self: t.self, uplink: t.uplink, ownBlocks: map[netip.Prefix]string{}, peers: peers}
	for name, b := range t.blocks {
		if b.Node == cc.cfg.NodeName {
			v.ownBlocks[b.CIDR] = t.bpool[name]
		}
	}
	t.mu.Unlock()
	v.skipped = make([]api.Skipped, 0, len(skips))
	slices.SortFunc(skips, func(x, y skipped) int {
		return cmp.Or(comparePrefix(x.Block, y.Block), strings.Compare(x.Node, y.Node))
	})
	for _, s := range skips {
		v.skipped = append(v.skipped, api.Skipped{Block: s.Block.String(), Node: s.Node, Reason: s.Reason})
	}
	return v
}

func comparePrefix(x, y netip.Prefix) int {
	return cmp.Or(x.Addr().Compare(y.Addr()), cmp.Compare(x.Bits(), y.Bits()))
}

func (a *Agent) apiStatus() api.Status {
	st := a.apiState()
	s := api.Status{Node: a.cfg.NodeName, IPAMMode: a.cfg.IPAMMode, PodMTU: a.cfg.MTU,
		Pools: []api.Pool{}, VTEPs: []api.VTEP{}, Skipped: []api.Skipped{}}
	if err := a.ready(); err != nil {
		s.NotReadyReason = err.Error()
	} else {
		s.Ready = true
	}
	var v clusterView
	if st.cluster != nil {
		v = st.cluster.view()
		s.PodMTU = st.cluster.podMTU
		s.Uplink = v.uplink
		s.Peers = len(v.peers)
		s.Skipped = v.skipped
		for _, fam := range []int{4, 6} {
			vt := v.self.family(fam == 4)
			if vt == nil {
				continue
			}
			vni := a.cfg.VXLAN.VNIv4
			if fam == 6 {
				vni = a.cfg.VXLAN.VNIv6
			}
			out := api.VTEP{Family: fam, Device: datapath.DefaultVTEPDevice(fam), VNI: vni,
				Underlay: addrString(vt.Underlay), MAC: vt.MAC.String(), TunnelAddr: addrString(vt.TunnelAddr)}
			if vt.Subnet.IsValid() {
				out.Subnet = vt.Subnet.String()
			}
			s.VTEPs = append(s.VTEPs, out)
		}
	}
	s.Pools = apiPools(st.alloc, v.ownBlocks)
	if st.cluster != nil && a.cfg.FastPath.Enabled {
		s.FastPath = st.cluster.fastPathAPI()
	}
	return s
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// apiPools lists the allocator's pools in the order they are tried (IPv4
// first), with the IPPool each block belongs to when known.
func apiPools(alloc *ipam.Allocator, ownBlocks map[netip.Prefix]string) []api.Pool {
	out := []api.Pool{}
	if alloc == nil {
		return out
	}
	for _, u := range alloc.Usage() {
		out = append(out, api.Pool{CIDR: u.Prefix.String(), IPPool: ownBlocks[u.Prefix], Capacity: u.Capacity, InUse: u.InUse})
	}
	return out
}

func (a *Agent) apiRoutes(ctx context.Context) api.Routes {
	st := a.apiState()
	out := api.Routes{Overlay: []api.OverlayEntry{}, Pods: []api.PodRoute{}, Skipped: []api.Skipped{}}
	if st.cluster != nil {
		v := st.cluster.view()
		out.Skipped = v.skipped
		entries, err := overlayState(ctx, st)
		if err != nil {
			out.OverlayError = err.Error()
		}
		out.Overlay = overlayEntries(entries, v.peers)
		if a.cfg.FastPath.Enabled {
			hops, err := st.cluster.dp.FastPathNextHops()
			if err != nil {
				out.NextHopsError = err.Error()
			}
			out.NextHops = nextHops(hops, v.peers)
		}
	}
	if st.alloc != nil {
		for _, al := range st.alloc.List() {
			for _, addr := range al.Addrs {
				out.Pods = append(out.Pods, api.PodRoute{Dst: netip.PrefixFrom(addr, addr.BitLen()).String(),
					Dev: al.HostIface, PodNamespace: al.PodNamespace, PodName: al.PodName, ContainerID: al.ContainerID})
			}
		}
		slices.SortFunc(out.Pods, func(x, y api.PodRoute) int {
			return comparePrefix(netip.MustParsePrefix(x.Dst), netip.MustParsePrefix(y.Dst))
		})
	}
	return out
}

// nextHops converts the fast path's next hops, naming the peers whose
// blocks go through each: a native route's gateway, or an IPv4 VTEP
// reached directly.
func nextHops(hops []datapath.NextHop, peers map[string]datapath.Peer) []api.NextHop {
	// The peers behind each underlay address, in name order, each once.
	behind := map[netip.Addr][]string{}
	for _, name := range slices.Sorted(maps.Keys(peers)) {
		for _, r := range peers[name].Routes {
			addr := r.Gateway
			if r.Encap {
				addr = r.VTEPIP
			}
			if ps := behind[addr]; len(ps) == 0 || ps[len(ps)-1] != name {
				behind[addr] = append(ps, name)
			}
		}
	}
	out := make([]api.NextHop, 0, len(hops))
	for _, h := range hops {
		n := api.NextHop{Dev: h.Dev, IP: h.IP.String(), State: h.State, Peers: behind[h.IP]}
		if len(h.MAC) > 0 {
			n.MAC = h.MAC.String()
		}
		out = append(out, n)
	}
	return out
}

type errNoOverlayState struct{}

func (errNoOverlayState) Error() string { return "the datapath does not report overlay state" }

func overlayState(ctx context.Context, st apiState) ([]datapath.ManagedEntry, error) {
	if s, ok := st.dp.(overlayStater); ok {
		return s.OverlayState(ctx)
	}
	if s, ok := st.cluster.dp.(overlayStater); ok {
		return s.OverlayState(ctx)
	}
	return nil, errNoOverlayState{}
}

// kindOrder lists routes first, then neighbours, then FDB entries.
func kindOrder(kind string) int {
	switch kind {
	case datapath.EntryRoute:
		return 0
	case datapath.EntryNeigh:
		return 1
	case datapath.EntryFDB:
		return 2
	}
	return 3
}

// overlayEntries converts the kernel entries, attributing to each the pod
// blocks it serves according to the desired peers, sorted by peer, kind
// (route, neigh, fdb) and address.
func overlayEntries(entries []datapath.ManagedEntry, peers map[string]datapath.Peer) []api.OverlayEntry {
	out := make([]api.OverlayEntry, 0, len(entries))
	for _, e := range entries {
		o := api.OverlayEntry{Kind: e.Kind, Peer: e.Peer, Dev: e.Dev, IP: addrString(e.IP), Onlink: e.Onlink}
		if e.Dst.IsValid() {
			o.Dst = e.Dst.String()
		}
		if len(e.MAC) > 0 {
			o.MAC = e.MAC.String()
		}
		switch e.Kind {
		case datapath.EntryRoute:
			if e.Dst.IsValid() {
				o.Blocks = []string{e.Dst.String()}
			}
		case datapath.EntryNeigh, datapath.EntryFDB:
			for _, r := range peers[e.Peer].Routes {
				if !r.Encap {
					continue
				}
				if (e.Kind == datapath.EntryNeigh && r.Gateway == e.IP) ||
					(e.Kind == datapath.EntryFDB && r.VTEPMAC.String() == o.MAC && r.VTEPIP == e.IP) {
					o.Blocks = append(o.Blocks, r.Dst.String())
				}
			}
		}
		out = append(out, o)
	}
	slices.SortFunc(out, func(x, y api.OverlayEntry) int {
		return cmp.Or(strings.Compare(x.Peer, y.Peer), cmp.Compare(kindOrder(x.Kind), kindOrder(y.Kind)),
			strings.Compare(x.Kind, y.Kind), compareAddrStrings(x.Dst, y.Dst), compareAddrStrings(x.IP, y.IP),
			strings.Compare(x.MAC, y.MAC), strings.Compare(x.Dev, y.Dev))
	})
	return out
}

// compareAddrStrings orders addresses or prefixes numerically, falling back
// to text.
func compareAddrStrings(x, y string) int {
	px, ex := netip.ParsePrefix(x)
	py, ey := netip.ParsePrefix(y)
	if ex == nil && ey == nil {
		return comparePrefix(px, py)
	}
	ax, ex := netip.ParseAddr(x)
	ay, ey := netip.ParseAddr(y)
	if ex == nil && ey == nil {
		return ax.Compare(ay)
	}
	return strings.Compare(x, y)
}

func (a *Agent) apiIPAM() api.IPAM {
	st := a.apiState()
	var own map[netip.Prefix]string
	if st.cluster != nil {
		own = st.cluster.view().ownBlocks
	}
	out := api.IPAM{Mode: a.cfg.IPAMMode, Pools: apiPools(st.alloc, own), Allocations: []api.Allocation{}}
	if st.alloc == nil {
		return out
	}
	for _, al := range st.alloc.List() {
		addrs := make([]string, 0, len(al.Addrs))
		for _, ad := range al.Addrs {
			addrs = append(addrs, ad.String())
		}
		out.Allocations = append(out.Allocations, api.Allocation{PodNamespace: al.PodNamespace, PodName: al.PodName,
			PodUID: al.PodUID, Network: al.Network, ContainerID: al.ContainerID, IfName: al.IfName,
			HostIface: al.HostIface, Addrs: addrs, Created: al.Created.UTC()})
	}
	slices.SortFunc(out.Allocations, func(x, y api.Allocation) int {
		return cmp.Or(strings.Compare(x.PodNamespace, y.PodNamespace), strings.Compare(x.PodName, y.PodName),
			strings.Compare(x.ContainerID, y.ContainerID), strings.Compare(x.IfName, y.IfName), strings.Compare(x.Network, y.Network))
	})
	return out
}
