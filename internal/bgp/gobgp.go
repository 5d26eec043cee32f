package bgp

// The only file that knows the engine is GoBGP: it translates a plan into
// GoBGP peers, paths and export policies, and GoBGP's state back into
// Strait's types.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	gbgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"google.golang.org/grpc"
)

const exportPolicy = "strait-export"

// restartDeferral bounds how long a restarted speaker holds its routes back
// from a peer that is up while it waits for every other graceful-restart
// peer's End-of-RIB (RFC 4724's selection deferral). Strait's routes are its
// own blocks and Service addresses, not chosen from what peers send, so the
// wait only lets the sessions come up; the peers keep forwarding on the
// stale routes meanwhile.
const restartDeferral = 5 * time.Second

var _ Factory = New

// New starts an embedded GoBGP server. BGP itself starts with the first Set.
func New(log *slog.Logger, opts Options) (Speaker, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Addrs == nil {
		opts.Addrs = NetlinkAddrs{}
	}
	if opts.Resync <= 0 {
		opts.Resync = 30 * time.Second
	}
	level := &slog.LevelVar{}
	level.Set(slog.LevelWarn)
	engineLog := slog.New(stopNoise{log.Handler()}).With("engine", "gobgp")
	sopts := []server.ServerOption{server.LoggerOption(engineLog, level)}
	if opts.GRPCListen != "" {
		sopts = append(sopts, server.GrpcListenAddress(opts.GRPCListen))
		if opts.GRPCReadOnly {
			sopts = append(sopts, server.GrpcOption([]grpc.ServerOption{
				grpc.UnaryInterceptor(readOnlyUnary), grpc.StreamInterceptor(readOnlyStream)}))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &gobgpSpeaker{
		log: log, opts: opts, sopts: sopts,
		peerApplied: map[netip.Addr]string{}, paths: map[netip.Prefix]uint64{},
		sess: map[netip.Addr]*session{}, learned: make(chan []Route, 1),
		kick: make(chan struct{}, 1), kickLearn: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, done: make(chan struct{}), restarting: true,
	}
	s.startEngine()
	go s.loop()
	return s, nil
}

// startEngine creates and serves a new GoBGP server. GoBGP v4's server is
// single-use: once StopBgp has run, its loop is gone and every later call
// fails with "server stopped", so a restart needs a new one.
// The caller holds emu (or is New).
func (s *gobgpSpeaker) startEngine() {
	srv := server.NewBgpServer(s.sopts...)
	go srv.Serve()
	s.srv = srv
}

type gobgpSpeaker struct {
	log   *slog.Logger
	opts  Options
	sopts []server.ServerOption
	// emu guards the engine's replacement and start: srv is written, and
	// StartBgp runs (it sets GoBGP package globals that every server's
	// ListPath reads), with mu and emu held; reads hold mu or emu shared.
	emu sync.RWMutex
	srv *server.BgpServer // the current GoBGP server, replaced when global settings change

	mu          sync.Mutex // serialises Set, resync and Close
	cfg         Config
	haveCfg     bool
	running     *plan // global part BGP was started with
	cur         plan
	policyText  string
	peerApplied map[netip.Addr]string   // peer address -> rendered GoBGP peer (+ password)
	peerErr     map[netip.Addr]string   // engine errors of AddPeer
	paths       map[netip.Prefix]uint64 // announced prefix -> pathAttrs
	stopWatch   context.CancelFunc      // ends the engine's event watcher; nil: none
	closed      bool
	// restarting: BGP has not yet been started by this process. The node's
	// routes outlive the speaker (the kernel keeps them across an agent
	// restart or crash), so the peers of the first start are told it is a
	// restart that kept forwarding (RFC 4724 R and F bits): a peer holding
	// our routes as stale keeps them until our End-of-RIB instead of
	// dropping them when the new session opens.
	restarting bool

	smu  sync.Mutex // session facts from GoBGP events
	sess map[netip.Addr]*session

	learned         chan []Route
	kick, kickLearn chan struct{}
	ctx             context.Context
	cancel          context.CancelFunc
	done            chan struct{}
}

// apply makes GoBGP match s.cfg; s.mu held.
func (s *gobgpSpeaker) apply(ctx context.Context) error {
	p, err := makePlan(s.cfg, s.opts.Addrs, s.extNH)
	if err != nil {
		return err
	}
	if err := s.ensureStarted(ctx, p); err != nil {
		return err
	}
	pol := buildPolicies(p)
	polText := renderPolicies(pol)
	policyChanged := polText != s.policyText
	if policyChanged {
		if err := s.srv.SetPolicies(ctx, pol); err != nil {
			return fmt.Errorf("bgp set export policy: %w", err)
		}
		if s.policyText == "" {
			if err := s.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
				Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT,
				Policies: []*api.Policy{{Name: exportPolicy}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
			}}); err != nil {
				return fmt.Errorf("bgp assign export policy: %w", err)
			}
		}
		s.policyText = polText
	}
	hadPeers := len(s.peerApplied) > 0
	s.applyPeers(ctx, p)
	s.restarting = false
	if err := s.applyPaths(p); err != nil {
		return err
	}
	if policyChanged && hadPeers {
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
			s.log.Warn("bgp: soft reset after policy change", "err", err)
		}
	}
	s.cur = p
	return nil
}

