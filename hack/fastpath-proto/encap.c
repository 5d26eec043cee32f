// Measurement prototype, not part of Strait (README.md): a pod's traffic to
// the VXLAN device's routes encapsulated in BPF (outer IPv4/UDP/VXLAN and the
// inner Ethernet header pushed with bpf_skb_adjust_room, GSO kept), then
// bpf_redirect out of the uplink: it skips the kernel VXLAN device's transmit
// and the node's second IP output. Receiving stays with the kernel VXLAN
// device. IPv4 only, outer UDP checksum 0, one remote node, whose address and
// the ifindexes are compiled in (run.sh encap).
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef LOCAL_IP
#error LOCAL_IP
#endif
#define AF_INET 2
#define VXLAN_HLEN 8
#define ROOM (sizeof(struct iphdr) + sizeof(struct udphdr) + VXLAN_HLEN + ETH_HLEN)

struct vxlanhdr { __be32 flags; __be32 vni; };

SEC("tc") int from_pod_encap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->ttl <= 1)
		return TC_ACT_OK;
	struct bpf_fib_lookup p = {};
	p.family = AF_INET;
	p.ipv4_src = ip->saddr;
	p.ipv4_dst = ip->daddr;
	p.ifindex = skb->ingress_ifindex;
	if (bpf_fib_lookup(skb, &p, sizeof(p), 0) != BPF_FIB_LKUP_RET_SUCCESS || p.ifindex != VX_IFINDEX)
		return TC_ACT_OK;
	__u8 inner_src[6], inner_dst[6];
	__builtin_memcpy(inner_src, p.smac, 6);
	__builtin_memcpy(inner_dst, p.dmac, 6);
	// outer route: to the remote node out of the uplink
	struct bpf_fib_lookup o = {};
	o.family = AF_INET;
	o.ipv4_src = bpf_htonl(LOCAL_IP);
	o.ipv4_dst = bpf_htonl(REMOTE_IP);
	o.ifindex = UPLINK_IFINDEX;
	if (bpf_fib_lookup(skb, &o, sizeof(o), BPF_FIB_LOOKUP_OUTPUT) != BPF_FIB_LKUP_RET_SUCCESS)
		return TC_ACT_OK;
	// TTL - 1 (we route it)
	__u32 old = *(__u16 *)&ip->ttl;
	ip->ttl--;
	__u32 nw = *(__u16 *)&ip->ttl;
	bpf_l3_csum_replace(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, check), old, nw, 2);
	__u32 hash = bpf_get_hash_recalc(skb);
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
		      BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	if (bpf_skb_adjust_room(skb, ROOM, BPF_ADJ_ROOM_MAC, flags))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	struct iphdr *oip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(oip + 1);
	struct vxlanhdr *vx = (void *)(udp + 1);
	struct ethhdr *ieth = (void *)(vx + 1);
	if ((void *)(ieth + 1) > end)
		return TC_ACT_SHOT;
	__u16 tot = skb->len - ETH_HLEN;
	struct iphdr h = {};
	h.version = 4;
	h.ihl = 5;
	h.tot_len = bpf_htons(tot);
	h.ttl = 64;
	h.protocol = IPPROTO_UDP;
	h.saddr = bpf_htonl(LOCAL_IP);
	h.daddr = bpf_htonl(REMOTE_IP);
	__s64 cs = bpf_csum_diff(0, 0, (__be32 *)&h, sizeof(h), 0);
	cs = (cs & 0xffff) + (cs >> 16);
	cs = (cs & 0xffff) + (cs >> 16);
	h.check = ~cs;
	*oip = h;
	udp->source = bpf_htons(32768 + (hash & 0x7fff));
	udp->dest = bpf_htons(4789);
	udp->len = bpf_htons(tot - sizeof(struct iphdr));
	udp->check = 0;
	vx->flags = bpf_htonl(0x08000000);
	vx->vni = bpf_htonl(4096 << 8);
	__builtin_memcpy(ieth->h_dest, inner_dst, 6);
	__builtin_memcpy(ieth->h_source, inner_src, 6);
	ieth->h_proto = bpf_htons(ETH_P_IP);
	__builtin_memcpy(eth->h_dest, o.dmac, 6);
	__builtin_memcpy(eth->h_source, o.smac, 6);
	eth->h_proto = bpf_htons(ETH_P_IP);
	return bpf_redirect(o.ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
