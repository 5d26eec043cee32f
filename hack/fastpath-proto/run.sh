#!/bin/bash
# Measurement prototype (docs/benchmarks.md, "eBPF fast path"): two nodes
# joined through a bridge, one pod each, the remote block routed through
# VXLAN or natively; node -> node, node -> node through the VXLAN devices,
# pod -> pod through the kernel, pod -> pod through fwd.o's fast path,
# interleaved. Everything lives in namespaces named sfp-*, deleted on every
# exit. Needs root, clang, iperf3, nft, tc, python3.
#   usage: run.sh [ROUNDS] [vxlan|native|encap]
# encap: the VXLAN topology, and pod -> pod with encap.c's transmit-side
# encapsulation in BPF as one more measured path.
set -euo pipefail
R=${1:-9}; MODE=${2:-vxlan}
TOPO=$MODE; [ "$MODE" = encap ] && TOPO=vxlan
cd "$(dirname "$0")"
P=sfp
NS=(br n1 n2 p1 p2 p3)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for n in "${NS[@]}"; do ip netns del $P-$n 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for n in "${NS[@]}"; do ip netns list | grep -qw "$P-$n" && { echo "namespace $P-$n exists: another run?" >&2; NS=(); exit 1; }; done

OBJ=$(mktemp -d)/fwd.o
clang -O2 -g -target bpf -I/usr/include/"$(uname -m)"-linux-gnu -c fwd.c -o "$OBJ"

X="ip netns exec"
# pod NODE POD HOSTIF ADDR MAC: a routed pod as Strait wires one (MTU 1,450,
# /32, 169.254.1.1 with a permanent neighbour, a /32 route on the node).
pod() {
	ip -n $P-$1 link add $3 mtu 1450 address $5 type veth peer name eth0 mtu 1450 netns $P-$2
	ip -n $P-$1 link set $3 up
	ip -n $P-$2 link set eth0 up
	ip -n $P-$2 addr add $4/32 dev eth0
	ip -n $P-$2 route add 169.254.1.1 dev eth0 scope link
	ip -n $P-$2 route add default via 169.254.1.1 dev eth0
	ip -n $P-$2 neigh add 169.254.1.1 lladdr $5 dev eth0 nud permanent
	ip -n $P-$1 route add $4/32 dev $3
}
# The pods' host veths per node, and the pod -> pod paths measured from p1.
PODIFS=([1]="hp hp3" [2]="hp")
PODPATHS=(10.244.2.2 10.244.1.3)
for n in "${NS[@]}"; do ip netns add $P-$n; ip -n $P-$n link set lo up; done
ip -n $P-br link add br0 type bridge; ip -n $P-br link set br0 up
for i in 1 2; do
	ip -n $P-br link add u$i type veth peer name eth0 netns $P-n$i
	ip -n $P-br link set u$i master br0 up
	ip -n $P-n$i addr add 198.51.100.$i/24 dev eth0; ip -n $P-n$i link set eth0 up
	$X $P-n$i sysctl -qw net.ipv4.ip_forward=1
	ip -n $P-n$i link add vx type vxlan id 4096 local 198.51.100.$i dstport 4789 nolearning
	ip -n $P-n$i link set vx address 02:00:00:00:00:0$i mtu 1450 up
	ip -n $P-n$i addr add 10.244.$i.0/32 dev vx
	pod n$i p$i hp 10.244.$i.2 02:00:00:00:01:0$i
	# Strait's table: masquerade leaving the pools, outer VXLAN packets untracked.
	$X $P-n$i nft -f - <<'N'
table inet t {
	chain post { type nat hook postrouting priority 100; ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 ip daddr != 198.51.100.0/24 masquerade; }
	chain tin { type filter hook prerouting priority -300; udp dport 4789 notrack; }
	chain tout { type filter hook output priority -300; udp dport 4789 notrack; }
}
N
done
# p3: a second pod on n1, for the same-node path.
pod n1 p3 hp3 10.244.1.3 02:00:00:00:01:03
for i in 1 2; do j=$((3 - i))
	ip -n $P-n$i neigh add 10.244.$j.0 lladdr 02:00:00:00:00:0$j dev vx nud permanent
	$X $P-n$i bridge fdb add 02:00:00:00:00:0$j dev vx dst 198.51.100.$j
	if [ "$TOPO" = vxlan ]; then
		ip -n $P-n$i route add 10.244.$j.0/24 via 10.244.$j.0 dev vx onlink
	else
		ip -n $P-n$i route add 10.244.$j.2/32 via 198.51.100.$j dev eth0
		ip -n $P-n$i route add 10.244.$j.0/32 via 10.244.$j.0 dev vx onlink
	fi
done

# encap.c per node: its addresses and ifindexes are compiled in.
if [ "$MODE" = encap ]; then
	for i in 1 2; do j=$((3 - i))
		vx=$(ip -n $P-n$i -o link show vx | cut -d: -f1); up=$(ip -n $P-n$i -o link show eth0 | cut -d: -f1)
		clang -O2 -g -target bpf -I/usr/include/"$(uname -m)"-linux-gnu -DLOCAL_IP=0xc63364$(printf %02x $i) \
			-DREMOTE_IP=0xc63364$(printf %02x $j) -DVX_IFINDEX="$vx" -DUPLINK_IFINDEX="$up" -c encap.c -o "$(dirname "$OBJ")/encap$i.o"
	done