func (s *gobgpSpeaker) ensureStarted(ctx context.Context, p plan) error {
	if r := s.running; r != nil && r.ASN == p.ASN && r.RouterID == p.RouterID && r.ListenPort == p.ListenPort {
		return nil
	}
	s.emu.Lock()
	defer s.emu.Unlock()
	if s.running != nil {
		s.log.Info("bgp: global settings changed, restarting the speaker", "asn", p.ASN, "routerID", p.RouterID)
		// Stop sends every peer a NOTIFICATION (the peers drop our routes)
		// and ends BFD and the gRPC API; a new server takes over.
		if s.stopWatch != nil {
			s.stopWatch() // the old server's event watcher
		}
		s.srv.Stop()
		s.startEngine()
		s.running, s.policyText, s.restarting, s.stopWatch = nil, "", false, nil
		clear(s.peerApplied)
		clear(s.paths)
		s.smu.Lock()
		clear(s.sess)
		s.smu.Unlock()
	}
	port := p.ListenPort
	if port == 0 {
		port = gbgp.BGP_PORT
	}
	// Only the two families Strait speaks: without a list GoBGP makes a
	// sharded table for every family it knows, twice (about 10 MB at start).
	families := []uint32{uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV4_UNICAST]), uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV6_UNICAST])}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: p.ASN, RouterId: p.RouterID.String(), ListenPort: port, Families: families,
	}}); err != nil {
		return fmt.Errorf("bgp start (AS %d, router ID %s, port %d): %w", p.ASN, p.RouterID, port, err)
	}
	g := plan{ASN: p.ASN, RouterID: p.RouterID, ListenPort: p.ListenPort}
	s.running = &g
	if s.stopWatch == nil {
		wctx, cancel := context.WithCancel(s.ctx)
		err := s.srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{
			OnPeerUpdate: s.onPeer, OnPathUpdate: s.onReceived,
		}, server.WatchPeer(), server.WatchUpdate(false, "", ""))
		if err != nil {
			cancel()
			return fmt.Errorf("bgp watch events: %w", err)
		}
		s.stopWatch = cancel
	}
	return nil
}

// stopNoise passes GoBGP's log through, except the error server.Stop logs
// when BGP was already stopped, which Close always does first
// (stopKeepingRoutes): that one is demoted to debug.
type stopNoise struct{ slog.Handler }

func (h stopNoise) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError && r.Message == "failed to stop BGP server" {
		r.Level = slog.LevelDebug
		if !h.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h stopNoise) WithAttrs(as []slog.Attr) slog.Handler { return stopNoise{h.Handler.WithAttrs(as)} }
func (h stopNoise) WithGroup(name string) slog.Handler    { return stopNoise{h.Handler.WithGroup(name)} }

