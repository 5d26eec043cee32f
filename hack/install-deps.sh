#!/usr/bin/env bash
# Installs the system packages Strait's tests and lab need, on Debian.
# Idempotent: does nothing when everything is present.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip        || need+=(iproute2)
have nft       || need+=(nftables)
have iptables  || need+=(iptables)
have conntrack || need+=(conntrack)
have iperf3    || need+=(iperf3)
have ethtool   || need+=(ethtool)
have ping      || need+=(iputils-ping)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
# Lab nodes' runtime and the userland copied into the lab's images (internal/lab/images).
have containerd || need+=(containerd)
have runc       || need+=(runc)
have busybox    || need+=(busybox-static)
have curl       || need+=(curl)
have nc.openbsd || need+=(netcat-openbsd)
have dash       || need+=(dash)
have ldd        || need+=(libc-bin)
# Flow visibility tests: real IPFIX exporters (softflowd, pmacctd) and collectors (nfacctd, nfcapd, tshark).
have softflowd  || need+=(softflowd)
have nfacctd    || need+=(pmacct)
have nfcapd     || need+=(nfdump)
have tshark     || need+=(tshark)
have tcpdump    || need+=(tcpdump)
# The eBPF fast path's object is rebuilt and compared with the committed one (hack/bpf-build.sh).
have clang      || need+=(clang)
have llvm-strip || need+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -f "/usr/include/$(uname -m)-linux-gnu/asm/types.h" ] || need+=(linux-libc-dev)
# BGP peers for internal/bgp tests and the lab router.
have vtysh      || need+=(frr)
have birdc      || need+=(bird2)
have gobgpd     || need+=(gobgpd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "install-deps: need root to install: ${need[*]}" >&2; exit 1; fi
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# GoBGP v4 CLI: Debian's gobgp (3.x) speaks the v3 gRPC API (apipb.GobgpApi),
# which Strait's embedded GoBGP v4 (api.GoBgpService) does not serve.
GOBGP4=/usr/local/lib/strait-gobgp-v4.8.0
if [ ! -x "$GOBGP4/gobgp" ] && command -v go >/dev/null 2>&1; then
  echo "install-deps: building the GoBGP v4.8.0 CLI into $GOBGP4"
  GOBIN="$GOBGP4" GOFLAGS=-mod=mod go install github.com/osrg/gobgp/v4/cmd/gobgp@v4.8.0
fi
