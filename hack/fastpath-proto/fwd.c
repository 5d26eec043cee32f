// Measurement prototype, not part of Strait: a tc fast path that skips the
// node's forwarding hop (fib lookup, MAC rewrite, redirect; redirect_peer
// into a pod), leaving packets of NATed connections (kube-proxy's Services)
// to the stack through a conntrack lookup. IPv4, TCP/UDP only. to_pod
// assumes every forwarded destination behind the ingress device is a pod
// veth (true in run.sh's topology, not on a real node). See README.md.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#define __ksym __attribute__((section(".ksyms")))

struct nf_conn { unsigned long status; } __attribute__((preserve_access_index));
struct bpf_ct_opts { __s32 netns_id; __s32 error; __u8 l4proto; __u8 dir; __u16 ct_zone_id; __u8 ct_zone_dir; __u8 reserved[3]; };
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *, struct bpf_sock_tuple *, __u32, struct bpf_ct_opts *, __u32) __ksym;
extern void bpf_ct_release(struct nf_conn *) __ksym;
#define IPS_NAT_MASK 0x30
#ifndef AF_INET
#define AF_INET 2
#endif

static __always_inline int fwd(struct __sk_buff *skb, int peer)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (ip->ttl <= 1)
		return TC_ACT_OK;
	if (ip->ihl != 5 || (ip->protocol != 6 && ip->protocol != 17))
		return TC_ACT_OK;
	__u16 *ports = (void *)(ip + 1);
	if ((void *)(ports + 2) > end)
		return TC_ACT_OK;
	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = ip->saddr; t.ipv4.daddr = ip->daddr;
	t.ipv4.sport = ports[0]; t.ipv4.dport = ports[1];
	struct bpf_ct_opts o = { .netns_id = -1, .l4proto = ip->protocol };
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &o, sizeof(o));
	if (ct) {
		unsigned long st = ct->status;
		bpf_ct_release(ct);
		if (st & IPS_NAT_MASK)
			return TC_ACT_OK;
	}
	struct bpf_fib_lookup p = {};
	p.family = AF_INET;
	p.tos = ip->tos;
	p.l4_protocol = ip->protocol;
	p.tot_len = 0; // 0: the kernel checks GSO-aware forwardability instead
	p.ipv4_src = ip->saddr;
	p.ipv4_dst = ip->daddr;
	p.ifindex = skb->ingress_ifindex;
	int rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return TC_ACT_OK;
	if (p.ifindex == skb->ingress_ifindex)
		return TC_ACT_OK;
	// ttl--
	__u32 old = *(__u16 *)&ip->ttl;
	ip->ttl--;
	__u32 new = *(__u16 *)&ip->ttl;
	bpf_l3_csum_replace(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, check), old, new, 2);
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_SHOT;
	__builtin_memcpy(eth->h_dest, p.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, p.smac, ETH_ALEN);
	if (peer)
		return bpf_redirect_peer(p.ifindex, 0);
	return bpf_redirect(p.ifindex, 0);
}

SEC("tc") int from_pod(struct __sk_buff *skb) { return fwd(skb, 0); }
SEC("tc") int to_pod(struct __sk_buff *skb) { return fwd(skb, 1); }

char LICENSE[] SEC("license") = "Dual BSD/GPL";