// stopKeepingRoutes ends the sessions for Close (the agent stopping, as in
// a rolling update): a peer with graceful restart gets no NOTIFICATION, its
// TCP session just closes, so it keeps our routes as stale for the restart
// time exactly as after a crash, and the restarted speaker refreshes them;
// a peer without graceful restart gets a Cease and withdraws at once.
func (s *gobgpSpeaker) stopKeepingRoutes() {
	if err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
		s.log.Debug("bgp stop", "error", err) // not started: nothing to end
	}
}

func (s *gobgpSpeaker) applyPeers(ctx context.Context, p plan) {
	want := map[netip.Addr]*api.Peer{}
	s.peerErr = map[netip.Addr]string{}
	for _, pp := range p.Peers {
		if pp.Rejected == "" {
			want[pp.Peer.Address] = buildPeer(pp)
		}
	}
	for addr := range s.peerApplied {
		if _, ok := want[addr]; ok {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			s.log.Warn("bgp: delete peer", "peer", addr, "err", err)
		}
		delete(s.peerApplied, addr)
		s.forgetSession(addr)
	}
	for addr, ap := range want {
		key := renderPeer(ap) + "password=" + ap.Conf.AuthPassword
		old, ok := s.peerApplied[addr]
		if ok && old == key {
			continue
		}
		if ok {
			if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
				s.log.Warn("bgp: delete peer to re-add", "peer", addr, "err", err)
			}
			delete(s.peerApplied, addr)
			s.forgetSession(addr)
		}
		if g := ap.GracefulRestart; g != nil && s.restarting {
			g.LocalRestarting, g.DeferralTime = true, uint32(restartDeferral/time.Second)
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: ap}); err != nil {
			s.peerErr[addr] = fmt.Sprintf("engine refused the peer: %v", err)
			continue
		}
		s.peerApplied[addr] = key
	}
}

func (s *gobgpSpeaker) applyPaths(p plan) error {
	want := make(map[netip.Prefix]struct{}, len(p.Paths))
	type change struct {
		path  Path
		attrs uint64
	}
	var changed []change
	for _, path := range p.Paths {
		want[path.Prefix] = struct{}{}
		attrs := pathAttrs(path)
		if old, ok := s.paths[path.Prefix]; ok && old == attrs {
			continue
		}
		changed = append(changed, change{path, attrs})
	}
	var del []*apiutil.Path
	for prefix := range s.paths {
		if _, ok := want[prefix]; !ok {
			ap, err := toEnginePath(Path{Prefix: prefix}) // a withdrawal needs the prefix only
			if err != nil {
				return err
			}
			del = append(del, ap)
		}
	}
	if len(del) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: del}); err != nil {
			return fmt.Errorf("bgp withdraw %d paths: %w", len(del), err)
		}
		for _, d := range del {
			delete(s.paths, prefixOf(d.Nlri))
		}
	}
	// Engine paths are built per batch: 100k of them at once would double the
	// speaker's peak memory.
	for start := 0; start < len(changed); start += 1000 {
		chunk := changed[start:min(start+1000, len(changed))]
		batch := make([]*apiutil.Path, 0, len(chunk))
		for _, c := range chunk {
			ap, err := toEnginePath(c.path)
			if err != nil {
				return err
			}
			batch = append(batch, ap)
		}
		if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: batch}); err != nil {
			return fmt.Errorf("bgp announce %d paths: %w", len(batch), err)
		}
		for _, c := range chunk {
			s.paths[c.path.Prefix] = c.attrs
		}
	}
	return nil
}

func engineFamily(f Family) gbgp.Family {
	if f == IPv4Unicast {
		return gbgp.RF_IPv4_UC
	}
	return gbgp.RF_IPv6_UC
}

