package datapath

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// SetNAT makes the nftables table inet NATTable in the node's namespace
// express cfg, replacing it atomically in one netlink transaction (add,
// delete, add again with everything; readers never see it half-built):
//
//	table inet strait {
//	  set masq4  { type ipv4_addr; flags interval; elements = { Masquerade } }
//	  set pools4 { type ipv4_addr; flags interval; elements = { AllPools } }
//	  set nodes4 { type ipv4_addr; flags interval; elements = { NodeAddrs } }
//	  (and masq6, pools6, nodes6)
//	  chain postrouting {
//	    type nat hook postrouting priority srcnat; policy accept;
//	    ip saddr @masq4 ip daddr != @pools4 ip daddr != @nodes4 counter masquerade fully-random
//	    ip6 saddr @masq6 ip6 daddr != @pools6 ip6 daddr != @nodes6 counter masquerade fully-random
//	  }
//	}
//
// and, with a TunnelPort, the chains of addTunnelNotrack.
//
// Applying the same cfg again leaves the same ruleset (connections already
// masqueraded keep their conntrack mapping). With no Masquerade pools and no
// tunnel, the table is removed (unless flow tracking keeps it, see
// EnableFlowTracking).
func (d *Datapath) SetNAT(ctx context.Context, cfg NATConfig) error {
	if err := d.setNAT(ctx, cfg); err != nil {
		return fmt.Errorf("set nat (nftables table inet %s): %w", NATTable, err)
	}
	return nil
}

func (d *Datapath) setNAT(ctx context.Context, cfg NATConfig) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var masq, pools, nodes [2][]netip.Prefix // by family: 0 IPv4, 1 IPv6
	for _, group := range []struct {
		what string
		in   []netip.Prefix
		out  *[2][]netip.Prefix
	}{{"masquerade pool", cfg.Masquerade, &masq}, {"pool", cfg.AllPools, &pools}} {
		for _, p := range group.in {
			p, ok := normPrefix(p)
			if !ok {
				return fmt.Errorf("invalid %s %v", group.what, p)
			}
			group.out[familyIndex(p.Addr())] = append(group.out[familyIndex(p.Addr())], p)
		}
	}
	for _, a := range cfg.NodeAddrs {
		a = a.Unmap().WithZone("")
		if !a.IsValid() {
			return fmt.Errorf("invalid node address %v", a)
		}
		nodes[familyIndex(a)] = append(nodes[familyIndex(a)], netip.PrefixFrom(a, a.BitLen()))
	}

	anyMasq := len(masq[0])+len(masq[1]) > 0
	tunnel := cfg.TunnelPort != 0 && len(nodes[0])+len(nodes[1]) > 0
	return d.nftTransaction(func(c *nftables.Conn) error {
		t := &nftables.Table{Name: NATTable, Family: nftables.TableFamilyINet}
		// Adding first makes the deletion valid when the table does not exist.
		c.AddTable(t)
		c.DelTable(t)
		if !d.flowTracking && !tunnel && !anyMasq {
			return nil
		}
		c.AddTable(t)
		if d.flowTracking {
			addFlowTrackChain(c, t)
		}
		for fi, f := range natFamilies() {
			sets := []struct {
				name  string
				elems []netip.Prefix
				need  bool
			}{
				{"masq" + f.suffix, masq[fi], len(masq[fi]) > 0},
				{"pools" + f.suffix, pools[fi], len(masq[fi]) > 0},
				{"nodes" + f.suffix, nodes[fi], len(masq[fi]) > 0 || (tunnel && len(nodes[fi]) > 0)},
			}
			for i, s := range sets {
				if !s.need {
					continue
				}
				set := &nftables.Set{Table: t, ID: natSetID(fi, i), Name: s.name, KeyType: f.keyType, Interval: true}
				if err := c.AddSet(set, intervalElements(s.elems)); err != nil {
					return fmt.Errorf("set %s: %w", s.name, err)
				}
			}
		}
		if anyMasq {
			chain := c.AddChain(&nftables.Chain{
				Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
			})
			for fi, f := range natFamilies() {
				if len(masq[fi]) == 0 {
					continue
				}
				c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddr, Len: f.addrLen},
					&expr.Lookup{SourceRegister: 1, SetName: "masq" + f.suffix, SetID: natSetID(fi, 0)},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddr, Len: f.addrLen},
					&expr.Lookup{SourceRegister: 1, SetName: "pools" + f.suffix, SetID: natSetID(fi, 1), Invert: true},
					&expr.Lookup{SourceRegister: 1, SetName: "nodes" + f.suffix, SetID: natSetID(fi, 2), Invert: true},
					&expr.Counter{},
					&expr.Masq{FullyRandom: true},
				}})
			}
		}
		if tunnel {
			addTunnelNotrack(c, t, cfg.TunnelPort, nodes)
		}
		d.log.Debug("applying outgoing nat", "masquerade", cfg.Masquerade, "pools", cfg.AllPools,
			"node_addrs", len(cfg.NodeAddrs), "tunnel_port", cfg.TunnelPort)
		return nil
	})
}

