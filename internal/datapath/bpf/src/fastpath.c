// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Strait's eBPF fast path (opt-in): tc programs that carry pod traffic past
// the node's forwarding hop, netfilter and conntrack, with the kernel's own
// FIB and neighbour tables deciding where it goes.
//
//   strait_from_pod  tcx ingress of a pod's host veth
//   strait_to_pod    tcx ingress of a VXLAN device and of the uplink
//
// A packet is redirected only when all of these hold, otherwise it is left
// to the stack untouched (TC_ACT_OK):
//   - the frame is addressed to the device (PACKET_HOST): the stack drops
//     other hosts' frames a promiscuous or misdirected device receives;
//   - IPv4 without options or fragments, or IPv6 whose next header is TCP or
//     UDP; TTL / hop limit above 1;
//   - from a pod: its source is that pod's own address (fp_devs), and its
//     destination lies in a pod address range of the cluster (fp_pods4/6);
//   - no conntrack entry of the connection carries NAT (a Service's
//     connection, masquerade): those need the stack's reverse NAT;
//   - bpf_fib_lookup forwards it (a resolved neighbour, not to this node)
//     out of a device Strait manages (fp_devs): into a pod through
//     bpf_redirect_peer, to a VXLAN device or the uplink through
//     bpf_redirect (only from a pod: traffic arriving on the uplink or a
//     tunnel is fast-pathed into local pods only).
//
// A pod's packet routed into an IPv4 VXLAN device is encapsulated here
// (outer Ethernet/IPv4/UDP/VXLAN pushed by bpf_skb_adjust_room, GSO kept)
// and sent straight out of the uplink, skipping the VXLAN device's transmit
// and the node's second IP output, when the remote VTEP's MAC is in
// fp_vteps (kept from the device's FDB by the agent) and the underlay route
// to it leaves by a managed uplink with a resolved neighbour; otherwise it
// is redirected into the VXLAN device as before. The headers are what the
// kernel's VXLAN device writes (its VNI, port and local address, a source
// port from the flow hash in the device's default range, TTL 64, no DF, ECN
// copied from the inner header), except the UDP checksum: 0, as RFC 7348
// allows over IPv4. Receivers decapsulate with their own VXLAN device.
//
// Build: make bpf (clang -target bpf); the object is committed as
// fastpath.o and embedded in the agent.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define __ksym __attribute__((section(".ksyms")))

// Only the field read here; CO-RE relocates it to the running kernel.
struct nf_conn {
	unsigned long status;
} __attribute__((preserve_access_index));

struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u16 ct_zone_id;
	__u8 ct_zone_dir;
	__u8 reserved[3];
};

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *, struct bpf_sock_tuple *, __u32,
					 struct bpf_ct_opts *, __u32) __ksym;
extern void bpf_ct_release(struct nf_conn *) __ksym;

#define IPS_SRC_NAT 0x10
#define IPS_DST_NAT 0x20
#define AF_INET 2
#define AF_INET6 10

// Device kinds in fp_devs.
#define DEV_POD 1    // a pod's host veth: redirect_peer into the pod
#define DEV_UPLINK 2 // a VXLAN device or the uplink: redirect out of it

// Device flags.
#define DEV_HAS_V4 1
#define DEV_HAS_V6 2
#define DEV_VXLAN4 4 // an IPv4 VXLAN device: v4, vni and port describe it

struct dev {
	__u32 kind;
	__u32 flags;
	__be32 v4;	  // the pod's IPv4 address (DEV_POD with DEV_HAS_V4); the local underlay address (DEV_VXLAN4)
	__be32 v6[4];	  // the pod's IPv6 address (DEV_POD with DEV_HAS_V6)
	__u32 vni;	  // DEV_VXLAN4
	__be16 port;	  // DEV_VXLAN4: UDP destination port
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); // ifindex
	__type(value, struct dev);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_devs SEC(".maps");

struct lpm4 {
	__u32 prefixlen;
	__be32 addr;
};

struct lpm6 {
	__u32 prefixlen;
	__be32 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm4);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_pods4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm6);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_pods6 SEC(".maps");