func apiFamily(f Family) *api.Family {
	if f == IPv4Unicast {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

// toEnginePath builds a locally originated path. Its next hop is unspecified:
// GoBGP puts the session address and the export policy rewrites it per peer.
func toEnginePath(p Path) (*apiutil.Path, error) {
	nlri, err := gbgp.NewIPAddrPrefix(p.Prefix)
	if err != nil {
		return nil, fmt.Errorf("bgp path %v: %w", p.Prefix, err)
	}
	f := FamilyOf(p.Prefix.Addr())
	attrs := []gbgp.PathAttributeInterface{gbgp.NewPathAttributeOrigin(gbgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if f == IPv4Unicast {
		nh, _ := gbgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		attrs = append(attrs, nh)
	} else {
		mp, err := gbgp.NewPathAttributeMpReachNLRI(gbgp.RF_IPv6_UC, []gbgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, fmt.Errorf("bgp path %v: %w", p.Prefix, err)
		}
		attrs = append(attrs, mp)
	}
	if len(p.Communities) > 0 {
		vals := make([]uint32, len(p.Communities))
		for i, c := range p.Communities {
			vals[i] = uint32(c)
		}
		attrs = append(attrs, gbgp.NewPathAttributeCommunities(vals))
	}
	if len(p.LargeCommunities) > 0 {
		vals := make([]*gbgp.LargeCommunity, len(p.LargeCommunities))
		for i, c := range p.LargeCommunities {
			vals[i] = gbgp.NewLargeCommunity(c.GlobalAdmin, c.LocalData1, c.LocalData2)
		}
		attrs = append(attrs, gbgp.NewPathAttributeLargeCommunities(vals))
	}
	return &apiutil.Path{Family: engineFamily(f), Nlri: nlri, Attrs: attrs}, nil
}

func prefixOf(n gbgp.NLRI) netip.Prefix {
	if p, ok := n.(*gbgp.IPAddrPrefix); ok {
		return p.Prefix
	}
	pr, _ := netip.ParsePrefix(n.String())
	return pr
}

func secs(d time.Duration) uint64 { return uint64((d + time.Second - 1) / time.Second) }

func buildPeer(pp peerPlan) *api.Peer {
	p := pp.Peer
	ap := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password, Description: p.Name},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry: secs(p.Timers.ConnectRetry), HoldTime: secs(p.Timers.Hold),
			KeepaliveInterval: secs(p.Timers.Keepalive), IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{LocalAddress: pp.Local.String(), PassiveMode: p.Passive, RemotePort: uint32(p.Port)},
	}
	if p.EBGPMultihop > 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.EBGPMultihop)}
	}
	gr := p.GracefulRestart
	if gr != nil {
		ap.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(secs(gr.RestartTime))}
	}
	for _, f := range p.Families {
		ap.AfiSafis = append(ap.AfiSafis, &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: apiFamily(f), Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: gr != nil}},
		})
	}
	if b := p.BFD; b != nil {
		ap.Bfd = &api.BfdPeerConfig{Enabled: true, Port: server.BfdServerPort,
			DesiredMinimumTxInterval: uint32(b.MinTx / time.Microsecond),
			RequiredMinimumReceive:   uint32(b.MinRx / time.Microsecond),
			DetectionMultiplier:      uint32(b.Multiplier)}
	}
	return ap
}

// buildPolicies is the global export policy: nothing learned is passed on
// (no transit), paths restricted to other peers are dropped, each peer gets
// its own next hop per family or the family is withheld, default reject.
func buildPolicies(p plan) *api.SetPoliciesRequest {
	req := &api.SetPoliciesRequest{}
	pol := &api.Policy{Name: exportPolicy}
	reject := func(name string, c *api.Conditions) {
		pol.Statements = append(pol.Statements, &api.Statement{Name: name, Conditions: c,
			Actions: &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}})
	}
	reject("no-transit-ebgp", &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_EXTERNAL})
	reject("no-transit-ibgp", &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_INTERNAL})
	for _, pp := range p.Peers {
		if pp.Rejected != "" {
			continue
		}
		name := pp.Peer.Name
		nset := "peer-" + name
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR,
			Name: nset, List: []string{netip.PrefixFrom(pp.Peer.Address, pp.Peer.Address.BitLen()).String()}})
		nb := &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: nset}
		for _, f := range []Family{IPv4Unicast, IPv6Unicast} {
			var prefixes []*api.Prefix
			for _, d := range pp.Denied {
				if FamilyOf(d.Addr()) == f {
					prefixes = append(prefixes, &api.Prefix{IpPrefix: d.String(), MaskLengthMin: uint32(d.Bits()), MaskLengthMax: uint32(d.Bits())})
				}
			}
			if len(prefixes) == 0 {
				continue
			}
			pset := fmt.Sprintf("deny-%s-%s", name, familyWord(f))
			req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: pset, Prefixes: prefixes})
			reject(pset, &api.Conditions{NeighborSet: nb, PrefixSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: pset}})
		}
		for _, fp := range pp.Families {
			cond := &api.Conditions{NeighborSet: nb, AfiSafiIn: []*api.Family{apiFamily(fp.Family)}}
			stmt := fmt.Sprintf("%s-%s", name, familyWord(fp.Family))
			if !fp.NextHop.IsValid() {
				reject(stmt+"-withheld", cond)
				continue
			}
			pol.Statements = append(pol.Statements, &api.Statement{Name: stmt, Conditions: cond, Actions: &api.Actions{
				RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
				Nexthop:     &api.NexthopAction{Address: fp.NextHop.String()},
			}})
		}
	}
	req.Policies = []*api.Policy{pol}
	return req
}