fi
fastpath() { # on|off|encap (encap: encap.c on p1's and p2's host veths)
	for i in 1 2; do
		for d in ${PODIFS[$i]} vx eth0; do $X $P-n$i tc qdisc del dev $d clsact 2>/dev/null || true; done
		[ "$1" = off ] && continue
		for d in ${PODIFS[$i]}; do
			$X $P-n$i tc qdisc add dev $d clsact
			if [ "$1" = encap ] && [ "$d" = hp ]; then
				$X $P-n$i tc filter add dev $d ingress bpf da obj "$(dirname "$OBJ")/encap$i.o" sec tc
			else
				$X $P-n$i tc filter add dev $d ingress bpf da obj "$OBJ" program from_pod
			fi
		done
		for d in vx eth0; do
			$X $P-n$i tc qdisc add dev $d clsact
			$X $P-n$i tc filter add dev $d ingress bpf da obj "$OBJ" program to_pod
		done
	done
}
forwarded() { $X $P-$1 awk '/^Ip:/ { if (h) print $7; h = 1 }' /proc/net/snmp; }
iperf() { # ns server -> Gbit/s
	setsid sh -c 'echo -20 > /proc/self/autogroup && exec nice -n -20 "$@"' sh $X "$1" iperf3 -c "$2" -t 3 -O 1 -J |
		python3 -c 'import json, sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}
for n in n2 p2 p3; do $X $P-$n iperf3 -s >/dev/null & PIDS+=($!); done
sleep 0.5
# Warm-up through the stack: resolves the neighbours the fib lookups need
# (until then the program leaves packets to the stack).
for dst in "${PODPATHS[@]}"; do iperf $P-p1 $dst >/dev/null; done

# The fast path must carry the pods' traffic: no forwarded datagram on either node.
fastpath on
f1=$(forwarded n1); f2=$(forwarded n2)
for dst in "${PODPATHS[@]}"; do iperf $P-p1 $dst >/dev/null; done
[ "$(forwarded n1)" = "$f1" ] && [ "$(forwarded n2)" = "$f2" ] || { echo "fast path not taken: nodes forwarded datagrams" >&2; exit 1; }
# A Service's connection (kube-proxy's DNAT on n1, here one nft rule) stays
# with the stack: its replies must come back through conntrack's reverse NAT.
$X $P-n1 nft -f - <<'N'
table ip kp { chain pre { type nat hook prerouting priority -100; ip daddr 10.96.0.10 tcp dport 5201 dnat to 10.244.2.2; }; }
N
iperf $P-p1 10.96.0.10 >/dev/null || { echo "DNAT connection failed with the fast path on" >&2; exit 1; }
$X $P-n1 nft delete table ip kp
fastpath off
if [ "$MODE" = encap ]; then
	# encap.c must carry p1's traffic: n1's IP layer sends nothing of it.
	fastpath encap
	o1=$($X $P-n1 awk '/^Ip:/ { if (h) print $11; h = 1 }' /proc/net/snmp)
	iperf $P-p1 10.244.2.2 >/dev/null
	o2=$($X $P-n1 awk '/^Ip:/ { if (h) print $11; h = 1 }' /proc/net/snmp)
	[ $((o2 - o1)) -lt 1000 ] || { echo "encap not taken: n1 sent $((o2 - o1)) IP packets" >&2; exit 1; }
	fastpath off
fi

for r in $(seq "$R"); do
	a=$(iperf $P-n1 198.51.100.2); v=$(iperf $P-n1 10.244.2.0); k=$(iperf $P-p1 10.244.2.2); sk=$(iperf $P-p1 10.244.1.3)
	if [ "$MODE" = encap ]; then
		fastpath on; b=$(iperf $P-p1 10.244.2.2); fastpath off
		fastpath encap; e=$(iperf $P-p1 10.244.2.2); fastpath off
		python3 -c "a, v, k, b, e = $a, $v, $k, $b, $e
print('round $r encap Gbit/s: nodes %.1f  nodes-through-vxlan %.1f  pods-kernel %.1f  pods-fastpath %.1f  pods-fastpath-encap %.1f | /nodes: vxlan-nodes %.2f  pods-kernel %.2f  pods-fastpath %.2f  pods-fastpath-encap %.2f' % (a, v, k, b, e, v/a, k/a, b/a, e/a))"
		continue
	fi
	fastpath on; b=$(iperf $P-p1 10.244.2.2); sb=$(iperf $P-p1 10.244.1.3); fastpath off
	python3 -c "a, v, k, b, sk, sb = $a, $v, $k, $b, $sk, $sb
print('round $r $MODE Gbit/s: nodes %.1f  nodes-through-vxlan %.1f  pods-kernel %.1f  pods-fastpath %.1f | /nodes: vxlan-nodes %.2f  pods-kernel %.2f  pods-fastpath %.2f  fastpath/kernel %.2f | same node: kernel %.1f  fastpath %.1f  fastpath/kernel %.2f' % (a, v, k, b, v/a, k/a, b/a, b/k, sk, sb, sb/sk))"
done
