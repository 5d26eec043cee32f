package agent

import (
	"context"
	"net/http"
	"time"

	"github.com/strait-net/strait/internal/bgp"
	"github.com/strait-net/strait/internal/ctl/api"
)

// registerBGPAPI adds straitctl bgp's endpoints: peers, routes, policies
// and the effective configuration, from the speaker and the controller.
func (a *Agent) registerBGPAPI(mux *http.ServeMux) {
	withBGP := func(f func(ctx context.Context, b *bgpController, r *http.Request) (any, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			a.mu.RLock()
			b := a.bgp
			a.mu.RUnlock()
			if b == nil {
				writeJSON(w, http.StatusServiceUnavailable, api.Error{Error: errBGPOff.Error()})
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
			defer cancel()
			v, err := f(ctx, b, r)
			if err != nil {
				writeJSON(w, http.StatusInternalServerError, api.Error{Error: err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, v)
		}
	}
	mux.HandleFunc("GET "+api.PathBGPPeers, withBGP(func(ctx context.Context, b *bgpController, _ *http.Request) (any, error) {
		ps, err := b.speaker.Peers(ctx)
		return apiBGPPeers(ps), err
	}))
	mux.HandleFunc("GET "+api.PathBGPRoutes, withBGP(func(ctx context.Context, b *bgpController, r *http.Request) (any, error) {
		q := bgp.RouteQuery{Direction: r.URL.Query().Get("direction"), Peer: r.URL.Query().Get("peer")}
		if f := r.URL.Query().Get("family"); f != "" {
			fam, err := bgp.ParseFamily(f)
			if err != nil {
				return nil, err
			}
			q.Family = fam
		}
		rs, err := b.speaker.Routes(ctx, q)
		return apiBGPRoutes(rs), err
	}))
	mux.HandleFunc("GET "+api.PathBGPPolicies, withBGP(func(ctx context.Context, b *bgpController, _ *http.Request) (any, error) {
		ps, err := b.speaker.Policies(ctx)
		return apiBGPPolicies(ps), err
	}))
	mux.HandleFunc("GET "+api.PathBGPConfig, withBGP(func(_ context.Context, b *bgpController, _ *http.Request) (any, error) {
		return apiBGPConfig(b.view()), nil
	}))
}

func addrOrEmpty(a interface {
	IsValid() bool
	String() string
}) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func apiBGPFamilies(fs []bgp.FamilyStatus) []api.BGPFamily {
	out := []api.BGPFamily{}
	for _, f := range fs {
		out = append(out, api.BGPFamily{Family: f.Family.String(), Sent: f.Sent, Received: f.Received, Accepted: f.Accepted,
			NextHop: addrOrEmpty(f.NextHop), Reason: f.Reason})
	}
	return out
}

func apiBGPPeers(ps []bgp.PeerStatus) []api.BGPPeer {
	out := []api.BGPPeer{}
	for _, p := range ps {
		out = append(out, api.BGPPeer{Name: p.Name, Address: addrOrEmpty(p.Address), ASN: p.ASN, LocalAddress: addrOrEmpty(p.LocalAddress),
			State: string(p.State), Since: p.Since, ExtendedNextHop: p.ExtendedNextHop, Families: apiBGPFamilies(p.Families), Error: p.Error})
	}
	return out
}

func communityStrings(std []bgp.Community, large []bgp.LargeCommunity) []string {
	var out []string
	for _, c := range std {
		out = append(out, c.String())
	}
	for _, c := range large {
		out = append(out, c.String())
	}
	return out
}

func apiBGPRoutes(rs []bgp.Route) []api.BGPRoute {
	out := []api.BGPRoute{}
	for _, r := range rs {
		out = append(out, api.BGPRoute{Prefix: r.Prefix.String(), NextHop: addrOrEmpty(r.NextHop), Peer: r.Peer, PeerAddress: addrOrEmpty(r.PeerAddress),
			ASPath: r.ASPath, Communities: communityStrings(r.Communities, r.LargeCommunities), Best: r.Best, Stale: r.Stale, Age: r.Age})
	}
	return out
}

func apiBGPPaths(ps []bgp.Path) []api.BGPPath {
	out := []api.BGPPath{}
	for _, p := range ps {
		out = append(out, api.BGPPath{Prefix: p.Prefix.String(), Origin: p.Origin, Communities: communityStrings(p.Communities, p.LargeCommunities), Peers: p.Peers})
	}
	return out
}

func apiBGPPolicies(ps []bgp.PolicyView) []api.BGPPolicy {
	out := []api.BGPPolicy{}
	for _, p := range ps {
		out = append(out, api.BGPPolicy{Peer: p.Peer, Address: addrOrEmpty(p.Address), Families: apiBGPFamilies(p.Families), Exported: apiBGPPaths(p.Exported), Rendered: p.Rendered})
	}
	return out
}

// apiBGPConfig is the configuration desiredBGP produced (passwords not
// shown).
func apiBGPConfig(v bgpView) api.BGPConfig {
	c := api.BGPConfig{ASN: v.Applied.ASN, RouterID: addrOrEmpty(v.Applied.RouterID), ListenPort: v.Applied.ListenPort,
		Paths: apiBGPPaths(v.Applied.Paths), Problems: v.Problems, Error: v.SetError, Peers: []api.BGPPeer{}}
	if gr := v.Applied.GracefulRestart; gr != nil {
		c.GracefulRestart = gr.RestartTime.String()
	}
	for _, p := range v.Applied.Peers {
		var fs []bgp.FamilyStatus
		for _, f := range p.Families {
			fs = append(fs, bgp.FamilyStatus{Family: f})
		}
		c.Peers = append(c.Peers, api.BGPPeer{Name: p.Name, Address: addrOrEmpty(p.Address), ASN: p.ASN, LocalAddress: addrOrEmpty(p.LocalAddress),
			State: "Configured", Families: apiBGPFamilies(fs)})
	}
	return c
}