// renderPeer is a stable text form of a GoBGP peer (password hidden), for
// change detection, golden tests and Policies.
func renderPeer(p *api.Peer) string {
	var b strings.Builder
	c := p.Conf
	fmt.Fprintf(&b, "neighbor %s  # %s\n  peer-as %d\n", c.NeighborAddress, c.Description, c.PeerAsn)
	if c.AuthPassword != "" {
		b.WriteString("  auth-password <set>\n")
	}
	t := p.Timers.Config
	fmt.Fprintf(&b, "  timers connect-retry %d hold %d keepalive %d idle-hold-after-reset %d\n", t.ConnectRetry, t.HoldTime, t.KeepaliveInterval, t.IdleHoldTimeAfterReset)
	tr := p.Transport
	fmt.Fprintf(&b, "  transport local-address %s passive %t remote-port %d\n", tr.LocalAddress, tr.PassiveMode, tr.RemotePort)
	if m := p.EbgpMultihop; m != nil {
		fmt.Fprintf(&b, "  ebgp-multihop ttl %d\n", m.MultihopTtl)
	}
	if g := p.GracefulRestart; g != nil {
		fmt.Fprintf(&b, "  graceful-restart restart-time %d\n", g.RestartTime)
	}
	for _, a := range p.AfiSafis {
		fmt.Fprintf(&b, "  afi-safi %s mp-graceful-restart %t\n", familyName(a.Config.Family), a.MpGracefulRestart.Config.Enabled)
	}
	if f := p.Bfd; f != nil {
		fmt.Fprintf(&b, "  bfd min-tx %dus min-rx %dus multiplier %d\n", f.DesiredMinimumTxInterval, f.RequiredMinimumReceive, f.DetectionMultiplier)
	}
	return b.String()
}

func familyName(f *api.Family) string {
	if f.Afi == api.Family_AFI_IP {
		return IPv4Unicast.String()
	}
	return IPv6Unicast.String()
}

// renderPolicies is a stable text form of the export policy.
func renderPolicies(r *api.SetPoliciesRequest) string {
	var b strings.Builder
	for _, d := range r.DefinedSets {
		list := d.List
		for _, p := range d.Prefixes {
			list = append(list, fmt.Sprintf("%s{%d..%d}", p.IpPrefix, p.MaskLengthMin, p.MaskLengthMax))
		}
		kind := "neighbor-set"
		if d.DefinedType == api.DefinedType_DEFINED_TYPE_PREFIX {
			kind = "prefix-set"
		}
		fmt.Fprintf(&b, "%s %s: %s\n", kind, d.Name, strings.Join(list, " "))
	}
	for _, p := range r.Policies {
		fmt.Fprintf(&b, "policy %s (global export, default reject)\n", p.Name)
		for _, s := range p.Statements {
			fmt.Fprintf(&b, "  statement %s\n    if%s\n    then %s\n", s.Name, renderConditions(s.Conditions), renderActions(s.Actions))
		}
	}
	return b.String()
}

