package bgp

// The engine-neutral half of the speaker: Set, the background loop, close,
// policies view. gobgp.go holds everything that names GoBGP.

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type session struct {
	state   SessionState
	since   time.Time
	extNH   bool
	lastErr string
}

func (s *gobgpSpeaker) Set(ctx context.Context, cfg Config) error {
	if err := validateGlobal(cfg); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("bgp set: speaker closed")
	}
	cfg.Peers = slices.Clone(cfg.Peers)
	cfg.Paths = slices.Clone(cfg.Paths)
	s.cfg, s.haveCfg = cfg, true
	return s.apply(ctx)
}

// readOnlyMethod: GoBGP's read methods are Get*, List* and Watch*.
func readOnlyMethod(full string) bool {
	m := full[strings.LastIndex(full, "/")+1:]
	return strings.HasPrefix(m, "Get") || strings.HasPrefix(m, "List") || strings.HasPrefix(m, "Watch")
}

func readOnlyUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !readOnlyMethod(info.FullMethod) {
		return nil, status.Errorf(codes.PermissionDenied, "strait: this GoBGP API is read-only; %s refused", info.FullMethod)
	}
	return h(ctx, req)
}

func readOnlyStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !readOnlyMethod(info.FullMethod) {
		return status.Errorf(codes.PermissionDenied, "strait: this GoBGP API is read-only; %s refused", info.FullMethod)
	}
	return h(srv, ss)
}

func (s *gobgpSpeaker) extNH(addr netip.Addr) bool {
	s.smu.Lock()
	defer s.smu.Unlock()
	x := s.sess[addr]
	return x != nil && x.extNH
}

// forgetSession drops what events told about a peer that is re-created.
func (s *gobgpSpeaker) forgetSession(addr netip.Addr) {
	s.smu.Lock()
	delete(s.sess, addr)
	s.smu.Unlock()
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *gobgpSpeaker) loop() {
	defer close(s.done)
	tick := time.NewTicker(s.opts.Resync)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
			s.resync()
		case <-tick.C:
			s.resync()
		case <-s.kickLearn:
			select { // coalesce bursts of updates
			case <-s.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			select {
			case <-s.kickLearn:
			default:
			}
			s.publishLearned()
		}
	}
}

func (s *gobgpSpeaker) resync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.haveCfg {
		return
	}
	if err := s.apply(s.ctx); err != nil {
		s.log.Warn("bgp resync", "err", err)
	}
}

func (s *gobgpSpeaker) Learned() <-chan []Route { return s.learned }

func (s *gobgpSpeaker) snapshot() (plan, map[netip.Addr]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	errs := make(map[netip.Addr]string, len(s.peerErr))
	for k, v := range s.peerErr {
		errs[k] = v
	}
	return s.cur, errs
}

func (s *gobgpSpeaker) Policies(ctx context.Context) ([]PolicyView, error) {
	cur, _ := s.snapshot()
	var out []PolicyView
	for _, pp := range cur.Peers {
		v := PolicyView{Peer: pp.Peer.Name, Address: pp.Peer.Address}
		if pp.Rejected != "" {
			v.Rendered = "rejected: " + pp.Rejected
			out = append(out, v)
			continue
		}
		for _, fp := range pp.Families {
			v.Families = append(v.Families, FamilyStatus{Family: fp.Family, NextHop: fp.NextHop, Reason: fp.Reason})
		}
		for _, path := range cur.Paths {
			if !slices.Contains(pp.Denied, path.Prefix) && slices.ContainsFunc(pp.Families, func(fp familyPlan) bool {
				return fp.Family == FamilyOf(path.Prefix.Addr()) && fp.NextHop.IsValid()
			}) {
				v.Exported = append(v.Exported, path)
			}
		}
		v.Rendered = renderPeer(buildPeer(pp))
		out = append(out, v)
	}
	return out, nil
}

func (s *gobgpSpeaker) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.done
	s.stopKeepingRoutes()
	s.srv.Stop()
	close(s.learned)
	return nil
}