// natSetID is the explicit ID of set i (0 masq, 1 pools, 2 nodes) of family
// index fi: 1-3 for IPv4, 4-6 for IPv6 (the library's own counter is a
// package global).
func natSetID(fi, i int) uint32 { return uint32(fi*3 + i + 1) }

// TunnelInChain and TunnelOutChain are the chains of table inet NATTable
// that keep the overlay's outer packets out of conntrack.
const (
	TunnelInChain  = "tunnel-in"
	TunnelOutChain = "tunnel-out"
)

// addTunnelNotrack queues the chains that exempt the overlay's outer packets
// from conntrack, for each family with node addresses:
//
//	chain tunnel-in {
//	  type filter hook prerouting priority raw; policy accept;
//	  ip saddr @nodes4 udp dport 4789 fib daddr type local counter notrack
//	}
//	chain tunnel-out {
//	  type filter hook output priority raw; policy accept;
//	  ip daddr @nodes4 udp dport 4789 counter notrack
//	}
//
// Raw priority runs before conntrack looks at the packet. Only packets to
// the port between node addresses match, and incoming ones only when this
// node is their destination: forwarded traffic and Service traffic (whose
// destination is a Service address until kube-proxy's DNAT, which runs
// after raw) stay tracked.
func addTunnelNotrack(c *nftables.Conn, t *nftables.Table, port uint16, nodes [2][]netip.Prefix) {
	policy := nftables.ChainPolicyAccept
	in := c.AddChain(&nftables.Chain{
		Name: TunnelInChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &policy,
	})
	out := c.AddChain(&nftables.Chain{
		Name: TunnelOutChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw, Policy: &policy,
	})
	udpDport := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
	for fi, f := range natFamilies() {
		if len(nodes[fi]) == 0 {
			continue
		}
		for _, dir := range []struct {
			chain  *nftables.Chain
			offset uint32 // the peer's address: source in, destination out
			local  bool   // also require a local destination
		}{{in, f.saddr, true}, {out, f.daddr, false}} {
			exprs := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: dir.offset, Len: f.addrLen},
				&expr.Lookup{SourceRegister: 1, SetName: "nodes" + f.suffix, SetID: natSetID(fi, 2)},
			}
			exprs = append(exprs, udpDport...)
			if dir.local {
				exprs = append(exprs,
					&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)})
			}
			exprs = append(exprs, &expr.Counter{}, &expr.Notrack{})
			c.AddRule(&nftables.Rule{Table: t, Chain: dir.chain, Exprs: exprs})
		}
	}
}