func renderConditions(c *api.Conditions) string {
	var parts []string
	if c.RouteType != api.Conditions_ROUTE_TYPE_UNSPECIFIED {
		parts = append(parts, "route-type "+strings.ToLower(strings.TrimPrefix(c.RouteType.String(), "ROUTE_TYPE_")))
	}
	if c.NeighborSet != nil {
		parts = append(parts, "neighbor in "+c.NeighborSet.Name)
	}
	if c.PrefixSet != nil {
		parts = append(parts, "prefix in "+c.PrefixSet.Name)
	}
	for _, f := range c.AfiSafiIn {
		parts = append(parts, "afi-safi "+familyName(f))
	}
	return " " + strings.Join(parts, " and ")
}

func renderActions(a *api.Actions) string {
	var parts []string
	if a.Nexthop != nil {
		parts = append(parts, "set next-hop "+a.Nexthop.Address)
	}
	if a.RouteAction == api.RouteAction_ROUTE_ACTION_REJECT {
		parts = append(parts, "reject")
	} else {
		parts = append(parts, "accept")
	}
	return strings.Join(parts, ", ")
}

// renderPlan is the whole engine configuration for a plan, as golden tests
// and `straitctl bgp policies` show it.
func renderPlan(p plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global as %d router-id %s listen-port %d\n", p.ASN, p.RouterID, p.ListenPort)
	for _, pp := range p.Peers {
		if pp.Rejected != "" {
			fmt.Fprintf(&b, "rejected %s %s: %s\n", pp.Peer.Name, pp.Peer.Address, pp.Rejected)
			continue
		}
		b.WriteString(renderPeer(buildPeer(pp)))
		for _, fp := range pp.Families {
			if fp.Reason != "" {
				fmt.Fprintf(&b, "  # %s withheld: %s\n", fp.Family, fp.Reason)
			}
		}
	}
	for _, path := range p.Paths {
		fmt.Fprintf(&b, "path %s communities %v large %v origin %q peers %v\n", path.Prefix, path.Communities, path.LargeCommunities, path.Origin, path.Peers)
	}
	b.WriteString(renderPolicies(buildPolicies(p)))
	return b.String()
}

func fromFSM(st gbgp.FSMState) SessionState {
	switch st {
	case gbgp.BGP_FSM_CONNECT:
		return StateConnect
	case gbgp.BGP_FSM_ACTIVE:
		return StateActive
	case gbgp.BGP_FSM_OPENSENT:
		return StateOpenSent
	case gbgp.BGP_FSM_OPENCONFIRM:
		return StateOpenConfirm
	case gbgp.BGP_FSM_ESTABLISHED:
		return StateEstablished
	}
	return StateIdle
}

func hasExtNH(caps []gbgp.ParameterCapabilityInterface) bool {
	for _, c := range caps {
		if e, ok := c.(*gbgp.CapExtendedNexthop); ok {
			for _, t := range e.Tuples {
				if t.NLRIAFI == gbgp.AFI_IP && t.NexthopAFI == gbgp.AFI_IP6 {
					return true
				}
			}
		}
	}
	return false
}

func (s *gobgpSpeaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, t time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE && ev.Type != apiutil.PEER_EVENT_INIT {
		return
	}
	st := ev.Peer.State
	addr := st.NeighborAddress.Unmap()
	state := fromFSM(st.SessionState)
	s.smu.Lock()
	x := s.sess[addr]
	if x == nil {
		x = &session{}
		s.sess[addr] = x
	}
	if x.state != state {
		x.state, x.since = state, t
	}
	extChanged := false
	if state == StateEstablished {
		ext := hasExtNH(st.RemoteCap)
		extChanged, x.extNH, x.lastErr = ext != x.extNH, ext, ""
	} else if st.DisconnectMessage != "" && st.DisconnectReason != api.PeerState_DISCONNECT_REASON_IDLE_TIMER_EXPIRED &&
		st.DisconnectReason != api.PeerState_DISCONNECT_REASON_DECONFIGURED {
		x.lastErr = "last session ended: " + st.DisconnectMessage
	}
	s.smu.Unlock()
	if extChanged {
		notify(s.kick)
	}
	notify(s.kickLearn)
}

// onReceived: an UPDATE from a peer (our own paths raise no event, so 100k
// announcements cost nothing here); the learned set is recomputed.
func (s *gobgpSpeaker) onReceived([]*apiutil.Path, time.Time) { notify(s.kickLearn) }