// Remote VTEPs of the IPv4 VXLAN device: its FDB (remote VTEP MAC ->
// remote underlay address).
struct vtep_key {
	__u8 mac[ETH_ALEN];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct vtep_key);
	__type(value, __be32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_vteps SEC(".maps");

// Counters, per CPU: what happened to each packet the programs saw.
enum {
	CNT_REDIRECT = 0, // redirected (the fast path)
	CNT_NAT,	  // left to the stack: the connection has NAT
	CNT_SPOOF,	  // left to the stack: a pod sent from an address not its own
	CNT_NOT_POD,	  // left to the stack: not to a pod range, or out of a device Strait does not manage
	CNT_FIB,	  // left to the stack: the FIB did not forward it (no neighbour, unreachable, ...)
	CNT_OTHER,	  // left to the stack: not TCP/UDP over plain IPv4/IPv6, TTL, fragments
	CNT_LOCAL,	  // left to the stack: to this node itself (the FIB's local or broadcast routes)
	CNT_ENCAP,	  // of CNT_REDIRECT: encapsulated in VXLAN here and sent out of the uplink
	CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_counters SEC(".maps");

static __always_inline int count(__u32 what, int verdict)
{
	__u64 *v = bpf_map_lookup_elem(&fp_counters, &what);
	if (v)
		*v += 1;
	return verdict;
}

// has_nat reports whether a conntrack entry of the connection (either
// direction) has NAT.
static __always_inline int has_nat(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 len, __u8 proto)
{
	struct bpf_ct_opts o = {.netns_id = -1, .l4proto = proto};
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, t, len, &o, sizeof(o));
	if (!ct)
		return 0;
	unsigned long st = ct->status;
	bpf_ct_release(ct);
	return (st & (IPS_SRC_NAT | IPS_DST_NAT)) != 0;
}

#define VXLAN_HLEN 8
#define VXLAN_ROOM (sizeof(struct iphdr) + sizeof(struct udphdr) + VXLAN_HLEN + ETH_HLEN)
// The kernel VXLAN device's default source port range (the local port range).
#define VXLAN_SPORT_MIN 32768
#define VXLAN_SPORT_MAX 60999

struct vxlanhdr {
	__be32 flags;
	__be32 vni;
};

// encap4 sends a pod's packet that the FIB routes into IPv4 VXLAN device d
// (p: the inner lookup's result, the remote VTEP's MAC in p->dmac) out of
// the uplink, encapsulated here. It returns -1, with the packet untouched,
// when it cannot: the packet is too large for an outer IPv4 header, the
// VTEP is unknown, or the underlay route does not leave by a managed
// uplink with a resolved neighbour.
static __always_inline int encap4(struct __sk_buff *skb, struct bpf_fib_lookup *p, struct dev *d, __u8 tos)
{
	// The outer IPv4 length must fit in 16 bits (a BIG TCP packet would
	// not): the device handles anything larger.
	if (skb->len - ETH_HLEN + VXLAN_ROOM > 0xffff)
		return -1;
	struct vtep_key k = {};
	__builtin_memcpy(k.mac, p->dmac, ETH_ALEN);
	__be32 *remote = bpf_map_lookup_elem(&fp_vteps, &k);
	if (!remote)
		return -1;
	// The underlay route, as the VXLAN device's output lookup sees it
	// (input interface loopback: locally generated).
	struct bpf_fib_lookup o = {};
	o.family = AF_INET;
	o.l4_protocol = IPPROTO_UDP;
	o.dport = d->port;
	o.ipv4_src = d->v4;
	o.ipv4_dst = *remote;
	o.ifindex = 1;
	if (bpf_fib_lookup(skb, &o, sizeof(o), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	__u32 oif = o.ifindex;
	struct dev *up = bpf_map_lookup_elem(&fp_devs, &oif);
	if (!up || up->kind != DEV_UPLINK || (up->flags & DEV_VXLAN4))
		return -1;

	__u32 hash = bpf_get_hash_recalc(skb);
	__be16 proto = skb->protocol;
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
		      BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	if (bpf_skb_adjust_room(skb, VXLAN_ROOM, BPF_ADJ_ROOM_MAC, flags))
		return -1;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *oip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(oip + 1);
	struct vxlanhdr *vx = (void *)(udp + 1);
	struct ethhdr *ieth = (void *)(vx + 1);
	if ((void *)(ieth + 1) > end)
		return count(CNT_OTHER, TC_ACT_SHOT); // cannot happen: the room was just made

	__u16 tot = skb->len - ETH_HLEN;
	struct iphdr h = {};
	h.version = 4;
	h.ihl = 5;
	// ECN as the kernel's tunnels copy it (RFC 6040): CE becomes ECT(0).
	h.tos = (tos & 3) == 3 ? 2 : (tos & 3);
	h.tot_len = bpf_htons(tot);
	h.id = bpf_get_prandom_u32();
	h.ttl = 64;
	h.protocol = IPPROTO_UDP;
	h.saddr = d->v4;
	h.daddr = *remote;
	__s64 cs = bpf_csum_diff(0, 0, (__be32 *)&h, sizeof(h), 0);
	cs = (cs & 0xffff) + (cs >> 16);
	cs = (cs & 0xffff) + (cs >> 16);
	h.check = ~cs;
	*oip = h;
	udp->source = bpf_htons(VXLAN_SPORT_MIN + (((__u64)hash * (VXLAN_SPORT_MAX - VXLAN_SPORT_MIN + 1)) >> 32));
	udp->dest = d->port;
	udp->len = bpf_htons(tot - sizeof(struct iphdr));
	udp->check = 0;
	vx->flags = bpf_htonl(0x08000000); // I: the VNI is valid
	vx->vni = bpf_htonl(d->vni << 8);
	__builtin_memcpy(ieth->h_dest, p->dmac, ETH_ALEN);
	__builtin_memcpy(ieth->h_source, p->smac, ETH_ALEN);
	ieth->h_proto = proto;
	__builtin_memcpy(eth->h_dest, o.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, o.smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	count(CNT_REDIRECT, 0);
	count(CNT_ENCAP, 0);
	return bpf_redirect(oif, 0);
}

// out finishes a forwarded packet for managed device d: MAC rewrite, then
// into the pod behind d or out of d; a pod's packet into an IPv4 VXLAN
// device is encapsulated here when it can be (encap4). tos is the inner
// IPv4 TOS or IPv6 traffic class.
static __always_inline int out(struct __sk_buff *skb, struct bpf_fib_lookup *p, struct dev *d, struct dev *src, __u8 tos)
{
	// IPv4 in IPv4 only: skb->protocol stays that of the inner packet.
	if (src && (d->flags & DEV_VXLAN4) && skb->protocol == bpf_htons(ETH_P_IP)) {
		int rc = encap4(skb, p, d, tos);
		if (rc >= 0)
			return rc;
	}
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return count(CNT_OTHER, TC_ACT_OK);
	__builtin_memcpy(eth->h_dest, p->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, p->smac, ETH_ALEN);
	count(CNT_REDIRECT, 0);
	if (d->kind == DEV_POD)
		return bpf_redirect_peer(p->ifindex, 0);
	return bpf_redirect(p->ifindex, 0);
}

// route looks p up in the FIB and returns the managed device the packet
// leaves by, or 0 (counted) when it stays with the stack: it is to this
// node, the FIB does not forward it, it would leave by the device it came in on, or by a device
// Strait does not manage (from another node: by anything but a pod).
static __always_inline struct dev *route(struct __sk_buff *skb, struct bpf_fib_lookup *p, struct dev *src)
{
	p->ifindex = skb->ingress_ifindex;
	long rc = bpf_fib_lookup(skb, p, sizeof(*p), 0);
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED) {
		count(CNT_LOCAL, 0);
		return 0;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS || p->ifindex == skb->ingress_ifindex) {
		count(CNT_FIB, 0);
		return 0;
	}
	__u32 oif = p->ifindex;
	struct dev *d = bpf_map_lookup_elem(&fp_devs, &oif);
	if (!d || (d->kind != DEV_POD && !src)) {
		count(CNT_NOT_POD, 0);
		return 0;
	}
	return d;
}

static __always_inline int fwd4(struct __sk_buff *skb, struct dev *src)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return count(CNT_OTHER, TC_ACT_OK);
	if (ip->ihl != 5 || ip->ttl <= 1 || (ip->frag_off & bpf_htons(0x3fff)) ||
	    (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
		return count(CNT_OTHER, TC_ACT_OK);
	__be16 *ports = (void *)(ip + 1);
	if ((void *)(ports + 2) > end)
		return count(CNT_OTHER, TC_ACT_OK);
	if (src) {
		if (!(src->flags & DEV_HAS_V4) || ip->saddr != src->v4)
			return count(CNT_SPOOF, TC_ACT_OK);
		struct lpm4 k = {.prefixlen = 32, .addr = ip->daddr};
		if (!bpf_map_lookup_elem(&fp_pods4, &k))
			return count(CNT_NOT_POD, TC_ACT_OK);
	}
	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = ip->saddr;
	t.ipv4.daddr = ip->daddr;
	t.ipv4.sport = ports[0];
	t.ipv4.dport = ports[1];
	if (has_nat(skb, &t, sizeof(t.ipv4), ip->protocol))
		return count(CNT_NAT, TC_ACT_OK);

	struct bpf_fib_lookup p = {};
	p.family = AF_INET;
	p.tos = ip->tos;
	p.l4_protocol = ip->protocol;
	p.sport = ports[0];
	p.dport = ports[1];
	p.tot_len = 0; // 0: the kernel checks GSO-aware forwardability instead of this length
	p.ipv4_src = ip->saddr;
	p.ipv4_dst = ip->daddr;
	struct dev *d = route(skb, &p, src);
	if (!d)
		return TC_ACT_OK;

	// TTL - 1, with the header checksum updated.
	__u32 old = *(__u16 *)&ip->ttl;
	ip->ttl--;
	__u32 new = *(__u16 *)&ip->ttl;
	__u8 tos = ip->tos;
	bpf_l3_csum_replace(skb, sizeof(struct ethhdr) + __builtin_offsetof(struct iphdr, check), old, new, 2);
	return out(skb, &p, d, src, tos);
}

static __always_inline int fwd6(struct __sk_buff *skb, struct dev *src)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > end)
		return count(CNT_OTHER, TC_ACT_OK);
	if (ip6->hop_limit <= 1 || (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP))
		return count(CNT_OTHER, TC_ACT_OK);
	// Link-local and multicast stay with the stack (fe80::/10, ff00::/8).
	__u8 d0 = ip6->daddr.in6_u.u6_addr8[0];
	if (d0 == 0xff || (d0 == 0xfe && (ip6->daddr.in6_u.u6_addr8[1] & 0xc0) == 0x80))
		return count(CNT_OTHER, TC_ACT_OK);
	__be16 *ports = (void *)(ip6 + 1);
	if ((void *)(ports + 2) > end)
		return count(CNT_OTHER, TC_ACT_OK);
	if (src) {
		if (!(src->flags & DEV_HAS_V6) || ip6->saddr.in6_u.u6_addr32[0] != src->v6[0] ||
		    ip6->saddr.in6_u.u6_addr32[1] != src->v6[1] || ip6->saddr.in6_u.u6_addr32[2] != src->v6[2] ||
		    ip6->saddr.in6_u.u6_addr32[3] != src->v6[3])
			return count(CNT_SPOOF, TC_ACT_OK);
		struct lpm6 k = {.prefixlen = 128};
		__builtin_memcpy(k.addr, ip6->daddr.in6_u.u6_addr32, 16);
		if (!bpf_map_lookup_elem(&fp_pods6, &k))
			return count(CNT_NOT_POD, TC_ACT_OK);
	}
	struct bpf_sock_tuple t = {};
	__builtin_memcpy(t.ipv6.saddr, ip6->saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(t.ipv6.daddr, ip6->daddr.in6_u.u6_addr32, 16);
	t.ipv6.sport = ports[0];
	t.ipv6.dport = ports[1];
	if (has_nat(skb, &t, sizeof(t.ipv6), ip6->nexthdr))
		return count(CNT_NAT, TC_ACT_OK);

	struct bpf_fib_lookup p = {};
	p.family = AF_INET6;
	p.flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0fffffff);
	p.l4_protocol = ip6->nexthdr;
	p.sport = ports[0];
	p.dport = ports[1];
	p.tot_len = 0;
	__builtin_memcpy(p.ipv6_src, ip6->saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(p.ipv6_dst, ip6->daddr.in6_u.u6_addr32, 16);
	struct dev *d = route(skb, &p, src);
	if (!d)
		return TC_ACT_OK;
	__u8 tc = (bpf_ntohs(*(__be16 *)ip6) >> 4) & 0xff;
	ip6->hop_limit--;
	return out(skb, &p, d, src, tc);
}

static __always_inline int fwd(struct __sk_buff *skb, int from_pod)
{
	struct dev *src = 0;
	if (skb->pkt_type != PACKET_HOST)
		return count(CNT_OTHER, TC_ACT_OK);
	if (from_pod) {
		__u32 in = skb->ingress_ifindex;
		src = bpf_map_lookup_elem(&fp_devs, &in);
		if (!src || src->kind != DEV_POD)
			return count(CNT_SPOOF, TC_ACT_OK);
	}
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return fwd4(skb, src);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return fwd6(skb, src);
	return count(CNT_OTHER, TC_ACT_OK);
}

SEC("tc")
int strait_from_pod(struct __sk_buff *skb)
{
	return fwd(skb, 1);
}

SEC("tc")
int strait_to_pod(struct __sk_buff *skb)
{
	return fwd(skb, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