// nftTransaction runs build on an nftables connection at the node's
// namespace, under nftMu, and commits what it queued as one transaction.
func (d *Datapath) nftTransaction(build func(c *nftables.Conn) error) error {
	d.life.RLock()
	defer d.life.RUnlock()
	if d.closed {
		return errClosed
	}
	d.nftMu.Lock()
	defer d.nftMu.Unlock()
	c, err := nftables.New(nftables.WithNetNSFd(int(d.nodeNS.Fd())))
	if err != nil {
		return fmt.Errorf("open nftables connection: %w", err)
	}
	if err := build(c); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// FlowTrackChain is the chain of table inet NATTable that makes conntrack
// track the node's traffic for the flow exporter.
const FlowTrackChain = "flowtrack"

// flowTrackSysctls make conntrack entries carry packet and byte counters
// (acct) and start/stop times (timestamp), and make every entry produce a
// DESTROY event even when it was created before the listener subscribed
// (events=1; the default 2 only does for entries created after).
func flowTrackSysctls() []sysctl {
	return []sysctl{
		{path: "netfilter/nf_conntrack_acct", value: "1"},
		{path: "netfilter/nf_conntrack_timestamp", value: "1"},
		{path: "netfilter/nf_conntrack_events", value: "1"},
	}
}

// EnableFlowTracking prepares the node's namespace for the conntrack-based
// flow exporter. Nothing is tracked in a namespace until some rule uses
// conntrack, so it adds, to table inet NATTable,
//
//	chain flowtrack {
//	  type filter hook prerouting priority filter; policy accept;
//	  ct state new counter
//	}
//
// (the rule only counts; its existence is what enables tracking, also of
// locally generated traffic), then sets the sysctls net.netfilter.
// nf_conntrack_acct, nf_conntrack_timestamp and nf_conntrack_events to 1 (they
// exist once conntrack is loaded). It is idempotent, and SetNAT keeps the
// chain from then on.
func (d *Datapath) EnableFlowTracking(ctx context.Context) error {
	if err := d.enableFlowTracking(ctx); err != nil {
		return fmt.Errorf("enable flow tracking (nftables table inet %s, conntrack sysctls): %w", NATTable, err)
	}
	return nil
}

func (d *Datapath) enableFlowTracking(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d.fast.mu.Lock()
	defer d.fast.mu.Unlock()
	if d.fast.coll != nil {
		return errors.New("the eBPF fast path is on: the connections it carries skip conntrack, which flow export reads")
	}
	err := d.nftTransaction(func(c *nftables.Conn) error {
		addFlowTrackChain(c, c.AddTable(&nftables.Table{Name: NATTable, Family: nftables.TableFamilyINet}))
		d.flowTracking = true // under nftMu; a failed commit leaves it set, which only re-adds the chain
		return nil
	})
	if err != nil {
		return err
	}
	if err := d.inNode(func() error { return ensureSysctls(flowTrackSysctls()) }); err != nil {
		return err
	}
	d.log.Debug("enabled flow tracking", "table", NATTable, "chain", FlowTrackChain)
	return nil
}

// addFlowTrackChain queues the creation (or the emptying and refilling) of
// the flow tracking chain of t.
func addFlowTrackChain(c *nftables.Conn, t *nftables.Table) {
	policy := nftables.ChainPolicyAccept
	chain := c.AddChain(&nftables.Chain{
		Name: FlowTrackChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &policy,
	})
	c.FlushChain(chain)
	c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Counter{},
	}})
}

// natFamily describes the IPv4 or IPv6 half of the table.
type natFamily struct {
	suffix       string
	keyType      nftables.SetDatatype
	nfproto      byte
	saddr, daddr uint32 // offsets in the network header
	addrLen      uint32
}

func natFamilies() [2]natFamily {
	return [2]natFamily{
		{"4", nftables.TypeIPAddr, unix.NFPROTO_IPV4, 12, 16, 4},
		{"6", nftables.TypeIP6Addr, unix.NFPROTO_IPV6, 8, 24, 16},
	}
}

func familyIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// normPrefix unmaps and masks p.
func normPrefix(p netip.Prefix) (netip.Prefix, bool) {
	a, bits := p.Addr(), p.Bits()
	if !p.IsValid() {
		return p, false
	}
	if a.Is4In6() {
		if bits < 96 {
			return p, false
		}
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a.WithZone(""), bits).Masked(), true
}

// intervalElements renders prefixes as the elements of an interval set:
// overlapping and adjacent prefixes merged (the kernel rejects overlaps),
// each range as its first address and, flagged as interval end, the
// address after its last (omitted at the end of the address space).
func intervalElements(ps []netip.Prefix) []nftables.SetElement {
	type span struct{ lo, hi netip.Addr }
	spans := make([]span, 0, len(ps))
	for _, p := range ps {
		spans = append(spans, span{p.Masked().Addr(), lastAddr(p)})
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Or(a.lo.Compare(b.lo), a.hi.Compare(b.hi)) })
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if next := last.hi.Next(); !next.IsValid() || s.lo.Compare(next) <= 0 {
				if s.hi.Compare(last.hi) > 0 {
					last.hi = s.hi
				}
				continue
			}
		}
		merged = append(merged, s)
	}
	var elems []nftables.SetElement
	for _, s := range merged {
		elems = append(elems, nftables.SetElement{Key: s.lo.AsSlice()})
		if end := s.hi.Next(); end.IsValid() {
			elems = append(elems, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return elems
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