func (s *gobgpSpeaker) publishLearned() {
	s.mu.Lock()
	learn := map[netip.Addr]string{}
	for _, pp := range s.cur.Peers {
		if pp.Peer.Learn && pp.Rejected == "" {
			learn[pp.Peer.Address] = pp.Peer.Name
		}
	}
	s.mu.Unlock()
	var out []Route
	s.emu.RLock()
	defer s.emu.RUnlock()
	for _, f := range []Family{IPv4Unicast, IPv6Unicast} {
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: engineFamily(f)},
			func(n gbgp.NLRI, paths []*apiutil.Path) {
				for _, p := range paths {
					if name, ok := learn[p.PeerAddress.Unmap()]; ok && p.Best && !p.Withdrawal {
						out = append(out, toRoute(n, p, name))
					}
				}
			})
		if err != nil {
			s.log.Warn("bgp: list learned routes", "family", f, "err", err)
			return
		}
	}
	select {
	case <-s.learned:
	default:
	}
	s.learned <- out
}

var apiStates = map[api.PeerState_SessionState]SessionState{
	api.PeerState_SESSION_STATE_IDLE: StateIdle, api.PeerState_SESSION_STATE_CONNECT: StateConnect,
	api.PeerState_SESSION_STATE_ACTIVE: StateActive, api.PeerState_SESSION_STATE_OPENSENT: StateOpenSent,
	api.PeerState_SESSION_STATE_OPENCONFIRM: StateOpenConfirm, api.PeerState_SESSION_STATE_ESTABLISHED: StateEstablished,
}

func (s *gobgpSpeaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	cur, engineErrs := s.snapshot()
	if len(cur.Peers) == 0 {
		return nil, nil // not configured yet: GoBGP may not be started
	}
	live := map[netip.Addr]*api.Peer{}
	s.emu.RLock()
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if a, err := netip.ParseAddr(p.Conf.NeighborAddress); err == nil {
			live[a.Unmap()] = p
		}
	})
	s.emu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("bgp list peers: %w", err)
	}
	out := make([]PeerStatus, 0, len(cur.Peers))
	for _, pp := range cur.Peers {
		ps := PeerStatus{Name: pp.Peer.Name, Address: pp.Peer.Address, ASN: pp.Peer.ASN, LocalAddress: pp.Local, State: StateRejected}
		var errs []string
		switch {
		case pp.Rejected != "":
			errs = append(errs, pp.Rejected)
		case engineErrs[pp.Peer.Address] != "":
			errs = append(errs, engineErrs[pp.Peer.Address])
		default:
			errs = s.liveStatus(&ps, pp, live[pp.Peer.Address])
		}
		ps.Error = strings.Join(errs, "; ")
		out = append(out, ps)
	}
	return out, nil
}

func (s *gobgpSpeaker) liveStatus(ps *PeerStatus, pp peerPlan, lp *api.Peer) []string {
	var errs []string
	ps.State = StateIdle
	if lp != nil && lp.State != nil {
		ps.State = apiStates[lp.State.SessionState]
	}
	s.smu.Lock()
	if x := s.sess[pp.Peer.Address]; x != nil {
		ps.Since, ps.ExtendedNextHop = x.since, x.extNH
		if ps.State != StateEstablished && x.lastErr != "" {
			errs = append(errs, x.lastErr)
		}
	}
	s.smu.Unlock()
	if lp != nil && lp.Timers != nil && lp.Timers.State != nil && ps.State == StateEstablished && lp.Timers.State.Uptime != nil {
		ps.Since = lp.Timers.State.Uptime.AsTime()
	}
	if ps.State != StateEstablished && ps.State != StateOpenSent && ps.State != StateOpenConfirm {
		if pp.Peer.Password != "" {
			errs = append(errs, "no TCP connection: with TCP-MD5 a password mismatch (or a password on one side only) looks exactly like this, as does a peer that is down, unreachable or not configured for us")
		} else {
			errs = append(errs, "no TCP connection: the peer is down, unreachable, not configured for us, or expects TCP-MD5")
		}
	}
	for _, fp := range pp.Families {
		fs := FamilyStatus{Family: fp.Family, NextHop: fp.NextHop, Reason: fp.Reason}
		if lp != nil {
			for _, a := range lp.AfiSafis {
				if a.State != nil && a.State.Family != nil && familyName(a.State.Family) == fp.Family.String() {
					fs.Sent, fs.Received, fs.Accepted = a.State.Advertised, a.State.Received, a.State.Accepted
				}
			}
		}
		if fp.Reason != "" {
			errs = append(errs, fp.Family.String()+" withheld: "+fp.Reason)
		}
		ps.Families = append(ps.Families, fs)
	}
	return errs
}

func (s *gobgpSpeaker) Routes(ctx context.Context, q RouteQuery) ([]Route, error) {
	cur, _ := s.snapshot()
	families := []Family{IPv4Unicast, IPv6Unicast}
	if q.Family != 0 {
		families = []Family{q.Family}
	}
	type target struct {
		name string
		addr netip.Addr
	}
	var tt api.TableType
	targets := []target{{}}
	switch q.Direction {
	case "", DirectionLocal:
		tt = api.TableType_TABLE_TYPE_GLOBAL
	case DirectionAdvertised, DirectionReceived:
		tt = api.TableType_TABLE_TYPE_ADJ_OUT
		if q.Direction == DirectionReceived {
			tt = api.TableType_TABLE_TYPE_ADJ_IN
		}
		targets = nil
		for _, pp := range cur.Peers {
			if pp.Rejected == "" && (q.Peer == "" || q.Peer == pp.Peer.Name || q.Peer == pp.Peer.Address.String()) {
				targets = append(targets, target{pp.Peer.Name, pp.Peer.Address})
			}
		}
		if len(targets) == 0 && q.Peer != "" {
			return nil, fmt.Errorf("bgp routes: no configured peer %q", q.Peer)
		}
	default:
		return nil, fmt.Errorf("bgp routes: unknown direction %q (want local, advertised or received)", q.Direction)
	}
	names := map[netip.Addr]string{}
	for _, pp := range cur.Peers {
		names[pp.Peer.Address] = pp.Peer.Name
	}
	var out []Route
	s.emu.RLock()
	defer s.emu.RUnlock()
	for _, t := range targets {
		for _, f := range families {
			req := apiutil.ListPathRequest{TableType: tt, Family: engineFamily(f)}
			if t.addr.IsValid() {
				req.Name = t.addr.String()
			}
			err := s.srv.ListPath(req, func(n gbgp.NLRI, paths []*apiutil.Path) {
				for _, p := range paths {
					r := toRoute(n, p, names[p.PeerAddress.Unmap()])
					if q.Direction == DirectionAdvertised {
						r.Peer, r.PeerAddress = t.name, t.addr
					}
					out = append(out, r)
				}
			})
			if err != nil {
				return nil, fmt.Errorf("bgp routes %s %s: %w", f, t.name, err)
			}
		}
	}
	return out, nil
}

func toRoute(n gbgp.NLRI, p *apiutil.Path, peer string) Route {
	r := Route{Prefix: prefixOf(n), Peer: peer, Best: p.Best, Stale: p.Stale, Age: time.Unix(p.Age, 0)}
	if p.PeerAddress.IsValid() {
		r.PeerAddress = p.PeerAddress.Unmap()
	}
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *gbgp.PathAttributeNextHop:
			r.NextHop = a.Value
		case *gbgp.PathAttributeMpReachNLRI:
			r.NextHop = a.Nexthop
		case *gbgp.PathAttributeAsPath:
			for _, seg := range a.Value {
				r.ASPath = append(r.ASPath, seg.GetAS()...)
			}
		case *gbgp.PathAttributeCommunities:
			for _, c := range a.Value {
				r.Communities = append(r.Communities, Community(c))
			}
		case *gbgp.PathAttributeLargeCommunities:
			for _, c := range a.Values {
				r.LargeCommunities = append(r.LargeCommunities, LargeCommunity{c.ASN, c.LocalData1, c.LocalData2})
			}
		}
	}
	return r
}
